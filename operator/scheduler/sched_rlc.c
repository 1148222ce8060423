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

const double sched_c_k[SCHED_C_ACTIONS] = {0, 0, 0.5, 1, 2, 0, 0};
/* actions 5 and 6: greedy with its time term (1/T)/mean(1/T) raised to pow (a short
 * job's lead over a long one counts less) and a running job at min 1 preemptible for a
 * job that gains more than pre times its utility (greedy itself never preempts) */
const double sched_c_pow[SCHED_C_ACTIONS] = {0, 0, 0, 0, 0, 0.4, 0.5};
const double sched_c_pre[SCHED_C_ACTIONS] = {0, 0, 0, 0, 0, 0.5, 0.5};

#define SCHED_C_MIN_VISITS 10 /* evaluation trusts an action after this many updates */
#define SCHED_C_SHRINK 100    /* pseudo-visits of the pooled advantage in evaluation */
#define SCHED_C_POOL_CAP 100  /* visits one state contributes to the pool, at most */

void sched_rlc_clear(sched_rlc *c)
{
    memset(c, 0, sizeof(*c));
    c->prev_jobs = -1;
    c->base = -1;
    c->prev_base = -1;
}

long sched_rlc_states(const sched_rlc *c)
{
    long n = 0;
    for (int st = 0; st < SCHED_C_STATES; st++)
        for (int a = 0; a < SCHED_C_ACTIONS; a++)
            if (c->visits[st * SCHED_C_ACTIONS + a] > 0) {
                n++;
                break;
            }
    return n;
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
    return ((st / SCHED_C_SPREAD) % SCHED_C_GP == 1) ? (a >= 1 && a <= 4) : a >= 5;
}

/* What evaluation falls back to where the table knows nothing: greedy moderated by the
 * per-job table without goodput tables (so an empty table decides like greedy), Pollux's
 * objective with them. */
static int rlc_default(int st)
{
    return ((st / SCHED_C_SPREAD) % SCHED_C_GP == 1) ? 1 : 0;
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
    best = rlc_default(st);
    for (int a = 0; a < SCHED_C_ACTIONS; a++)
        if (rlc_allowed(st, a) && votes[a] > votes[best])
            best = a;
    return best;
}

/* Relative advantages of the actions tried in state x: Q over the visit-weighted mean Q
 * of the state's tried (allowed) actions, divided by that mean's magnitude, since states
 * differ in scale by the jobs they hold. Returns 0 when fewer than two actions were tried
 * (no comparison in the state). */
static int rlc_adv(const sched_rlc *c, int x, double *adv)
{
    double tot = 0, m = 0;
    int tried = 0;
    for (int a = 0; a < SCHED_C_ACTIONS; a++) {
        unsigned n = c->visits[x * SCHED_C_ACTIONS + a];
        adv[a] = 0;
        if (n == 0 || !rlc_allowed(x, a))
            continue;
        tried++;
        tot += n;
        m += n * rlc_q(c, x * SCHED_C_ACTIONS + a);
    }
    if (tried < 2)
        return 0;
    m /= tot;
    double scale = fabs(m) > 1e-9 ? fabs(m) : 1;
    for (int a = 0; a < SCHED_C_ACTIONS; a++)
        if (c->visits[x * SCHED_C_ACTIONS + a] > 0 && rlc_allowed(x, a))
            adv[a] = (rlc_q(c, x * SCHED_C_ACTIONS + a) - m) / scale;
    return 1;
}

/* Evaluation's choice in state st: each action's relative advantage in st shrunk towards
 * its advantage pooled over the states with the same goodput feature (weighted by
 * visits, each capped at SCHED_C_POOL_CAP), with SCHED_C_SHRINK pseudo-visits of the pool:
 * the cluster reward is noisy (arrivals are exogenous), so a state's own estimate wins
 * only where it has many more visits than the prior. -1 when nothing was compared. */
static int rlc_choose(const sched_rlc *c, int st)
{
    double pool[SCHED_C_ACTIONS] = {0}, w[SCHED_C_ACTIONS] = {0}, adv[SCHED_C_ACTIONS];
    int gp = (st / SCHED_C_SPREAD) % SCHED_C_GP;
    double prior = SCHED_C_SHRINK;
    for (int x = 0; x < SCHED_C_STATES; x++) {
        if ((x / SCHED_C_SPREAD) % SCHED_C_GP != gp || !rlc_adv(c, x, adv))
            continue;
        for (int a = 0; a < SCHED_C_ACTIONS; a++) {
            unsigned n = c->visits[x * SCHED_C_ACTIONS + a];
            double wn = n < SCHED_C_POOL_CAP ? n : SCHED_C_POOL_CAP;
            if (n == 0 || !rlc_allowed(x, a))
                continue;
            pool[a] += wn * adv[a];
            w[a] += wn;
        }
    }
    int own = rlc_adv(c, st, adv), best = -1;
    double best_v = 0;
    for (int a = 0; a < SCHED_C_ACTIONS; a++) {
        if (!rlc_allowed(st, a) || w[a] <= 0)
            continue;
        double n = own ? c->visits[st * SCHED_C_ACTIONS + a] : 0;
        double v = (n * adv[a] + prior * pool[a] / w[a]) / (n + prior);
        if (best < 0 || v > best_v) {
            best = a;
            best_v = v;
        }
    }
    return best;
}

int sched_rlc_step(sched_policy *p, const sched_snapshot *s)
{
    sched_rlc *c = &p->rl->c;
    int st = rlc_state(p, s);
    if (c->pending) {
        if (c->prev_jobs >= 0) {
            double mine = 0.5 * (c->prev_jobs + s->n_jobs);
            /* difference reward: the baseline's jobs on the same arrivals minus its own */
            double theirs = c->base >= 0 && c->prev_base >= 0 ? 0.5 * (c->prev_base + c->base) : 0;
            c->reward += (theirs - mine) * c->prev_interval / 3600.0;
        }
        c->held++;
    }
    c->prev_jobs = s->n_jobs;
    c->prev_interval = s->interval_s;
    c->prev_base = c->base;
    c->base = -1; /* given again before the next decision, or none */
    if (c->pending && c->held < SCHED_C_HOLD)
        return c->action;
    if (c->pending && p->o.learn)
        rlc_update(p, c->state, c->action, c->reward, st);
    int a;
    if (p->o.learn) {
        int ok[SCHED_C_ACTIONS], n_ok = 0;
        for (int b = 0; b < SCHED_C_ACTIONS; b++)
            if (rlc_allowed(st, b))
                ok[n_ok++] = b;
        if (sched_rand(p) < p->rl->epsilon) {
            int k = (int)(sched_rand(p) * n_ok);
            a = ok[k < n_ok ? k : n_ok - 1];
        } else {
            /* unvisited actions are tried first */
            a = -1;
            for (int k = 0; k < n_ok && a < 0; k++)
                if (c->visits[st * SCHED_C_ACTIONS + ok[k]] == 0)
                    a = ok[k];
            if (a < 0) {
                a = ok[0];
                for (int k = 1; k < n_ok; k++)
                    if (rlc_q(c, st * SCHED_C_ACTIONS + ok[k]) > rlc_q(c, st * SCHED_C_ACTIONS + a))
                        a = ok[k];
            }
        }
    } else {
        a = rlc_choose(c, st);
        if (a < 0)
            a = rlc_argmax(c, NULL, st, SCHED_C_MIN_VISITS);
        if (a < 0)
            a = rlc_backoff(c, st);
        if (!rlc_allowed(st, a))
            a = rlc_default(st);
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
    c->base = -1;
    c->prev_base = -1;
}
