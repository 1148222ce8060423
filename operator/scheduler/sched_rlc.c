/*
 * sched_rlc.c: the rl policy's cluster layer, tabular Double Q-learning over decisions
 * for the whole cluster (docs/scheduler.md, "rl: the cluster layer").
 *
 * Every SCHED_C_HOLD decisions the layer looks at the cluster (how many jobs, how many
 * wait without agents, whether jobs report goodput, how far apart their estimated times
 * left are) and chooses the allocation rule for the next SCHED_C_HOLD decisions: greedy
 * moderated by the per-job table (sched_rl.c), or the goodput allocation of pollux's
 * search with each job's term weighted by (time left)^-k for k in sched_c_k. The rule
 * moves agents between jobs and, through the goodput tables, sets their batch. The
 * reward is the whole cluster's: minus the jobs in the system over the held interval
 * (job-hours), the quantity whose sum over a workload is the sum of its JCTs, so a rule
 * is credited with what it does for every job, not for the job that received agents.
 */
#include "sched_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const double sched_c_k[SCHED_C_ACTIONS] = {0, 0, 0.5, 1, 2};

#define SCHED_C_MIN_VISITS 10 /* evaluation trusts an action after this many updates */

void sched_rlc_clear(sched_rlc *c)
{
    memset(c, 0, sizeof(*c));
    c->prev_jobs = -1;
}

static int rlc_bucket(double x, const double *edges, int n_edges)
{
    int b = 0;
    while (b < n_edges && x >= edges[b])
        b++;
    return b;
}

static int rlc_cmp(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* The cluster state of a snapshot; uses p->score as scratch. */
static int rlc_state(sched_policy *p, const sched_snapshot *s)
{
    static const double e_jobs[] = {4.5, 8.5, 16.5, 32.5};
    static const double e_queue[] = {1e-9, 0.2, 0.5};
    static const double e_spread[] = {10, 100};
    int n = s->n_jobs, queued = 0, gp = 0, nt = 0;
    for (int i = 0; i < n; i++) {
        const sched_job *j = &s->jobs[i];
        queued += j->current == 0;
        gp += j->n_goodput > 0;
        double t = sched_time_left(j, j->current > 0 ? j->current : j->min, p->o.prior_k);
        if (isfinite(t) && t > 0)
            p->score[nt++] = t;
    }
    double spread = 1;
    if (nt > 1) {
        qsort(p->score, (size_t)nt, sizeof(double), rlc_cmp);
        double med = p->score[nt / 2];
        spread = med > 0 ? p->score[nt - 1] / med : 1;
    }
    int f1 = rlc_bucket(n, e_jobs, 4);
    int f2 = rlc_bucket(n > 0 ? (double)queued / n : 0, e_queue, 3);
    int f3 = n > 0 && 2 * gp >= n;
    int f4 = rlc_bucket(spread, e_spread, 2);
    return ((f1 * SCHED_C_QUEUE + f2) * SCHED_C_GP + f3) * SCHED_C_SPREAD + f4;
}

/* With goodput tables (feature 1) the rules are the goodput ones only: greedy's
 * throughput utility cannot see the batch. Without them only rule 0 is offered: the
 * goodput rules would run on the speed model's throughput, where pollux's objective
 * measured 1.07x greedy and weights k >= 1 starved long jobs, and a cluster layer
 * trained with them was 1.10x greedy held out (fixed model, 1.0x). */
static int rlc_allowed(int st, int a)
{
    return ((st / SCHED_C_SPREAD) % SCHED_C_GP == 1) ? a != 0 : a == 0;
}

static double rlc_q(const sched_rlc *c, int x)
{
    return 0.5 * (c->q1[x] + c->q2[x]);
}

/* Best action in state st by table q (visited actions only when need_visits); -1 if none. */
static int rlc_argmax(const sched_rlc *c, const double *q, int st, unsigned need_visits)
{
    int best = -1;
    for (int a = 0; a < SCHED_C_ACTIONS; a++) {
        int x = st * SCHED_C_ACTIONS + a;
        if (c->visits[x] < need_visits || !rlc_allowed(st, a))
            continue;
        double v = q ? q[x] : rlc_q(c, x);
        if (best < 0 || v > (q ? q[st * SCHED_C_ACTIONS + best]
                               : rlc_q(c, st * SCHED_C_ACTIONS + best)))
            best = a;
    }
    return best;
}

static void rlc_update(sched_policy *p, int st, int a, double r, int st2)
{
    sched_rlc *c = &p->rl->c;
    int x = st * SCHED_C_ACTIONS + a;
    unsigned v = ++c->visits[x];
    double lr = fmax(p->o.lr, 1.0 / v);
    double *q = c->q1, *other = c->q2;
    if (sched_rand(p) < 0.5) {
        q = c->q2;
        other = c->q1;
    }
    double target = r;
    if (st2 >= 0) {
        int a2 = rlc_argmax(c, q, st2, 1);
        /* a state never seen is valued as if this reward went on for ever */
        target += p->o.gamma * (a2 >= 0 ? other[st2 * SCHED_C_ACTIONS + a2]
                                        : r / (1 - p->o.gamma));
    }
    if (v == 1) {
        c->q1[x] = target;
        c->q2[x] = target;
    } else {
        q[x] += lr * (target - q[x]);
    }
    c->updates++;
}

/* A state without trusted actions backs off to the action that is best in most trusted
 * states with the same goodput feature (ties to the lower index); none: 0, greedy with
 * the per-job table. */
static int rlc_backoff(const sched_rlc *c, int st)
{
    int votes[SCHED_C_ACTIONS] = {0}, gp = (st / SCHED_C_SPREAD) % SCHED_C_GP, best;
    for (int x = 0; x < SCHED_C_STATES; x++) {
        if ((x / SCHED_C_SPREAD) % SCHED_C_GP != gp)
            continue;
        int a = rlc_argmax(c, NULL, x, SCHED_C_MIN_VISITS);
        if (a >= 0)
            votes[a]++;
    }
    best = rlc_allowed(st, 0) ? 0 : 1;
    for (int a = best + 1; a < SCHED_C_ACTIONS; a++)
        if (votes[a] > votes[best])
            best = a;
    return best;
}

int sched_rlc_step(sched_policy *p, const sched_snapshot *s)
{
    sched_rlc *c = &p->rl->c;
    int st = rlc_state(p, s);
    if (c->pending) {
        if (c->prev_jobs >= 0)
            c->reward -= 0.5 * (c->prev_jobs + s->n_jobs) * c->prev_interval / 3600.0;
        c->held++;
    }
    c->prev_jobs = s->n_jobs;
    c->prev_interval = s->interval_s;
    if (c->pending && c->held < SCHED_C_HOLD)
        return c->action;
    if (c->pending && p->o.learn)
        rlc_update(p, c->state, c->action, c->reward, st);
    int a;
    if (p->o.learn) {
        int lo = rlc_allowed(st, 0) ? 0 : 1, hi = rlc_allowed(st, 1) ? SCHED_C_ACTIONS : 1;
        if (sched_rand(p) < p->rl->epsilon) {
            a = lo + (int)(sched_rand(p) * (hi - lo));
            if (a >= hi)
                a = hi - 1;
        } else {
            /* unvisited actions keep Q = 0 above any negative value: tried first */
            a = lo;
            for (int b = lo + 1; b < hi; b++)
                if (rlc_q(c, st * SCHED_C_ACTIONS + b) > rlc_q(c, st * SCHED_C_ACTIONS + a))
                    a = b;
        }
    } else {
        a = rlc_argmax(c, NULL, st, SCHED_C_MIN_VISITS);
        if (a < 0)
            a = rlc_backoff(c, st);
        if (!rlc_allowed(st, a))
            a = rlc_allowed(st, 0) ? 0 : 1;
    }
    c->pending = 1;
    c->state = st;
    c->action = a;
    c->held = 0;
    c->reward = 0;
    return a;
}

void sched_rlc_end(sched_policy *p)
{
    sched_rlc *c = &p->rl->c;
    if (c->pending && p->o.learn && c->held > 0)
        rlc_update(p, c->state, c->action, c->reward, -1);
    c->pending = 0;
    c->prev_jobs = -1;
}
