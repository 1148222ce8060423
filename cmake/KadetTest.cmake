# kd_add_test(NAME n SOURCES a.c ... LIBS l ... LABELS unit ... TIMEOUT s)
# One executable per module under tests/, registered with ctest with a timeout and labels.
# Tests find the source tree through KADET_SOURCE_DIR and the binaries through KADET_BIN_DIR.
function(kd_add_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS;ARGS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 60)
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} PkgConfig::CMOCKA)
  add_test(NAME ${T_NAME} COMMAND ${T_NAME} ${T_ARGS})
  set_tests_properties(${T_NAME} PROPERTIES
    TIMEOUT ${T_TIMEOUT}
    LABELS "${T_LABELS}"
    ENVIRONMENT "KADET_SOURCE_DIR=${PROJECT_SOURCE_DIR};KADET_BIN_DIR=${CMAKE_BINARY_DIR}/bin;OPENBLAS_NUM_THREADS=1")
endfunction()

# kd_add_script_test(NAME n COMMAND cmd args... LABELS l TIMEOUT s)
# Integration tests driven by a script (shell or Python) that starts real processes.
function(kd_add_script_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "COMMAND;LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  add_test(NAME ${T_NAME} COMMAND ${T_COMMAND})
  set_tests_properties(${T_NAME} PROPERTIES
    TIMEOUT ${T_TIMEOUT}
    LABELS "${T_LABELS}"
    ENVIRONMENT "KADET_SOURCE_DIR=${PROJECT_SOURCE_DIR};KADET_BIN_DIR=${CMAKE_BINARY_DIR}/bin;OPENBLAS_NUM_THREADS=1")
endfunction()
