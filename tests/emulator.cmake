# Kubernetes API emulator and fake kubelet (tests/emulator/): Python unittest files,
# each starting its own emulator on a free loopback port.
find_program(KD_PYTHON3 python3)
foreach(t units api watch gc crd kubelet kubectl)
  if(EXISTS ${CMAKE_CURRENT_LIST_DIR}/emulator/test_${t}.py)
    kd_add_script_test(NAME emulator_${t}
      COMMAND ${KD_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/emulator/test_${t}.py
      LABELS integration emulator TIMEOUT 90)
  endif()
endforeach()
# kubectl starts a Go process per verb (~0.3-1 s each on a loaded machine).
if(TEST emulator_kubectl)
  set_tests_properties(emulator_kubectl PROPERTIES TIMEOUT 150)
endif()
