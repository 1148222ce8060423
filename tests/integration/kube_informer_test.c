/* informer against the API emulator: after dropped watch connections every change of
 * every object is delivered exactly once and in order (per-object sequences); an
 * expired resourceVersion (410) relists and reports deletes missed in the gap as
 * tombstones; bookmarks advance the resourceVersion; stop is prompt. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "informer.h"
#include "kd_error.h"
#include "kube_harness.h"

static kh_emulator emu;
static kube_client *cli;

#define MAX_OBJ 8
#define MAX_SEQ 128

struct recorder {
    pthread_mutex_t mu;
    informer *inf;                 /* to check the cache from handlers */
    char names[MAX_OBJ][32];
    int seqs[MAX_OBJ][MAX_SEQ];    /* data.seq values in delivery order */
    int nseq[MAX_OBJ];
    int deleted[MAX_OBJ];          /* 0 none, 1 observed, 2 tombstone */
    int cache_mismatch;            /* handler saw a state the cache did not hold */
};

static int slot(struct recorder *r, const char *name)
{
    for (int i = 0; i < MAX_OBJ; i++) {
        if (strcmp(r->names[i], name) == 0) {
            return i;
        }
        if (r->names[i][0] == '\0') {
            snprintf(r->names[i], sizeof r->names[i], "%.31s", name);
            return i;
        }
    }
    return -1;
}

static void record(struct recorder *r, json_t *obj)
{
    const char *name =
        json_string_value(json_object_get(json_object_get(obj, "metadata"), "name"));
    const char *seq = json_string_value(json_object_get(json_object_get(obj, "data"), "seq"));
    char key[128];
    kube_object_key(obj, key, sizeof key);
    json_t *cached = informer_get(r->inf, key);
    pthread_mutex_lock(&r->mu);
    if (cached == NULL) {
        r->cache_mismatch++;
    }
    int i = slot(r, name);
    if (i >= 0 && seq != NULL && r->nseq[i] < MAX_SEQ) {
        r->seqs[i][r->nseq[i]++] = atoi(seq);
    }
    pthread_mutex_unlock(&r->mu);
    json_decref(cached);
}

static void on_add(void *ud, json_t *obj)
{
    record(ud, obj);
}

static void on_update(void *ud, json_t *old_obj, json_t *new_obj)
{
    (void)old_obj;
    record(ud, new_obj);
}

static void on_delete(void *ud, json_t *obj, int unknown)
{
    struct recorder *r = ud;
    const char *name =
        json_string_value(json_object_get(json_object_get(obj, "metadata"), "name"));
    pthread_mutex_lock(&r->mu);
    int i = slot(r, name);
    if (i >= 0) {
        r->deleted[i] = unknown ? 2 : 1;
    }
    pthread_mutex_unlock(&r->mu);
}

static int setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const char *args[] = {"--bookmark-interval", "0.2", NULL};
    if (kh_start(&emu, args) != 0) {
        return -1;
    }
    cli = kh_client(&emu, NULL);
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

static void put_cm(const char *name, const char *app, int seq)
{
    char s[16];
    snprintf(s, sizeof s, "%d", seq);
    kube_error e;
    if (seq == 0) {
        json_t *o = json_pack("{s:s,s:s,s:{s:s,s:{s:s}},s:{s:s}}", "apiVersion", "v1", "kind",
                              "ConfigMap", "metadata", "name", name, "labels", "app", app,
                              "data", "seq", s);
        assert_int_equal(kube_create(cli, &KUBE_CONFIGMAPS, NULL, o, NULL, &e), KD_OK);
        json_decref(o);
    } else {
        json_t *p = json_pack("{s:{s:s}}", "data", "seq", s);
        assert_int_equal(kube_patch(cli, &KUBE_CONFIGMAPS, NULL, name, NULL, p, NULL, &e),
                         KD_OK);
        json_decref(p);
    }
}

static int last_seq(struct recorder *r, int i)
{
    pthread_mutex_lock(&r->mu);
    int v = r->nseq[i] > 0 ? r->seqs[i][r->nseq[i] - 1] : -1;
    pthread_mutex_unlock(&r->mu);
    return v;
}

static void test_dropped_watches_lose_and_repeat_nothing(void **state)
{
    (void)state;
    enum { NOBJ = 5, ROUNDS = 30 };
    char names[NOBJ][32];
    for (int i = 0; i < NOBJ; i++) {
        snprintf(names[i], sizeof names[i], "seq-%d", i);
        put_cm(names[i], "seq", 0);
    }
    struct recorder r;
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.mu, NULL);
    informer_handlers h = {on_add, on_update, on_delete, &r};
    informer_options o = {.label_selector = "app=seq", .backoff_base_ms = 20,
                          .page_size = 2};
    assert_int_equal(informer_new(cli, &KUBE_CONFIGMAPS, &o, &h, &r.inf), KD_OK);
    assert_int_equal(informer_start(r.inf), KD_OK);
    assert_int_equal(informer_wait_synced(r.inf, 10000), KD_OK);
    assert_int_equal(informer_size(r.inf), NOBJ);
    for (int round = 1; round <= ROUNDS; round++) {
        for (int i = 0; i < NOBJ; i++) {
            put_cm(names[i], "seq", round);
        }
        if (round % 6 == 0) {
            informer_stats before, now;
            informer_get_stats(r.inf, &before);
            assert_int_equal(kh_fault(cli, "{\"dropWatches\": true}"), 0);
            /* Let the informer reconnect before the next drop, so that each drop finds
             * a watch to break (on a loaded machine two drops could otherwise fall into
             * one reconnect gap). */
            double until = kh_now_ms() + 5000;
            do {
                kh_sleep_ms(10);
                informer_get_stats(r.inf, &now);
            } while (now.watches <= before.watches && kh_now_ms() < until);
        }
    }
    double deadline = kh_now_ms() + 20000;
    for (int i = 0; i < NOBJ; i++) {
        int idx = -1;
        while (kh_now_ms() < deadline) {
            pthread_mutex_lock(&r.mu);
            idx = slot(&r, names[i]);
            pthread_mutex_unlock(&r.mu);
            if (last_seq(&r, idx) == ROUNDS) {
                break;
            }
            kh_sleep_ms(20);
        }
        assert_int_equal(last_seq(&r, idx), ROUNDS);
    }
    kh_sleep_ms(300); /* anything duplicated late would show up now */
    informer_stop(r.inf);
    for (int i = 0; i < NOBJ; i++) {
        int idx = slot(&r, names[i]);
        if (r.nseq[idx] != ROUNDS + 1) {
            fail_msg("%s: %d deliveries, want %d", names[i], r.nseq[idx], ROUNDS + 1);
        }
        for (int k = 0; k <= ROUNDS; k++) {
            if (r.seqs[idx][k] != k) {
                fail_msg("%s: delivery %d had seq %d", names[i], k, r.seqs[idx][k]);
            }
        }
    }
    assert_int_equal(r.cache_mismatch, 0);
    informer_stats st;
    informer_get_stats(r.inf, &st);
    /* The drops were real reconnects (a drop that lands while the new watch request is
     * still on its way breaks nothing, so not every one of the three is counted)... */
    assert_true(st.watch_errors >= 1);
    assert_int_equal(st.lists, 1);     /* ...resumed from the last version, no relist */
    assert_true(st.watches >= 2);
    informer_free(&r.inf);
    pthread_mutex_destroy(&r.mu);
}

static void test_expired_version_relists_with_tombstones(void **state)
{
    (void)state;
    put_cm("gap-keep", "gap", 0);
    put_cm("gap-del", "gap", 0);
    struct recorder r;
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.mu, NULL);
    informer_handlers h = {on_add, on_update, on_delete, &r};
    /* A slow reconnect leaves a window in which the test changes things unseen. */
    informer_options o = {.label_selector = "app=gap", .backoff_base_ms = 1500,
                          .backoff_max_ms = 1500};
    assert_int_equal(informer_new(cli, &KUBE_CONFIGMAPS, &o, &h, &r.inf), KD_OK);
    assert_int_equal(informer_start(r.inf), KD_OK);
    assert_int_equal(informer_wait_synced(r.inf, 10000), KD_OK);
    /* The watch must be open (a bookmark arrived on it) before it is dropped. */
    informer_stats st;
    for (int i = 0; i < 500; i++) {
        informer_get_stats(r.inf, &st);
        if (st.bookmarks > 0) {
            break;
        }
        kh_sleep_ms(10);
    }
    assert_true(st.bookmarks > 0);
    assert_int_equal(kh_fault(cli, "{\"dropWatches\": true}"), 0);
    kube_error e;
    assert_int_equal(kube_delete(cli, &KUBE_CONFIGMAPS, NULL, "gap-del", NULL, NULL, &e), KD_OK);
    put_cm("gap-keep", "gap", 1);
    put_cm("gap-new", "gap", 0);
    assert_int_equal(kh_fault(cli, "{\"expireNow\": true}"), 0);
    double deadline = kh_now_ms() + 15000;
    int i_del, i_keep, i_new;
    for (;;) {
        pthread_mutex_lock(&r.mu);
        i_del = slot(&r, "gap-del");
        i_keep = slot(&r, "gap-keep");
        i_new = slot(&r, "gap-new");
        int done = r.deleted[i_del] != 0 && r.nseq[i_new] > 0 && r.nseq[i_keep] >= 2;
        pthread_mutex_unlock(&r.mu);
        if (done || kh_now_ms() > deadline) {
            break;
        }
        kh_sleep_ms(20);
    }
    informer_stop(r.inf);
    assert_int_equal(r.deleted[i_del], 2); /* tombstone: final state unknown */
    assert_int_equal(r.nseq[i_keep], 2);
    assert_int_equal(r.seqs[i_keep][1], 1);
    assert_int_equal(r.nseq[i_new], 1);
    assert_int_equal(r.deleted[i_keep], 0);
    informer_get_stats(r.inf, &st);
    assert_true(st.gone >= 1);
    assert_true(st.lists >= 2);
    assert_int_equal(st.tombstones, 1);
    assert_null(informer_get(r.inf, "default/gap-del"));
    json_t *keep = informer_get(r.inf, "default/gap-keep");
    assert_non_null(keep);
    json_decref(keep);
    json_t *all = informer_list(r.inf);
    assert_int_equal(json_array_size(all), 2);
    json_decref(all);
    json_t *sel = informer_select(r.inf, "default", "app in (gap,other)");
    assert_int_equal(json_array_size(sel), 2);
    json_decref(sel);
    sel = informer_select(r.inf, "elsewhere", NULL);
    assert_int_equal(json_array_size(sel), 0);
    json_decref(sel);
    assert_null(informer_select(r.inf, NULL, "app in ("));
    informer_free(&r.inf);
    pthread_mutex_destroy(&r.mu);
}

static void test_bookmarks_advance_version_and_stop_is_prompt(void **state)
{
    (void)state;
    informer_options o = {.label_selector = "app=nothing-here"};
    informer *inf = NULL;
    assert_int_equal(informer_new(cli, &KUBE_CONFIGMAPS, &o, NULL, &inf), KD_OK);
    assert_int_equal(informer_start(inf), KD_OK);
    assert_int_equal(informer_start(inf), KD_EINVAL);
    assert_int_equal(informer_wait_synced(inf, 10000), KD_OK);
    assert_true(informer_has_synced(inf));
    char rv0[64], rv1[64];
    informer_last_rv(inf, rv0, sizeof rv0);
    put_cm("elsewhere", "other", 0); /* moves the global version, not this informer's set */
    kh_sleep_ms(1000);
    informer_last_rv(inf, rv1, sizeof rv1);
    assert_true(atol(rv1) > atol(rv0));
    informer_stats st;
    informer_get_stats(inf, &st);
    assert_true(st.bookmarks >= 1);
    assert_int_equal(st.events, 0);
    double t0 = kh_now_ms();
    informer_stop(inf);
    assert_true(kh_now_ms() - t0 < 1000.0);
    informer_stop(inf);
    informer_free(&inf);
    informer_free(&inf);
}

static void test_failing_list_is_retried_until_synced(void **state)
{
    (void)state;
    kube_client_options co = {.max_attempts = 1};
    kube_client *once = kh_client(&emu, &co);
    assert_non_null(once);
    assert_int_equal(kh_fault(cli, "{\"failNext\": 3, \"code\": 500}"), 0);
    informer_options o = {.label_selector = "app=seq", .backoff_base_ms = 20};
    informer *inf = NULL;
    assert_int_equal(informer_new(once, &KUBE_CONFIGMAPS, &o, NULL, &inf), KD_OK);
    assert_int_equal(informer_start(inf), KD_OK);
    assert_int_equal(informer_wait_synced(inf, 10000), KD_OK);
    assert_int_equal(informer_size(inf), 5);
    informer_free(&inf);
    kube_client_free(&once);
}

/* The transform drops data.drop (and counts its calls) */
static void drop_member(json_t *obj, void *ud)
{
    (*(int *)ud)++;
    json_object_del(json_object_get(obj, "data"), "drop");
}

static void put_tf(const char *name)
{
    kube_error e;
    json_t *o = json_pack("{s:s,s:s,s:{s:s,s:{s:s}},s:{s:s,s:s}}", "apiVersion", "v1", "kind",
                          "ConfigMap", "metadata", "name", name, "labels", "app", "tf", "data",
                          "keep", "k", "drop", "a large member the cache does not need");
    assert_int_equal(kube_create(cli, &KUBE_CONFIGMAPS, NULL, o, NULL, &e), KD_OK);
    json_decref(o);
}

static void assert_transformed(informer *inf, const char *key)
{
    json_t *o = informer_get(inf, key);
    assert_non_null(o);
    json_t *data = json_object_get(o, "data");
    assert_string_equal(json_string_value(json_object_get(data, "keep")), "k");
    assert_null(json_object_get(data, "drop"));
    json_decref(o);
}

static void test_transform_applies_to_listed_and_watched_objects(void **state)
{
    (void)state;
    int calls = 0;
    put_tf("tf-listed");
    informer_options o = {.label_selector = "app=tf", .transform = drop_member,
                          .transform_ud = &calls};
    informer *inf = NULL;
    assert_int_equal(informer_new(cli, &KUBE_CONFIGMAPS, &o, NULL, &inf), KD_OK);
    assert_int_equal(informer_start(inf), KD_OK);
    assert_int_equal(informer_wait_synced(inf, 10000), KD_OK);
    assert_transformed(inf, "default/tf-listed");
    put_tf("tf-watched");
    double t0 = kh_now_ms();
    while (informer_size(inf) < 2 && kh_now_ms() - t0 < 10000.0)
        kh_sleep_ms(20);
    assert_int_equal(informer_size(inf), 2);
    assert_transformed(inf, "default/tf-watched");
    informer_free(&inf);
    assert_true(calls >= 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dropped_watches_lose_and_repeat_nothing),
        cmocka_unit_test(test_expired_version_relists_with_tombstones),
        cmocka_unit_test(test_bookmarks_advance_version_and_stop_is_prompt),
        cmocka_unit_test(test_failing_list_is_retried_until_synced),
        cmocka_unit_test(test_transform_applies_to_listed_and_watched_objects),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
