/* kd_par: a batch split over 2 or 3 threads gives the same combined gradient, loss and
 * updated parameters as the whole batch on one thread (up to float rounding), for full,
 * odd-sized and tiny batches; several steps in a row stay in agreement; a pool with more
 * threads than samples still works; the optimizer's step counter advances once per
 * step. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kd_data.h"
#include "kd_error.h"
#include "kd_model.h"
#include "kd_optim.h"
#include "kd_par.h"
#include "kd_train.h"

enum { N = 200, DIM = 12, CLASSES = 4, BATCH = 32 };

static float xs[N * DIM];
static int32_t ys[N];
static kd_dataset ds = {.n = N, .dim = DIM, .n_classes = CLASSES, .x = xs, .y = ys};

static int setup(void **state)
{
    (void)state;
    kd_rng r;
    kd_rng_seed(&r, 17);
    for (int i = 0; i < N * DIM; i++)
        xs[i] = (float)kd_rng_uniform(&r);
    for (int i = 0; i < N; i++)
        ys[i] = (int32_t)kd_rng_below(&r, CLASSES);
    kd_train_math_setup(1);
    return 0;
}

typedef struct trainer {
    kd_model m;
    kd_optim o;
    kd_par *p;
} trainer;

static void trainer_init(trainer *t, int threads)
{
    char err[128];
    int hidden[2] = {16, 8};
    assert_int_equal(kd_model_init(&t->m, DIM, hidden, 2, CLASSES, BATCH, err, sizeof err),
                     KD_OK);
    kd_model_init_params(&t->m, 4);
    kd_optim_config c;
    kd_optim_config_default(&c, KD_OPTIM_SGD);
    c.momentum = 0.9f;
    c.weight_decay = 1e-4f;
    assert_int_equal(kd_optim_init(&t->o, &c, t->m.n_params, err, sizeof err), KD_OK);
    assert_int_equal(kd_par_init(&t->p, &t->m, &t->o, threads, err, sizeof err), KD_OK);
}

static void trainer_free(trainer *t)
{
    kd_par_free(t->p);
    kd_optim_free(&t->o);
    kd_model_free(&t->m);
}

static double max_diff(const float *a, const float *b, size_t n)
{
    double d = 0;
    for (size_t i = 0; i < n; i++)
        d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

static void agree(int threads)
{
    trainer one, many;
    trainer_init(&one, 1);
    trainer_init(&many, threads);
    assert_int_equal(kd_par_threads(many.p), threads);
    uint32_t perm[N];
    kd_shuffle_perm(3, 0, perm, N);
    const int sizes[] = {BATCH, 31, 7, 1, 2, BATCH, BATCH};
    size_t cur = 0;
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        float l1 = kd_par_step(one.p, &ds, perm + cur, sizes[s], 0.1f);
        float l2 = kd_par_step(many.p, &ds, perm + cur, sizes[s], 0.1f);
        cur += (size_t)sizes[s];
        if (fabs(l1 - l2) > 1e-5)
            fail_msg("step %zu (batch %d): loss %g vs %g", s, sizes[s], l1, l2);
        double dg = max_diff(one.m.grads, many.m.grads, one.m.n_params);
        double dp = max_diff(one.m.params, many.m.params, one.m.n_params);
        if (dg > 1e-5 || dp > 1e-5)
            fail_msg("step %zu (batch %d): grads differ by %g, params by %g", s, sizes[s], dg,
                     dp);
    }
    assert_int_equal(one.o.t, 7);
    assert_int_equal(many.o.t, 7);
    trainer_free(&one);
    trainer_free(&many);
}

static void test_two_threads_match_one(void **state)
{
    (void)state;
    agree(2);
}

static void test_three_threads_match_one(void **state)
{
    (void)state;
    agree(3);
}

static void test_more_threads_than_batch_is_clamped(void **state)
{
    (void)state;
    char err[128];
    int hidden[1] = {4};
    kd_model m;
    kd_optim o;
    kd_optim_config c;
    kd_optim_config_default(&c, KD_OPTIM_SGD);
    assert_int_equal(kd_model_init(&m, DIM, hidden, 1, CLASSES, 2, err, sizeof err), KD_OK);
    kd_model_init_params(&m, 1);
    assert_int_equal(kd_optim_init(&o, &c, m.n_params, err, sizeof err), KD_OK);
    kd_par *p;
    assert_int_equal(kd_par_init(&p, &m, &o, 8, err, sizeof err), KD_OK);
    assert_int_equal(kd_par_threads(p), 2);
    uint32_t idx[2] = {5, 9};
    float loss = kd_par_step(p, &ds, idx, 2, 0.1f);
    assert_true(isfinite(loss) && loss > 0.0f);
    kd_par_free(p);
    assert_int_equal(kd_par_init(&p, &m, &o, 0, err, sizeof err), KD_ERANGE);
    assert_null(p);
    kd_par_free(NULL);
    kd_optim_free(&o);
    kd_model_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_threads_match_one),
        cmocka_unit_test(test_three_threads_match_one),
        cmocka_unit_test(test_more_threads_than_batch_is_clamped),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
