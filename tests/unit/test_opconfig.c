/* opconfig: every operator setting comes from its default, its environment variable or
 * its flag (in that order of precedence), and every bad value is refused with a message
 * that names the flag or variable, never accepted or crashed on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "kd_error.h"
#include "kd_log.h"
#include "opconfig.h"

/* A fake environment: NULL-terminated name/value pairs. */
static const char *const *fake_env;

static const char *fake_getenv(const char *name)
{
    for (size_t i = 0; fake_env != NULL && fake_env[i] != NULL; i += 2)
        if (strcmp(fake_env[i], name) == 0)
            return fake_env[i + 1];
    return NULL;
}

#define NO_NS_FILE "/nonexistent/kadet/namespace"

/* Parses argv (without program name) under env; returns the kd_err. */
static int parse(opc_config *cfg, const char *const *env, const char *const *args,
                 opc_action *action, char *err, size_t errlen)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)"kadet-operator";
    for (size_t i = 0; args != NULL && args[i] != NULL; i++)
        argv[argc++] = (char *)args[i];
    fake_env = env;
    return opc_parse_env(cfg, argc, argv, fake_getenv, NO_NS_FILE, action, err, errlen);
}

static void expect_ok(opc_config *cfg, const char *const *env, const char *const *args)
{
    opc_action action;
    char err[512] = "";
    int rc = parse(cfg, env, args, &action, err, sizeof err);
    if (rc != KD_OK)
        fail_msg("parse failed: %s", err);
    assert_int_equal(action, OPC_RUN);
}

/* Expects failure; the message must contain want. */
static void expect_error(const char *const *env, const char *const *args, const char *want)
{
    opc_config cfg;
    opc_action action;
    char err[512] = "";
    int rc = parse(&cfg, env, args, &action, err, sizeof err);
    if (rc == KD_OK)
        fail_msg("accepted, expected an error containing '%s'", want);
    if (strstr(err, want) == NULL)
        fail_msg("error '%s' does not contain '%s'", err, want);
}

static void test_defaults_without_environment_or_flags(void **state)
{
    (void)state;
    opc_config c;
    expect_ok(&c, NULL, NULL);
    assert_string_equal(c.kubeconfig, "");
    assert_int_equal(c.n_namespaces, 0);
    assert_string_equal(c.operator_namespace, "default");
    assert_string_equal(c.lease_namespace, "default");
    assert_int_equal(c.leader_elect, 0);
    assert_string_equal(c.lease_name, "kadet-operator");
    assert_int_equal(c.lease_duration_ms, 15000);
    assert_string_equal(c.metrics_host, "");
    assert_int_equal(c.metrics_port, 8080);
    assert_string_equal(c.scheduler_policy, "rl");
    assert_int_equal(c.scheduler_interval_ms, 10000);
    assert_true(c.weight_time == 1.0);
    assert_true(c.weight_cost == 0.1);
    assert_string_equal(c.state_configmap, "kadet-scheduler-state");
    /* Found beside the test binary's bin/ in the build tree (build/share/kadet), as
     * kadet-operator finds it there, unless neither that nor the system path exists. */
    assert_int_equal(c.default_qtable_given, 0);
    if (c.default_qtable[0] != '\0')
        assert_non_null(strstr(c.default_qtable, OPC_QTABLE_REL));
    assert_string_equal(c.runtime_image, "ghcr.io/kadet/kadet:" KADET_VERSION);
    assert_string_equal(c.runtime_pull_policy, "IfNotPresent");
    assert_int_equal(c.log_level, KD_LOG_INFO);
    assert_int_equal(c.workers, 2);
    assert_true(c.identity[0] != '\0');
}

static void test_environment_sets_every_setting(void **state)
{
    (void)state;
    const char *env[] = {"KUBECONFIG", "/tmp/kc", "KADET_CONTEXT", "kind-kadet",
                         "KADET_WATCH_NAMESPACES", "team-a,team-b",
                         "KADET_OPERATOR_NAMESPACE", "kadet-system",
                         "KADET_LEADER_ELECT", "true", "KADET_LEASE_NAME", "my-lease",
                         "KADET_LEASE_DURATION", "30s", "KADET_IDENTITY", "pod-1",
                         "KADET_METRICS_ADDR", "127.0.0.1:9090",
                         "KADET_SCHEDULER_POLICY", "greedy", "KADET_SCHEDULER_INTERVAL", "2m",
                         "KADET_SCHEDULER_WEIGHTS", "time=2,cost=0.5",
                         "KADET_STATE_CONFIGMAP", "state.v2",
                         "KADET_DEFAULT_QTABLE", "/opt/q.json", "KADET_RUNTIME_IMAGE",
                         "kadet-runtime:dev", "KADET_RUNTIME_PULL_POLICY", "Never",
                         "KADET_LOG_LEVEL", "debug", "KADET_WORKERS", "8", NULL};
    opc_config c;
    expect_ok(&c, env, NULL);
    assert_string_equal(c.kubeconfig, "/tmp/kc");
    assert_string_equal(c.context, "kind-kadet");
    assert_int_equal(c.n_namespaces, 2);
    assert_string_equal(c.namespaces[0], "team-a");
    assert_string_equal(c.namespaces[1], "team-b");
    assert_string_equal(c.operator_namespace, "kadet-system");
    assert_string_equal(c.lease_namespace, "kadet-system"); /* follows the operator's */
    assert_int_equal(c.leader_elect, 1);
    assert_string_equal(c.lease_name, "my-lease");
    assert_int_equal(c.lease_duration_ms, 30000);
    assert_string_equal(c.identity, "pod-1");
    assert_string_equal(c.metrics_host, "127.0.0.1");
    assert_int_equal(c.metrics_port, 9090);
    assert_string_equal(c.scheduler_policy, "greedy");
    assert_int_equal(c.scheduler_interval_ms, 120000);
    assert_true(c.weight_time == 2.0);
    assert_true(c.weight_cost == 0.5);
    assert_string_equal(c.state_configmap, "state.v2");
    assert_string_equal(c.default_qtable, "/opt/q.json"); /* given: not looked for */
    assert_int_equal(c.default_qtable_given, 1);
    assert_string_equal(c.runtime_image, "kadet-runtime:dev");
    assert_string_equal(c.runtime_pull_policy, "Never");
    assert_int_equal(c.log_level, KD_LOG_DEBUG);
    assert_int_equal(c.workers, 8);
}

static void test_flags_override_environment(void **state)
{
    (void)state;
    const char *env[] = {"KADET_WORKERS", "8", "KADET_SCHEDULER_POLICY", "fair",
                         "KADET_LEADER_ELECT", "true", "KADET_METRICS_ADDR", ":9000", NULL};
    const char *args[] = {"--workers", "3", "--scheduler-policy=static", "--leader-elect=false",
                          "--metrics-addr", "[::1]:0", "--lease-namespace", "leases", NULL};
    opc_config c;
    expect_ok(&c, env, args);
    assert_int_equal(c.workers, 3);
    assert_string_equal(c.scheduler_policy, "static");
    assert_int_equal(c.leader_elect, 0);
    assert_string_equal(c.metrics_host, "::1");
    assert_int_equal(c.metrics_port, 0);
    assert_string_equal(c.lease_namespace, "leases");
    assert_string_equal(c.operator_namespace, "default");
}

static void test_boolean_flag_without_value_means_true(void **state)
{
    (void)state;
    const char *args[] = {"--leader-elect", NULL};
    opc_config c;
    expect_ok(&c, NULL, args);
    assert_int_equal(c.leader_elect, 1);
    const char *env[] = {"KADET_LEADER_ELECT", "yes", NULL};
    expect_ok(&c, env, NULL);
    assert_int_equal(c.leader_elect, 1);
    const char *env_off[] = {"KADET_LEADER_ELECT", "0", NULL};
    expect_ok(&c, env_off, NULL);
    assert_int_equal(c.leader_elect, 0);
}

static void test_namespaces_are_trimmed_deduplicated_and_alias_works(void **state)
{
    (void)state;
    const char *args[] = {"--namespace", " team-a, team-b ,team-a,,", NULL};
    opc_config c;
    expect_ok(&c, NULL, args);
    assert_int_equal(c.n_namespaces, 2);
    assert_string_equal(c.namespaces[0], "team-a");
    assert_string_equal(c.namespaces[1], "team-b");
    /* An empty list (the chart's default) means every namespace. */
    const char *env[] = {"KADET_WATCH_NAMESPACES", "", NULL};
    expect_ok(&c, env, NULL);
    assert_int_equal(c.n_namespaces, 0);
}

static void test_pod_namespace_file_sets_operator_and_lease_namespace(void **state)
{
    (void)state;
    char path[] = "/tmp/kadet-ns-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "kadet-system\n", 13), 13);
    close(fd);
    opc_config c;
    opc_action action;
    char err[256] = "";
    char *argv[] = {(char *)"kadet-operator"};
    fake_env = NULL;
    assert_int_equal(opc_parse_env(&c, 1, argv, fake_getenv, path, &action, err, sizeof err),
                     KD_OK);
    assert_string_equal(c.operator_namespace, "kadet-system");
    assert_string_equal(c.lease_namespace, "kadet-system");
    unlink(path);
}

static void test_help_and_version_actions(void **state)
{
    (void)state;
    opc_config c;
    opc_action action;
    char err[256];
    const char *help[] = {"--workers", "4", "--help", "--bogus", NULL};
    assert_int_equal(parse(&c, NULL, help, &action, err, sizeof err), KD_OK);
    assert_int_equal(action, OPC_HELP);
    const char *version[] = {"--version", NULL};
    assert_int_equal(parse(&c, NULL, version, &action, err, sizeof err), KD_OK);
    assert_int_equal(action, OPC_VERSION);
    const char *bad[] = {"--help=yes", NULL};
    assert_int_equal(parse(&c, NULL, bad, &action, err, sizeof err), KD_EINVAL);
}

static void test_bad_flags_are_refused_with_their_name(void **state)
{
    (void)state;
    const char *unknown[] = {"--wokers", "2", NULL};
    expect_error(NULL, unknown, "unknown option '--wokers' (did you mean --workers?)");
    const char *positional[] = {"run", NULL};
    expect_error(NULL, positional, "unexpected argument 'run'");
    const char *missing[] = {"--workers", NULL};
    expect_error(NULL, missing, "--workers needs a value");
    const char *workers[] = {"--workers", "0", NULL};
    expect_error(NULL, workers, "--workers: workers: '0' is not an integer in [1, 64]");
    const char *policy[] = {"--scheduler-policy", "magic", NULL};
    expect_error(NULL, policy, "'magic' is not one of static, tiresias, fair, greedy, pollux, rl");
    const char *addr[] = {"--metrics-addr", "8080", NULL};
    expect_error(NULL, addr, "--metrics-addr");
    const char *lease[] = {"--lease-duration", "1s", NULL};
    expect_error(NULL, lease, "outside [2s, 1h]");
    const char *interval[] = {"--scheduler-interval", "fast", NULL};
    expect_error(NULL, interval, "'fast' is not a duration");
    const char *ns[] = {"--namespaces", "Team_A", NULL};
    expect_error(NULL, ns, "'Team_A' is not a valid namespace name");
    const char *lname[] = {"--lease-name", "-lease", NULL};
    expect_error(NULL, lname, "'-lease' is not a valid object name");
    const char *level[] = {"--log-level", "verbose", NULL};
    expect_error(NULL, level, "'verbose' is not debug, info, warn or error");
    const char *pull[] = {"--runtime-pull-policy", "always", NULL};
    expect_error(NULL, pull, "'always' is not Always, IfNotPresent or Never");
    const char *image[] = {"--runtime-image", "has space", NULL};
    expect_error(NULL, image, "not an image reference");
    const char *identity[] = {"--identity=", NULL};
    expect_error(NULL, identity, "identity: must not be empty");
}

static void test_bad_environment_is_refused_with_the_variable_name(void **state)
{
    (void)state;
    const char *workers[] = {"KADET_WORKERS", "many", NULL};
    expect_error(workers, NULL, "environment KADET_WORKERS:");
    const char *elect[] = {"KADET_LEADER_ELECT", "maybe", NULL};
    expect_error(elect, NULL, "environment KADET_LEADER_ELECT: leader-elect: 'maybe'");
    const char *weights[] = {"KADET_SCHEDULER_WEIGHTS", "speed=1", NULL};
    expect_error(weights, NULL, "unknown key 'speed'");
    /* A bad variable fails even when a flag would override it: a broken Deployment should
     * be noticed, not masked. */
    const char *env[] = {"KADET_WORKERS", "0", NULL};
    const char *args[] = {"--workers", "2", NULL};
    expect_error(env, args, "KADET_WORKERS");
}

static void test_weights(void **state)
{
    (void)state;
    opc_config c;
    const char *one[] = {"--weights", "cost=0.5", NULL};
    expect_ok(&c, NULL, one);
    assert_true(c.weight_time == 1.0); /* untouched key keeps its default */
    assert_true(c.weight_cost == 0.5);
    const char *both[] = {"--weights=time=0,cost=3", NULL};
    expect_ok(&c, NULL, both);
    assert_true(c.weight_time == 0.0);
    assert_true(c.weight_cost == 3.0);
    const char *neg[] = {"--weights", "time=-1", NULL};
    expect_error(NULL, neg, "is not a non-negative number");
    const char *twice[] = {"--weights", "time=1,time=2", NULL};
    expect_error(NULL, twice, "'time' given twice");
    const char *novalue[] = {"--weights", "time", NULL};
    expect_error(NULL, novalue, "is not key=value");
    const char *empty[] = {"--weights", "time=", NULL};
    expect_error(NULL, empty, "bad value for 'time'");
    const char *nan[] = {"--weights", "cost=nan", NULL};
    expect_error(NULL, nan, "is not a non-negative number");
}

static void test_durations(void **state)
{
    (void)state;
    struct {
        const char *text;
        long ms;
    } good[] = {{"500ms", 500}, {"15", 15000}, {"15s", 15000}, {"1.5s", 1500},
                {"2m", 120000}, {"1h", 3600000}, {"0", 0}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        long ms = -1;
        assert_int_equal(opc_parse_duration(good[i].text, &ms), KD_OK);
        assert_int_equal(ms, good[i].ms);
    }
    const char *bad[] = {"", "s", "-1s", "10x", " 5s", "5 s", "nan", "inf", "1e300h", "5sec"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        long ms = 42;
        if (opc_parse_duration(bad[i], &ms) == KD_OK)
            fail_msg("duration '%s' accepted as %ld ms", bad[i], ms);
        assert_int_equal(ms, 42);
    }
    long ms;
    assert_int_equal(opc_parse_duration(NULL, &ms), KD_EINVAL);
}

static void test_addresses(void **state)
{
    (void)state;
    char host[64];
    int port;
    assert_int_equal(opc_parse_addr(":8080", host, sizeof host, &port), KD_OK);
    assert_string_equal(host, "");
    assert_int_equal(port, 8080);
    assert_int_equal(opc_parse_addr("0.0.0.0:1", host, sizeof host, &port), KD_OK);
    assert_string_equal(host, "0.0.0.0");
    assert_int_equal(port, 1);
    assert_int_equal(opc_parse_addr("[::]:65535", host, sizeof host, &port), KD_OK);
    assert_string_equal(host, "::");
    assert_int_equal(port, 65535);
    const char *bad[] = {"8080", "::1:80", ":70000", ":-1", "[::1]80", "[]:80", ":", "host:",
                         ":80x", "[::1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (opc_parse_addr(bad[i], host, sizeof host, &port) == KD_OK)
            fail_msg("address '%s' accepted", bad[i]);
    char tiny[4];
    assert_int_equal(opc_parse_addr("127.0.0.1:80", tiny, sizeof tiny, &port), KD_ERANGE);
}

static void test_too_many_namespaces_and_too_long_values(void **state)
{
    (void)state;
    char list[OPC_MAX_NAMESPACES * 8 + 64] = "";
    size_t off = 0;
    for (int i = 0; i <= OPC_MAX_NAMESPACES; i++)
        off += (size_t)snprintf(list + off, sizeof list - off, "ns%d,", i);
    const char *args[] = {"--namespaces", list, NULL};
    expect_error(NULL, args, "more than 64 namespaces");
    char longpath[5000];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = '\0';
    const char *kc[] = {"--kubeconfig", longpath, NULL};
    expect_error(NULL, kc, "value too long");
}

static void test_usage_lists_every_variable_and_default(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    opc_usage(out, "kadet-operator");
    fclose(out);
    const char *want[] = {"KUBECONFIG", "KADET_CONTEXT", "KADET_WATCH_NAMESPACES",
                          "KADET_OPERATOR_NAMESPACE", "KADET_LEADER_ELECT", "KADET_LEASE_NAME",
                          "KADET_LEASE_NAMESPACE", "KADET_LEASE_DURATION", "KADET_IDENTITY",
                          "KADET_METRICS_ADDR", "KADET_SCHEDULER_POLICY",
                          "KADET_SCHEDULER_INTERVAL", "KADET_SCHEDULER_WEIGHTS",
                          "KADET_STATE_CONFIGMAP", "KADET_DEFAULT_QTABLE", "KADET_RUNTIME_IMAGE",
                          "KADET_RUNTIME_PULL_POLICY", "KADET_LOG_LEVEL", "KADET_WORKERS",
                          "(default :8080)", "(default rl)", "--namespace NS",
                          "--help", "--version"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (strstr(text, want[i]) == NULL)
            fail_msg("--help lacks '%s'", want[i]);
    free(text);
}

static void write_file(const char *path)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{}\n", f);
    fclose(f);
}

static void test_shipped_qtable_is_found_beside_bin_then_at_the_system_path(void **state)
{
    (void)state;
    char root[] = "/tmp/kadet-opc-XXXXXX";
    assert_non_null(mkdtemp(root));
    char bin[128], share[128], kd[128], table[192], exe[192], sys[192], out[4096];
    snprintf(bin, sizeof bin, "%s/bin", root);
    snprintf(share, sizeof share, "%s/share", root);
    snprintf(kd, sizeof kd, "%s/share/kadet", root);
    snprintf(table, sizeof table, "%s/share/kadet/qtable-default.json", root);
    snprintf(exe, sizeof exe, "%s/bin/kadet-operator", root);
    snprintf(sys, sizeof sys, "%s/system.json", root);
    assert_int_equal(mkdir(bin, 0700), 0);
    assert_int_equal(mkdir(share, 0700), 0);
    assert_int_equal(mkdir(kd, 0700), 0);

    /* Nothing anywhere: not found, and out says so with "". */
    assert_int_equal(opc_find_qtable(exe, sys, out, sizeof out), KD_ENOTFOUND);
    assert_string_equal(out, "");
    /* Only the system path. */
    write_file(sys);
    assert_int_equal(opc_find_qtable(exe, sys, out, sizeof out), KD_OK);
    assert_string_equal(out, sys);
    /* The prefix's table wins over the system one. */
    write_file(table);
    assert_int_equal(opc_find_qtable(exe, sys, out, sizeof out), KD_OK);
    assert_string_equal(out, table);
    /* A relative or missing exe falls back to the system path. */
    assert_int_equal(opc_find_qtable("kadet-operator", sys, out, sizeof out), KD_OK);
    assert_string_equal(out, sys);
    assert_int_equal(opc_find_qtable(NULL, sys, out, sizeof out), KD_OK);
    assert_string_equal(out, sys);
    /* A path that does not fit is not found rather than truncated. */
    char small[8];
    assert_int_equal(opc_find_qtable(exe, NULL, small, sizeof small), KD_ENOTFOUND);
    assert_string_equal(small, "");

    unlink(table);
    unlink(sys);
    rmdir(kd);
    rmdir(share);
    rmdir(bin);
    rmdir(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_without_environment_or_flags),
        cmocka_unit_test(test_environment_sets_every_setting),
        cmocka_unit_test(test_flags_override_environment),
        cmocka_unit_test(test_boolean_flag_without_value_means_true),
        cmocka_unit_test(test_namespaces_are_trimmed_deduplicated_and_alias_works),
        cmocka_unit_test(test_pod_namespace_file_sets_operator_and_lease_namespace),
        cmocka_unit_test(test_help_and_version_actions),
        cmocka_unit_test(test_bad_flags_are_refused_with_their_name),
        cmocka_unit_test(test_bad_environment_is_refused_with_the_variable_name),
        cmocka_unit_test(test_weights),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_too_many_namespaces_and_too_long_values),
        cmocka_unit_test(test_usage_lists_every_variable_and_default),
        cmocka_unit_test(test_shipped_qtable_is_found_beside_bin_then_at_the_system_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
