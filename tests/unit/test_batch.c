/* coordinator_batch: the adaptive batch size. From rank 0's reports of the local and
 * global gradient norms the coordinator recovers the gradient noise scale exactly when the
 * reports are noise-free; it moves to the goodput-optimal batch sqrt(k*Bn/(a*W)), rounded
 * and clamped to [batchSize, maxBatchSize], and only when that promises a real gain; the
 * learning-rate gain lies between 1 and the batch ratio; reports of another batch or with
 * one agent do not move the noise estimate, but one agent follows the last one; local-sgd
 * jobs never adapt; a checkpoint's batch state is
 * taken back only within the job's bounds. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>

#include "coordinator_int.h"

static coord c;

/* A coordinator of a world of `world` agents at per-agent batch `batch`. */
static void setup_coord(int world, int batch, int max_batch)
{
    memset(&c, 0, sizeof c);
    c.job.adaptive_batch = 1;
    c.job.max_batch_size = max_batch;
    c.job.sync_mode = KD_SPEC_SYNC_ALLREDUCE;
    c.batch = batch;
    coord_batch_init(&c);
    c.world = world;
    coord_batch_new_world(&c);
}

/* Rank 0's report of `steps` steps: compute a*b and the rest k per step, and the norms
 * |G|^2 + S/b (local) and |G|^2 + S/(W*b) (global) a noise-free measurement gives. */
static void report(int batch, double a, double k, double g2, double s, int steps)
{
    double b = batch, W = c.world;
    json_t *m = json_pack("{s:I, s:I, s:f, s:f, s:f, s:f, s:I}", "steps", (json_int_t)steps,
                          "batch", (json_int_t)batch, "compute_s", a * b * steps, "comm_s",
                          k * steps, "gsq_local", g2 + s / b, "gsq_global", g2 + s / (W * b),
                          "gsq_steps", (json_int_t)steps);
    coord_batch_observe(&c, m);
    json_decref(m);
}

/* The two reports a decision needs, of a world where a sample costs 12 us of compute,
 * a step k more, and the noise trace is S = 40 (so Bn = 40 / g2). */
static void settle(int batch, double k, double g2)
{
    report(batch, 12e-6, k, g2, 40.0, 300);
    report(batch, 12e-6, k, g2, 40.0, 300);
}

static void test_recovers_the_noise_scale(void **state)
{
    (void)state;
    setup_coord(2, 64, 256);
    assert_true(coord_batch_noise(&c) == 0); /* unknown before any report */
    report(64, 12e-6, 0.6e-3, 0.04, 40.0, 300);
    assert_true(fabs(coord_batch_noise(&c) - 1000.0) < 1e-6);
    /* A later, noisier phase of training moves the smoothed estimate towards it. */
    report(64, 12e-6, 0.6e-3, 0.02, 40.0, 300);
    double bn = coord_batch_noise(&c);
    assert_true(bn > 1000.0 && bn < 2000.0);
}

static void test_moves_to_the_goodput_optimum(void **state)
{
    (void)state;
    setup_coord(2, 64, 512);
    /* a = 12 us per sample, k = 0.6 ms per step, Bn = 1000:
     * b* = sqrt(0.6e-3 * 1000 / (12e-6 * 2)) = 158.1 -> 160. */
    settle(64, 0.6e-3, 0.04);
    assert_int_equal(coord_batch_decide(&c, 100.0), 1);
    assert_int_equal(c.batch, 160);
    /* No second change within the minimum interval, nor without new measurements. */
    assert_int_equal(coord_batch_decide(&c, 100.5), 0);
    coord_batch_new_world(&c);
    assert_int_equal(coord_batch_decide(&c, 200.0), 0);
    /* At the optimum already: no change. */
    settle(160, 0.6e-3, 0.04);
    assert_int_equal(coord_batch_decide(&c, 300.0), 0);
    assert_int_equal(c.batch, 160);
}

static void test_clamps_to_the_bounds(void **state)
{
    (void)state;
    /* Huge noise: the optimum is far above the ceiling. */
    setup_coord(2, 64, 256);
    settle(64, 0.6e-3, 0.0004);
    assert_int_equal(coord_batch_decide(&c, 100.0), 1);
    assert_int_equal(c.batch, 256);
    /* Little noise: the optimum is below the spec's batch, which is the floor. */
    setup_coord(2, 64, 256);
    c.batch = 128; /* as if an earlier phase had grown it */
    settle(128, 0.6e-3, 4.0);
    assert_int_equal(coord_batch_decide(&c, 100.0), 1);
    assert_int_equal(c.batch, 64);
}

static void test_small_gains_are_not_worth_a_change(void **state)
{
    (void)state;
    /* b* = sqrt(0.6e-3 * 200 / (12e-6 * 2)) = 70.7 -> 72: under 5% more goodput. */
    setup_coord(2, 64, 512);
    settle(64, 0.6e-3, 0.2);
    assert_int_equal(coord_batch_decide(&c, 100.0), 0);
    assert_int_equal(c.batch, 64);
}

static void test_ignores_what_it_cannot_use(void **state)
{
    (void)state;
    /* One agent: no second batch size to compare. */
    setup_coord(1, 64, 512);
    settle(64, 0.6e-3, 0.04);
    assert_true(coord_batch_noise(&c) == 0);
    assert_int_equal(coord_batch_decide(&c, 100.0), 0);
    /* Reports of the previous batch (sent before the new world) are ignored. */
    setup_coord(2, 64, 512);
    report(32, 12e-6, 0.6e-3, 0.04, 40.0, 300);
    assert_true(coord_batch_noise(&c) == 0);
    /* Reports without the norms (a worker of an older version) leave the noise unknown. */
    json_t *m = json_pack("{s:i, s:i, s:f, s:f}", "steps", 10, "batch", 64, "compute_s", 0.01,
                          "comm_s", 0.01);
    coord_batch_observe(&c, m);
    json_decref(m);
    assert_true(coord_batch_noise(&c) == 0);
    /* local-sgd does not exchange gradients every step: never adapts. */
    memset(&c, 0, sizeof c);
    c.job.adaptive_batch = 1;
    c.job.max_batch_size = 512;
    c.job.sync_mode = KD_SPEC_SYNC_LOCAL_SGD;
    c.batch = 64;
    coord_batch_init(&c);
    c.world = 2;
    settle(64, 0.6e-3, 0.04);
    assert_int_equal(coord_batch_decide(&c, 100.0), 0);
}

static void test_one_agent_follows_the_last_noise_estimate(void **state)
{
    (void)state;
    setup_coord(2, 64, 512);
    report(64, 12e-6, 0.6e-3, 0.04, 40.0, 300); /* Bn = 1000, measured with 2 agents */
    c.batch = 256;
    /* Down to one agent: no exchange to amortise (k = 0.05 ms of optimizer), so
     * b* = sqrt(0.05e-3 * 1000 / 12e-6) = 64.5 -> 64: back to the spec's batch. */
    c.world = 1;
    coord_batch_new_world(&c);
    settle(256, 0.05e-3, 0.04);
    assert_int_equal(coord_batch_decide(&c, 100.0), 0); /* three step reports first */
    report(256, 12e-6, 0.05e-3, 0.04, 40.0, 300);
    assert_true(fabs(coord_batch_noise(&c) - 1000.0) < 1e-9); /* not re-measured */
    assert_int_equal(coord_batch_decide(&c, 100.0), 1);
    assert_int_equal(c.batch, 64);
}

static void test_learning_rate_gain(void **state)
{
    (void)state;
    setup_coord(2, 64, 512);
    assert_true(coord_batch_lr_gain(&c, 2) == 1.0); /* base batch: no gain */
    report(64, 12e-6, 0.6e-3, 0.04, 40.0, 300);    /* Bn = 1000 */
    c.batch = 256;
    /* (1000/128 + 1) / (1000/512 + 1) = 8.8125 / 2.953125 */
    assert_true(fabs(coord_batch_lr_gain(&c, 2) - 8.8125 / 2.953125) < 1e-9);
    double g = coord_batch_lr_gain(&c, 2);
    assert_true(g > 1.0 && g < 256.0 / 64.0);
}

static void test_restores_from_a_checkpoint(void **state)
{
    (void)state;
    setup_coord(2, 64, 512);
    coord_batch_restore(&c, 192, 0.04, 40.0);
    assert_int_equal(c.batch, 192);
    assert_true(fabs(coord_batch_noise(&c) - 1000.0) < 1e-9); /* and the lr gain with it */
    assert_true(coord_batch_lr_gain(&c, 2) > 1.0);
    /* Nothing recorded (an older checkpoint), or a batch outside today's bounds: the
     * spec's batch, and the noise is measured again. */
    setup_coord(2, 64, 512);
    coord_batch_restore(&c, 0, 0.0, 0.0);
    assert_int_equal(c.batch, 64);
    coord_batch_restore(&c, 1024, 0.04, 40.0);
    assert_int_equal(c.batch, 64);
    assert_true(coord_batch_noise(&c) == 0);
    /* A job that no longer adapts keeps its batch. */
    setup_coord(2, 64, 512);
    c.adaptive_batch = 0;
    coord_batch_restore(&c, 192, 0.04, 40.0);
    assert_int_equal(c.batch, 64);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recovers_the_noise_scale),
        cmocka_unit_test(test_moves_to_the_goodput_optimum),
        cmocka_unit_test(test_clamps_to_the_bounds),
        cmocka_unit_test(test_small_gains_are_not_worth_a_change),
        cmocka_unit_test(test_ignores_what_it_cannot_use),
        cmocka_unit_test(test_one_agent_follows_the_last_noise_estimate),
        cmocka_unit_test(test_learning_rate_gain),
        cmocka_unit_test(test_restores_from_a_checkpoint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
