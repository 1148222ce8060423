/*
 * sched_pollux.c: the pollux policy, goodput-based joint allocation as the Pollux paper
 * (OSDI 2021) describes it, written for the policy core (docs/scheduler.md, "pollux").
 *
 * Each job's goodput at n agents comes from the caller (sched_job.goodput: useful
 * samples/s with the batch chosen for that count, e.g. from the job's measured step times
 * and gradient noise scale) or, without a table, from the speed model's throughput. A
 * job's speedup is its goodput over the goodput at a fair share (the cluster's agent
 * slots divided evenly among the jobs), lowered by the restart penalty when its count
 * changes while it runs: (age - restarts * restart_s) / (age + restart_s). The policy maximises the
 * power mean with p = -1 (the harmonic mean) of the speedups over all jobs, so that a
 * job left without agents weighs heavily and agents go where they add most goodput.
 * As Pollux, a job may grow to at most twice the largest count it has been measured at
 * (its model is not trusted further), and jobs may be preempted (count 0).
 *
 * Search: starting from the current counts, free agents go one step at a time to the job
 * whose term falls most per agent (steps of up to one node's slots, so that a restart
 * penalty is paid once for a useful jump), then agents move between pairs of jobs while a
 * move lowers the objective (first improvement, bounded passes), then free agents are
 * handed out again. Counts only: the caller places agents (kadet-sim packs a job onto the
 * nodes it already uses, then the emptiest nodes), and sched_finish() applies the safety
 * limits after the search.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched_internal.h"

#define PX_EPS 1e-3     /* the artifact's offset inside the power mean */
#define PX_PASSES 40    /* move passes per decision */
#define PX_STEP_MAX 8   /* largest step tried when growing or moving */

typedef struct px_ctx {
    const sched_snapshot *s;
    double *w;      /* per job: weight of its term (1 = pollux) */
    const sched_options *o;
    double *base;   /* per job: goodput at the fair share */
    double *pen;    /* per job: restart penalty factor */
    int *hi;        /* per job: largest count allowed */
    const double *g; /* goodput of job i at n agents: g[off[i] + n], n = 0..hi[i] */
    const int *off;
    double scale;   /* nodes / slots: a node's worth of agents is a speedup of 1 */
} px_ctx;

static double px_goodput(const sched_job *j, int n, double prior_k)
{
    if (n <= 0)
        return 0;
    if (j->goodput && j->n_goodput > 0)
        return j->goodput[(n <= j->n_goodput ? n : j->n_goodput) - 1];
    double v = sched_predict_speed(j, n, prior_k);
    return v > 0 ? v : (double)n; /* never measured: linear, as Pollux's unprofiled jobs */
}

/* The job's term of the objective (sum of 1 / (scaled speedup + eps)) at n agents. */
static double px_term(const px_ctx *c, int i, int n)
{
    const sched_job *j = &c->s->jobs[i];
    double sp = 0;
    if (n > 0) {
        sp = (n <= c->hi[i] ? c->g[c->off[i] + n] : px_goodput(j, n, c->o->prior_k)) /
             c->base[i];
        if (n != j->current)
            sp *= c->pen[i];
        sp *= c->scale;
    }
    return (c->w ? c->w[i] : 1.0) / (sp + PX_EPS);
}

static int px_valid(const sched_job *j, const px_ctx *c, int i, int n)
{
    return n == 0 || (n >= j->min && n <= c->hi[i]);
}

/* Hands out free agents; returns what is left. */
static int px_fill(const px_ctx *c, int *want, int free_agents, int step_max)
{
    const sched_snapshot *s = c->s;
    while (free_agents > 0) {
        int best = -1, bestd = 0;
        double bestg = 0;
        for (int i = 0; i < s->n_jobs; i++) {
            const sched_job *j = &s->jobs[i];
            double t0 = px_term(c, i, want[i]);
            int first = want[i] == 0 ? j->min : 1;
            for (int d = first; d <= first + step_max - 1 && d <= free_agents; d++) {
                int n = want[i] + d;
                if (n > c->hi[i])
                    break;
                double g = (t0 - px_term(c, i, n)) / d;
                if (g > bestg + 1e-12) {
                    bestg = g;
                    best = i;
                    bestd = d;
                }
            }
        }
        if (best < 0)
            break;
        want[best] += bestd;
        free_agents -= bestd;
    }
    return free_agents;
}

void sched_policy_pollux(sched_policy *p, const sched_snapshot *s, sched_decision *out)
{
    int nj = s->n_jobs;
    if (nj == 0)
        return;
    /* scratch: p->score = base goodput, p->aux = restart penalty, p->spare = hi */
    px_ctx c = {s, NULL, &p->o, p->score, p->aux, p->spare, NULL, p->placed, 1.0};
    /* p->aux holds two per-job arrays: penalty factors, then weights (rl only) */
    double *wt = p->aux + p->cap_jobs;
    if (p->px_k != 0)
        c.w = wt;
    int slots_total = 0;
    for (int k = 0; k < s->n_nodes; k++)
        slots_total += s->nodes[k].slots > 0 ? s->nodes[k].slots : 0;
    int cap = sched_capacity_for(s, &s->jobs[0]);
    if (slots_total <= 0)
        slots_total = cap;
    int per_node = s->n_nodes > 0 ? (slots_total + s->n_nodes - 1) / s->n_nodes : 1;
    if (per_node < 1)
        per_node = 1;
    c.scale = (double)s->n_nodes / (slots_total > 0 ? slots_total : 1);
    int fair = (slots_total + nj - 1) / nj;
    if (fair < 1)
        fair = 1;

    int used = 0;
    for (int i = 0; i < nj; i++) {
        const sched_job *j = &s->jobs[i];
        int maxtp = 0;
        for (int t = 0; t < j->n_tp; t++)
            if (j->tp[t].agents > maxtp)
                maxtp = j->tp[t].agents;
        int hi = j->max;
        int explore = 2 * (maxtp > j->current ? maxtp : j->current);
        if (explore < j->min)
            explore = j->min;
        if (hi > explore)
            hi = explore;
        if (j->goodput && j->n_goodput > 0 && hi > j->n_goodput)
            hi = j->n_goodput;
        if (hi < j->min)
            hi = j->min;
        c.hi[i] = hi;
        int fn = fair < j->max ? fair : j->max;
        double b = px_goodput(j, fn, p->o.prior_k);
        c.base[i] = b > 0 ? b : 1;
        double age = j->age_s > 0 ? j->age_s : 0;
        /* a queued job pays its start delay whenever it starts, so the penalty (meant
         * to discourage reallocations) does not apply to it */
        double pe = j->current == 0 || age + s->restart_s <= 0
                        ? 1
                        : fmax(age - j->restarts * s->restart_s, 0) / (age + s->restart_s);
        c.pen[i] = pe;
        if (p->px_k != 0) {
            /* rl's weighting: shorter jobs count more (time left at the fair share) */
            double g = px_goodput(j, fn, p->o.prior_k);
            double rem = j->remaining > 0 ? j->remaining : 3600 * g;
            wt[i] = pow(fmax(rem / fmax(g, 1e-9), 60.0), -p->px_k);
        }
        int cur = j->current;
        if (cur > hi)
            cur = hi;
        if (cur > 0 && cur < j->min)
            cur = 0;
        p->want[i] = cur;
        used += cur;
    }
    /* goodput of every job at every allowed count, computed once (the speed model's fit
     * is the expensive part); offsets in p->placed, which sched_finish() resets later */
    size_t need = 0;
    for (int i = 0; i < nj; i++) {
        p->placed[i] = (int)need;
        need += (size_t)c.hi[i] + 1;
    }
    if (need > p->cap_pxg) {
        double *ng = realloc(p->pxg, sizeof(double) * need);
        if (!ng) { /* out of memory: keep the current counts */
            for (int i = 0; i < nj; i++)
                snprintf(out[i].reason, SCHED_REASON_MAX, "pollux: out of memory, keeps %d",
                         p->want[i]);
            return;
        }
        p->pxg = ng;
        p->cap_pxg = need;
    }
    for (int i = 0; i < nj; i++)
        for (int n = 0; n <= c.hi[i]; n++)
            p->pxg[p->placed[i] + n] = px_goodput(&s->jobs[i], n, p->o.prior_k);
    c.g = p->pxg;
    int *want = p->want;
    int free_agents = cap - used;
    if (free_agents < 0)
        free_agents = 0;
    free_agents = px_fill(&c, want, free_agents, per_node < PX_STEP_MAX ? per_node : PX_STEP_MAX);

    /* moves between pairs of jobs */
    for (int pass = 0; pass < PX_PASSES; pass++) {
        int improved = 0;
        for (int b = 0; b < nj; b++) {
            double tb = px_term(&c, b, want[b]);
            for (int a = 0; a < nj; a++) {
                if (a == b || want[a] == 0)
                    continue;
                double ta = px_term(&c, a, want[a]);
                int bestd = 0;
                double bestdelta = -1e-9;
                for (int d = 1; d <= want[a] && d <= PX_STEP_MAX; d++) {
                    int na = want[a] - d, nb = want[b] + d;
                    if (nb > c.hi[b])
                        break;
                    if (!px_valid(&s->jobs[a], &c, a, na) || !px_valid(&s->jobs[b], &c, b, nb))
                        continue;
                    double delta = px_term(&c, a, na) + px_term(&c, b, nb) - ta - tb;
                    if (delta < bestdelta) {
                        bestdelta = delta;
                        bestd = d;
                    }
                }
                if (bestd > 0) {
                    want[a] -= bestd;
                    want[b] += bestd;
                    tb = px_term(&c, b, want[b]);
                    improved = 1;
                }
            }
        }
        if (!improved)
            break;
    }
    /* moves can free agents (a job shrinking to 0 below its min); hand them out */
    used = 0;
    for (int i = 0; i < nj; i++)
        used += want[i];
    if (cap > used)
        px_fill(&c, want, cap - used, per_node < PX_STEP_MAX ? per_node : PX_STEP_MAX);

    for (int i = 0; i < nj; i++) {
        const sched_job *j = &s->jobs[i];
        double sp = want[i] > 0 ? px_goodput(j, want[i], p->o.prior_k) / c.base[i] : 0;
        p->score[i] = j->age_s; /* FIFO order for the safety stage */
        snprintf(out[i].reason, SCHED_REASON_MAX,
                 "pollux: %d agents, speedup %.2f over the fair share of %d%s", want[i], sp,
                 fair < j->max ? fair : j->max,
                 want[i] != j->current ? " (restart penalty paid)" : "");
    }
    sched_sort_desc(p->order, nj, p->score);
}
