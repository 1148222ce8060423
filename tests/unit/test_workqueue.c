/* wq: the work queue's guarantees: de-duplication, one key never handled by two
 * workers at once, re-queue of keys added while processed, per-key exponential backoff
 * and forget, delayed adds in time order, and a shutdown that wakes every waiter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kd_clock.h"
#include "kd_error.h"
#include "wq.h"

static char *must_get(wq *q)
{
    char *k = NULL;
    assert_int_equal(wq_get_timed(q, &k, 2000), KD_OK);
    return k;
}

static void test_duplicate_adds_are_handed_out_once(void **state)
{
    (void)state;
    wq *q;
    assert_int_equal(wq_new(NULL, &q), KD_OK);
    assert_int_equal(wq_add(q, "a"), KD_OK);
    assert_int_equal(wq_add(q, "b"), KD_OK);
    assert_int_equal(wq_add(q, "a"), KD_OK);
    assert_int_equal(wq_len(q), 2);
    char *k = must_get(q);
    assert_string_equal(k, "a");
    wq_done(q, k);
    free(k);
    k = must_get(q);
    assert_string_equal(k, "b");
    wq_done(q, k);
    free(k);
    assert_int_equal(wq_get_timed(q, &k, 20), KD_ETIMEOUT);
    assert_null(k);
    wq_free(&q);
    assert_null(q);
}

static void test_key_added_while_processing_is_requeued_after_done(void **state)
{
    (void)state;
    wq *q;
    assert_int_equal(wq_new(NULL, &q), KD_OK);
    wq_add(q, "x");
    char *k = must_get(q);
    /* Added twice while processed: not handed out now, once after done. */
    wq_add(q, "x");
    wq_add(q, "x");
    assert_int_equal(wq_len(q), 0);
    char *other = NULL;
    assert_int_equal(wq_get_timed(q, &other, 20), KD_ETIMEOUT);
    wq_done(q, k);
    free(k);
    assert_int_equal(wq_len(q), 1);
    k = must_get(q);
    assert_string_equal(k, "x");
    wq_done(q, k);
    free(k);
    assert_int_equal(wq_len(q), 0);
    wq_free(&q);
}

struct stress {
    wq *q;
    atomic_int active[8];   /* workers currently holding key i */
    atomic_int violations;
    atomic_int handled;
};

static void *worker(void *arg)
{
    struct stress *s = arg;
    char *k;
    while (wq_get(s->q, &k) == KD_OK) {
        int i = k[1] - '0';
        if (atomic_fetch_add(&s->active[i], 1) != 0) {
            atomic_fetch_add(&s->violations, 1);
        }
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
        atomic_fetch_sub(&s->active[i], 1);
        atomic_fetch_add(&s->handled, 1);
        wq_done(s->q, k);
        free(k);
    }
    return NULL;
}

static void test_no_key_is_processed_by_two_workers_at_once(void **state)
{
    (void)state;
    struct stress s;
    memset(&s, 0, sizeof s);
    assert_int_equal(wq_new(NULL, &s.q), KD_OK);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        pthread_create(&th[i], NULL, worker, &s);
    }
    char key[4];
    for (int n = 0; n < 4000; n++) {
        snprintf(key, sizeof key, "k%d", n % 8);
        wq_add(s.q, key);
        if (n % 64 == 0) {
            struct timespec ts = {0, 100000};
            nanosleep(&ts, NULL);
        }
    }
    /* Let the workers drain, then stop them. */
    for (int i = 0; i < 200 && (wq_len(s.q) > 0); i++) {
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    wq_shutdown(s.q);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
    }
    assert_int_equal(atomic_load(&s.violations), 0);
    /* De-duplication: far fewer syncs than adds, but every key at least once. */
    assert_true(atomic_load(&s.handled) >= 8);
    assert_true(atomic_load(&s.handled) <= 4000);
    wq_free(&s.q);
}

static void test_rate_limited_delay_doubles_per_failure_and_forget_resets(void **state)
{
    (void)state;
    wq_options o = {.base_delay_ms = 10, .max_delay_ms = 60};
    wq *q;
    assert_int_equal(wq_new(&o, &q), KD_OK);
    assert_true(wq_rate_delay_ms(q, 0) == 10);
    assert_true(wq_rate_delay_ms(q, 1) == 20);
    assert_true(wq_rate_delay_ms(q, 2) == 40);
    assert_true(wq_rate_delay_ms(q, 3) == 60);
    assert_true(wq_rate_delay_ms(q, 30) == 60);
    double expect[] = {10, 20, 40};
    for (int i = 0; i < 3; i++) {
        double t0 = kd_mono_ms();
        assert_int_equal(wq_add_rate_limited(q, "job"), KD_OK);
        assert_int_equal(wq_len(q), 0);
        assert_int_equal(wq_delayed_len(q), 1);
        char *k = must_get(q);
        double waited = kd_mono_ms() - t0;
        assert_string_equal(k, "job");
        assert_true(waited >= expect[i] - 1.0);
        wq_done(q, k);
        free(k);
        assert_int_equal(wq_num_requeues(q, "job"), i + 1);
    }
    wq_forget(q, "job");
    assert_int_equal(wq_num_requeues(q, "job"), 0);
    /* Back to the base delay (10 ms, not 60): it comes out before a key delayed 40 ms,
     * whatever the machine's load. */
    wq_add_rate_limited(q, "job");
    wq_add_after(q, "marker", 40);
    char *k = must_get(q);
    assert_string_equal(k, "job");
    wq_done(q, k);
    free(k);
    k = must_get(q);
    assert_string_equal(k, "marker");
    wq_done(q, k);
    free(k);
    wq_free(&q);
}

static void test_delayed_adds_come_out_in_time_order(void **state)
{
    (void)state;
    wq *q;
    assert_int_equal(wq_new(NULL, &q), KD_OK);
    wq_add_after(q, "third", 90);
    wq_add_after(q, "first", 30);
    wq_add_after(q, "second", 60);
    wq_add(q, "now");
    const char *want[] = {"now", "first", "second", "third"};
    for (int i = 0; i < 4; i++) {
        char *k = must_get(q);
        assert_string_equal(k, want[i]);
        wq_done(q, k);
        free(k);
    }
    wq_free(&q);
}

static void test_delayed_key_added_twice_keeps_the_earlier_time(void **state)
{
    (void)state;
    wq *q;
    assert_int_equal(wq_new(NULL, &q), KD_OK);
    double t0 = kd_mono_ms();
    wq_add_after(q, "k", 5000);
    wq_add_after(q, "k", 20);
    wq_add_after(q, "k", 3000);
    assert_int_equal(wq_delayed_len(q), 1);
    char *k = must_get(q);
    assert_true(kd_mono_ms() - t0 < 1000);
    wq_done(q, k);
    free(k);
    assert_int_equal(wq_delayed_len(q), 0);
    assert_int_equal(wq_get_timed(q, &k, 30), KD_ETIMEOUT);
    wq_free(&q);
}

static void *blocked_get(void *arg)
{
    wq *q = arg;
    char *k = NULL;
    intptr_t rc = wq_get(q, &k);
    free(k);
    return (void *)rc;
}

static void test_shutdown_wakes_waiters_and_refuses_adds(void **state)
{
    (void)state;
    wq *q;
    assert_int_equal(wq_new(NULL, &q), KD_OK);
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        pthread_create(&th[i], NULL, blocked_get, q);
    }
    struct timespec ts = {0, 30000000};
    nanosleep(&ts, NULL);
    wq_shutdown(q);
    for (int i = 0; i < 3; i++) {
        void *rc;
        pthread_join(th[i], &rc);
        assert_int_equal((intptr_t)rc, KD_ESHUTDOWN);
    }
    assert_true(wq_shutting_down(q));
    assert_int_equal(wq_add(q, "late"), KD_ESHUTDOWN);
    assert_int_equal(wq_add_after(q, "late", 10), KD_ESHUTDOWN);
    assert_int_equal(wq_add_rate_limited(q, "late"), KD_ESHUTDOWN);
    wq_free(&q);
}

static void test_keys_queued_before_shutdown_are_still_handed_out(void **state)
{
    (void)state;
    wq *q;
    assert_int_equal(wq_new(NULL, &q), KD_OK);
    wq_add(q, "a");
    wq_add(q, "b");
    wq_add_after(q, "later", 10000);
    wq_shutdown(q);
    char *k = NULL;
    assert_int_equal(wq_get(q, &k), KD_OK);
    assert_string_equal(k, "a");
    wq_done(q, k);
    free(k);
    assert_int_equal(wq_get(q, &k), KD_OK);
    assert_string_equal(k, "b");
    wq_done(q, k);
    free(k);
    assert_int_equal(wq_get(q, &k), KD_ESHUTDOWN);
    assert_null(k);
    wq_free(&q); /* frees the pending delayed key too */
    wq_free(&q); /* NULL is fine */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duplicate_adds_are_handed_out_once),
        cmocka_unit_test(test_key_added_while_processing_is_requeued_after_done),
        cmocka_unit_test(test_no_key_is_processed_by_two_workers_at_once),
        cmocka_unit_test(test_rate_limited_delay_doubles_per_failure_and_forget_resets),
        cmocka_unit_test(test_delayed_adds_come_out_in_time_order),
        cmocka_unit_test(test_delayed_key_added_twice_keeps_the_earlier_time),
        cmocka_unit_test(test_shutdown_wakes_waiters_and_refuses_adds),
        cmocka_unit_test(test_keys_queued_before_shutdown_are_still_handed_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
