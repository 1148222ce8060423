# scheduler: the policy core (test_sched), the simulator (test_sim) and kadet-sim's
# command line on the tiny traces in tests/data/sched. test_sim also replays a real
# Pollux workload when ../shared/data/pollux (or $KADET_POLLUX_DIR) is present.
kd_add_test(NAME test_sched SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/test_sched.c
            LIBS kd_sched_state LABELS unit TIMEOUT 60)
kd_add_test(NAME test_sim SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/test_sim.c
            LIBS kd_sim kd_sched_state LABELS unit TIMEOUT 60)
kd_add_script_test(NAME kadet_sim_cli
  COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/unit/test_sim_cli.sh
  LABELS unit TIMEOUT 60)
# the goodput model against the Pollux artifact's Tiresias, workload by workload (skipped
# without the data beside the repository or in $KADET_POLLUX_DIR)
kd_add_script_test(NAME sim_artifact_check
  COMMAND bash ${PROJECT_SOURCE_DIR}/hack/bench/sim-check.sh --max-dev 3
  LABELS unit TIMEOUT 120)
set_tests_properties(sim_artifact_check PROPERTIES SKIP_RETURN_CODE 77)
