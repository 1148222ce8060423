/* kube_config: kubeconfig contexts, data and path fields, KUBECONFIG merging, the
 * in-cluster layout, and malformed files rejected with the file and field named. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kd_error.h"
#include "kube_config.h"

static char dir[256];
static char path_a[300], path_b[300];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/kd-kubeconfig-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        return -1;
    }
    snprintf(path_a, sizeof path_a, "%s/a.yaml", dir);
    snprintf(path_b, sizeof path_b, "%s/b.yaml", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* "hello-ca" and "cert-pem" in base64 */
static const char *config_a =
    "apiVersion: v1\n"
    "kind: Config\n"
    "current-context: dev\n"
    "clusters:\n"
    "- name: c1\n"
    "  cluster:\n"
    "    server: https://127.0.0.1:6443/\n"
    "    certificate-authority-data: aGVsbG8tY2E=\n"
    "- name: c2\n"
    "  cluster:\n"
    "    server: https://[::1]:8443\n"
    "    certificate-authority: certs/ca.crt\n"
    "    insecure-skip-tls-verify: true\n"
    "users:\n"
    "- name: u1\n"
    "  user:\n"
    "    token: abc123\n"
    "- name: u2\n"
    "  user:\n"
    "    client-certificate-data: Y2VydC1wZW0=\n"
    "    client-key: /abs/key.pem\n"
    "    tokenFile: tok\n"
    "contexts:\n"
    "- name: dev\n"
    "  context: {cluster: c1, user: u1, namespace: team}\n"
    "- name: prod\n"
    "  context: {cluster: c2, user: u2}\n";

static void test_current_context_gives_server_token_and_decoded_ca(void **state)
{
    (void)state;
    write_file(path_a, config_a);
    kube_config cfg;
    char err[256] = "";
    assert_int_equal(kube_config_load(path_a, NULL, &cfg, err, sizeof err), KD_OK);
    assert_string_equal(cfg.server, "https://127.0.0.1:6443");
    assert_string_equal(cfg.token, "abc123");
    assert_int_equal(cfg.ca_data_len, 8);
    assert_memory_equal(cfg.ca_data, "hello-ca", 8);
    assert_null(cfg.ca_file);
    assert_false(cfg.insecure);
    assert_string_equal(cfg.namespace, "team");
    assert_string_equal(cfg.context, "dev");
    kube_config_clear(&cfg);
    assert_null(cfg.server);
    kube_config_clear(&cfg);
}

static void test_explicit_context_resolves_relative_paths_against_the_file(void **state)
{
    (void)state;
    write_file(path_a, config_a);
    kube_config cfg;
    char err[256] = "", want[400];
    assert_int_equal(kube_config_load(path_a, "prod", &cfg, err, sizeof err), KD_OK);
    assert_string_equal(cfg.server, "https://[::1]:8443");
    snprintf(want, sizeof want, "%s/certs/ca.crt", dir);
    assert_string_equal(cfg.ca_file, want);
    snprintf(want, sizeof want, "%s/tok", dir);
    assert_string_equal(cfg.token_file, want);
    assert_string_equal(cfg.key_file, "/abs/key.pem");
    assert_memory_equal(cfg.cert_data, "cert-pem", 8);
    assert_true(cfg.insecure);
    assert_string_equal(cfg.namespace, "default");
    kube_config_clear(&cfg);
}

static void test_several_files_merge_first_wins(void **state)
{
    (void)state;
    /* b defines its own "dev" context (ignored: a's wins) and a new context "extra"
     * that uses a's cluster; a's current-context wins over b's. */
    write_file(path_a, config_a);
    write_file(path_b, "current-context: extra\n"
                       "clusters:\n"
                       "- name: c1\n"
                       "  cluster: {server: https://10.9.9.9:1}\n"
                       "users:\n"
                       "- name: u3\n"
                       "  user: {token: from-b}\n"
                       "contexts:\n"
                       "- name: dev\n"
                       "  context: {cluster: c1, user: u3}\n"
                       "- name: extra\n"
                       "  context: {cluster: c1, user: u3}\n");
    char list[1024];
    snprintf(list, sizeof list, "%s/missing.yaml:%s:%s", dir, path_a, path_b);
    kube_config cfg;
    char err[256] = "";
    assert_int_equal(kube_config_load(list, NULL, &cfg, err, sizeof err), KD_OK);
    assert_string_equal(cfg.context, "dev");
    assert_string_equal(cfg.token, "abc123");
    kube_config_clear(&cfg);
    assert_int_equal(kube_config_load(list, "extra", &cfg, err, sizeof err), KD_OK);
    assert_string_equal(cfg.server, "https://127.0.0.1:6443"); /* c1 from a */
    assert_string_equal(cfg.token, "from-b");
    kube_config_clear(&cfg);
    /* The same through the environment. */
    setenv("KUBECONFIG", list, 1);
    assert_int_equal(kube_config_load(NULL, NULL, &cfg, err, sizeof err), KD_OK);
    assert_string_equal(cfg.context, "dev");
    kube_config_clear(&cfg);
    unsetenv("KUBECONFIG");
}

static void expect_error(const char *text, const char *context, int code, const char *field)
{
    write_file(path_a, text);
    kube_config cfg;
    char err[512] = "";
    int rc = kube_config_load(path_a, context, &cfg, err, sizeof err);
    if (rc != code || strstr(err, path_a) == NULL || strstr(err, field) == NULL) {
        fail_msg("rc=%d want %d, err=\"%s\" should name %s and %s", rc, code, err, path_a,
                 field);
    }
    assert_null(cfg.server);
}

static void test_malformed_files_name_the_file_and_the_field(void **state)
{
    (void)state;
    expect_error("clusters:\n- name: c\n  cluster: {server: 42}\n"
                 "contexts:\n- name: x\n  context: {cluster: c}\ncurrent-context: x\n",
                 NULL, KD_EFORMAT, "clusters[0].cluster.server");
    expect_error("clusters: {a: b}\n", NULL, KD_EFORMAT, "clusters");
    expect_error("users:\n- name: u\n  user: nope\n", NULL, KD_EFORMAT, "users[0].user");
    expect_error("contexts:\n- context: {cluster: c}\n", NULL, KD_EFORMAT,
                 "contexts[0].name");
    expect_error("clusters:\n- name: c\n  cluster:\n    server: https://h\n"
                 "    certificate-authority-data: '!!notbase64!!'\n"
                 "contexts:\n- name: x\n  context: {cluster: c}\n",
                 "x", KD_EPARSE, "clusters[0].cluster.certificate-authority-data");
    expect_error("clusters:\n- name: c\n  cluster: {server: 'ftp://h'}\n"
                 "contexts:\n- name: x\n  context: {cluster: c}\n",
                 "x", KD_EFORMAT, "clusters[0].cluster.server");
    expect_error("clusters:\n- name: c\n  cluster: {server: 'https://h', "
                 "insecure-skip-tls-verify: maybe}\n"
                 "contexts:\n- name: x\n  context: {cluster: c}\n",
                 "x", KD_EFORMAT, "insecure-skip-tls-verify");
    expect_error("clusters:\n- name: c\n  cluster: {server: 'https://h'}\n"
                 "users:\n- name: u\n  user: {exec: {command: aws}}\n"
                 "contexts:\n- name: x\n  context: {cluster: c, user: u}\n",
                 "x", KD_EUNSUPPORTED, "users[0].user");
    expect_error("contexts:\n- name: x\n  context: {cluster: nope}\n", "x", KD_ENOTFOUND,
                 "contexts[0].context.cluster");
    expect_error("current-context: ghost\n", NULL, KD_ENOTFOUND, "ghost");
    expect_error("kind: Config\n", NULL, KD_ENOTFOUND, "current-context");
    expect_error("current-context: [1, 2]\n", NULL, KD_EFORMAT, "current-context");
    expect_error("- just\n- a list\n", NULL, KD_EFORMAT, "top level");
    /* Not YAML at all: kd_yaml's error names the file and the position. */
    expect_error("clusters: [\n  - {name: x\n", NULL, KD_EPARSE, "line");
}

static void test_missing_files_are_an_error_naming_them(void **state)
{
    (void)state;
    char list[600], err[512] = "";
    snprintf(list, sizeof list, "%s/nope1:%s/nope2", dir, dir);
    kube_config cfg;
    assert_int_equal(kube_config_load(list, NULL, &cfg, err, sizeof err), KD_ENOTFOUND);
    assert_non_null(strstr(err, "nope2"));
}

static void test_base64_decoder(void **state)
{
    (void)state;
    char *out;
    size_t n;
    assert_int_equal(kube_base64_decode("aGVs\nbG8=", &out, &n), KD_OK);
    assert_int_equal(n, 5);
    assert_string_equal(out, "hello");
    free(out);
    assert_int_equal(kube_base64_decode("aGVsbG8", &out, &n), KD_OK); /* no padding */
    assert_string_equal(out, "hello");
    free(out);
    assert_int_equal(kube_base64_decode("", &out, &n), KD_OK);
    assert_int_equal(n, 0);
    free(out);
    assert_int_equal(kube_base64_decode("a$b=", &out, &n), KD_EPARSE);
    assert_int_equal(kube_base64_decode("aGVs=bG8", &out, &n), KD_EPARSE);
    assert_int_equal(kube_base64_decode("a", &out, &n), KD_EPARSE);
}

static void test_in_cluster_reads_the_service_account_directory(void **state)
{
    (void)state;
    char sa[300], p[400], err[256] = "";
    snprintf(sa, sizeof sa, "%s/sa", dir);
    snprintf(p, sizeof p, "mkdir -p '%s'", sa);
    assert_int_equal(system(p), 0);
    kube_config cfg;
    /* No token yet: an error naming the token file. */
    assert_int_not_equal(kube_config_in_cluster(sa, "10.0.0.1", "443", &cfg, err, sizeof err),
                         KD_OK);
    assert_non_null(strstr(err, "token"));
    snprintf(p, sizeof p, "%s/token", sa);
    write_file(p, "sa-token\n");
    assert_int_equal(kube_config_in_cluster(sa, "10.0.0.1", "443", &cfg, err, sizeof err),
                     KD_ENOTFOUND); /* no ca.crt */
    assert_non_null(strstr(err, "ca.crt"));
    snprintf(p, sizeof p, "%s/ca.crt", sa);
    write_file(p, "-----BEGIN CERTIFICATE-----\n");
    assert_int_equal(kube_config_in_cluster(sa, "10.0.0.1", "6443", &cfg, err, sizeof err),
                     KD_OK);
    assert_string_equal(cfg.server, "https://10.0.0.1:6443");
    assert_string_equal(cfg.namespace, "default");
    assert_string_equal(cfg.ca_file, p);
    assert_null(cfg.token); /* read per request from token_file, for rotation */
    assert_non_null(strstr(cfg.token_file, "/sa/token"));
    kube_config_clear(&cfg);
    snprintf(p, sizeof p, "%s/namespace", sa);
    write_file(p, "kadet-system\n");
    setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
    setenv("KUBERNETES_SERVICE_PORT", "443", 1);
    assert_int_equal(kube_config_in_cluster(sa, NULL, NULL, &cfg, err, sizeof err), KD_OK);
    assert_string_equal(cfg.server, "https://[fd00::1]:443");
    assert_string_equal(cfg.namespace, "kadet-system");
    kube_config_clear(&cfg);
    setenv("KUBERNETES_SERVICE_PORT", "44x", 1);
    assert_int_equal(kube_config_in_cluster(sa, NULL, NULL, &cfg, err, sizeof err),
                     KD_EFORMAT);
    assert_non_null(strstr(err, "KUBERNETES_SERVICE_PORT"));
    unsetenv("KUBERNETES_SERVICE_HOST");
    unsetenv("KUBERNETES_SERVICE_PORT");
    assert_int_equal(kube_config_in_cluster(sa, NULL, NULL, &cfg, err, sizeof err),
                     KD_ENOTFOUND);
    assert_non_null(strstr(err, "KUBERNETES_SERVICE_HOST"));
}

static void test_auto_uses_the_kubeconfig_outside_a_cluster(void **state)
{
    (void)state;
    write_file(path_a, config_a);
    setenv("KUBECONFIG", path_a, 1);
    unsetenv("KUBERNETES_SERVICE_HOST");
    kube_config cfg;
    char err[256];
    assert_int_equal(kube_config_auto(NULL, &cfg, err, sizeof err), KD_OK);
    assert_string_equal(cfg.context, "dev");
    kube_config_clear(&cfg);
    assert_int_equal(kube_config_auto("prod", &cfg, err, sizeof err), KD_OK);
    assert_string_equal(cfg.context, "prod");
    kube_config_clear(&cfg);
    unsetenv("KUBECONFIG");
}

/* Random byte edits of a valid kubeconfig: loading gives a config or an error naming
 * the file, never a crash (run under ASan/UBSan in CI). */
static void test_mutated_kubeconfigs_never_crash(void **state)
{
    (void)state;
    uint64_t r = 0x2545F4914F6CDD1DULL;
    size_t n = strlen(config_a);
    char *buf = malloc(n + 1);
    int ok = 0;
    for (int iter = 0; iter < 600; iter++) {
        memcpy(buf, config_a, n + 1);
        for (int k = 0; k < 3; k++) {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            size_t at = r % n;
            buf[at] = ":- \n[]{}'\"a1&*!"[(r >> 20) % 15];
        }
        write_file(path_a, buf);
        kube_config cfg;
        char err[512] = "";
        int rc = kube_config_load(path_a, NULL, &cfg, err, sizeof err);
        if (rc == KD_OK) {
            assert_non_null(cfg.server);
            ok++;
            kube_config_clear(&cfg);
        } else {
            assert_non_null(strstr(err, path_a));
            assert_null(cfg.server);
        }
    }
    free(buf);
    assert_true(ok > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_current_context_gives_server_token_and_decoded_ca),
        cmocka_unit_test(test_explicit_context_resolves_relative_paths_against_the_file),
        cmocka_unit_test(test_several_files_merge_first_wins),
        cmocka_unit_test(test_malformed_files_name_the_file_and_the_field),
        cmocka_unit_test(test_missing_files_are_an_error_naming_them),
        cmocka_unit_test(test_base64_decoder),
        cmocka_unit_test(test_in_cluster_reads_the_service_account_directory),
        cmocka_unit_test(test_auto_uses_the_kubeconfig_outside_a_cluster),
        cmocka_unit_test(test_mutated_kubeconfigs_never_crash),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
