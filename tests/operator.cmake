# operator: the kadet-operator process shell (settings, metrics, HTTP endpoints) and the
# process itself (flags, endpoints, shutdown).
kd_add_test(NAME test_opconfig SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/test_opconfig.c
            LIBS kd_opshell LABELS unit TIMEOUT 30)
kd_add_test(NAME test_metrics SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/test_metrics.c
            LIBS kd_opshell LABELS unit TIMEOUT 30)
kd_add_test(NAME test_metrics_http SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/test_metrics_http.c
            LIBS kd_opshell LABELS unit TIMEOUT 30)

find_program(KD_PYTHON3 NAMES python3 REQUIRED)
kd_add_script_test(NAME operator_process
  COMMAND ${KD_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/integration/operator_process.py
  LABELS integration TIMEOUT 60)
kd_add_script_test(NAME operator_leader_election
  COMMAND ${KD_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/integration/operator_leader.py
  LABELS integration TIMEOUT 90)
set_tests_properties(operator_leader_election PROPERTIES SKIP_RETURN_CODE 77)
# Memory at the issue's reference size (100 AgentJobs, 1,000 pods); slow: not under ASan.
kd_add_script_test(NAME operator_rss
  COMMAND ${KD_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/integration/operator_rss.py
  LABELS integration slow TIMEOUT 120)
set_tests_properties(operator_rss PROPERTIES SKIP_RETURN_CODE 77)

# --- AgentJob reconciler, pod construction, scheduler host, name resolution ------------
kd_add_test(NAME test_hosts SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/test_hosts.c
            LIBS kd_common LABELS unit TIMEOUT 30)
kd_add_test(NAME test_podspec SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/test_podspec.c
            LIBS kd_reconcile LABELS unit TIMEOUT 30)
kd_add_test(NAME test_jobkeys SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/test_jobkeys.c
            LIBS kd_reconcile LABELS unit TIMEOUT 30)
kd_add_test(NAME test_reconcile_plan SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/test_reconcile_plan.c
            LIBS kd_reconcile LABELS unit TIMEOUT 30)
kd_add_script_test(NAME reconcile_lifecycle
  COMMAND ${KD_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/integration/reconcile_lifecycle.py
  LABELS integration TIMEOUT 150)
set_tests_properties(reconcile_lifecycle PROPERTIES SKIP_RETURN_CODE 77)
kd_add_script_test(NAME reconcile_security
  COMMAND ${KD_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/integration/reconcile_security.py
  LABELS integration TIMEOUT 150)
set_tests_properties(reconcile_security PROPERTIES SKIP_RETURN_CODE 77)
# End to end with real kadet coordinator/worker processes run by the fake kubelet: about
# 35 s in release, plus one epoch of the CNN sample (20-60 s on a shared 2-core machine); under ASan the training takes 160 s, so it is also labelled slow (the
# ASan pass of hack/test.sh skips it; the release pass runs it).
kd_add_script_test(NAME operator_e2e
  COMMAND ${KD_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/integration/operator_e2e.py
  LABELS e2e integration slow TIMEOUT 480)
set_tests_properties(operator_e2e PROPERTIES SKIP_RETURN_CODE 77)
kd_add_script_test(NAME reconcile_leader
  COMMAND ${KD_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/integration/reconcile_leader.py
  LABELS integration TIMEOUT 120)
set_tests_properties(reconcile_leader PROPERTIES SKIP_RETURN_CODE 77)
kd_add_test(NAME test_schedhost SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/test_schedhost.c
            LIBS kd_reconcile LABELS unit TIMEOUT 30)
kd_add_script_test(NAME operator_e2e_recovery
  COMMAND ${KD_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/integration/operator_e2e_recovery.py
  LABELS e2e integration slow TIMEOUT 300)
set_tests_properties(operator_e2e_recovery PROPERTIES SKIP_RETURN_CODE 77)
# Node added, then a node with workers lost during training (issue 16 part 7).
kd_add_script_test(NAME operator_nodes
  COMMAND ${KD_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/integration/operator_nodes.py
  LABELS e2e integration slow TIMEOUT 900)
set_tests_properties(operator_nodes PROPERTIES SKIP_RETURN_CODE 77)
kd_add_script_test(NAME operator_failure_reason
  COMMAND ${KD_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/integration/operator_failure_reason.py
  LABELS e2e integration slow TIMEOUT 300)
set_tests_properties(operator_failure_reason PROPERTIES SKIP_RETURN_CODE 77)
# Co-adaptation (issue 16 part 5): no pod for a job that must wait; pollux's batch in
# status and applied by the coordinator.
kd_add_script_test(NAME operator_coadapt
  COMMAND ${KD_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/integration/operator_coadapt.py
  LABELS e2e integration slow TIMEOUT 480)
set_tests_properties(operator_coadapt PROPERTIES SKIP_RETURN_CODE 77)
