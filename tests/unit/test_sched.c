/*
 * test_sched: the scheduling policy core. Each policy on small hand-made snapshots whose
 * right answer is known; the safety limits (capacity, [min, max], pins, cool-down) over
 * thousands of random snapshots for every policy; rl's fallback to greedy, learning and
 * the Q-table's save/load round trip and rejection of corrupt tables; malformed snapshots;
 * and the decision time for 100 jobs on 100 nodes.
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

static const char *const all_policies[] = {"static", "tiresias", "fair", "greedy", "pollux", "rl"};

static sched_policy *make(const char *name, const sched_options *o)
{
    sched_policy *p = NULL;
    char err[256] = "";
    int rc = sched_policy_create(name, o, &p, err, sizeof(err));
    if (rc != KD_OK)
        fail_msg("create %s: %s", name, err);
    return p;
}

/* A running or queued job with defaults that the tests override. */
static sched_job job(const char *id, int min, int max, int current, double age)
{
    sched_job j;
    memset(&j, 0, sizeof(j));
    j.id = id;
    j.min = min;
    j.max = max;
    j.current = current;
    j.age_s = age;
    j.since_change_s = -1;
    j.alpha = -1;
    j.beta = -1;
    return j;
}

static void decide_ok(sched_policy *p, const sched_snapshot *s, sched_decision *out)
{
    char err[256] = "";
    int rc = sched_decide(p, s, out, err, sizeof(err));
    if (rc != KD_OK)
        fail_msg("decide (%s): %s", sched_policy_name(p), err);
}

/* ---- static ---- */

static void test_static_fifo_all_or_nothing(void **state)
{
    (void)state;
    sched_node n = {0, 0, 8};
    sched_job j[3] = {job("a", 1, 8, 6, 100), job("b", 1, 8, 0, 50), job("c", 1, 8, 0, 10)};
    j[0].request = 6;
    j[1].request = 4; /* does not fit in the 2 slots left */
    j[2].request = 2; /* would fit, but strict FIFO keeps it behind b */
    sched_snapshot s = {&n, 1, j, 3, 60, 30};
    sched_decision d[3];
    sched_policy *p = make("static", NULL);
    decide_ok(p, &s, d);
    assert_int_equal(d[0].desired, 6);
    assert_int_equal(d[1].desired, 0);
    assert_int_equal(d[2].desired, 0);
    assert_non_null(strstr(d[2].reason, "behind b"));
    /* once a finishes, b is admitted with exactly what it asked for, then c */
    sched_job j2[2] = {j[1], j[2]};
    sched_snapshot s2 = {&n, 1, j2, 2, 60, 30};
    decide_ok(p, &s2, d);
    assert_int_equal(d[0].desired, 4);
    assert_int_equal(d[1].desired, 2);
    sched_policy_free(&p);
    assert_null(p);
}

/* ---- tiresias ---- */

static void test_tiresias_least_attained_first_and_preempts(void **state)
{
    (void)state;
    sched_node n = {0, 0, 8};
    sched_job j[3] = {job("long", 1, 8, 8, 1000), job("new", 1, 8, 0, 5), job("small", 1, 8, 0, 1)};
    j[0].request = 8;
    j[0].attained_s = 40000; /* third queue */
    j[1].request = 4;
    j[2].request = 2;
    j[2].attained_s = 100;
    sched_snapshot s = {&n, 1, j, 3, 60, 30};
    sched_decision d[3];
    sched_policy *p = make("tiresias", NULL);
    decide_ok(p, &s, d);
    assert_int_equal(d[1].desired, 4);
    assert_int_equal(d[2].desired, 2);
    assert_int_equal(d[0].desired, 0); /* preempted: its 8 do not fit in the 2 left */
    assert_non_null(strstr(d[0].reason, "preempted"));
    sched_policy_free(&p);
}

/* ---- fair ---- */

static void test_fair_equal_share(void **state)
{
    (void)state;
    sched_node n[2] = {{0, 0, 4}, {0, 0, 4}};
    sched_job j[3] = {job("a", 1, 8, 0, 30), job("b", 1, 8, 0, 20), job("c", 1, 2, 0, 10)};
    sched_snapshot s = {n, 2, j, 3, 60, 30};
    sched_decision d[3];
    sched_policy *p = make("fair", NULL);
    decide_ok(p, &s, d);
    /* c stops at its max of 2; a and b share the other 6 equally */
    assert_int_equal(d[2].desired, 2);
    assert_int_equal(d[0].desired, 3);
    assert_int_equal(d[1].desired, 3);
    sched_policy_free(&p);
}

/* ---- greedy ---- */

static void test_greedy_prefers_the_job_that_scales(void **state)
{
    (void)state;
    sched_node n = {0, 0, 6};
    sched_tp lin[2] = {{1, 100}, {2, 200}}, flat[2] = {{1, 100}, {2, 104}};
    sched_job j[2] = {job("linear", 1, 6, 2, 10), job("flat", 1, 6, 2, 10)};
    j[0].tp = lin;
    j[0].n_tp = 2;
    j[0].remaining = 1e6;
    j[1].tp = flat;
    j[1].n_tp = 2;
    j[1].remaining = 1e6;
    sched_snapshot s = {&n, 1, j, 2, 60, 0};
    sched_decision d[2];
    sched_policy *p = make("greedy", NULL);
    decide_ok(p, &s, d);
    assert_int_equal(d[0].desired + d[1].desired, 6);
    assert_true(d[0].desired >= 4);
    assert_true(d[1].desired >= 1);
    assert_true(d[0].pred_speed > 300);
    assert_true(d[0].pred_reward > 0);
    assert_int_equal((int)d[0].pred_cost, d[0].desired * 60);
    sched_policy_free(&p);
}

/* ---- pollux ---- */

static void test_pollux_goodput_and_fairness(void **state)
{
    (void)state;
    /* 8 slots on 2 nodes; "scales" gains goodput linearly, "flat" saturates at 2 agents,
     * "new" waits with no agent: the harmonic mean gives everyone at least one agent and
     * the rest to the job whose goodput grows */
    sched_node n[2] = {{0, 0, 4}, {0, 0, 4}};
    double gs[8], gf[8];
    for (int i = 0; i < 8; i++) {
        gs[i] = 100.0 * (i + 1);
        gf[i] = i == 0 ? 100 : 120;
    }
    sched_tp tps[1] = {{4, 400}}, tpf[1] = {{4, 120}};
    sched_job j[3] = {job("scales", 1, 8, 4, 3600), job("flat", 1, 8, 4, 3600),
                      job("new", 1, 8, 0, 60)};
    j[0].goodput = gs;
    j[0].n_goodput = 8;
    j[0].tp = tps;
    j[0].n_tp = 1;
    j[1].goodput = gf;
    j[1].n_goodput = 8;
    j[1].tp = tpf;
    j[1].n_tp = 1;
    j[2].goodput = gs;
    j[2].n_goodput = 8;
    sched_snapshot s = {n, 2, j, 3, 60, 30};
    sched_decision d[3];
    sched_policy *p = make("pollux", NULL);
    decide_ok(p, &s, d);
    assert_int_equal(d[0].desired + d[1].desired + d[2].desired, 8);
    assert_true(d[2].desired >= 1); /* nobody is left out while agents can be moved */
    assert_true(d[1].desired <= 2); /* no agent where goodput does not grow */
    assert_true(d[0].desired >= 4);
    /* a job is never given more than twice the largest count it was measured at */
    assert_true(d[2].desired <= 2);
    assert_non_null(strstr(d[0].reason, "pollux"));
    /* the restart penalty: a young job that restarted often keeps its count rather than
     * take one more agent for a 1% gain */
    double g2[4] = {100, 200, 202, 203};
    sched_tp tp2[1] = {{2, 200}};
    sched_job one = job("one", 1, 4, 2, 120);
    one.goodput = g2;
    one.n_goodput = 4;
    one.tp = tp2;
    one.n_tp = 1;
    one.restarts = 3;
    sched_snapshot s1 = {n, 1, &one, 1, 60, 30};
    decide_ok(p, &s1, d);
    assert_int_equal(d[0].desired, 2);
    sched_policy_free(&p);
}

/* The live goodput model: step time a b + k(W) from the measured configurations, the
 * batch of best goodput per count from the noise scale, and pollux returning that batch
 * with the count it decides. */
static void test_goodput_table_from_measurements(void **state)
{
    (void)state;
    /* a = 0.08 s / 64 samples; k(1) = 0.02 s, k(2) = 0.04 s */
    sched_cfg cfg[2] = {{1, 64, 0.10, 0.08}, {2, 64, 0.12, 0.08}};
    sched_goodput_in in = {cfg, 2, 0, 64, 64, 256, 0.1};
    double g[4];
    int b[4];
    /* No noise scale: the batch stays, goodput is the throughput. */
    assert_int_equal(sched_goodput_table(&in, 4, g, b), 4);
    assert_int_equal(b[0], 64);
    assert_int_equal(b[1], 64);
    assert_float_equal(g[0], 64 / 0.10, 1e-6);
    assert_float_equal(g[1], 128 / 0.12, 1e-6);
    /* k grows on beyond the largest measured count with the last slope (0.02 / agent). */
    assert_float_equal(g[3], 256 / (0.08 + 0.08), 1e-6);
    /* Noise scale 1000: at 2 agents b* = sqrt(0.04 * 1000 / (0.00125 * 2)) = 126.5 -> 128;
     * goodput 256 / 0.2 * (1000 + 64) / (1000 + 256). */
    in.noise_scale = 1000;
    assert_int_equal(sched_goodput_table(&in, 4, g, b), 4);
    assert_int_equal(b[1], 128);
    assert_float_equal(g[1], 256 / 0.2 * 1064.0 / 1256.0, 1e-6);
    for (int i = 0; i < 4; i++)
        assert_true(b[i] >= 64 && b[i] <= 256 && b[i] % 8 == 0);
    /* Fixed bounds: no choice even with a noise scale. */
    in.batch_max = 64;
    sched_goodput_table(&in, 4, g, b);
    assert_int_equal(b[1], 64);
    /* Nothing usable: nothing written. */
    sched_cfg bad[1] = {{1, 64, 0.1, 0.5}}; /* compute longer than the step */
    sched_goodput_in none = {bad, 1, 1000, 64, 64, 256, 0.1};
    assert_int_equal(sched_goodput_table(&none, 4, g, b), 0);
    assert_int_equal(sched_goodput_table(NULL, 4, g, b), 0);
    /* pollux carries the batch of the count it decides; greedy chooses none. */
    in.batch_max = 256;
    sched_goodput_table(&in, 4, g, b);
    sched_node n = {0, 0, 4};
    sched_tp tp[1] = {{2, 1000}};
    sched_job j = job("gp", 1, 4, 2, 3600);
    j.goodput = g;
    j.goodput_batch = b;
    j.n_goodput = 4;
    j.tp = tp;
    j.n_tp = 1;
    sched_snapshot s = {&n, 1, &j, 1, 60, 30};
    sched_decision d[1];
    sched_policy *p = make("pollux", NULL);
    decide_ok(p, &s, d);
    assert_true(d[0].desired >= 1);
    assert_int_equal(d[0].batch, b[d[0].desired - 1]);
    sched_policy_free(&p);
    p = make("greedy", NULL);
    decide_ok(p, &s, d);
    assert_int_equal(d[0].batch, 0);
    sched_policy_free(&p);
}

static void test_greedy_restart_must_pay(void **state)
{
    (void)state;
    /* one more agent saves about 1 s of a 100 s job: not worth a 30 s restart */
    sched_node n = {0, 0, 4};
    sched_tp tp[2] = {{1, 100}, {2, 101}};
    sched_job j = job("j", 1, 4, 2, 10);
    j.tp = tp;
    j.n_tp = 2;
    j.remaining = 101 * 100;
    j.beta = 0; /* time only: the agent's cost must not be what holds it back */
    sched_snapshot s = {&n, 1, &j, 1, 60, 30};
    sched_decision d;
    sched_policy *p = make("greedy", NULL);
    decide_ok(p, &s, &d);
    assert_int_equal(d.desired, 2);
    /* without the restart cost the same agent is worth taking */
    s.restart_s = 0;
    decide_ok(p, &s, &d);
    assert_true(d.desired > 2);
    sched_policy_free(&p);
}

static void test_launcher_one_job_one_node(void **state)
{
    (void)state;
    /* what `kadet run` passes: the local machine, one job, CPUs per agent */
    sched_node n = {8, 0, 0};
    sched_job j = job("default/fashion-mnist", 1, 8, 0, 0);
    j.cpu_per_agent = 1;
    sched_snapshot s = {&n, 1, &j, 1, 10, 2};
    sched_decision d;
    for (size_t k = 0; k < sizeof(all_policies) / sizeof(all_policies[0]); k++) {
        sched_policy *p = make(all_policies[k], NULL);
        decide_ok(p, &s, &d);
        assert_true(d.desired >= 1 && d.desired <= 8);
        assert_true(d.reason[0] != '\0');
        sched_policy_free(&p);
    }
}

/* ---- safety stage ---- */

static void test_pin_and_cooldown(void **state)
{
    (void)state;
    sched_options o;
    sched_options_default(&o);
    o.cooldown_s = 300;
    sched_node n = {0, 0, 16};
    sched_job j[3] = {job("pinned", 1, 8, 2, 100), job("cool", 1, 8, 3, 90), job("free", 1, 8, 1, 80)};
    j[0].pin = 5;
    j[1].since_change_s = 120; /* changed 2 minutes ago */
    j[2].since_change_s = 600;
    sched_snapshot s = {&n, 1, j, 3, 60, 0};
    sched_decision d[3];
    const char *elastic[] = {"fair", "greedy", "rl"};
    for (int k = 0; k < 3; k++) {
        sched_policy *p = make(elastic[k], &o);
        decide_ok(p, &s, d);
        assert_int_equal(d[0].desired, 5);
        assert_non_null(strstr(d[0].reason, "pinned"));
        assert_int_equal(d[1].desired, 3);
        assert_non_null(strstr(d[1].reason, "cool-down"));
        assert_true(d[2].desired > 1); /* the spare capacity goes to the free job */
        sched_policy_free(&p);
    }
}

static void test_bad_snapshots_rejected(void **state)
{
    (void)state;
    sched_node n = {0, 0, 4};
    sched_tp bad_tp = {0, 10};
    sched_decision d[2];
    char err[256];
    sched_policy *p = make("rl", NULL);
    sched_job j = job("x", 0, 4, 0, 0);
    sched_snapshot s = {&n, 1, &j, 1, 60, 30};
    assert_int_equal(sched_decide(p, &s, d, err, sizeof(err)), KD_EINVAL);
    assert_non_null(strstr(err, "min"));
    j = job("x", 3, 2, 0, 0);
    assert_int_equal(sched_decide(p, &s, d, err, sizeof(err)), KD_EINVAL);
    j = job("x", 1, 4, 0, 0);
    j.progress = NAN;
    assert_int_equal(sched_decide(p, &s, d, err, sizeof(err)), KD_EINVAL);
    j = job("x", 1, 4, 0, 0);
    j.tp = &bad_tp;
    j.n_tp = 1;
    assert_int_equal(sched_decide(p, &s, d, err, sizeof(err)), KD_EINVAL);
    assert_non_null(strstr(err, "throughput"));
    j = job(NULL, 1, 4, 0, 0);
    assert_int_equal(sched_decide(p, &s, d, err, sizeof(err)), KD_EINVAL);
    sched_job two[2] = {job("same", 1, 2, 0, 0), job("same", 1, 2, 0, 0)};
    sched_snapshot s2 = {&n, 1, two, 2, 60, 30};
    assert_int_equal(sched_decide(p, &s2, d, err, sizeof(err)), KD_EINVAL);
    assert_non_null(strstr(err, "twice"));
    s.interval_s = 0;
    j = job("x", 1, 4, 0, 0);
    assert_int_equal(sched_decide(p, &s, d, err, sizeof(err)), KD_EINVAL);
    sched_policy_free(&p);

    sched_options o;
    sched_options_default(&o);
    o.max_step = 3;
    assert_int_equal(sched_policy_create("rl", &o, &p, err, sizeof(err)), KD_EINVAL);
    assert_int_equal(sched_policy_create("optimus", NULL, &p, err, sizeof(err)), KD_EINVAL);
    assert_non_null(strstr(err, "unknown policy"));
    assert_null(p);
}

/* ---- random snapshots ---- */

static uint64_t rng_state = 88172645463325252ULL;

static double urand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static int irand(int lo, int hi)
{
    return lo + (int)(urand() * (hi - lo + 1));
}

#define MAXJ 24
#define MAXN 8

typedef struct rsnap {
    sched_node nodes[MAXN];
    sched_job jobs[MAXJ];
    sched_tp tp[MAXJ][3];
    char ids[MAXJ][16];
    sched_snapshot s;
} rsnap;

/* slots_only: nodes limited by slots alone and agents without requests, where the
 * total is the exact capacity; otherwise CPU and memory requests vary by job. */
static void random_snapshot(rsnap *r, int slots_only)
{
    int nn = irand(1, MAXN), nj = irand(1, MAXJ);
    for (int i = 0; i < nn; i++) {
        r->nodes[i].slots = slots_only ? irand(1, 8) : irand(0, 8);
        r->nodes[i].cpu = slots_only ? 0 : irand(0, 32);
        r->nodes[i].mem = slots_only ? 0 : irand(0, 4) * 8e9;
    }
    for (int i = 0; i < nj; i++) {
        snprintf(r->ids[i], sizeof(r->ids[i]), "job-%d", i);
        int min = irand(1, 3), max = min + irand(0, 8);
        sched_job *j = &r->jobs[i];
        *j = job(r->ids[i], min, max, 0, urand() * 10000);
        j->current = urand() < 0.5 ? 0 : irand(min, max);
        j->request = irand(0, max);
        j->pin = urand() < 0.15 ? irand(1, max + 2) : 0;
        j->since_change_s = urand() < 0.3 ? -1 : urand() * 600;
        j->attained_s = urand() * 50000;
        j->progress = urand();
        j->remaining = urand() < 0.2 ? 0 : urand() * 1e7;
        j->priority = irand(-1, 1);
        j->cpu_per_agent = slots_only ? 0 : irand(0, 4) * 0.5;
        j->mem_per_agent = slots_only ? 0 : irand(0, 2) * 2e9;
        j->n_tp = irand(0, 3);
        for (int k = 0; k < j->n_tp; k++) {
            r->tp[i][k].agents = irand(1, 10);
            r->tp[i][k].samples_per_s = 10 + urand() * 1000;
        }
        j->tp = r->tp[i];
    }
    r->s.nodes = r->nodes;
    r->s.n_nodes = nn;
    r->s.jobs = r->jobs;
    r->s.n_jobs = nj;
    r->s.interval_s = 60;
    r->s.restart_s = urand() * 60;
}

static void check_safety(const rsnap *r, const sched_decision *d, const char *pol,
                         double cooldown, int slots_only)
{
    double cpu = 0, mem = 0, ucpu = 0, umem = 0;
    long slots = 0, used = 0, held = 0;
    int unlimited_slots = 0;
    for (int i = 0; i < r->s.n_nodes; i++) {
        cpu += r->nodes[i].cpu;
        mem += r->nodes[i].mem;
        slots += r->nodes[i].slots;
        unlimited_slots |= r->nodes[i].slots <= 0;
    }
    /* the cool-down can only hold when what the jobs hold (or are pinned to) still fits:
     * capacity comes first */
    for (int i = 0; i < r->s.n_jobs; i++)
        held += r->jobs[i].pin > r->jobs[i].current ? r->jobs[i].pin : r->jobs[i].current;
    int cooldown_holds = slots_only && held <= slots;
    for (int i = 0; i < r->s.n_jobs; i++) {
        const sched_job *j = &r->jobs[i];
        int n = d[i].desired;
        if (n != 0 && (n < j->min || n > j->max))
            fail_msg("%s: job %d desired %d outside [%d, %d]", pol, i, n, j->min, j->max);
        used += n;
        ucpu += n * j->cpu_per_agent;
        umem += n * j->mem_per_agent;
        int pin = j->pin > 0 ? (j->pin < j->min ? j->min : j->pin > j->max ? j->max : j->pin) : 0;
        /* a pin is met, or the job keeps at most what it held */
        if (pin && n != pin && n > j->current)
            fail_msg("%s: pinned job %d got %d (pin %d, held %d)", pol, i, n, pin, j->current);
        int cooling = cooldown > 0 && j->current > 0 && j->since_change_s >= 0 &&
                      j->since_change_s < cooldown && !pin;
        if (cooling && cooldown_holds && n > 0 && strcmp(pol, "tiresias") != 0 &&
            j->current >= j->min &&
            j->current <= j->max && n != j->current)
            fail_msg("%s: job %d changed %d -> %d inside its cool-down", pol, i, j->current, n);
    }
    if (!unlimited_slots && used > slots)
        fail_msg("%s: %ld agents on %ld slots", pol, used, slots);
    if (!slots_only) {
        int cpu_limited = 1, mem_limited = 1;
        for (int i = 0; i < r->s.n_nodes; i++) {
            cpu_limited &= r->nodes[i].cpu > 0;
            mem_limited &= r->nodes[i].mem > 0;
        }
        if (cpu_limited && ucpu > cpu + 1e-6)
            fail_msg("%s: %.1f cores on %.1f", pol, ucpu, cpu);
        if (mem_limited && umem > mem + 1)
            fail_msg("%s: %.0f bytes on %.0f", pol, umem, mem);
    }
}

static void test_safety_limits_random(void **state)
{
    (void)state;
    static rsnap r;
    sched_decision d[MAXJ];
    for (size_t k = 0; k < sizeof(all_policies) / sizeof(all_policies[0]); k++) {
        for (int learn = 0; learn < 2; learn++) {
            sched_options o;
            sched_options_default(&o);
            o.cooldown_s = 120;
            o.learn = learn;
            o.epsilon = 0.5; /* exploration must respect the limits too */
            sched_policy *p = make(all_policies[k], &o);
            for (int it = 0; it < 1500; it++) {
                int slots_only = it % 2;
                random_snapshot(&r, slots_only);
                decide_ok(p, &r.s, d);
                check_safety(&r, d, all_policies[k], o.cooldown_s, slots_only);
                for (int i = 0; i < r.s.n_jobs; i++)
                    if (urand() < 0.5)
                        sched_observe(p, r.jobs[i].id, urand(), urand() < 0.1);
            }
            sched_policy_free(&p);
        }
    }
}

/* ---- rl ---- */

static void test_rl_empty_table_is_greedy(void **state)
{
    (void)state;
    static rsnap r;
    sched_decision dg[MAXJ], dr[MAXJ];
    sched_policy *g = make("greedy", NULL), *rl = make("rl", NULL);
    for (int it = 0; it < 500; it++) {
        random_snapshot(&r, it % 2);
        decide_ok(g, &r.s, dg);
        decide_ok(rl, &r.s, dr);
        for (int i = 0; i < r.s.n_jobs; i++)
            assert_int_equal(dr[i].desired, dg[i].desired);
    }
    sched_rl_stats st;
    assert_int_equal(sched_rl_get_stats(rl, &st), KD_OK);
    assert_int_equal(st.states_visited, 0);
    assert_int_equal(sched_rl_get_stats(g, &st), KD_EINVAL);
    assert_int_equal(sched_observe(rl, "nobody", 1.0, 0), KD_ENOTFOUND);
    sched_policy_free(&g);
    sched_policy_free(&rl);
}

/* Trains an rl policy on random snapshots so that its table holds something. */
static sched_policy *trained_rl(int double_q)
{
    static rsnap r;
    sched_decision d[MAXJ];
    sched_options o;
    sched_options_default(&o);
    o.learn = 1;
    o.double_q = double_q;
    o.min_visits = 1;
    sched_policy *p = make("rl", &o);
    rng_state = 12345;
    for (int it = 0; it < 400; it++) {
        random_snapshot(&r, 1);
        decide_ok(p, &r.s, d);
        for (int i = 0; i < r.s.n_jobs; i++)
            sched_observe(p, r.jobs[i].id, urand(), 0);
    }
    return p;
}

static void test_rl_learns(void **state)
{
    (void)state;
    sched_policy *p = trained_rl(1);
    sched_rl_stats st;
    assert_int_equal(sched_rl_get_stats(p, &st), KD_OK);
    /* without goodput tables training offers the cluster layer's greedy rules 5 and 6
     * only (greedy moderated by the per-job table measured no better than greedy), so
     * the updates are the cluster layer's: one per 10 decisions */
    assert_true(st.updates >= 39);
    assert_true(st.states_visited >= 2);
    assert_true(st.epsilon < 0.2); /* decays */
    char err[256], *text = NULL;
    assert_int_equal(sched_qtable_dumps(p, &text, err, sizeof(err)), KD_OK);
    assert_true(strstr(text, "\"version\": 3") || strstr(text, "\"version\":3"));
    assert_non_null(strstr(text, "greedy-p0.4-preempt0.5"));
    free(text);
    sched_policy_free(&p);
}

/* rl's cluster layer: a version 2 table's cluster rule is applied where jobs report
 * goodput (and backed off to from unvisited states), version 1 tables still load, and a
 * foreign cluster section is refused. */
static void test_rl_cluster_layer(void **state)
{
    (void)state;
    char err[256];
    const char *v2 =
        "{\"format\":\"kadet-qtable\",\"version\":2,"
        "\"features\":{\"count\":6,\"efficiency\":4,\"free\":4,\"queue\":4,"
        "\"progress\":3,\"time_left\":4},\"actions\":[-2,-1,0,1,2],\"entries\":[],"
        "\"cluster\":{\"features\":{\"jobs\":5,\"queue\":4,\"goodput\":2,\"spread\":3},"
        "\"actions\":[\"greedy-table\",\"goodput-k0\",\"goodput-k0.5\",\"goodput-k1\","
        "\"goodput-k2\"],\"hold\":10,\"updates\":50,"
        "\"entries\":[{\"s\":[4,3,1,2],\"n\":[0,10,10,10,10],"
        "\"q\":[0,-9,-8,-1,-5],\"q2\":[0,-9,-8,-1,-5]}]}}";
    sched_policy *p = make("rl", NULL);
    if (sched_qtable_loads(p, v2, err, sizeof(err)) != KD_OK)
        fail_msg("v2 table: %s", err);
    sched_node n[2] = {{0, 0, 4}, {0, 0, 4}};
    double g[8] = {100, 190, 270, 340, 400, 450, 490, 520};
    sched_tp tp[1] = {{2, 190}};
    sched_job j[2] = {job("a", 1, 8, 2, 600), job("b", 1, 8, 0, 60)};
    for (int i = 0; i < 2; i++) {
        j[i].goodput = g;
        j[i].n_goodput = 8;
        j[i].remaining = 1e6 * (i + 1);
    }
    j[0].tp = tp;
    j[0].n_tp = 1;
    sched_snapshot s = {n, 2, j, 2, 60, 30};
    sched_decision d[2];
    /* (2 jobs, half queued, goodput, small spread) was never visited: the back-off takes
     * the rule that is best where the table was trained, goodput with k = 1 */
    decide_ok(p, &s, d);
    for (int i = 0; i < 2; i++)
        assert_non_null(strstr(d[i].reason, "goodput rule k=1.0"));
    assert_true(d[1].desired >= 1);
    sched_policy_free(&p);
    /* jobs without goodput tables: greedy with the per-job table (never a goodput rule) */
    p = make("rl", NULL);
    assert_int_equal(sched_qtable_loads(p, v2, err, sizeof(err)), KD_OK);
    for (int i = 0; i < 2; i++) {
        j[i].goodput = NULL;
        j[i].n_goodput = 0;
    }
    decide_ok(p, &s, d);
    for (int i = 0; i < 2; i++)
        assert_null(strstr(d[i].reason, "goodput rule"));
    sched_policy_free(&p);
    /* a version 1 table (no cluster section) still loads */
    p = make("rl", NULL);
    char *v1 = strdup(v2);
    char *ver = strstr(v1, "\"version\":2");
    ver[10] = '1';
    char *cl = strstr(v1, ",\"cluster\"");
    snprintf(cl, 2, "}");
    if (sched_qtable_loads(p, v1, err, sizeof(err)) != KD_OK)
        fail_msg("v1 table: %s", err);
    free(v1);
    /* a cluster section written for other actions or another hold is refused whole */
    char *bad = strdup(v2);
    char *h = strstr(bad, "\"hold\":10");
    h[7] = '9';
    assert_int_equal(sched_qtable_loads(p, bad, err, sizeof(err)), KD_EFORMAT);
    assert_non_null(strstr(err, "hold"));
    free(bad);
    bad = strdup(v2);
    char *k1 = strstr(bad, "goodput-k1\"");
    k1[9] = '3';
    assert_int_equal(sched_qtable_loads(p, bad, err, sizeof(err)), KD_EFORMAT);
    assert_non_null(strstr(err, "cluster action"));
    free(bad);
    sched_policy_free(&p);
}

/* Version 3's rules for jobs without goodput tables: greedy with a flatter time term that
 * may preempt a long job at one agent for a short one that waits; chosen by the pooled
 * advantage where the state itself was never visited; a version 3 table with 5 actions
 * (a version 2 cluster section) is refused; the difference reward's baseline is rl's only. */
static void test_rl_cluster_rules_v3(void **state)
{
    (void)state;
    char err[256];
    const char *v3 =
        "{\"format\":\"kadet-qtable\",\"version\":3,"
        "\"features\":{\"count\":6,\"efficiency\":4,\"free\":4,\"queue\":4,"
        "\"progress\":3,\"time_left\":4},\"actions\":[-2,-1,0,1,2],\"entries\":[],"
        "\"cluster\":{\"features\":{\"jobs\":5,\"queue\":4,\"goodput\":2,\"spread\":3},"
        "\"actions\":[\"greedy-table\",\"goodput-k0\",\"goodput-k0.5\",\"goodput-k1\","
        "\"goodput-k2\",\"greedy-p0.4-preempt0.5\",\"greedy-p0.5-preempt0.5\"],"
        "\"hold\":10,\"updates\":40,"
        "\"entries\":[{\"s\":[3,0,0,0],\"n\":[0,0,0,0,0,20,20],"
        "\"q\":[0,0,0,0,0,-1,-3],\"q2\":[0,0,0,0,0,-1,-3]}]}}";
    sched_policy *p = make("rl", NULL);
    if (sched_qtable_loads(p, v3, err, sizeof(err)) != KD_OK)
        fail_msg("v3 table: %s", err);
    /* one node of 2 slots: a long job and a medium one at 1 agent each, a short one waits */
    sched_node n[1] = {{0, 0, 2}};
    sched_tp tp[3][1] = {{{1, 1}}, {{1, 1}}, {{1, 1}}};
    sched_job j[3] = {job("long", 1, 2, 1, 6000), job("mid", 1, 2, 1, 600),
                      job("short", 1, 1, 0, 60)};
    double rem[3] = {1e6, 2e4, 300};
    for (int i = 0; i < 3; i++) {
        j[i].tp = tp[i];
        j[i].n_tp = 1;
        j[i].remaining = rem[i];
        j[i].since_change_s = 600;
    }
    sched_snapshot s = {n, 1, j, 3, 60, 30};
    sched_decision d[3];
    decide_ok(p, &s, d);
    for (int i = 0; i < 3; i++)
        assert_non_null(strstr(d[i].reason, "rl rule power=0.4 preempt=0.5"));
    assert_int_equal(d[0].desired, 0); /* preempted */
    assert_int_equal(d[1].desired, 1);
    assert_int_equal(d[2].desired, 1);
    sched_policy_free(&p);
    /* greedy never preempts: the short job waits */
    p = make("greedy", NULL);
    decide_ok(p, &s, d);
    assert_int_equal(d[0].desired, 1);
    assert_int_equal(d[2].desired, 0);
    assert_int_equal(sched_rl_set_baseline(p, 3), KD_EINVAL);
    sched_policy_free(&p);
    p = make("rl", NULL);
    assert_int_equal(sched_rl_set_baseline(p, 3), KD_OK);
    assert_int_equal(sched_rl_set_baseline(p, NAN), KD_OK); /* none */
    /* version 3 with version 2's five actions is refused whole */
    char *bad = strdup(v3);
    char *a5 = strstr(bad, ",\"greedy-p0.4");
    memmove(a5, a5 + strlen(",\"greedy-p0.4-preempt0.5\",\"greedy-p0.5-preempt0.5\""),
            strlen(a5 + strlen(",\"greedy-p0.4-preempt0.5\",\"greedy-p0.5-preempt0.5\"")) + 1);
    assert_int_equal(sched_qtable_loads(p, bad, err, sizeof(err)), KD_EFORMAT);
    assert_non_null(strstr(err, "must list 7"));
    free(bad);
    sched_policy_free(&p);
}

static void test_qtable_round_trip(void **state)
{
    (void)state;
    char err[256], path[] = "/tmp/test_sched_qtXXXXXX";
    for (int dq = 0; dq < 2; dq++) {
        sched_policy *a = trained_rl(dq);
        char *text1 = NULL, *text2 = NULL;
        assert_int_equal(sched_qtable_dumps(a, &text1, err, sizeof(err)), KD_OK);
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        close(fd);
        assert_int_equal(sched_qtable_save(a, path, err, sizeof(err)), KD_OK);

        sched_options o;
        sched_options_default(&o);
        o.double_q = dq;
        o.min_visits = 1;
        sched_policy *b = make("rl", &o);
        int rc = sched_qtable_load(b, path, err, sizeof(err));
        if (rc != KD_OK)
            fail_msg("load: %s", err);
        assert_int_equal(sched_qtable_dumps(b, &text2, err, sizeof(err)), KD_OK);
        assert_string_equal(text1, text2);

        /* the loaded table decides as the original (both greedy, no exploration) */
        static rsnap r;
        sched_decision da[MAXJ], db[MAXJ];
        sched_policy *a2 = make("rl", &o);
        assert_int_equal(sched_qtable_loads(a2, text1, err, sizeof(err)), KD_OK);
        for (int it = 0; it < 200; it++) {
            random_snapshot(&r, 1);
            decide_ok(a2, &r.s, da);
            decide_ok(b, &r.s, db);
            for (int i = 0; i < r.s.n_jobs; i++)
                assert_int_equal(da[i].desired, db[i].desired);
        }
        unlink(path);
        free(text1);
        free(text2);
        sched_policy_free(&a);
        sched_policy_free(&a2);
        sched_policy_free(&b);
        snprintf(path, sizeof(path), "%s", "/tmp/test_sched_qtXXXXXX");
    }
}

static void test_corrupt_table_falls_back_to_greedy(void **state)
{
    (void)state;
    static const struct { const char *text; const char *msg; } bad[] = {
        {"{\"format\": \"kadet-qtable\", \"version\": 1, \"feat", "invalid JSON"},
        {"[1, 2, 3]", "not a JSON object"},
        {"{\"format\": \"other\", \"version\": 1}", "format"},
        {"{\"format\": \"kadet-qtable\", \"version\": 2}", "version"},
        {"{\"format\": \"kadet-qtable\", \"version\": 1, \"features\": {\"count\": 7, "
         "\"efficiency\": 4, \"free\": 4, \"queue\": 4, \"progress\": 3, \"time_left\": 4}, "
         "\"actions\": [-2,-1,0,1,2], \"entries\": []}", "count"},
        {"{\"format\": \"kadet-qtable\", \"version\": 1, \"features\": {\"count\": 6, "
         "\"efficiency\": 4, \"free\": 4, \"queue\": 4, \"progress\": 3, \"time_left\": 4}, "
         "\"actions\": [-1,0,1], \"entries\": []}", "actions"},
        {"{\"format\": \"kadet-qtable\", \"version\": 1, \"features\": {\"count\": 6, "
         "\"efficiency\": 4, \"free\": 4, \"queue\": 4, \"progress\": 3, \"time_left\": 4}, "
         "\"actions\": [-2,-1,0,1,2], \"entries\": [{\"s\": [0,0,0,0,0,9], \"n\": [1,1,1,1,1],"
         " \"q\": [0,0,0,0,0]}]}", "out of"},
        {"{\"format\": \"kadet-qtable\", \"version\": 1, \"features\": {\"count\": 6, "
         "\"efficiency\": 4, \"free\": 4, \"queue\": 4, \"progress\": 3, \"time_left\": 4}, "
         "\"actions\": [-2,-1,0,1,2], \"entries\": [{\"s\": [0,0,0,0,0,0], \"n\": [1,1,1,1,1],"
         " \"q\": [0,0,\"x\",0,0]}]}", "finite"},
        {"{\"format\": \"kadet-qtable\", \"version\": 1, \"features\": {\"count\": 6, "
         "\"efficiency\": 4, \"free\": 4, \"queue\": 4, \"progress\": 3, \"time_left\": 4}, "
         "\"actions\": [-2,-1,0,1,2], \"entries\": [{\"s\": [0,0,0,0,0,0], \"n\": [1,1,1,1,1],"
         " \"q\": [0,0,0,0,0]}, {\"s\": [0,0,0,0,0,0], \"n\": [1,1,1,1,1], \"q\": [0,0,0,0,0]}]}",
         "twice"},
    };
    char err[256];
    static rsnap r;
    sched_decision dg[MAXJ], dr[MAXJ];
    sched_policy *g = make("greedy", NULL);
    sched_policy *trained = trained_rl(0);
    char *good = NULL;
    assert_int_equal(sched_qtable_dumps(trained, &good, err, sizeof(err)), KD_OK);
    sched_policy_free(&trained);
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        sched_options o;
        sched_options_default(&o);
        o.min_visits = 1;
        sched_policy *p = make("rl", &o);
        assert_int_equal(sched_qtable_loads(p, good, err, sizeof(err)), KD_OK);
        sched_rl_stats st;
        sched_rl_get_stats(p, &st);
        assert_true(st.states_visited > 0);
        err[0] = '\0';
        int rc = sched_qtable_loads(p, bad[k].text, err, sizeof(err));
        assert_true(rc != KD_OK);
        if (!strstr(err, bad[k].msg))
            fail_msg("table %zu: error '%s' does not mention '%s'", k, err, bad[k].msg);
        sched_rl_get_stats(p, &st);
        assert_int_equal(st.states_visited, 0);
        /* the policy now decides exactly like greedy */
        for (int it = 0; it < 50; it++) {
            random_snapshot(&r, 1);
            decide_ok(g, &r.s, dg);
            decide_ok(p, &r.s, dr);
            for (int i = 0; i < r.s.n_jobs; i++)
                assert_int_equal(dr[i].desired, dg[i].desired);
        }
        sched_policy_free(&p);
    }
    free(good);
    sched_policy *p = make("rl", NULL);
    assert_int_equal(sched_qtable_load(p, "/nonexistent/qtable.json", err, sizeof(err)), KD_EIO);
    assert_non_null(strstr(err, "cannot read"));
    assert_int_equal(sched_qtable_load(g, "/nonexistent/qtable.json", err, sizeof(err)), KD_EINVAL);
    sched_policy_free(&p);
    sched_policy_free(&g);
}

static void test_mutated_tables_never_crash(void **state)
{
    (void)state;
    char err[256], *good = NULL;
    sched_policy *t = trained_rl(1);
    assert_int_equal(sched_qtable_dumps(t, &good, err, sizeof(err)), KD_OK);
    sched_policy_free(&t);
    size_t len = strlen(good);
    char *buf = malloc(len + 1);
    assert_non_null(buf);
    static const char alphabet[] = "{}[],:\"-0123456789.eE+ntrufalsx\\";
    sched_policy *p = make("rl", NULL);
    int rejected = 0;
    rng_state = 99;
    for (int it = 0; it < 300; it++) {
        memcpy(buf, good, len + 1);
        int edits = irand(1, 4);
        for (int e = 0; e < edits; e++)
            buf[irand(0, (int)len - 1)] = alphabet[irand(0, (int)sizeof(alphabet) - 2)];
        if (it % 10 == 0)
            buf[irand(0, (int)len - 1)] = '\0'; /* truncation */
        err[0] = '\0';
        int rc = sched_qtable_loads(p, buf, err, sizeof(err));
        if (rc != KD_OK) {
            rejected++;
            assert_true(err[0] != '\0');
        }
    }
    print_message("mutated tables: %d of 300 rejected with a message\n", rejected);
    assert_true(rejected > 0);
    free(buf);
    free(good);
    sched_policy_free(&p);
}

static void test_shipped_table_loads(void **state)
{
    (void)state;
    const char *src = getenv("KADET_SOURCE_DIR");
    char path[1024], err[256];
    if (!src)
        skip();
    snprintf(path, sizeof(path), "%s/operator/scheduler/qtable-default.json", src);
    if (access(path, R_OK) != 0)
        fail_msg("the shipped table %s is missing", path);
    sched_policy *p = make("rl", NULL);
    int rc = sched_qtable_load(p, path, err, sizeof(err));
    if (rc != KD_OK)
        fail_msg("shipped table: %s", err);
    sched_rl_stats st;
    sched_rl_get_stats(p, &st);
    assert_true(st.states_visited > 0);
    sched_policy_free(&p);
}

/* ---- decision time ---- */

static void test_decision_time_100_jobs_100_nodes(void **state)
{
    (void)state;
    static sched_node nodes[100];
    static sched_job jobs[100];
    static sched_tp tp[100][3];
    static double gp[100][32];
    static char ids[100][16];
    static sched_decision d[100];
    for (int i = 0; i < 100; i++) {
        nodes[i].cpu = 32;
        nodes[i].mem = 128e9;
        nodes[i].slots = 8;
        snprintf(ids[i], sizeof(ids[i]), "ns/job-%d", i);
        jobs[i] = job(ids[i], 1, 32, i % 3 ? irand(1, 8) : 0, i * 60.0);
        jobs[i].cpu_per_agent = 2;
        jobs[i].mem_per_agent = 4e9;
        jobs[i].remaining = 1e6 * (1 + i % 7);
        jobs[i].request = 4;
        for (int k = 0; k < 3; k++) {
            tp[i][k].agents = k + 1;
            tp[i][k].samples_per_s = 100 * (k + 1) / (1 + 0.1 * k);
        }
        jobs[i].tp = tp[i];
        jobs[i].n_tp = 3;
        if (i % 2) { /* half the jobs bring a goodput table (pollux) */
            for (int k = 0; k < 32; k++)
                gp[i][k] = 100.0 * (k + 1) / (1 + 0.05 * k);
            jobs[i].goodput = gp[i];
            jobs[i].n_goodput = 32;
        }
    }
    sched_snapshot s = {nodes, 100, jobs, 100, 60, 30};
    for (size_t k = 0; k < sizeof(all_policies) / sizeof(all_policies[0]); k++) {
        sched_policy *p = make(all_policies[k], NULL);
        struct timespec t0, t1;
        double best = 1e9;
        for (int rep = 0; rep < 5; rep++) {
            clock_gettime(CLOCK_MONOTONIC, &t0);
            decide_ok(p, &s, d);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
            best = ms < best ? ms : best;
        }
        print_message("decision time %-8s 100 jobs x 100 nodes: %.3f ms\n", all_policies[k], best);
        /* the target is 10 ms on a release build; sanitizers and a shared machine get
         * headroom, the bench script reports the real figure */
        assert_true(best < 100);
        sched_policy_free(&p);
    }
    /* rl with the shipped table: half the jobs report goodput, so its cluster layer
     * applies a goodput rule (pollux's search with weights) */
    const char *src = getenv("KADET_SOURCE_DIR");
    char path[1024], err[256];
    snprintf(path, sizeof(path), "%s/operator/scheduler/qtable-default.json", src ? src : ".");
    sched_policy *p = make("rl", NULL);
    if (sched_qtable_load(p, path, err, sizeof(err)) == KD_OK) {
        double best = 1e9;
        for (int rep = 0; rep < 5; rep++) {
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            decide_ok(p, &s, d);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
            best = ms < best ? ms : best;
        }
        assert_non_null(strstr(d[0].reason, "goodput rule"));
        print_message("decision time rl-table 100 jobs x 100 nodes: %.3f ms\n", best);
        assert_true(best < 100);
    }
    sched_policy_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_static_fifo_all_or_nothing),
        cmocka_unit_test(test_tiresias_least_attained_first_and_preempts),
        cmocka_unit_test(test_fair_equal_share),
        cmocka_unit_test(test_greedy_prefers_the_job_that_scales),
        cmocka_unit_test(test_greedy_restart_must_pay),
        cmocka_unit_test(test_pollux_goodput_and_fairness),
        cmocka_unit_test(test_goodput_table_from_measurements),
        cmocka_unit_test(test_rl_cluster_layer),
        cmocka_unit_test(test_rl_cluster_rules_v3),
        cmocka_unit_test(test_launcher_one_job_one_node),
        cmocka_unit_test(test_pin_and_cooldown),
        cmocka_unit_test(test_bad_snapshots_rejected),
        cmocka_unit_test(test_safety_limits_random),
        cmocka_unit_test(test_rl_empty_table_is_greedy),
        cmocka_unit_test(test_rl_learns),
        cmocka_unit_test(test_qtable_round_trip),
        cmocka_unit_test(test_corrupt_table_falls_back_to_greedy),
        cmocka_unit_test(test_mutated_tables_never_crash),
        cmocka_unit_test(test_shipped_table_loads),
        cmocka_unit_test(test_decision_time_100_jobs_100_nodes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
