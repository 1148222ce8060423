# Distributed runtime tests (issue 3): wire codec, ring allreduce, checkpoints, and
# coordinator + workers as real processes on loopback.
kd_add_test(NAME test_wire SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/test_wire.c
            LIBS kd_common LABELS unit TIMEOUT 30)

# The wire fuzz target: replayed over its seed corpus in every build; built with
# libFuzzer when KADET_FUZZ=ON (clang), and fuzzed for 20 s by a slow test when clang
# is installed, whatever compiler builds the rest.
add_executable(fuzz_wire_replay ${CMAKE_CURRENT_LIST_DIR}/fuzz/fuzz_wire.c
               ${CMAKE_CURRENT_LIST_DIR}/fuzz/replay_main.c)
target_link_libraries(fuzz_wire_replay PRIVATE kd_common)
kd_add_script_test(NAME fuzz_wire_corpus_replays_cleanly
  COMMAND $<TARGET_FILE:fuzz_wire_replay> ${CMAKE_CURRENT_LIST_DIR}/fuzz/corpus/wire
  LABELS unit TIMEOUT 30)
if(KADET_FUZZ)
  add_executable(fuzz_wire ${CMAKE_CURRENT_LIST_DIR}/fuzz/fuzz_wire.c)
  target_compile_options(fuzz_wire PRIVATE -fsanitize=fuzzer)
  target_link_options(fuzz_wire PRIVATE -fsanitize=fuzzer)
  target_link_libraries(fuzz_wire PRIVATE kd_common)
endif()
# The manifest decoder (YAML + AgentJob) and the kubeconfig loader: the same scheme.
add_executable(fuzz_manifest_replay ${CMAKE_CURRENT_LIST_DIR}/fuzz/fuzz_manifest.c
               ${CMAKE_CURRENT_LIST_DIR}/fuzz/replay_main.c)
target_link_libraries(fuzz_manifest_replay PRIVATE kd_common)
kd_add_script_test(NAME fuzz_manifest_corpus_replays_cleanly
  COMMAND $<TARGET_FILE:fuzz_manifest_replay> ${CMAKE_CURRENT_LIST_DIR}/fuzz/corpus/manifest
  LABELS unit TIMEOUT 30)
add_executable(fuzz_kubeconfig_replay ${CMAKE_CURRENT_LIST_DIR}/fuzz/fuzz_kubeconfig.c
               ${CMAKE_CURRENT_LIST_DIR}/fuzz/replay_main.c)
target_link_libraries(fuzz_kubeconfig_replay PRIVATE kd_kube)
kd_add_script_test(NAME fuzz_kubeconfig_corpus_replays_cleanly
  COMMAND $<TARGET_FILE:fuzz_kubeconfig_replay> ${CMAKE_CURRENT_LIST_DIR}/fuzz/corpus/kubeconfig
  LABELS unit TIMEOUT 30)
if(KADET_FUZZ)
  foreach(target manifest kubeconfig)
    add_executable(fuzz_${target} ${CMAKE_CURRENT_LIST_DIR}/fuzz/fuzz_${target}.c)
    target_compile_options(fuzz_${target} PRIVATE -fsanitize=fuzzer)
    target_link_options(fuzz_${target} PRIVATE -fsanitize=fuzzer)
  endforeach()
  target_link_libraries(fuzz_manifest PRIVATE kd_common)
  target_link_libraries(fuzz_kubeconfig PRIVATE kd_kube)
endif()
kd_add_script_test(NAME fuzz_wire_libfuzzer_20s
  COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/fuzz/run_fuzz.sh ${PROJECT_SOURCE_DIR}
          ${CMAKE_CURRENT_BINARY_DIR}/fuzz_wire_work
  LABELS slow TIMEOUT 120)
set_tests_properties(fuzz_wire_libfuzzer_20s PROPERTIES SKIP_RETURN_CODE 77)

kd_add_test(NAME test_comm SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/test_comm.c
            LIBS kd_dist LABELS unit TIMEOUT 60)
kd_add_test(NAME test_checkpoint SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/test_checkpoint.c
            LIBS kd_dist LABELS unit TIMEOUT 30)
kd_add_test(NAME test_batch SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/test_batch.c
            LIBS kd_dist LABELS unit TIMEOUT 30)

# Coordinator + workers as real processes on loopback (tests/integration/dist_test.py).
foreach(scenario equivalence lr_ramp join_leave schedule kill_worker kill_coordinator corrupt_checkpoint
        foreign_messages placement)
  kd_add_script_test(NAME dist_${scenario}
    COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/dist_test.py ${scenario}
    LABELS integration TIMEOUT 240)
endforeach()
# The kill test asserts the ring re-forms within 5 s: keep other tests off the cores.
set_tests_properties(dist_kill_worker PROPERTIES RUN_SERIAL TRUE)

# A coordinator restarted from the final checkpoint reports the result at once.
kd_add_script_test(NAME dist_final_checkpoint
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/dist_final_checkpoint.py
  LABELS integration TIMEOUT 240)

# local-sgd (period 4): 2 -> 3 -> 2 agents, convergence and the sample invariant.
kd_add_script_test(NAME dist_local_sgd
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/dist_local_sgd.py
  LABELS integration TIMEOUT 240)

# Adaptive batch size: the coordinator grows the batch from the measured gradient noise;
# no sample is lost or repeated across the change.
kd_add_script_test(NAME dist_adaptive_batch
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/dist_adaptive_batch.py
  LABELS integration TIMEOUT 240)
# Issue 16 part 5: kadet run's policy chooses the batch with the count (goodput model
# from the coordinator's metrics) and sends it to the coordinator as the operator does.
kd_add_script_test(NAME dist_coadapt
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/dist_coadapt.py
  LABELS integration TIMEOUT 300)

# Issue 17: the job's CURVE keys and the ZAP handler (common/kd_curve.c).
kd_add_test(NAME test_curve SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/test_curve.c
            LIBS kd_common LABELS unit TIMEOUT 60)

# Issue 17: every network attack of the issue against a running job with keys, by
# kd_attack (a stranger's CURVE key, a guessed PLAIN password, no security, and an insider
# holding the job key), and the same job unattacked: nothing of the attacker's accepted,
# the same result.
add_executable(kd_attack ${CMAKE_CURRENT_LIST_DIR}/integration/kd_attack.c)
target_link_libraries(kd_attack PRIVATE kd_common)
foreach(mode authenticated curve)
  kd_add_script_test(NAME dist_attacks_${mode}
    COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/dist_attacks.py ${mode}
    LABELS integration TIMEOUT 600)
endforeach()

# The CNN sample's network (spec.training.model.layers) distributed: 1x64 = 2x32 = 4x16
# over 20 steps, bit-identical resume, a mid-epoch join keeps every sample once.
foreach(scenario equivalence resume join)
  kd_add_script_test(NAME dist_cnn_${scenario}
    COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/dist_cnn.py ${scenario}
    LABELS integration TIMEOUT 400)
endforeach()
