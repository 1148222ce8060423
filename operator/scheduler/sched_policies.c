/*
 * sched_policies.c: the four baseline policies. Each one only proposes counts (p->want)
 * and a packing order (p->order); sched_finish() then enforces the safety limits.
 *
 *   static    the count the job asks for, strict FIFO, all-or-nothing, no preemption
 *   tiresias  2D-LAS: least attained service first (discretised queues, FIFO inside a
 *             queue), the count the job asks for, preempts, skips jobs that do not fit
 *   fair      elastic: everyone gets min (FIFO), then agents are handed out round robin
 *   greedy    elastic, Optimus-like: each agent goes to the job whose predicted reward
 *             grows most from it (marginal throughput gain weighted by the work left)
 */
#include "sched_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Tiresias' queue of a job by attained agent-seconds, 0 = least attained service: by
 * default a job leaves the first queue after one agent-hour and the second after ten
 * (sched_options.las_s). */
static int sched_las_queue(const sched_options *o, double attained_s)
{
    int q = 0;
    while (q < o->n_las && attained_s >= o->las_s[q])
        q++;
    return q;
}

/* Sort key helpers: priority first, then FIFO (older first). Priorities are clamped so
 * that the composed key keeps sub-second resolution of the age. */
static double sched_fifo_key(const sched_job *j)
{
    double prio = j->priority < -9999 ? -9999 : (j->priority > 9999 ? 9999 : j->priority);
    double age = j->age_s < 0 ? 0 : (j->age_s > 1e9 ? 1e9 : j->age_s);
    return prio * 1e10 + age;
}

void sched_policy_static(sched_policy *p, const sched_snapshot *s, sched_decision *out)
{
    sched_pack pk;
    int blocked = -1;

    /* running jobs hold their agents; queued jobs follow in strict FIFO order */
    for (int i = 0; i < s->n_jobs; i++)
        p->score[i] = (s->jobs[i].current > 0 ? 1e15 : 0) + sched_fifo_key(&s->jobs[i]);
    sched_sort_desc(p->order, s->n_jobs, p->score);
    sched_pack_init(&pk, s, p->ncpu, p->nmem, p->nslots);
    for (int k = 0; k < s->n_jobs; k++) {
        int i = p->order[k];
        const sched_job *j = &s->jobs[i];
        int n = sched_requested(j);
        if (j->current > 0) {
            p->want[i] = n;
            sched_pack_place(&pk, j, n);
            snprintf(out[i].reason, SCHED_REASON_MAX, "running with the %d agents it asked for", n);
            continue;
        }
        if (blocked < 0 && sched_pack_fits(&pk, j, n) == n) {
            p->want[i] = n;
            sched_pack_place(&pk, j, n);
            snprintf(out[i].reason, SCHED_REASON_MAX, "admitted in FIFO order with %d agents", n);
        } else {
            /* strict FIFO: nobody overtakes the first job that does not fit */
            if (blocked < 0)
                blocked = i;
            p->want[i] = 0;
            if (blocked == i)
                snprintf(out[i].reason, SCHED_REASON_MAX,
                         "queued: %d agents do not fit yet", n);
            else
                snprintf(out[i].reason, SCHED_REASON_MAX, "queued behind %s",
                         s->jobs[blocked].id ? s->jobs[blocked].id : "an older job");
        }
    }
}

void sched_policy_tiresias(sched_policy *p, const sched_snapshot *s, sched_decision *out)
{
    sched_pack pk;

    for (int i = 0; i < s->n_jobs; i++) {
        const sched_job *j = &s->jobs[i];
        int q = sched_las_queue(&p->o, j->attained_s);
        p->score[i] = -q * 1e15 + sched_fifo_key(j);
    }
    sched_sort_desc(p->order, s->n_jobs, p->score);
    sched_pack_init(&pk, s, p->ncpu, p->nmem, p->nslots);
    for (int k = 0; k < s->n_jobs; k++) {
        int i = p->order[k];
        const sched_job *j = &s->jobs[i];
        int n = sched_requested(j);
        int q = sched_las_queue(&p->o, j->attained_s);
        if (sched_pack_fits(&pk, j, n) == n) {
            sched_pack_place(&pk, j, n);
            p->want[i] = n;
            snprintf(out[i].reason, SCHED_REASON_MAX,
                     "LAS queue %d (%.0f agent-s attained): runs with %d agents", q,
                     j->attained_s, n);
        } else {
            p->want[i] = 0;
            snprintf(out[i].reason, SCHED_REASON_MAX, "LAS queue %d: %s, %d agents do not fit",
                     q, j->current > 0 ? "preempted" : "queued", n);
        }
    }
}

void sched_policy_fair(sched_policy *p, const sched_snapshot *s, sched_decision *out)
{
    sched_pack pk;
    int progress = 1;

    for (int i = 0; i < s->n_jobs; i++)
        p->score[i] = (s->jobs[i].current > 0 ? 1e15 : 0) + sched_fifo_key(&s->jobs[i]);
    sched_sort_desc(p->order, s->n_jobs, p->score);
    sched_pack_init(&pk, s, p->ncpu, p->nmem, p->nslots);
    /* everyone's minimum first, running jobs before queued ones */
    for (int k = 0; k < s->n_jobs; k++) {
        int i = p->order[k];
        const sched_job *j = &s->jobs[i];
        if (sched_pack_fits(&pk, j, j->min) == j->min)
            p->want[i] = sched_pack_place(&pk, j, j->min);
    }
    /* then water-filling: one agent per job per round until nothing fits */
    while (progress) {
        progress = 0;
        for (int k = 0; k < s->n_jobs; k++) {
            int i = p->order[k];
            const sched_job *j = &s->jobs[i];
            if (p->want[i] == 0 || p->want[i] >= j->max)
                continue;
            if (sched_pack_place(&pk, j, 1) == 1) {
                p->want[i]++;
                progress = 1;
            }
        }
    }
    for (int i = 0; i < s->n_jobs; i++)
        snprintf(out[i].reason, SCHED_REASON_MAX, p->want[i] > 0
                 ? "equal share: %d agents" : "queued: no room for its minimum (%d)",
                 p->want[i] > 0 ? p->want[i] : s->jobs[i].min);
}

/* Predicted reward of job j at n agents counting the restart stall that any change of
 * its count costs (a queued job pays it too: starting is a change). */
static double sched_reff(const sched_scale *sc, const sched_job *j, int n, const sched_options *o,
                         double restart_s)
{
    return sched_utility(sc, j, n, o, n == j->current ? 0 : restart_s);
}

/* Utility gained per agent by the job's next step (0 -> min for a queued job, n -> n + 1
 * otherwise); -INFINITY at max. */
static double sched_gain_up(const sched_scale *sc, const sched_job *j, int n,
                            const sched_options *o, double restart_s)
{
    if (n >= j->max)
        return -INFINITY;
    int step = n == 0 ? j->min : 1;
    return (sched_reff(sc, j, n + step, o, restart_s) - sched_reff(sc, j, n, o, restart_s)) / step;
}

/* Utility lost by taking one agent from a job (never below min, except a job at min 1
 * when the rule preempts: then its whole utility times the price pre). */
static double sched_loss_down(const sched_scale *sc, const sched_job *j, int n,
                              const sched_options *o, double restart_s, double pre)
{
    if (pre > 0 && n == 1 && j->min == 1 && j->pin <= 0)
        return pre * sched_reff(sc, j, n, o, restart_s);
    if (n <= j->min)
        return INFINITY;
    return sched_reff(sc, j, n, o, restart_s) - sched_reff(sc, j, n - 1, o, restart_s);
}

static void sched_repack(sched_pack *pk, const sched_snapshot *s, sched_policy *p)
{
    sched_pack_init(pk, s, p->ncpu, p->nmem, p->nslots);
    for (int i = 0; i < s->n_jobs; i++)
        if (p->want[i] > 0)
            sched_pack_place(pk, &s->jobs[i], p->want[i]);
}

#define SCHED_GAIN_EPS 1e-9

/* Optimus-like greedy, incremental from the current allocation: free agents go one at a
 * time to the job with the highest marginal reward per agent; then an agent moves from
 * the job that loses least to a job that cannot otherwise grow or start, as long as the
 * receiver gains more than the donors lose. Rewards count the restart stall of a change,
 * so a count only moves when the move pays for its restart. Never preempts. */
void sched_greedy_alloc(sched_policy *p, const sched_snapshot *s, const int *fixed)
{
    sched_pack pk;
    sched_scale sc;
    double *gain = p->score, rs = s->restart_s;
    int *blocked = p->placed; /* free until sched_finish() */
    const sched_options *o = &p->o;

    sched_scale_init(&sc, s, o);
    sc.pow = p->gr_pow;
    sched_pack_init(&pk, s, p->ncpu, p->nmem, p->nslots);
    /* fixed counts first: they are not the greedy's to change */
    for (int i = 0; i < s->n_jobs; i++) {
        p->want[i] = 0;
        blocked[i] = 0;
        const sched_job *j = &s->jobs[i];
        int f = fixed && fixed[i] >= 0 ? fixed[i]
                : j->pin > 0 ? (j->pin < j->min ? j->min : (j->pin > j->max ? j->max : j->pin))
                : sched_cooling(p, j) ? j->current : -1;
        if (f >= 0) {
            int fit = sched_pack_fits(&pk, j, f);
            p->want[i] = fit >= j->min ? sched_pack_place(&pk, j, fit) : 0;
            blocked[i] = 3;
        }
    }
    for (int i = 0; i < s->n_jobs; i++) {
        const sched_job *j = &s->jobs[i];
        int c = j->current > j->max ? j->max : j->current;
        if (blocked[i] == 3)
            continue;
        if (c > 0) {
            c = c < j->min ? j->min : c;
            int fit = sched_pack_fits(&pk, j, c);
            if (fit >= j->min)
                p->want[i] = sched_pack_place(&pk, j, fit);
        }
    }
    /* a job whose own utility is higher with fewer agents (it runs slower at its count,
     * restart included) gives them back before anything is handed out */
    for (int i = 0; i < s->n_jobs; i++) {
        if (blocked[i] == 3 || p->want[i] <= 0)
            continue;
        int n0 = p->want[i];
        while (sched_loss_down(&sc, &s->jobs[i], p->want[i], o, rs, 0) < -SCHED_GAIN_EPS)
            p->want[i]--;
        if (p->want[i] != n0)
            sched_repack(&pk, s, p);
    }
    for (int i = 0; i < s->n_jobs; i++)
        gain[i] = blocked[i] == 3 ? -INFINITY : sched_gain_up(&sc, &s->jobs[i], p->want[i], o, rs);
    /* fill free capacity */
    for (;;) {
        int best = -1;
        for (int i = 0; i < s->n_jobs; i++)
            if (!blocked[i] && gain[i] > SCHED_GAIN_EPS && (best < 0 || gain[i] > gain[best]))
                best = i;
        if (best < 0)
            break;
        const sched_job *j = &s->jobs[best];
        int step = p->want[best] == 0 ? j->min : 1;
        if (sched_pack_fits(&pk, j, step) < step) {
            blocked[best] = 1;
            continue;
        }
        sched_pack_place(&pk, j, step);
        p->want[best] += step;
        gain[best] = sched_gain_up(&sc, j, p->want[best], o, rs);
    }
    /* move agents from cheap donors to blocked jobs worth more. A job that received may
     * not donate and a donor may not receive, so agents never cycle (a guarantee that
     * does not rest on the gains being consistent with the losses); p->order is free
     * scratch until the end and marks the roles (1 received, 2 donated). */
    int *role = p->order;
    for (int i = 0; i < s->n_jobs; i++)
        role[i] = 0;
    for (;;) {
        int r = -1;
        for (int i = 0; i < s->n_jobs; i++)
            if (blocked[i] == 1 && role[i] != 2 && gain[i] > SCHED_GAIN_EPS &&
                (r < 0 || gain[i] > gain[r]))
                r = i;
        if (r < 0)
            break;
        const sched_job *jr = &s->jobs[r];
        int step = p->want[r] == 0 ? jr->min : 1;
        double need_gain = gain[r] * step, lost = 0;
        int ok = 0;
        memcpy(p->spare, p->want, sizeof(int) * (size_t)s->n_jobs); /* to undo */
        /* repacking is the expensive part: only when the capacity freed so far could
         * hold the receiver in total (necessary, not sufficient: nodes fragment) */
        double free_slots, free_cpu, free_mem;
        sched_repack(&pk, s, p);
        sched_pack_totals(&pk, &free_slots, &free_cpu, &free_mem);
        for (;;) {
            if (free_slots >= step - 1e-9 && free_cpu >= step * jr->cpu_per_agent - 1e-9 &&
                free_mem >= step * jr->mem_per_agent - 1e-9) {
                sched_repack(&pk, s, p);
                if (sched_pack_fits(&pk, jr, step) >= step) {
                    ok = 1;
                    break;
                }
            }
            int d = -1;
            double dl = INFINITY;
            for (int i = 0; i < s->n_jobs; i++) {
                if (i == r || p->want[i] <= 0 || blocked[i] == 3 || role[i] == 1)
                    continue;
                double l = sched_loss_down(&sc, &s->jobs[i], p->want[i], o, rs, p->gr_pre);
                if (l < dl) {
                    dl = l;
                    d = i;
                }
            }
            if (d < 0 || lost + dl >= need_gain - SCHED_GAIN_EPS)
                break;
            lost += dl;
            p->want[d]--;
            free_slots += 1;
            free_cpu += s->jobs[d].cpu_per_agent > 0 ? s->jobs[d].cpu_per_agent : 0;
            free_mem += s->jobs[d].mem_per_agent > 0 ? s->jobs[d].mem_per_agent : 0;
        }
        if (ok) {
            sched_pack_place(&pk, jr, step);
            p->want[r] += step;
            role[r] = 1;
            for (int i = 0; i < s->n_jobs; i++)
                if (p->want[i] < p->spare[i])
                    role[i] = 2;
            for (int i = 0; i < s->n_jobs; i++)
                if (i == r || p->want[i] != p->spare[i])
                    gain[i] = sched_gain_up(&sc, &s->jobs[i], p->want[i], o, rs);
            /* the receiver may be able to take more now; keep it a candidate */
        } else {
            memcpy(p->want, p->spare, sizeof(int) * (size_t)s->n_jobs);
            blocked[r] = 2; /* not worth it (or impossible): stop trying this job */
        }
    }
    /* pack fixed and running jobs first, then in order of the utility each job reaches,
     * so that the safety stage keeps the same winners when capacity is tight */
    for (int i = 0; i < s->n_jobs; i++) {
        p->order[i] = i;
        p->score[i] = (blocked[i] == 3 ? 2e3 : 0) + (s->jobs[i].current > 0 ? 1e3 : 0) +
                      sched_utility(&sc, &s->jobs[i], p->want[i], o, 0);
    }
    sched_sort_desc(p->order, s->n_jobs, p->score);
}

void sched_policy_greedy(sched_policy *p, const sched_snapshot *s, sched_decision *out)
{
    sched_scale sc;
    const sched_options *o = &p->o;

    sched_greedy_alloc(p, s, NULL);
    sched_scale_init(&sc, s, o);
    for (int i = 0; i < s->n_jobs; i++) {
        const sched_job *j = &s->jobs[i];
        if (p->want[i] > 0)
            snprintf(out[i].reason, SCHED_REASON_MAX,
                     "greedy: %d agents, est. %.0fs left, next agent gains %.3g", p->want[i],
                     sched_time_left(j, p->want[i], o->prior_k),
                     p->want[i] < j->max ? sched_gain_up(&sc, j, p->want[i], o, s->restart_s)
                                         : 0.0);
        else
            snprintf(out[i].reason, SCHED_REASON_MAX, "greedy: queued, no room for %d agents",
                     j->min);
    }
}
