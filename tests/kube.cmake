# kube: the Kubernetes client (operator/kube). Unit tests are pure; integration tests
# start the API emulator (tests/emulator) or a tiny misbehaving HTTP server themselves.
foreach(t test_backoff test_workqueue test_kubeconfig test_kube_status)
  kd_add_test(NAME ${t} SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/${t}.c
              LIBS kd_kube LABELS unit TIMEOUT 30)
endforeach()
