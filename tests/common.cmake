kd_add_test(NAME test_yaml SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/test_yaml.c
            LIBS kd_common LABELS unit TIMEOUT 30)
kd_add_test(NAME test_cli SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/test_cli.c
            LIBS kd_common LABELS unit TIMEOUT 30)
kd_add_test(NAME test_metrics_codec SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/test_metrics_codec.c
            LIBS kd_common LABELS unit TIMEOUT 30)
