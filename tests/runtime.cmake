# Training core (issue 2): unit tests per module of kd_train and the spec decoder, plus the
# `kadet run` command line as a user meets it.
foreach(t nn cnn optim idx csv spec par)
  kd_add_test(NAME test_${t} SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/test_${t}.c
              LIBS kd_train kd_common LABELS unit TIMEOUT 30)
endforeach()
# Trains on the real Fashion-MNIST (a subset): seconds in release, more under ASan.
kd_add_test(NAME test_train SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/test_train.c
            LIBS kd_train kd_common LABELS unit TIMEOUT 120)
kd_add_script_test(NAME run_cli COMMAND ${CMAKE_CURRENT_LIST_DIR}/integration/run_cli.sh
                   LABELS integration TIMEOUT 600)
