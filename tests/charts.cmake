# charts: the Helm chart, the rendered manifests, the CRD schema and the shell scripts.
# Helm comes from PATH or .tools/bin (hack/deps.sh --helm); without it the Helm tests are
# skipped (return code 77), never silently passed.
add_executable(kd-yaml2json ${CMAKE_CURRENT_LIST_DIR}/charts/yaml2json.c)
target_link_libraries(kd-yaml2json PRIVATE kd_common)
add_executable(kd-spec-decode ${CMAKE_CURRENT_LIST_DIR}/charts/spec_decode.c)
target_link_libraries(kd-spec-decode PRIVATE kd_common)

find_program(KD_PYTHON3 NAMES python3 REQUIRED)
set(KD_CHART_CHECKS ${KD_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/charts/chart_checks.py)

foreach(check helm_lint template_objects values_schema_rejects_typos rbac_least_privilege
        crd_structure crd_matches_decoder
        deployment_hardened pod_security manifests_up_to_date crd_accepts_samples crd_rejects_bad_specs
        shellcheck_scripts)
  kd_add_script_test(NAME charts_${check} COMMAND ${KD_CHART_CHECKS} ${check}
                     LABELS unit charts TIMEOUT 60)
  set_tests_properties(charts_${check} PROPERTIES SKIP_RETURN_CODE 77)
endforeach()

# The CRD, the samples and the rendered install.yaml applied with kubectl to the API
# emulator (tests/emulator); install is skipped (77) while the emulator lacks some kinds.
foreach(mode agentjobs install)
  kd_add_script_test(NAME charts_emulator_${mode}
    COMMAND ${KD_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/charts/emulator_apply.py ${mode}
    LABELS integration charts TIMEOUT 120)
  set_tests_properties(charts_emulator_${mode} PROPERTIES SKIP_RETURN_CODE 77)
endforeach()
