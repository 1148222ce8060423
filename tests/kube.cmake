# kube: the Kubernetes client (operator/kube). Unit tests are pure; integration tests
# start the API emulator (tests/emulator) or a tiny misbehaving HTTP server themselves.
foreach(t test_backoff test_workqueue test_kubeconfig test_kube_status)
  kd_add_test(NAME ${t} SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/${t}.c
              LIBS kd_kube LABELS unit TIMEOUT 30)
endforeach()

# Integration tests: each starts its own emulator (python3 on PATH) in a temp dir.
add_library(kd_kube_harness STATIC ${CMAKE_CURRENT_LIST_DIR}/integration/kube_harness.c)
target_include_directories(kd_kube_harness PUBLIC ${CMAKE_CURRENT_LIST_DIR}/integration)
target_link_libraries(kd_kube_harness PUBLIC kd_kube)
kd_add_test(NAME kube_client_test
            SOURCES ${CMAKE_CURRENT_LIST_DIR}/integration/kube_client_test.c
            LIBS kd_kube_harness LABELS integration TIMEOUT 90)
kd_add_test(NAME kube_informer_test
            SOURCES ${CMAKE_CURRENT_LIST_DIR}/integration/kube_informer_test.c
            LIBS kd_kube_harness LABELS integration TIMEOUT 120)
kd_add_test(NAME kube_leader_test
            SOURCES ${CMAKE_CURRENT_LIST_DIR}/integration/kube_leader_test.c
            LIBS kd_kube_harness LABELS integration TIMEOUT 120)
kd_add_test(NAME kube_malformed_test
            SOURCES ${CMAKE_CURRENT_LIST_DIR}/integration/kube_malformed_test.c
            LIBS kd_kube LABELS integration TIMEOUT 60)
