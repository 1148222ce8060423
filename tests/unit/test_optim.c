/* kd_optim: SGD (plain, with momentum and weight decay) and Adam updates match values
 * computed by hand with PyTorch's formulas; schedules give the documented learning rate
 * at chosen points; state sizes and reset behave as the header says. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <string.h>
#include <cmocka.h>

#include "kd_error.h"
#include "kd_optim.h"

#define assert_close(a, b, tol)                                                            \
    do {                                                                                   \
        double a_ = (a), b_ = (b);                                                         \
        if (fabs(a_ - b_) > (tol))                                                         \
            fail_msg("%s = %.9g, expected %.9g", #a, a_, b_);                              \
    } while (0)

static void test_plain_sgd_keeps_no_state(void **state)
{
    (void)state;
    kd_optim_config c;
    kd_optim_config_default(&c, KD_OPTIM_SGD);
    kd_optim o;
    char err[128];
    assert_int_equal(kd_optim_init(&o, &c, 2, err, sizeof err), KD_OK);
    assert_int_equal(o.state_len, 0);
    float p[2] = {2.0f, -1.0f}, g[2] = {1.0f, -4.0f};
    kd_optim_step(&o, p, g, 0.1f);
    assert_close(p[0], 1.9, 1e-6);
    assert_close(p[1], -0.6, 1e-6);
    kd_optim_free(&o);
}

static void test_sgd_momentum_and_weight_decay_by_hand(void **state)
{
    (void)state;
    kd_optim_config c;
    kd_optim_config_default(&c, KD_OPTIM_SGD);
    c.momentum = 0.9f;
    c.weight_decay = 0.1f;
    kd_optim o;
    char err[128];
    assert_int_equal(kd_optim_init(&o, &c, 1, err, sizeof err), KD_OK);
    assert_int_equal(o.state_len, 1);
    float p = 1.0f, g = 0.2f;
    /* step 1: v = g + wd p = 0.3 (buffer starts as the gradient); p = 1 - 0.5 * 0.3 */
    kd_optim_step(&o, &p, &g, 0.5f);
    assert_close(o.state[0], 0.3, 1e-6);
    assert_close(p, 0.85, 1e-6);
    /* step 2: g' = 0.4 + 0.1 * 0.85 = 0.485; v = 0.9 * 0.3 + 0.485 = 0.755 */
    g = 0.4f;
    kd_optim_step(&o, &p, &g, 0.5f);
    assert_close(o.state[0], 0.755, 1e-6);
    assert_close(p, 0.4725, 1e-6);
    assert_int_equal(o.t, 2);
    kd_optim_reset(&o);
    assert_int_equal(o.t, 0);
    assert_true(o.state[0] == 0.0f);
    kd_optim_free(&o);
}

static void test_adam_two_steps_by_hand(void **state)
{
    (void)state;
    kd_optim_config c;
    kd_optim_config_default(&c, KD_OPTIM_ADAM);
    kd_optim o;
    char err[128];
    assert_int_equal(kd_optim_init(&o, &c, 1, err, sizeof err), KD_OK);
    assert_int_equal(o.state_len, 2);
    float p = 1.0f, g = 0.5f;
    /* m = 0.05, v = 0.00025, m^ = 0.5, v^ = 0.25: p -= 0.1 * 0.5 / 0.5 */
    kd_optim_step(&o, &p, &g, 0.1f);
    assert_close(o.state[0], 0.05, 1e-7);
    assert_close(o.state[1], 0.00025, 1e-8);
    assert_close(p, 0.9, 1e-6);
    /* m = -0.005, v = 0.00049975, m^ = -0.005/0.19, v^ = 0.00049975/0.001999 = 0.25 */
    g = -0.5f;
    kd_optim_step(&o, &p, &g, 0.1f);
    assert_close(o.state[0], -0.005, 1e-7);
    assert_close(o.state[1], 0.00049975, 1e-8);
    assert_close(p, 0.9 + 0.1 * (0.005 / 0.19) / 0.5, 2e-6);
    kd_optim_free(&o);
}

/* kd_optim_step_range_sum (the deferred two-rank swap): the update from grads + peer, the
 * peer's values read at an odd address, is bit for bit the update from the sum stored
 * first, for every optimizer and both momentum steps, across ranges of 1024-element
 * blocks and an uneven tail. */
static void test_step_with_the_peer_sum_equals_step_on_the_sum(void **state)
{
    (void)state;
    enum { N = 2500 };
    static float pa[N], pb[N], g[N], h[N], sum[N];
    static unsigned char raw[4 * N + 1];
    kd_optim_config cfgs[4];
    kd_optim_config_default(&cfgs[0], KD_OPTIM_SGD);
    kd_optim_config_default(&cfgs[1], KD_OPTIM_SGD);
    cfgs[1].momentum = 0.9f;
    cfgs[1].weight_decay = 1e-4f;
    kd_optim_config_default(&cfgs[2], KD_OPTIM_ADAM);
    cfgs[3] = cfgs[1];
    cfgs[3].weight_decay = 0.0f;
    for (int k = 0; k < 4; k++) {
        kd_optim a, b;
        char err[128];
        assert_int_equal(kd_optim_init(&a, &cfgs[k], N, err, sizeof err), KD_OK);
        assert_int_equal(kd_optim_init(&b, &cfgs[k], N, err, sizeof err), KD_OK);
        for (size_t i = 0; i < N; i++)
            pa[i] = pb[i] = (float)sin((double)i) * 0.3f;
        for (int step = 0; step < 3; step++) {
            for (size_t i = 0; i < N; i++) {
                g[i] = (float)cos((double)(i * 7 + (size_t)step)) * 0.01f;
                h[i] = (float)sin((double)(i * 3 + (size_t)step)) * 0.013f;
                sum[i] = g[i] + h[i];
            }
            memcpy(raw + 1, h, sizeof h);
            kd_optim_step(&a, pa, sum, 0.05f);
            kd_optim_step_range_sum(&b, pb, g, raw + 1, 0.05f, 0, 1500);
            kd_optim_step_range_sum(&b, pb, g, raw + 1 + 4 * 1500, 0.05f, 1500, N - 1500);
            kd_optim_advance(&b);
            assert_memory_equal(pa, pb, sizeof pa);
            assert_memory_equal(a.state, b.state, a.state_len * sizeof(float));
        }
        kd_optim_free(&a);
        kd_optim_free(&b);
    }
}

/* The elastic scale's ramp, as coordinator and workers evaluate it. */
static void test_lr_ramp_endpoints_and_midpoint(void **state)
{
    (void)state;
    assert_true(kd_lr_ramp(1.0, 3.0, 100, 50, 0) == 1.0);    /* before the ramp */
    assert_true(kd_lr_ramp(1.0, 3.0, 100, 50, 100) == 1.0);  /* its first step */
    assert_close(kd_lr_ramp(1.0, 3.0, 100, 50, 125), 2.0, 1e-12);
    assert_true(kd_lr_ramp(1.0, 3.0, 100, 50, 150) == 3.0);  /* done */
    assert_true(kd_lr_ramp(4.0, 2.0, 10, 0, 10) == 2.0);     /* no ramp: at once */
    assert_close(kd_lr_ramp(4.0, 2.0, 10, 4, 11), 3.5, 1e-12); /* down as well */
}

static void test_invalid_configs_are_refused(void **state)
{
    (void)state;
    kd_optim_config c;
    kd_optim o;
    char err[128];
    kd_optim_config_default(&c, KD_OPTIM_SGD);
    c.momentum = 1.0f;
    assert_int_equal(kd_optim_init(&o, &c, 4, err, sizeof err), KD_EINVAL);
    assert_non_null(strstr(err, "momentum"));
    kd_optim_config_default(&c, KD_OPTIM_SGD);
    c.weight_decay = -1.0f;
    assert_int_equal(kd_optim_init(&o, &c, 4, err, sizeof err), KD_EINVAL);
    kd_optim_config_default(&c, KD_OPTIM_ADAM);
    c.epsilon = 0.0f;
    assert_int_equal(kd_optim_init(&o, &c, 4, err, sizeof err), KD_EINVAL);
    kd_optim_free(&o);
    kd_optim_free(NULL);
}

static void test_cosine_schedule_with_and_without_warmup(void **state)
{
    (void)state;
    kd_lr_schedule s = {.type = KD_LR_COSINE, .base_lr = 0.1f};
    assert_close(kd_lr_at(&s, 0, 10), 0.1, 1e-7);
    assert_close(kd_lr_at(&s, 5, 10), 0.05, 1e-7);
    assert_close(kd_lr_at(&s, 10, 10), 0.0, 1e-7);
    assert_close(kd_lr_at(&s, 12, 10), 0.0, 1e-7);
    s.min_lr = 0.01f;
    assert_close(kd_lr_at(&s, 10, 10), 0.01, 1e-7);
    assert_close(kd_lr_at(&s, 5, 10), 0.055, 1e-7);
    s.min_lr = 0.0f;
    s.warmup_epochs = 1.0;
    assert_close(kd_lr_at(&s, 0, 10), 0.01, 1e-7);
    assert_close(kd_lr_at(&s, 0.5, 10), 0.055, 1e-7);
    assert_close(kd_lr_at(&s, 1, 10), 0.1, 1e-7);
    assert_close(kd_lr_at(&s, 5.5, 10), 0.05, 1e-7);
    assert_string_equal(kd_lr_schedule_name(KD_LR_COSINE), "cosine");
}

static void test_step_and_constant_schedules(void **state)
{
    (void)state;
    kd_lr_schedule s = {.type = KD_LR_STEP, .base_lr = 0.1f, .step_epochs = 2, .gamma = 0.5f};
    assert_close(kd_lr_at(&s, 1.9, 10), 0.1, 1e-7);
    assert_close(kd_lr_at(&s, 2.0, 10), 0.05, 1e-7);
    assert_close(kd_lr_at(&s, 4.5, 10), 0.025, 1e-7);
    kd_lr_schedule k = {.type = KD_LR_CONSTANT, .base_lr = 0.3f};
    assert_close(kd_lr_at(&k, 0, 10), 0.3, 1e-7);
    assert_close(kd_lr_at(&k, 9.99, 10), 0.3, 1e-7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_sgd_keeps_no_state),
        cmocka_unit_test(test_sgd_momentum_and_weight_decay_by_hand),
        cmocka_unit_test(test_adam_two_steps_by_hand),
        cmocka_unit_test(test_step_with_the_peer_sum_equals_step_on_the_sum),
        cmocka_unit_test(test_lr_ramp_endpoints_and_midpoint),
        cmocka_unit_test(test_invalid_configs_are_refused),
        cmocka_unit_test(test_cosine_schedule_with_and_without_warmup),
        cmocka_unit_test(test_step_and_constant_schedules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
