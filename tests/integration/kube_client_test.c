/* kube client against the API emulator: CRUD, conflicts and AlreadyExists as typed
 * errors, selectors and pagination, merge patch, the status subresource, delete with
 * propagation, 429/500 retried with Retry-After honoured, retries bounded, and a
 * rotated service-account token picked up without a restart. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kd_error.h"
#include "kd_yaml.h"
#include "kube_harness.h"

static kh_emulator emu;
static kube_client *cli;

static int setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (kh_start(&emu, NULL) != 0) {
        return -1;
    }
    kube_client_options o = {.backoff_base_ms = 20, .backoff_max_ms = 200};
    cli = kh_client(&emu, &o);
    return cli != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    kube_client_free(&cli);
    kh_stop(&emu);
    curl_global_cleanup();
    return 0;
}

static json_t *configmap(const char *name, const char *app, const char *value)
{
    return json_pack("{s:s,s:s,s:{s:s,s:{s:s}},s:{s:s}}", "apiVersion", "v1", "kind",
                     "ConfigMap", "metadata", "name", name, "labels", "app", app, "data",
                     "v", value);
}

static void test_create_get_update_conflict_patch_delete(void **state)
{
    (void)state;
    kube_error e;
    json_t *obj = configmap("cm1", "crud", "1"), *out = NULL;
    assert_int_equal(kube_create(cli, &KUBE_CONFIGMAPS, NULL, obj, &out, &e), KD_OK);
    const char *rv1 = kube_object_rv(out);
    assert_non_null(rv1);
    char rv_created[64];
    snprintf(rv_created, sizeof rv_created, "%s", rv1);
    json_decref(out);

    /* Same name again: AlreadyExists, reason kept. */
    assert_int_equal(kube_create(cli, &KUBE_CONFIGMAPS, NULL, obj, NULL, &e), KD_EEXISTS);
    assert_int_equal(e.http_status, 409);
    assert_string_equal(e.reason, "AlreadyExists");
    json_decref(obj);

    json_t *got = NULL;
    assert_int_equal(kube_get(cli, &KUBE_CONFIGMAPS, "default", "cm1", &got, &e), KD_OK);
    assert_string_equal(json_string_value(json_object_get(json_object_get(got, "data"), "v")),
                        "1");

    /* Update from the fresh copy succeeds; the same stale copy then conflicts. */
    json_t *upd = json_deep_copy(got);
    json_object_set_new(json_object_get(upd, "data"), "v", json_string("2"));
    assert_int_equal(kube_update(cli, &KUBE_CONFIGMAPS, NULL, NULL, NULL, upd, &out, &e), KD_OK);
    assert_string_not_equal(kube_object_rv(out), rv_created);
    json_decref(out);
    json_object_set_new(json_object_get(upd, "data"), "v", json_string("3"));
    assert_int_equal(kube_update(cli, &KUBE_CONFIGMAPS, NULL, NULL, NULL, upd, NULL, &e),
                     KD_ECONFLICT);
    assert_int_equal(e.http_status, 409);
    assert_string_equal(e.reason, "Conflict");
    assert_true(strlen(e.message) > 0);
    json_decref(upd);
    json_decref(got);

    json_t *patch = json_pack("{s:{s:s,s:n}}", "data", "w", "added", "v");
    assert_int_equal(kube_patch(cli, &KUBE_CONFIGMAPS, NULL, "cm1", NULL, patch, &out, &e),
                     KD_OK);
    json_t *data = json_object_get(out, "data");
    assert_string_equal(json_string_value(json_object_get(data, "w")), "added");
    assert_null(json_object_get(data, "v"));
    json_decref(out);
    json_decref(patch);

    kube_delete_opts d = {.propagation = "Foreground", .precondition_rv = "1"};
    assert_int_equal(kube_delete(cli, &KUBE_CONFIGMAPS, NULL, "cm1", &d, NULL, &e), KD_ECONFLICT);
    d.precondition_rv = NULL;
    d.propagation = "Background";
    assert_int_equal(kube_delete(cli, &KUBE_CONFIGMAPS, NULL, "cm1", &d, NULL, &e), KD_OK);
    assert_int_equal(kube_get(cli, &KUBE_CONFIGMAPS, NULL, "cm1", NULL, &e), KD_ENOTFOUND);
    assert_int_equal(e.http_status, 404);
    assert_string_equal(e.reason, "NotFound");
    assert_int_equal(kube_delete(cli, &KUBE_CONFIGMAPS, NULL, "cm1", NULL, NULL, &e),
                     KD_ENOTFOUND);
    /* Names that would change the URL are refused before any request. */
    assert_int_equal(kube_get(cli, &KUBE_CONFIGMAPS, NULL, "a/../b", NULL, &e), KD_EINVAL);
}

static void test_list_selectors_and_pagination(void **state)
{
    (void)state;
    kube_error e;
    char name[32];
    for (int i = 0; i < 7; i++) {
        snprintf(name, sizeof name, "page-%d", i);
        json_t *o = configmap(name, i % 2 ? "odd" : "even", "x");
        assert_int_equal(kube_create(cli, &KUBE_CONFIGMAPS, "default", o, NULL, &e), KD_OK);
        json_decref(o);
    }
    kube_list_opts lo = {.label_selector = "app in (odd,even)", .limit = 3};
    json_t *page = NULL;
    assert_int_equal(kube_list(cli, &KUBE_CONFIGMAPS, "default", &lo, &page, &e), KD_OK);
    assert_int_equal(json_array_size(json_object_get(page, "items")), 3);
    assert_non_null(json_string_value(
        json_object_get(json_object_get(page, "metadata"), "continue")));
    json_decref(page);

    json_t *items = NULL;
    char *rv = NULL;
    assert_int_equal(kube_list_all(cli, &KUBE_CONFIGMAPS, "default", &lo, &items, &rv, &e),
                     KD_OK);
    assert_int_equal(json_array_size(items), 7);
    assert_true(atol(rv) > 0);
    json_decref(items);
    free(rv);

    lo.label_selector = "app=odd";
    assert_int_equal(kube_list_all(cli, &KUBE_CONFIGMAPS, NULL, &lo, &items, &rv, &e), KD_OK);
    assert_int_equal(json_array_size(items), 3);
    json_decref(items);
    free(rv);

    kube_list_opts fo = {.field_selector = "metadata.name=page-4"};
    assert_int_equal(kube_list_all(cli, &KUBE_CONFIGMAPS, NULL, &fo, &items, &rv, &e), KD_OK);
    assert_int_equal(json_array_size(items), 1);
    json_decref(items);
    free(rv);
}

static void test_pod_status_subresource(void **state)
{
    (void)state;
    kube_error e;
    json_t *pod = json_pack("{s:s,s:s,s:{s:s},s:{s:[{s:s,s:s}]}}", "apiVersion", "v1", "kind",
                            "Pod", "metadata", "name", "p1", "spec", "containers", "name",
                            "c", "image", "busybox");
    json_t *out = NULL;
    assert_int_equal(kube_create(cli, &KUBE_PODS, NULL, pod, &out, &e), KD_OK);
    json_decref(pod);
    json_object_set_new(out, "status", json_pack("{s:s}", "phase", "Running"));
    json_t *after = NULL;
    assert_int_equal(kube_update(cli, &KUBE_PODS, NULL, "p1", "status", out, &after, &e), KD_OK);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(after, "status"), "phase")),
        "Running");
    json_decref(after);
    json_decref(out);
    json_t *patch = json_pack("{s:{s:s}}", "status", "phase", "Succeeded");
    assert_int_equal(kube_patch(cli, &KUBE_PODS, NULL, "p1", "status", patch, &after, &e),
                     KD_OK);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(after, "status"), "phase")),
        "Succeeded");
    json_decref(after);
    json_decref(patch);
}

static void test_throttling_and_server_errors_are_retried(void **state)
{
    (void)state;
    kube_error e;
    /* Two 429s with Retry-After: 1 s, then success: three attempts, >= 2 s. */
    assert_int_equal(kh_fault(cli, "{\"failNext\": 2, \"code\": 429, \"retryAfter\": 1}"), 0);
    double t0 = kh_now_ms();
    assert_int_equal(kube_get(cli, &KUBE_NAMESPACES, NULL, "default", NULL, &e), KD_OK);
    double took = kh_now_ms() - t0;
    assert_int_equal(e.attempts, 3);
    assert_true(took >= 1900.0);

    assert_int_equal(kh_fault(cli, "{\"failNext\": 2, \"code\": 500}"), 0);
    assert_int_equal(kube_get(cli, &KUBE_NAMESPACES, NULL, "default", NULL, &e), KD_OK);
    assert_int_equal(e.attempts, 3);

    /* Bounded: more failures than attempts give the typed error. */
    assert_int_equal(kh_fault(cli, "{\"failNext\": 50, \"code\": 503, \"retryAfter\": 0}"), 0);
    assert_int_equal(kube_get(cli, &KUBE_NAMESPACES, NULL, "default", NULL, &e),
                     KD_EUNAVAILABLE);
    assert_int_equal(e.attempts, 5);
    assert_int_equal(e.http_status, 503);
    assert_string_equal(e.reason, "ServiceUnavailable");
    assert_int_equal(kh_fault(cli, "{\"failNext\": 0}"), 0);
    /* Not retried: a 404 is answered after one attempt. */
    assert_int_equal(kube_get(cli, &KUBE_CONFIGMAPS, NULL, "nope", NULL, &e), KD_ENOTFOUND);
    assert_int_equal(e.attempts, 1);
}

static const kube_resource CRDS = {"apiextensions.k8s.io", "v1", "customresourcedefinitions",
                                   0};
static const kube_resource WIDGETS = {"tests.kadet.io", "v1", "widgets", 1};

static json_int_t int_at(json_t *o, const char *a, const char *b)
{
    return json_integer_value(json_object_get(json_object_get(o, a), b));
}

static void test_custom_resource_with_schema_status_and_scale(void **state)
{
    (void)state;
    kube_error e;
    json_t *crd = json_loads(
        "{\"apiVersion\":\"apiextensions.k8s.io/v1\",\"kind\":\"CustomResourceDefinition\","
        "\"metadata\":{\"name\":\"widgets.tests.kadet.io\"},\"spec\":{\"group\":"
        "\"tests.kadet.io\",\"scope\":\"Namespaced\",\"names\":{\"plural\":\"widgets\","
        "\"singular\":\"widget\",\"kind\":\"Widget\",\"listKind\":\"WidgetList\"},"
        "\"versions\":[{\"name\":\"v1\",\"served\":true,\"storage\":true,\"schema\":"
        "{\"openAPIV3Schema\":{\"type\":\"object\",\"properties\":{\"spec\":{\"type\":"
        "\"object\",\"required\":[\"size\"],\"properties\":{\"size\":{\"type\":"
        "\"integer\",\"minimum\":1},\"replicas\":{\"type\":\"integer\"}}},\"status\":"
        "{\"type\":\"object\",\"properties\":{\"replicas\":{\"type\":\"integer\"}}}}}},"
        "\"subresources\":{\"status\":{},\"scale\":{\"specReplicasPath\":"
        "\".spec.replicas\",\"statusReplicasPath\":\".status.replicas\"}}}]}}",
        0, NULL);
    assert_non_null(crd);
    assert_int_equal(kube_create(cli, &CRDS, NULL, crd, NULL, &e), KD_OK);
    json_decref(crd);

    /* The schema is enforced: 422 with the Status' reason. */
    json_t *bad = json_pack("{s:s,s:s,s:{s:s},s:{s:i}}", "apiVersion", "tests.kadet.io/v1",
                            "kind", "Widget", "metadata", "name", "w0", "spec", "size", 0);
    assert_int_equal(kube_create(cli, &WIDGETS, NULL, bad, NULL, &e), KD_EINVALID_OBJECT);
    assert_int_equal(e.http_status, 422);
    assert_string_equal(e.reason, "Invalid");
    assert_non_null(strstr(e.message, "spec.size"));
    json_decref(bad);

    json_t *w = json_pack("{s:s,s:s,s:{s:s},s:{s:i,s:i}}", "apiVersion", "tests.kadet.io/v1",
                          "kind", "Widget", "metadata", "name", "w1", "spec", "size", 2,
                          "replicas", 1);
    json_t *out = NULL;
    assert_int_equal(kube_create(cli, &WIDGETS, NULL, w, &out, &e), KD_OK);
    json_decref(w);
    json_int_t gen = int_at(out, "metadata", "generation");
    json_decref(out);

    json_t *scale = NULL;
    assert_int_equal(kube_get_sub(cli, &WIDGETS, NULL, "w1", "scale", &scale, &e), KD_OK);
    assert_int_equal(int_at(scale, "spec", "replicas"), 1);
    json_object_set_new(json_object_get(scale, "spec"), "replicas", json_integer(3));
    assert_int_equal(kube_update(cli, &WIDGETS, NULL, "w1", "scale", scale, NULL, &e), KD_OK);
    json_decref(scale);

    json_t *st = json_pack("{s:{s:i}}", "status", "replicas", 3);
    assert_int_equal(kube_patch(cli, &WIDGETS, NULL, "w1", "status", st, NULL, &e), KD_OK);
    json_decref(st);
    assert_int_equal(kube_get(cli, &WIDGETS, NULL, "w1", &out, &e), KD_OK);
    assert_int_equal(int_at(out, "spec", "replicas"), 3);
    assert_int_equal(int_at(out, "status", "replicas"), 3);
    /* The spec change through scale bumped the generation once; status did not. */
    assert_int_equal(int_at(out, "metadata", "generation"), gen + 1);
    json_decref(out);
}

/* Writes a kubeconfig into the emulator's directory with the given cluster and user
 * fields (YAML lines, already indented) and GETs a namespace through it. */
static int get_with(const char *file, const char *cluster, const char *user, kube_error *e)
{
    char path[400];
    snprintf(path, sizeof path, "%s/%s", emu.dir, file);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "clusters:\n- name: c\n  cluster:\n    server: %s\n%s"
            "users:\n- name: u\n  user:\n    token: %s\n%s"
            "contexts:\n- name: x\n  context: {cluster: c, user: u}\n"
            "current-context: x\n",
            emu.server, cluster, emu.token, user);
    fclose(f);
    kube_config cfg;
    char err[512];
    int rc = kube_config_load(path, NULL, &cfg, err, sizeof err);
    if (rc != KD_OK) {
        fail_msg("%s", err);
    }
    kube_client *c = NULL;
    assert_int_equal(kube_client_new(&cfg, NULL, &c, err, sizeof err), KD_OK);
    kube_config_clear(&cfg);
    rc = kube_get(c, &KUBE_NAMESPACES, NULL, "default", NULL, e);
    kube_client_free(&c);
    return rc;
}

static void test_tls_settings_from_files_blobs_and_insecure(void **state)
{
    (void)state;
    char cmd[1200];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
             "-nodes -keyout client.key -out client.crt -subj /CN=kadet-test -days 1 "
             ">/dev/null 2>&1 && base64 -w0 client.crt > client.crt.b64 && "
             "base64 -w0 client.key > client.key.b64 && base64 -w0 ca.crt > ca.crt.b64",
             emu.dir);
    assert_int_equal(system(cmd), 0);
    char *crt = NULL, *key = NULL, *ca = NULL;
    size_t n;
    char path[400], err[256];
    snprintf(path, sizeof path, "%s/client.crt.b64", emu.dir);
    assert_int_equal(kd_read_file(path, 0, &crt, &n, err, sizeof err), KD_OK);
    snprintf(path, sizeof path, "%s/client.key.b64", emu.dir);
    assert_int_equal(kd_read_file(path, 0, &key, &n, err, sizeof err), KD_OK);
    snprintf(path, sizeof path, "%s/ca.crt.b64", emu.dir);
    assert_int_equal(kd_read_file(path, 0, &ca, &n, err, sizeof err), KD_OK);
    kube_error e;
    char cl[4096], us[8192];

    /* CA and client certificate as files, relative to the kubeconfig. */
    assert_int_equal(get_with("kc-files", "    certificate-authority: ca.crt\n",
                              "    client-certificate: client.crt\n"
                              "    client-key: client.key\n",
                              &e),
                     KD_OK);
    /* The same as inline data (curl blobs). */
    snprintf(cl, sizeof cl, "    certificate-authority-data: %s\n", ca);
    snprintf(us, sizeof us, "    client-certificate-data: %s\n    client-key-data: %s\n", crt,
             key);
    assert_int_equal(get_with("kc-data", cl, us, &e), KD_OK);
    /* No CA but insecure-skip-tls-verify. */
    assert_int_equal(get_with("kc-insecure", "    insecure-skip-tls-verify: true\n", "", &e),
                     KD_OK);
    /* The wrong CA: a TLS error, not a crash or a silent success. */
    snprintf(cl, sizeof cl, "    certificate-authority-data: %s\n", crt);
    assert_int_equal(get_with("kc-wrong-ca", cl, "", &e), KD_ETLS);
    assert_int_equal(e.http_status, 0);
    assert_true(strlen(e.message) > 0);
    free(crt);
    free(key);
    free(ca);
}

static void *get_many(void *arg)
{
    (void)arg;
    for (int i = 0; i < 25; i++) {
        kube_error e;
        if (kube_get(cli, &KUBE_NAMESPACES, NULL, "default", NULL, &e) != KD_OK) {
            return (void *)1;
        }
    }
    return NULL;
}

static void test_connections_are_reused_across_requests_and_threads(void **state)
{
    (void)state;
    kube_error e;
    assert_int_equal(kube_get(cli, &KUBE_NAMESPACES, NULL, "default", NULL, &e), KD_OK);
    long c0 = kube_client_connections(cli), r0 = kube_client_requests(cli);
    for (int i = 0; i < 30; i++) {
        assert_int_equal(kube_get(cli, &KUBE_NAMESPACES, NULL, "default", NULL, &e), KD_OK);
    }
    assert_int_equal(kube_client_requests(cli) - r0, 30);
    assert_true(kube_client_connections(cli) - c0 <= 1);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        pthread_create(&th[i], NULL, get_many, NULL);
    }
    for (int i = 0; i < 4; i++) {
        void *rc;
        pthread_join(th[i], &rc);
        assert_null(rc);
    }
    /* 130 requests; at most one connection per concurrently used handle. */
    assert_true(kube_client_connections(cli) - c0 <= 5);
    fprintf(stderr, "connections opened for 130 requests: %ld\n",
            kube_client_connections(cli) - c0);
}

static void write_text(const char *path, const char *text)
{
    char tmp[400];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(rename(tmp, path), 0);
}

static void test_rotated_service_account_token_is_picked_up(void **state)
{
    (void)state;
    char sa[300], p[400], cmd[1200];
    snprintf(sa, sizeof sa, "%s/sa", emu.dir);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s/ca.crt' '%s/ca.crt'", sa, emu.dir, sa);
    assert_int_equal(system(cmd), 0);
    snprintf(p, sizeof p, "%s/token", sa);
    write_text(p, "token-one-0001\n");
    assert_int_equal(kh_fault(cli, "{\"tokens\": [\"token-one-0001\"]}"), 0);

    kube_config cfg;
    char err[256];
    assert_int_equal(kube_config_in_cluster(sa, emu.host, emu.port, &cfg, err, sizeof err),
                     KD_OK);
    kube_client *sc = NULL;
    assert_int_equal(kube_client_new(&cfg, NULL, &sc, err, sizeof err), KD_OK);
    kube_config_clear(&cfg);
    kube_error e;
    assert_int_equal(kube_get(sc, &KUBE_NAMESPACES, NULL, "default", NULL, &e), KD_OK);

    /* The server moves to a new token; the file still has the old one: 401, typed. */
    json_t *tok = json_pack("{s:[s]}", "tokens", "token-two-0002");
    assert_int_equal(kube_request(sc, "POST", "/_emulator/faults", NULL, tok, NULL, NULL, &e),
                     KD_OK);
    json_decref(tok);
    assert_int_equal(kube_get(sc, &KUBE_NAMESPACES, NULL, "default", NULL, &e),
                     KD_EUNAUTHORIZED);
    assert_int_equal(e.http_status, 401);

    /* Kubelet rotates the file (atomic rename): the next request uses the new token. */
    write_text(p, "token-two-0002\n");
    assert_int_equal(kube_get(sc, &KUBE_NAMESPACES, NULL, "default", NULL, &e), KD_OK);

    /* A rewrite that stat cannot see (same inode, size and mtime): the 401 makes the
     * client re-read the file and retry once. */
    struct stat before;
    assert_int_equal(stat(p, &before), 0);
    FILE *f = fopen(p, "r+");
    assert_non_null(f);
    fputs("token-six-0006\n", f);
    fclose(f);
    struct timespec times[2] = {before.st_atim, before.st_mtim};
    assert_int_equal(utimensat(AT_FDCWD, p, times, 0), 0);
    tok = json_pack("{s:[s]}", "tokens", "token-six-0006");
    assert_int_equal(kube_request(sc, "POST", "/_emulator/faults", NULL, tok, NULL, NULL, &e),
                     KD_OK);
    json_decref(tok);
    assert_int_equal(kube_get(sc, &KUBE_NAMESPACES, NULL, "default", NULL, &e), KD_OK);
    assert_int_equal(e.attempts, 2);

    /* Restore the emulator's own token for the other tests. */
    char body[200];
    snprintf(body, sizeof body, "{\"tokens\": [\"%s\"]}", emu.token);
    tok = json_loads(body, 0, NULL);
    assert_int_equal(kube_request(sc, "POST", "/_emulator/faults", NULL, tok, NULL, NULL, &e),
                     KD_OK);
    json_decref(tok);
    kube_client_free(&sc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_get_update_conflict_patch_delete),
        cmocka_unit_test(test_list_selectors_and_pagination),
        cmocka_unit_test(test_pod_status_subresource),
        cmocka_unit_test(test_custom_resource_with_schema_status_and_scale),
        cmocka_unit_test(test_throttling_and_server_errors_are_retried),
        cmocka_unit_test(test_rotated_service_account_token_is_picked_up),
        cmocka_unit_test(test_connections_are_reused_across_requests_and_threads),
        cmocka_unit_test(test_tls_settings_from_files_blobs_and_insecure),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
