/*
 * test_sim: kadet-sim's job model and event loop. The model reproduces the step times of
 * a tiny hand-made trace; every policy's run conserves work (each job executes exactly
 * the iterations it needs), no job finishes before its work is done or faster than its
 * ideal; bad workload files give errors, not crashes; training is reproducible; and, when
 * the Pollux data sits beside the repository, a real 160-job workload replays under rl in
 * the time budget with the same accounting.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "kd_error.h"
#include "kd_sched.h"
#include "sched_qtable.h"
#include "sim.h"

static const char *const all_policies[] = {"static", "tiresias", "fair", "greedy", "pollux", "rl"};

static void data_path(char *buf, size_t len, const char *rel)
{
    const char *src = getenv("KADET_SOURCE_DIR");
    snprintf(buf, len, "%s/tests/data/sched/%s", src ? src : ".", rel);
}

static void test_model_step_times(void **state)
{
    (void)state;
    char traces[1024], err[256];
    sim_app a;
    data_path(traces, sizeof(traces), "traces");
    int rc = sim_app_load(&a, traces, "toy", err, sizeof(err));
    if (rc != KD_OK)
        fail_msg("load toy: %s", err);
    /* batch 32 on 2 agents of one node: local 16, compute 0.18 + sync 0.01 */
    assert_float_equal(sim_step_time(&a, 32, 2, 1), 0.19, 1e-9);
    /* on 4 agents: local 8, compute 0.10 + sync 0.02 */
    assert_float_equal(sim_step_time(&a, 32, 4, 1), 0.12, 1e-9);
    /* on 1 agent the local batch 32 exceeds the largest measured (16): 2 accumulation
     * steps of 16 */
    assert_float_equal(sim_step_time(&a, 32, 1, 1), 0.36, 1e-9);
    /* 16 agents on 4 nodes comes from scalability.csv */
    assert_float_equal(sim_step_time(&a, 128, 16, 4), 0.25, 1e-9);
    /* iterations to the last epoch: exact trace, and rescaled by samples otherwise */
    assert_float_equal(sim_iterations(&a, 32), 200, 1e-9);
    assert_float_equal(sim_iterations(&a, 64), 120, 1e-9);
    assert_float_equal(sim_iterations(&a, 128), 60, 1e-9);
    sim_app_free(&a);
    err[0] = '\0';
    assert_int_equal(sim_app_load(&a, traces, "nope", err, sizeof(err)), KD_EIO);
    assert_non_null(strstr(err, "nope"));
    sim_app_free(&a);
}

/* The goodput model on the toy traces, values worked out by hand. */
static void test_model_goodput(void **state)
{
    (void)state;
    char traces[1024], err[256];
    sim_app a;
    double st, sy;
    int at, acc;
    data_path(traces, sizeof(traces), "traces");
    if (sim_app_load(&a, traces, "toy", err, sizeof(err)) != KD_OK)
        fail_msg("load toy: %s", err);
    if (!a.gp)
        fail_msg("goodput data: %s", a.gp_err);
    const sim_gp *g = a.gp;
    assert_int_equal(g->init_bsz, 32);
    assert_int_equal(g->max_bsz, 64);
    assert_float_equal(g->min_lb, 8, 0);
    assert_float_equal(g->max_lb, 16, 0);
    assert_int_equal(g->max_epochs, 2);
    /* progress at each epoch's end: the smaller of the traces' (32 and 64, then 64, 128) */
    assert_float_equal(g->prog[1], 32, 1e-12);
    assert_float_equal(g->prog[2], 64, 1e-12);
    /* a measured placement, between its local batches */
    sim_gp_step(g, (int[]){2}, 1, 12, &st, &sy);
    assert_float_equal(st, 0.15, 1e-12);
    assert_float_equal(sy, 0.01, 1e-12);
    /* rotations are one placement: 1 agent on each of two nodes is "11" */
    sim_gp_step(g, (int[]){1, 1}, 2, 8, &st, &sy);
    assert_float_equal(st, 0.15, 1e-12);
    /* 16 agents on 4 nodes was never placed: scalability.csv's (4 nodes, 16 replicas) */
    sim_gp_step(g, (int[]){4, 4, 4, 4}, 4, 8, &st, &sy);
    assert_float_equal(st, 0.25, 1e-12);
    assert_float_equal(sy, 0.15, 1e-12);
    /* 3 nodes x 1: halfway between 2 nodes x 1 ("11": 0.15) and 4 nodes x 1, which is
     * clamped to the only 4-node point (0.25) */
    sim_gp_step(g, (int[]){1, 1, 1}, 3, 8, &st, &sy);
    assert_float_equal(st, 0.20, 1e-12);
    assert_float_equal(sy, 0.10, 1e-12);
    /* accumulation: one replica above the smallest traced batch always accumulates */
    sim_gp_fixed(g, 1, 64, &at, &acc);
    assert_int_equal(at, 16);
    assert_int_equal(acc, 3);
    sim_gp_fixed(g, 1, 32, &at, &acc);
    assert_int_equal(at, 16);
    assert_int_equal(acc, 1);
    sim_gp_fixed(g, 4, 32, &at, &acc);
    assert_int_equal(at, 8);
    assert_int_equal(acc, 0);
    /* the total never exceeds the largest traced batch: 3 x 22 = 66 > 64 -> 3 x 21 */
    sim_gp_fixed(g, 3, 64, &at, &acc);
    assert_int_equal(at * 3 * (acc + 1) <= 64, 1);
    /* gain with grad_sqr = grad_var = 1: (1 + 1) / (1 / scale + 1) */
    assert_float_equal(sim_gp_gain(g, 32, 0), 1.0, 1e-12);
    assert_float_equal(sim_gp_gain(g, 64, 0), 4.0 / 3.0, 1e-12);
    assert_float_equal(sim_gp_gain(g, 48, 1), 1.2, 1e-12);
    /* progress rate: gain / (step + accum * compute) */
    assert_float_equal(sim_gp_rate(g, (int[]){4}, 1, 8, 0, 0), 1 / 0.12, 1e-9);
    assert_float_equal(sim_gp_rate(g, (int[]){1}, 1, 16, 1, 0), 1 / 0.36, 1e-9);
    /* the adaptive batch is never worse than the fixed one on the same placement */
    double best = sim_gp_best(g, (int[]){2}, 1, 0, &at, &acc);
    assert_true(at >= 8 && at <= 16);
    sim_gp_fixed(g, 2, 32, &at, &acc);
    assert_true(best >= sim_gp_rate(g, (int[]){2}, 1, at, acc, 0) - 1e-12);
    sim_app_free(&a);
}

static void load_toy(sim_model *m, sim_workload *w)
{
    char traces[1024], wl[1024], err[256];
    data_path(traces, sizeof(traces), "traces");
    data_path(wl, sizeof(wl), "workload-toy.csv");
    sim_model_init(m, traces);
    int rc = sim_workload_load(w, m, wl, err, sizeof(err));
    if (rc != KD_OK)
        fail_msg("toy workload: %s", err);
}

static sched_policy *make(const char *name, int learn)
{
    sched_options o;
    sched_policy *p = NULL;
    char err[256];
    sched_options_default(&o);
    o.learn = learn;
    o.alpha = 1;
    o.beta = 0;
    if (sched_policy_create(name, &o, &p, err, sizeof(err)) != KD_OK)
        fail_msg("%s", err);
    return p;
}

static void check_accounting(const sim_model *m, const sim_workload *w, const sim_result *r,
                             const double *jct, const char *pol)
{
    assert_int_equal(r->finished, w->n_jobs);
    /* work conserved: exactly the iterations the jobs need were executed */
    if (fabs(r->work_done_iters - r->work_total_iters) > 1e-6 * r->work_total_iters)
        fail_msg("%s: executed %.3f iterations of %.3f", pol, r->work_done_iters,
                 r->work_total_iters);
    /* no job beats its ideal (alone, best count and placement, no delays) */
    if (r->min_slack < -1e-6)
        fail_msg("%s: a job finished %.3fs faster than possible", pol, -r->min_slack);
    assert_true(r->avg_jct >= r->ideal_avg - 1e-6);
    assert_true(r->p50_jct <= r->p99_jct);
    assert_true(r->utilization > 0 && r->utilization <= 1 + 1e-9);
    double last = 0;
    for (int i = 0; i < w->n_jobs; i++) {
        assert_true(jct[i] > 0);
        /* a job needs at least its own iterations at the fastest step of its app */
        const sim_app *a = &m->apps[w->jobs[i].app];
        double fastest = INFINITY;
        for (int n = 1; n <= 64; n++)
            for (int k = 1; k <= 16 && k <= n; k++)
                fastest = fmin(fastest, sim_step_time(a, w->jobs[i].bsz, n, k));
        assert_true(jct[i] >= sim_iterations(a, w->jobs[i].bsz) * fastest - 1e-6);
        last = fmax(last, w->jobs[i].arrival + jct[i]);
    }
    assert_float_equal(r->makespan, last, 1e-6);
}

static void test_accounting_every_policy(void **state)
{
    (void)state;
    sim_model m;
    sim_workload w;
    sim_config c;
    sim_result r;
    char err[256];
    double jct[16];
    load_toy(&m, &w);
    sim_config_default(&c);
    c.nodes = 2;
    c.slots = 4;
    for (size_t k = 0; k < sizeof(all_policies) / sizeof(all_policies[0]); k++) {
        for (int learn = 0; learn < 2; learn++) {
            sched_policy *p = make(all_policies[k], learn);
            int rc = sim_run(&m, &w, &c, p, &r, jct, err, sizeof(err));
            if (rc != KD_OK)
                fail_msg("%s: %s", all_policies[k], err);
            check_accounting(&m, &w, &r, jct, all_policies[k]);
            if (strcmp(all_policies[k], "static") == 0)
                assert_float_equal(r.rescales, 0, 1e-12); /* non-elastic, never preempts */
            sched_policy_free(&p);
        }
    }
    /* a restart delay can only make things slower */
    sim_result r0;
    sched_policy *p = make("fair", 0);
    c.restart_s = 0;
    assert_int_equal(sim_run(&m, &w, &c, p, &r0, jct, err, sizeof(err)), KD_OK);
    c.restart_s = 120;
    assert_int_equal(sim_run(&m, &w, &c, p, &r, jct, err, sizeof(err)), KD_OK);
    assert_true(r.avg_jct > r0.avg_jct);
    sched_policy_free(&p);
    /* the goodput model: every job finishes with exactly its last epoch's progress done */
    c.restart_s = 30;
    c.batch_model = SIM_BATCH_GOODPUT;
    for (size_t k = 0; k < sizeof(all_policies) / sizeof(all_policies[0]); k++) {
        p = make(all_policies[k], 0);
        int rc = sim_run(&m, &w, &c, p, &r, jct, err, sizeof(err));
        if (rc != KD_OK)
            fail_msg("goodput %s: %s", all_policies[k], err);
        assert_int_equal(r.finished, w.n_jobs);
        assert_float_equal(r.work_total_iters, w.n_jobs * 64.0, 1e-9);
        if (fabs(r.work_done_iters - r.work_total_iters) > 1e-6 * r.work_total_iters)
            fail_msg("goodput %s: progress %.6f of %.6f", all_policies[k], r.work_done_iters,
                     r.work_total_iters);
        for (int i = 0; i < w.n_jobs; i++)
            assert_true(jct[i] > c.restart_s);
        sched_policy_free(&p);
    }
    sim_workload_free(&w);
    sim_model_free(&m);
}

static void test_bad_workloads(void **state)
{
    (void)state;
    static const struct { const char *file; const char *msg; } bad[] = {
        {"bad/header.csv", "header"},       {"bad/number.csv", ":2"},
        {"bad/app.csv", "not a plain name"}, {"bad/missing-app.csv", "missing"},
        {"bad/empty.csv", "no jobs"},       {"bad/does-not-exist.csv", "does-not-exist"},
    };
    char traces[1024], path[1024], err[256];
    data_path(traces, sizeof(traces), "traces");
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        sim_model m;
        sim_workload w;
        sim_model_init(&m, traces);
        data_path(path, sizeof(path), bad[k].file);
        err[0] = '\0';
        assert_true(sim_workload_load(&w, &m, path, err, sizeof(err)) != KD_OK);
        if (!strstr(err, bad[k].msg))
            fail_msg("%s: error '%s' does not mention '%s'", bad[k].file, err, bad[k].msg);
        assert_null(w.jobs);
        sim_model_free(&m);
    }
}

static void test_mutated_workloads_never_crash(void **state)
{
    (void)state;
    char traces[1024], wl[1024], err[256], tmp[] = "/tmp/test_sim_wlXXXXXX";
    static char good[4096], buf[4096];
    data_path(traces, sizeof(traces), "traces");
    data_path(wl, sizeof(wl), "workload-toy.csv");
    FILE *f = fopen(wl, "r");
    assert_non_null(f);
    size_t len = fread(good, 1, sizeof(good) - 1, f);
    fclose(f);
    good[len] = '\0';
    static const char alphabet[] = ",\n-0123456789.eyotx ";
    unsigned seed = 5;
    int rejected = 0;
    int fd = mkstemp(tmp);
    assert_true(fd >= 0);
    close(fd);
    for (int it = 0; it < 200; it++) {
        memcpy(buf, good, len + 1);
        for (int e = 0; e < 3; e++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % len;
            seed = seed * 1103515245u + 12345u;
            buf[at] = alphabet[(seed >> 8) % (sizeof(alphabet) - 1)];
        }
        f = fopen(tmp, "w");
        assert_non_null(f);
        fputs(buf, f);
        fclose(f);
        sim_model m;
        sim_workload w;
        sim_model_init(&m, traces);
        err[0] = '\0';
        if (sim_workload_load(&w, &m, tmp, err, sizeof(err)) != KD_OK) {
            rejected++;
            assert_true(err[0] != '\0');
        } else {
            sim_workload_free(&w);
        }
        sim_model_free(&m);
    }
    unlink(tmp);
    print_message("mutated workloads: %d of 200 rejected with a message\n", rejected);
    assert_true(rejected > 0);
}

static char *train_toy(uint64_t seed)
{
    sim_model m;
    sim_workload w;
    sim_config c;
    sim_result r;
    char err[256], *text = NULL;
    sched_options o;
    sched_policy *p = NULL;
    load_toy(&m, &w);
    sim_config_default(&c);
    c.nodes = 2;
    sched_options_default(&o);
    o.learn = 1;
    o.seed = seed;
    o.double_q = 1;
    assert_int_equal(sched_policy_create("rl", &o, &p, err, sizeof(err)), KD_OK);
    for (int e = 0; e < 5; e++)
        assert_int_equal(sim_run(&m, &w, &c, p, &r, NULL, err, sizeof(err)), KD_OK);
    assert_int_equal(sched_qtable_dumps(p, &text, err, sizeof(err)), KD_OK);
    sched_policy_free(&p);
    sim_workload_free(&w);
    sim_model_free(&m);
    return text;
}

static void test_training_is_reproducible(void **state)
{
    (void)state;
    char *a = train_toy(7), *b = train_toy(7);
    assert_string_equal(a, b);
    assert_non_null(strstr(a, "\"entries\""));
    free(a);
    free(b);
}

static void test_real_workload_under_rl(void **state)
{
    (void)state;
    char base[1024], traces[1100], wl[1100], qt[1100], err[256];
    const char *env = getenv("KADET_POLLUX_DIR"), *src = getenv("KADET_SOURCE_DIR");
    if (env)
        snprintf(base, sizeof(base), "%s", env);
    else
        snprintf(base, sizeof(base), "%s/../shared/data/pollux", src ? src : ".");
    snprintf(traces, sizeof(traces), "%s/traces", base);
    snprintf(wl, sizeof(wl), "%s/workloads/workload-1.csv", base);
    if (access(wl, R_OK) != 0) {
        print_message("Pollux data not found at %s: skipped\n", base);
        skip();
    }
    snprintf(qt, sizeof(qt), "%s/operator/scheduler/qtable-default.json", src ? src : ".");
    sim_model m;
    sim_workload w;
    sim_config c;
    sim_result r;
    static double jct[1024];
    sim_model_init(&m, traces);
    if (sim_workload_load(&w, &m, wl, err, sizeof(err)) != KD_OK)
        fail_msg("%s", err);
    assert_true(w.n_jobs <= 1024);
    sim_config_default(&c);
    sched_policy *p = make("rl", 0);
    if (sched_qtable_load(p, qt, err, sizeof(err)) != KD_OK)
        fail_msg("shipped table: %s", err);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = sim_run(&m, &w, &c, p, &r, jct, err, sizeof(err));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc != KD_OK)
        fail_msg("%s", err);
    double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    print_message("workload-1 under rl: %d jobs, avg JCT %.0fs, simulated in %.3fs\n", r.jobs,
                  r.avg_jct, s);
    check_accounting(&m, &w, &r, jct, "rl");
    /* the target is 2 s on a release build; sanitizers get headroom */
    assert_true(s < 20);
    sched_policy_free(&p);
    sim_workload_free(&w);
    sim_model_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_step_times),
        cmocka_unit_test(test_model_goodput),
        cmocka_unit_test(test_accounting_every_policy),
        cmocka_unit_test(test_bad_workloads),
        cmocka_unit_test(test_mutated_workloads_never_crash),
        cmocka_unit_test(test_training_is_reproducible),
        cmocka_unit_test(test_real_workload_under_rl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
