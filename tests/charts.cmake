# charts: the Helm chart, the rendered manifests, the CRD schema and the shell scripts.
# Helm comes from PATH or .tools/bin (hack/deps.sh --helm); without it the Helm tests are
# skipped (return code 77), never silently passed.
add_executable(kd-yaml2json ${CMAKE_CURRENT_LIST_DIR}/charts/yaml2json.c)
target_link_libraries(kd-yaml2json PRIVATE kd_common)

find_program(KD_PYTHON3 NAMES python3 REQUIRED)
set(KD_CHART_CHECKS ${KD_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/charts/chart_checks.py)

foreach(check helm_lint template_objects values_schema_rejects_typos rbac_least_privilege
        crd_structure
        deployment_hardened manifests_up_to_date crd_accepts_samples crd_rejects_bad_specs
        shellcheck_scripts)
  kd_add_script_test(NAME charts_${check} COMMAND ${KD_CHART_CHECKS} ${check}
                     LABELS unit charts TIMEOUT 60)
  set_tests_properties(charts_${check} PROPERTIES SKIP_RETURN_CODE 77)
endforeach()
