/* kube_status: API Status answers become typed errors that keep code, reason and
 * message; the watch line decoder survives any chunking, garbage and oversized lines;
 * request paths and queries cannot be subverted by names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_error.h"
#include "kube_internal.h"

static void test_status_codes_map_to_typed_errors(void **state)
{
    (void)state;
    struct {
        long http;
        const char *reason;
        int want;
    } cases[] = {
        {404, "NotFound", KD_ENOTFOUND},     {409, "Conflict", KD_ECONFLICT},
        {409, "AlreadyExists", KD_EEXISTS},  {410, "Expired", KD_EGONE},
        {422, "Invalid", KD_EINVALID_OBJECT}, {429, "TooManyRequests", KD_ETHROTTLED},
        {401, "Unauthorized", KD_EUNAUTHORIZED}, {403, "Forbidden", KD_EFORBIDDEN},
        {400, "BadRequest", KD_EINVAL},      {500, "InternalError", KD_EINTERNAL},
        {503, "ServiceUnavailable", KD_EUNAVAILABLE}, {504, "Timeout", KD_EUNAVAILABLE},
        {418, "", KD_EINVAL},                {599, "", KD_EINTERNAL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[256];
        snprintf(body, sizeof body,
                 "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\","
                 "\"message\":\"pods \\\"x\\\" says %ld\",\"reason\":\"%s\",\"code\":%ld}",
                 cases[i].http, cases[i].reason, cases[i].http);
        kube_error e;
        int rc = kube_status_decode(cases[i].http, body, strlen(body), NULL, &e);
        assert_int_equal(rc, cases[i].want);
        assert_int_equal(e.code, cases[i].want);
        assert_int_equal(e.http_status, cases[i].http);
        assert_string_equal(e.reason, cases[i].reason);
        char msg[64];
        snprintf(msg, sizeof msg, "pods \"x\" says %ld", cases[i].http);
        assert_string_equal(e.message, msg);
    }
}

static void test_retry_after_from_header_or_details(void **state)
{
    (void)state;
    kube_error e;
    const char *body = "{\"kind\":\"Status\",\"reason\":\"TooManyRequests\","
                       "\"details\":{\"retryAfterSeconds\":3}}";
    kube_status_decode(429, body, strlen(body), NULL, &e);
    assert_true(e.retry_after_s == 3.0);
    kube_status_decode(429, body, strlen(body), "7", &e);
    assert_true(e.retry_after_s == 7.0);
    kube_status_decode(503, "", 0, "Wed, 21 Oct 2015 07:28:00 GMT", &e);
    assert_true(e.retry_after_s == 0.0);
    kube_status_decode(503, "", 0, "-5", &e);
    assert_true(e.retry_after_s == 0.0);
    assert_true(kube_error_retryable(KD_ETHROTTLED));
    assert_true(kube_error_retryable(KD_EUNAVAILABLE));
    assert_true(kube_error_retryable(KD_ENETWORK));
    assert_false(kube_error_retryable(KD_ECONFLICT));
    assert_false(kube_error_retryable(KD_ENOTFOUND));
}

static void test_non_status_bodies_still_give_an_error_with_printable_text(void **state)
{
    (void)state;
    kube_error e;
    const char garbage[] = "<html>\x01\x02 bad gateway</html>";
    assert_int_equal(kube_status_decode(502, garbage, sizeof garbage - 1, NULL, &e),
                     KD_EUNAVAILABLE);
    assert_string_equal(e.reason, "");
    assert_string_equal(e.message, "<html>?? bad gateway</html>");
    assert_int_equal(kube_status_decode(404, NULL, 0, NULL, &e), KD_ENOTFOUND);
    assert_string_equal(e.message, "HTTP 404");
    /* Wrong types inside a Status are ignored, not trusted. */
    const char *wrong = "{\"kind\":\"Status\",\"reason\":5,\"message\":[1],"
                        "\"details\":{\"retryAfterSeconds\":\"x\"}}";
    assert_int_equal(kube_status_decode(409, wrong, strlen(wrong), NULL, &e), KD_ECONFLICT);
    assert_string_equal(e.reason, "");
    assert_true(e.retry_after_s == 0.0);
    /* A huge message is cut to the buffer. */
    size_t n = 100000;
    char *big = malloc(n + 64);
    int off = snprintf(big, 64, "{\"message\":\"");
    memset(big + off, 'm', n);
    memcpy(big + off + n, "\"}", 3);
    assert_int_equal(kube_status_decode(500, big, strlen(big), NULL, &e), KD_EINTERNAL);
    assert_int_equal(strlen(e.message), sizeof e.message - 1);
    free(big);
    assert_int_equal(kube_status_decode(500, "{}", 2, NULL, NULL), KD_EINTERNAL);
}

struct lines {
    char got[16][64];
    int n;
    int stop_at; /* return 1 when n reaches this (0 = never) */
};

static int collect(void *ud, const char *line, size_t len)
{
    struct lines *l = ud;
    if (l->n < 16) {
        snprintf(l->got[l->n], sizeof l->got[0], "%.*s", (int)len, line);
    }
    l->n++;
    return l->stop_at != 0 && l->n >= l->stop_at ? 1 : 0;
}

static void test_lines_split_across_any_chunking_decode_the_same(void **state)
{
    (void)state;
    const char *stream = "{\"a\":1}\n{\"b\":22}\r\n\n{\"c\":333}\n{\"tail\"";
    size_t len = strlen(stream);
    for (size_t chunk = 1; chunk <= len; chunk++) {
        kube_linebuf lb;
        kube_linebuf_init(&lb, 1024);
        struct lines l = {.n = 0};
        for (size_t off = 0; off < len; off += chunk) {
            size_t n = len - off < chunk ? len - off : chunk;
            assert_int_equal(kube_linebuf_feed(&lb, stream + off, n, collect, &l), KD_OK);
        }
        assert_int_equal(l.n, 3);
        assert_string_equal(l.got[0], "{\"a\":1}");
        assert_string_equal(l.got[1], "{\"b\":22}");
        assert_string_equal(l.got[2], "{\"c\":333}");
        assert_int_equal(lb.len, strlen("{\"tail\"")); /* kept for the next chunk */
        kube_linebuf_free(&lb);
    }
}

static void test_oversized_lines_are_refused_and_callback_can_stop(void **state)
{
    (void)state;
    kube_linebuf lb;
    kube_linebuf_init(&lb, 16);
    struct lines l = {.n = 0};
    char big[64];
    memset(big, 'x', sizeof big);
    /* Without a newline, across chunks. */
    assert_int_equal(kube_linebuf_feed(&lb, big, 10, collect, &l), KD_OK);
    assert_int_equal(kube_linebuf_feed(&lb, big, 10, collect, &l), KD_ETOOBIG);
    /* Inside one chunk with the newline. */
    char one[40];
    memset(one, 'y', 30);
    one[30] = '\n';
    assert_int_equal(kube_linebuf_feed(&lb, one, 31, collect, &l), KD_ETOOBIG);
    assert_int_equal(l.n, 0);
    /* Exactly the limit is fine. */
    memset(one, 'z', 16);
    one[16] = '\n';
    assert_int_equal(kube_linebuf_feed(&lb, one, 17, collect, &l), KD_OK);
    assert_int_equal(l.n, 1);
    kube_linebuf_free(&lb);
    kube_linebuf_init(&lb, 0);
    struct lines s = {.stop_at = 2};
    assert_int_equal(kube_linebuf_feed(&lb, "a\nb\nc\n", 6, collect, &s), 1);
    assert_int_equal(s.n, 2);
    kube_linebuf_free(&lb);
}

static void test_watch_events_decode_and_garbage_is_an_error(void **state)
{
    (void)state;
    kube_event_type t;
    json_t *o = NULL;
    char err[256];
    const char *ok = "{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"name\":\"p\","
                     "\"namespace\":\"ns\",\"resourceVersion\":\"12\"}}}";
    assert_int_equal(kube_watch_decode(ok, strlen(ok), &t, &o, err, sizeof err), KD_OK);
    assert_int_equal(t, KUBE_MODIFIED);
    assert_string_equal(kube_object_rv(o), "12");
    char key[64];
    assert_int_equal(kube_object_key(o, key, sizeof key), KD_OK);
    assert_string_equal(key, "ns/p");
    assert_int_equal(kube_object_key(o, key, 4), KD_ETOOBIG);
    json_t *node = json_pack("{s:{s:s}}", "metadata", "name", "node-1");
    assert_int_equal(kube_object_key(node, key, sizeof key), KD_OK);
    assert_string_equal(key, "node-1"); /* cluster-scoped: no namespace part */
    json_decref(node);
    json_decref(o);
    const char *bm = "{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{\"resourceVersion\":\"99\"}}}";
    assert_int_equal(kube_watch_decode(bm, strlen(bm), &t, &o, err, sizeof err), KD_OK);
    assert_int_equal(t, KUBE_BOOKMARK);
    assert_int_equal(kube_object_key(o, key, sizeof key), KD_EFORMAT);
    json_decref(o);
    const char *er = "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":410}}";
    assert_int_equal(kube_watch_decode(er, strlen(er), &t, &o, err, sizeof err), KD_OK);
    assert_int_equal(t, KUBE_ERROR);
    json_decref(o);
    const char *bad[] = {
        "not json",
        "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"p\"",
        "{\"type\":1,\"object\":{}}",
        "{\"type\":\"ADDED\",\"object\":[]}",
        "{\"type\":\"EXPLODED\",\"object\":{}}",
        "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"resourceVersion\":5}}}",
        "[]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o = NULL;
        int rc = kube_watch_decode(bad[i], strlen(bad[i]), &t, &o, err, sizeof err);
        assert_true(rc == KD_EPARSE || rc == KD_EFORMAT);
        assert_null(o);
        assert_non_null(strstr(err, "watch event"));
    }
}

static void test_paths_and_queries(void **state)
{
    (void)state;
    char buf[512];
    kube_error e;
    assert_int_equal(kube__path(&KUBE_PODS, "default", "p1", "status", buf, sizeof buf, &e),
                     KD_OK);
    assert_string_equal(buf, "/api/v1/namespaces/default/pods/p1/status");
    assert_int_equal(kube__path(&KUBE_LEASES, "kube-system", NULL, NULL, buf, sizeof buf, &e),
                     KD_OK);
    assert_string_equal(buf, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases");
    assert_int_equal(kube__path(&KUBE_NODES, NULL, "n1", NULL, buf, sizeof buf, &e), KD_OK);
    assert_string_equal(buf, "/api/v1/nodes/n1");
    kube_resource aj = {"kadet.io", "v1alpha1", "agentjobs", 1};
    assert_int_equal(kube__path(&aj, NULL, NULL, NULL, buf, sizeof buf, &e), KD_OK);
    assert_string_equal(buf, "/apis/kadet.io/v1alpha1/agentjobs");
    assert_int_equal(kube__path(&KUBE_PODS, "ns", "../secrets", NULL, buf, sizeof buf, &e),
                     KD_EINVAL);
    assert_non_null(strstr(e.message, "name"));
    assert_int_equal(kube__path(&KUBE_PODS, "a?b", "p", NULL, buf, sizeof buf, &e), KD_EINVAL);
    assert_int_equal(kube__path(&KUBE_PODS, "ns", "..", NULL, buf, sizeof buf, &e), KD_EINVAL);
    assert_int_equal(kube__path(&KUBE_PODS, ".", "p", NULL, buf, sizeof buf, &e), KD_EINVAL);
    assert_int_equal(kube__path(&KUBE_PODS, "ns", "p", NULL, buf, 20, &e), KD_ETOOBIG);
    assert_int_equal(strlen(buf), 7); /* "/api/v1", never past the buffer */
    char longname[254];
    memset(longname, 'a', 253);
    longname[253] = '\0';
    kube_resource wide = {longname, longname, longname, 1};
    char small[1024];
    assert_int_equal(kube__path(&wide, longname, longname, longname, small, sizeof small, &e),
                     KD_ETOOBIG);
    longname[10] = '/';
    assert_int_equal(kube__path(&KUBE_PODS, "ns", longname, NULL, buf, sizeof buf, &e),
                     KD_EINVAL);
    kube_list_opts o = {.label_selector = "app=x,tier in (a,b)",
                        .field_selector = "spec.nodeName=n1",
                        .limit = 100,
                        .continue_token = "abc/+=",
                        .resource_version = "42",
                        .timeout_s = 60};
    assert_int_equal(kube__query(&o, 0, buf, sizeof buf), KD_OK);
    assert_string_equal(buf, "labelSelector=app%3Dx%2Ctier%20in%20%28a%2Cb%29&fieldSelector="
                             "spec.nodeName%3Dn1&limit=100&continue=abc%2F%2B%3D&"
                             "resourceVersion=42");
    assert_int_equal(kube__query(&o, 1, buf, sizeof buf), KD_OK);
    assert_string_equal(buf, "watch=1&allowWatchBookmarks=true&labelSelector=app%3Dx%2Ctier"
                             "%20in%20%28a%2Cb%29&fieldSelector=spec.nodeName%3Dn1&"
                             "resourceVersion=42&timeoutSeconds=60");
    assert_int_equal(kube__query(NULL, 0, buf, sizeof buf), KD_OK);
    assert_string_equal(buf, "");
    assert_int_equal(kube__query(&o, 0, buf, 20), KD_ETOOBIG);
}

static void test_label_selectors_match_like_the_api_server(void **state)
{
    (void)state;
    json_t *o = json_pack("{s:{s:{s:s,s:s,s:s}}}", "metadata", "labels", "app", "kadet",
                          "kadet.io/role", "worker", "tier", "gpu");
    struct {
        const char *sel;
        int want;
    } cases[] = {
        {"", 1},
        {"app=kadet", 1},
        {"app==kadet", 1},
        {"app=other", 0},
        {"app=", 0}, /* an empty value is valid and matches only an empty label */
        {"app!=other", 1},
        {"missing!=x", 1}, /* like the API server: absent keys satisfy != */
        {"app", 1},
        {"missing", 0},
        {"!missing", 1},
        {"!app", 0},
        {"kadet.io/role=worker,app=kadet", 1},
        {"kadet.io/role=worker, app=nope", 0},
        {"tier in (cpu, gpu)", 1},
        {"tier in (cpu)", 0},
        {"tier notin (cpu)", 1},
        {"missing notin (a,b)", 1},
        {"missing in (a,b)", 0},
        {" app = kadet , tier in(gpu) ", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = kube_label_match(o, cases[i].sel);
        if (got != cases[i].want) {
            fail_msg("selector \"%s\": got %d want %d", cases[i].sel, got, cases[i].want);
        }
    }
    const char *bad[] = {"=x", "app=kadet,", "tier in cpu", "tier in (a", "a b",
                         "app=ka det", "app>1", "tier in (a;b)"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (kube_label_match(o, bad[i]) != KD_EPARSE) {
            fail_msg("selector \"%s\" should not parse", bad[i]);
        }
    }
    json_t *nolabels = json_pack("{s:{s:s}}", "metadata", "name", "x");
    assert_int_equal(kube_label_match(nolabels, "app"), 0);
    assert_int_equal(kube_label_match(nolabels, "!app"), 1);
    assert_int_equal(kube_label_match(nolabels, NULL), 1);
    json_decref(nolabels);
    json_decref(o);
}

static int decode_line(void *ud, const char *line, size_t len)
{
    kube_event_type t;
    json_t *o = NULL;
    char err[128];
    int rc = kube_watch_decode(line, len, &t, &o, err, sizeof err);
    if (rc == KD_OK) {
        assert_non_null(o);
        (*(int *)ud)++;
        json_decref(o);
    } else {
        assert_null(o);
        assert_true(rc == KD_EPARSE || rc == KD_EFORMAT);
    }
    return 0;
}

static uint64_t rng = 88172645463325252ULL;

static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* A cheap deterministic fuzz: random byte edits of a valid stream, fed in random
 * chunks, through the line decoder, the event decoder and the Status decoder. Under
 * ASan/UBSan this finds out-of-bounds reads and leaks; here it checks that every
 * outcome is either an event or a typed error. */
static void test_mutated_streams_never_crash(void **state)
{
    (void)state;
    const char *seed =
        "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"p\",\"namespace\":\"n\","
        "\"resourceVersion\":\"1\"},\"spec\":{\"x\":[1,2,{\"y\":null}]}}}\n"
        "{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{\"resourceVersion\":\"2\"}}}\n"
        "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":410,\"reason\":"
        "\"Expired\",\"details\":{\"retryAfterSeconds\":1}}}\n";
    size_t n = strlen(seed);
    char *buf = malloc(n + 64);
    int events_total = 0;
    for (int iter = 0; iter < 8000; iter++) {
        memcpy(buf, seed, n);
        size_t len = n;
        int edits = 1 + (int)(next_rand() % 6);
        for (int k = 0; k < edits; k++) {
            size_t at = next_rand() % len;
            switch (next_rand() % 4) {
            case 0: /* flip a byte */
                buf[at] = (char)(next_rand() & 0xff);
                break;
            case 1: /* drop a byte */
                memmove(buf + at, buf + at + 1, len - at - 1);
                len--;
                break;
            case 2: /* duplicate a byte */
                if (len < n + 60) {
                    memmove(buf + at + 1, buf + at, len - at);
                    len++;
                }
                break;
            default: /* a structural character */
                buf[at] = "{}[]\":,\n\\"[next_rand() % 10];
                break;
            }
        }
        kube_linebuf lb;
        kube_linebuf_init(&lb, 128);
        int events = 0;
        size_t off = 0;
        while (off < len) {
            size_t chunk = 1 + next_rand() % 40;
            if (chunk > len - off) {
                chunk = len - off;
            }
            int rc = kube_linebuf_feed(&lb, buf + off, chunk, decode_line, &events);
            assert_true(rc == KD_OK || rc == KD_ETOOBIG);
            off += chunk;
        }
        kube_linebuf_free(&lb);
        events_total += events;
        kube_error e;
        int rc = kube_status_decode(400 + (long)(next_rand() % 200), buf, len, NULL, &e);
        assert_true(rc < 0);
        assert_true(strlen(e.message) < sizeof e.message);
    }
    free(buf);
    /* Many mutations leave some events intact: the decoder did decode. */
    assert_true(events_total > 400);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_codes_map_to_typed_errors),
        cmocka_unit_test(test_retry_after_from_header_or_details),
        cmocka_unit_test(test_non_status_bodies_still_give_an_error_with_printable_text),
        cmocka_unit_test(test_lines_split_across_any_chunking_decode_the_same),
        cmocka_unit_test(test_oversized_lines_are_refused_and_callback_can_stop),
        cmocka_unit_test(test_watch_events_decode_and_garbage_is_an_error),
        cmocka_unit_test(test_paths_and_queries),
        cmocka_unit_test(test_mutated_streams_never_crash),
        cmocka_unit_test(test_label_selectors_match_like_the_api_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
