/* kube_backoff: delays grow by the factor up to the cap, jitter only ever shortens a
 * delay and by at most the jitter fraction, and reset starts over. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kube_backoff.h"

static void test_delay_doubles_until_the_cap(void **state)
{
    (void)state;
    assert_true(kube_backoff_delay(100, 5000, 2, 0) == 100);
    assert_true(kube_backoff_delay(100, 5000, 2, 1) == 200);
    assert_true(kube_backoff_delay(100, 5000, 2, 5) == 3200);
    assert_true(kube_backoff_delay(100, 5000, 2, 6) == 5000);
    assert_true(kube_backoff_delay(100, 5000, 2, 100000) == 5000);
}

static void test_without_jitter_the_sequence_is_exact_and_reset_restarts(void **state)
{
    (void)state;
    kube_backoff b;
    kube_backoff_init(&b, 10, 80, 2, 0, 42);
    double want[] = {10, 20, 40, 80, 80};
    for (int i = 0; i < 5; i++) {
        assert_true(kube_backoff_next(&b) == want[i]);
    }
    kube_backoff_reset(&b);
    assert_true(kube_backoff_next(&b) == 10);
}

static void test_jitter_stays_within_bounds_and_spreads(void **state)
{
    (void)state;
    kube_backoff b;
    kube_backoff_init(&b, 100, 1000, 2, 0.5, 7);
    double lo = 1e9, hi = 0;
    for (int i = 0; i < 20000; i++) {
        kube_backoff_reset(&b);
        kube_backoff_next(&b);
        kube_backoff_next(&b);
        double d = kube_backoff_next(&b); /* attempt 2: nominal 400 */
        assert_true(d >= 200.0 && d <= 400.0);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    /* The draws cover most of the allowed range. */
    assert_true(lo < 210.0);
    assert_true(hi > 390.0);
}

static void test_capped_delays_never_exceed_the_cap(void **state)
{
    (void)state;
    kube_backoff b;
    kube_backoff_init(&b, 50, 300, 3, 1.0, 0);
    for (int i = 0; i < 1000; i++) {
        double d = kube_backoff_next(&b);
        assert_true(d >= 0.0 && d <= 300.0);
    }
}

static void test_different_seeds_give_different_jitter(void **state)
{
    (void)state;
    kube_backoff a, b;
    kube_backoff_init(&a, 1000, 1000, 2, 0.5, 1);
    kube_backoff_init(&b, 1000, 1000, 2, 0.5, 2);
    int same = 0;
    for (int i = 0; i < 10; i++) {
        same += kube_backoff_next(&a) == kube_backoff_next(&b);
    }
    assert_true(same < 10);
}

static void test_bad_parameters_are_sanitised(void **state)
{
    (void)state;
    kube_backoff b;
    kube_backoff_init(&b, 100, 10, 0.5, 7.0, 3); /* cap < base, factor < 1, jitter > 1 */
    assert_true(b.cap_ms == 100 && b.factor == 2.0 && b.jitter == 1.0);
    uint64_t s = 0;
    double r = kube_rand01(&s);
    assert_true(r >= 0.0 && r < 1.0 && s != 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delay_doubles_until_the_cap),
        cmocka_unit_test(test_without_jitter_the_sequence_is_exact_and_reset_restarts),
        cmocka_unit_test(test_jitter_stays_within_bounds_and_spreads),
        cmocka_unit_test(test_capped_delays_never_exceed_the_cap),
        cmocka_unit_test(test_different_seeds_give_different_jitter),
        cmocka_unit_test(test_bad_parameters_are_sanitised),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
