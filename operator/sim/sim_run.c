/*
 * sim_run.c: replays one workload against one policy. Time advances in scheduling
 * intervals; at each boundary the policy sees a snapshot of the jobs that have arrived
 * (agents held, measured throughput at the counts each job has run with, progress, work
 * left) and returns the desired counts. Inside an interval every job progresses at the
 * rate its agent count and placement give (sim_step_time()), after the restart stall that
 * follows any change of its count; a job that finishes mid-interval stops there and its
 * agents stay idle until the next decision, as they would in the operator. The rl policy
 * gets the reward of each interval from the progress actually made.
 *
 * Under the goodput model (sim_goodput.c) a job's work is the progress of its last epoch
 * and it advances epoch by epoch at gain / step time; its batch is the workload's (split
 * by the accumulation rules) or, when adaptive, re-chosen by the job for the best goodput
 * whenever its allocation changes and at every epoch boundary. Policies then see
 * throughput as useful samples per second (progress rate times the smallest traced
 * batch) and the work left as the declared epochs not yet done, never the future gain.
 */
#include "sim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_error.h"

#define SIM_TP_MAX 16

typedef struct sim_js {
    double total;          /* iterations the job needs */
    double done;           /* iterations done */
    int n;                 /* agents held */
    int min, max, request; /* elastic range and the count asked for */
    int started;           /* admitted at least once */
    int finished;
    double stall_until;    /* no progress before this time (restart delay) */
    double last_change;    /* time of the last count change; < 0 = never */
    double attained;       /* agent-seconds held */
    double finish;         /* completion time */
    int rescales;          /* count changes after the first start */
    sched_tp tp[SIM_TP_MAX]; /* measured throughput by count (latest per count) */
    int n_tp;
    /* goodput model */
    int epoch;             /* epochs completed */
    int atomic, accum;     /* local batch per step and accumulation steps */
    int adaptive;          /* 1 = the job re-chooses its batch */
} sim_js;

void sim_config_default(sim_config *c)
{
    c->nodes = 16;
    c->slots = 4;
    c->interval_s = 60;
    c->restart_s = 30;
    c->max_factor = 2;
    c->alpha = 1.0;
    c->beta = 0;
    c->horizon_s = 0;
    c->trace_job = NULL;
    c->batch_model = SIM_BATCH_FIXED;
    c->adaptive = -1;
    c->jobs_out = NULL;
    c->jobs_cap = 0;
    c->baseline = NULL;
    c->n_baseline = 0;
}

/* Moves job i to n agents: grows on nodes it already uses, then on the emptiest nodes;
 * shrinks from the nodes where it has the fewest agents. */
static void sim_place(int *free_slots, int *mine, int nodes, int from, int to)
{
    while (from < to) {
        int best = -1;
        for (int k = 0; k < nodes; k++) {
            if (free_slots[k] <= 0)
                continue;
            if (best < 0 || (mine[k] > 0 && mine[best] == 0) ||
                ((mine[k] > 0) == (mine[best] > 0) && free_slots[k] > free_slots[best]))
                best = k;
        }
        if (best < 0)
            break; /* cannot happen: the policy's packing respects the slots */
        int take = free_slots[best] < to - from ? free_slots[best] : to - from;
        free_slots[best] -= take;
        mine[best] += take;
        from += take;
    }
    while (from > to) {
        int best = -1;
        for (int k = 0; k < nodes; k++)
            if (mine[k] > 0 && (best < 0 || mine[k] < mine[best]))
                best = k;
        int give = mine[best] < from - to ? mine[best] : from - to;
        mine[best] -= give;
        free_slots[best] += give;
        from -= give;
    }
}

static int sim_nodes_used(const int *mine, int nodes)
{
    int k = 0;
    for (int i = 0; i < nodes; i++)
        k += mine[i] > 0;
    return k;
}

static void sim_record_tp(sim_js *j, int n, double samples_per_s)
{
    for (int i = 0; i < j->n_tp; i++)
        if (j->tp[i].agents == n) {
            j->tp[i].samples_per_s = samples_per_s;
            return;
        }
    if (j->n_tp == SIM_TP_MAX) { /* forget the oldest point */
        memmove(&j->tp[0], &j->tp[1], sizeof(j->tp[0]) * (SIM_TP_MAX - 1));
        j->n_tp--;
    }
    j->tp[j->n_tp].agents = n;
    j->tp[j->n_tp].samples_per_s = samples_per_s;
    j->n_tp++;
}

static int sim_cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* Best possible JCT of a job: alone, at its best count and placement, no delays. */
static double sim_ideal(const sim_model *m, const sim_wjob *wj, const sim_js *j,
                        const sim_config *c)
{
    const sim_app *a = &m->apps[wj->app];
    double best = INFINITY;
    for (int n = 1; n <= j->max; n++) {
        int kmin = (n + c->slots - 1) / c->slots, kmax = n < c->nodes ? n : c->nodes;
        for (int k = kmin; k <= kmax; k++) {
            double t = j->total * sim_step_time(a, wj->bsz, n, k);
            if (t < best)
                best = t;
        }
    }
    return best;
}

/* The job's placement as per-node counts of the nodes it uses, in node order. */
static int sim_compact(const int *mine, int nodes, int *out)
{
    int k = 0;
    for (int i = 0; i < nodes; i++)
        if (mine[i] > 0)
            out[k++] = mine[i];
    return k;
}

/* Goodput model: the job's configuration on its current placement. */
static void sim_gp_configure(const sim_gp *g, sim_js *j, const sim_wjob *wj, const int *pl,
                             int k)
{
    if (j->n <= 0) {
        j->atomic = j->accum = 0;
        return;
    }
    if (j->adaptive)
        sim_gp_best(g, pl, k, j->epoch, &j->atomic, &j->accum);
    else
        sim_gp_fixed(g, j->n, wj->bsz, &j->atomic, &j->accum);
}

/* Goodput model: advances job j over [start, t1) epoch by epoch, as the artifact does
 * (an epoch boundary lands on whole seconds). Returns 1 when the job finished (*end =
 * completion time); *did receives the progress made. */
static int sim_gp_advance(const sim_gp *g, sim_js *j, const sim_wjob *wj, const int *pl, int k,
                          double start, double t1, double *end, double *did)
{
    double sec = t1 - start, cur = start;
    *did = 0;
    *end = t1;
    while (sec > 0) {
        double rate = sim_gp_rate(g, pl, k, j->atomic, j->accum, j->epoch);
        if (!(rate > 0))
            return 0;
        double next = g->prog[j->epoch + 1];
        if (j->done + rate * sec < next) {
            j->done += rate * sec;
            *did += rate * sec;
            return 0;
        }
        double delta = rint((next - j->done) / rate);
        if (delta > sec)
            delta = sec;
        *did += next - j->done;
        j->done = next;
        j->epoch++;
        cur += delta;
        sec -= delta;
        if (j->epoch >= g->max_epochs) {
            *end = cur;
            return 1;
        }
        sim_gp_configure(g, j, wj, pl, k);
    }
    return 0;
}

int sim_run(const sim_model *m, const sim_workload *w, const sim_config *c, sched_policy *p,
            sim_result *r, double *jct_out, char *err, size_t errlen)
{
    int nj = w->n_jobs, cap = c->nodes * c->slots, rc = KD_OK;
    double horizon = c->horizon_s > 0 ? c->horizon_s : 30 * 86400.0;
    sim_js *js = calloc((size_t)nj, sizeof(*js));
    int *place = calloc((size_t)nj * (size_t)c->nodes, sizeof(int));
    int *free_slots = calloc((size_t)c->nodes, sizeof(int));
    int *active = calloc((size_t)nj, sizeof(int));
    sched_node *nodes = calloc((size_t)c->nodes, sizeof(*nodes));
    sched_job *sj = calloc((size_t)nj, sizeof(*sj));
    sched_decision *dec = calloc((size_t)nj, sizeof(*dec));
    double *jct = calloc((size_t)nj, sizeof(double));
    int *plv = NULL; /* goodput model: one job's placement, compacted */
    double **gtab = NULL; /* goodput model: per app, goodput by epoch x agents (NAN = not
                             computed yet), the table adaptive jobs hand to policies */

    memset(r, 0, sizeof(*r));
    if (!js || !place || !free_slots || !active || !nodes || !sj || !dec || !jct) {
        rc = kd_errf(err, errlen, KD_ENOMEM, "out of memory");
        goto out;
    }
    if (c->nodes < 1 || c->slots < 1 || !(c->interval_s > 0) || !(c->restart_s >= 0)) {
        rc = kd_errf(err, errlen, KD_EINVAL, "bad cluster settings");
        goto out;
    }
    for (int k = 0; k < c->nodes; k++) {
        free_slots[k] = c->slots;
        nodes[k].slots = c->slots;
    }
    int gpm = c->batch_model == SIM_BATCH_GOODPUT, adaptive = c->adaptive;
    if (adaptive < 0) { /* by policy: the non-elastic ones keep the workload's batch */
        const char *pn = sched_policy_name(p);
        adaptive = !(strcmp(pn, "static") == 0 || strcmp(pn, "tiresias") == 0);
    }
    plv = gpm ? calloc((size_t)(c->nodes > cap ? c->nodes : cap), sizeof(int)) : NULL;
    gtab = gpm ? calloc((size_t)m->n_apps, sizeof(double *)) : NULL;
    for (int a = 0; gtab && a < m->n_apps; a++) {
        const sim_gp *g = m->apps[a].gp;
        if (!g)
            continue;
        size_t len = (size_t)(g->max_epochs + 1) * (size_t)cap;
        gtab[a] = malloc(sizeof(double) * len);
        if (!gtab[a]) {
            rc = kd_errf(err, errlen, KD_ENOMEM, "out of memory");
            goto out;
        }
        for (size_t e = 0; e < len; e++)
            gtab[a][e] = NAN;
    }
    if (gpm && (!plv || !gtab)) {
        rc = kd_errf(err, errlen, KD_ENOMEM, "out of memory");
        goto out;
    }
    double ideal_sum = 0;
    for (int i = 0; i < nj; i++) {
        const sim_wjob *wj = &w->jobs[i];
        sim_js *j = &js[i];
        if (gpm) {
            const sim_app *ap = &m->apps[wj->app];
            if (!ap->gp) {
                rc = kd_errf(err, errlen, KD_EFORMAT, "goodput model of %s: %s", ap->name,
                              ap->gp_err);
                goto out;
            }
            j->total = ap->gp->prog[ap->gp->max_epochs];
            j->adaptive = adaptive;
        } else {
            j->total = sim_iterations(&m->apps[wj->app], wj->bsz);
        }
        j->min = 1;
        j->request = wj->request < cap ? wj->request : cap;
        j->max = (int)ceil(c->max_factor * wj->request);
        if (j->max < j->request)
            j->max = j->request;
        if (j->max > cap)
            j->max = cap;
        j->last_change = -1;
        r->work_total_iters += j->total;
        if (!gpm) /* the ideal JCT is defined for the fixed model only */
            ideal_sum += sim_ideal(m, wj, j, c);
    }
    r->jobs = nj;
    r->ideal_avg = gpm ? 0 : ideal_sum / nj;
    r->min_slack = INFINITY;

    int next = 0, left = nj;
    double t = 0, held = 0;
    while (left > 0 && t < horizon) {
        int na = 0;
        for (int i = 0; i < next; i++)
            if (!js[i].finished)
                active[na++] = i;
        while (next < nj && w->jobs[next].arrival <= t)
            active[na++] = next++;
        if (na == 0) { /* idle cluster: jump to the boundary after the next arrival */
            t = ceil(w->jobs[next].arrival / c->interval_s) * c->interval_s;
            continue;
        }
        for (int a = 0; a < na; a++) {
            int i = active[a];
            sim_js *j = &js[i];
            sched_job *s = &sj[a];
            s->id = w->jobs[i].name;
            s->min = j->min;
            s->max = j->max;
            s->pin = 0;
            s->request = j->request;
            s->cpu_per_agent = 0;
            s->mem_per_agent = 0;
            s->current = j->n;
            s->age_s = t - w->jobs[i].arrival;
            s->attained_s = j->attained;
            s->since_change_s = j->last_change >= 0 ? t - j->last_change : -1;
            s->tp = j->tp;
            s->n_tp = j->n_tp;
            s->progress = j->done / j->total;
            s->remaining = (j->total - j->done) *
                           (gpm ? m->apps[w->jobs[i].app].gp->init_bsz : w->jobs[i].bsz);
            s->alpha = c->alpha;
            s->beta = c->beta;
            s->priority = 0;
            s->restarts = j->rescales;
            s->goodput = NULL;
            s->n_goodput = 0;
            if (gpm && j->adaptive) {
                /* goodput at 1..max agents packed onto the fewest nodes, with the batch
                 * the job would choose, in its current epoch's noise scale */
                const sim_gp *g = m->apps[w->jobs[i].app].gp;
                double *row = &gtab[w->jobs[i].app][(size_t)j->epoch * (size_t)cap];
                int top = j->max < cap ? j->max : cap;
                for (int n = 1; n <= top; n++) {
                    if (!isnan(row[n - 1]))
                        continue;
                    int k = 0, rest = n, at, ac;
                    while (rest > 0) {
                        plv[k] = rest < c->slots ? rest : c->slots;
                        rest -= plv[k++];
                    }
                    row[n - 1] = sim_gp_best(g, plv, k, j->epoch, &at, &ac) * g->init_bsz;
                }
                s->goodput = row;
                s->n_goodput = top;
            }
        }
        long ki = lround(t / c->interval_s); /* interval index of this decision */
        if (c->jobs_out && ki >= 0 && ki < c->jobs_cap)
            c->jobs_out[ki] = na;
        if (c->baseline) /* after the baseline's last decision it has no jobs left */
            sched_rl_set_baseline(p, ki >= 0 && ki < c->n_baseline && c->baseline[ki] >= 0
                                         ? c->baseline[ki] : 0);
        sched_snapshot snap = {nodes, c->nodes, sj, na, c->interval_s, c->restart_s};
        rc = sched_decide(p, &snap, dec, err, errlen);
        if (rc != KD_OK)
            goto out;
        r->decisions++;
        if (c->trace_job)
            for (int a = 0; a < na; a++)
                if (strcmp(w->jobs[active[a]].name, c->trace_job) == 0)
                    fprintf(stderr, "t=%.0f cur=%d -> %d prog=%.3f %s\n", t, js[active[a]].n,
                            dec[a].desired, js[active[a]].done / js[active[a]].total, dec[a].reason);

        /* apply: shrink first so that growth finds the freed slots */
        for (int pass = 0; pass < 2; pass++)
            for (int a = 0; a < na; a++) {
                int i = active[a];
                sim_js *j = &js[i];
                int d = dec[a].desired;
                if (d == j->n || (pass == 0) != (d < j->n))
                    continue;
                if (j->started)
                    j->rescales++;
                sim_place(free_slots, &place[(size_t)i * c->nodes], c->nodes, j->n, d);
                j->n = d;
                j->last_change = t;
                if (gpm) {
                    int k = sim_compact(&place[(size_t)i * c->nodes], c->nodes, plv);
                    sim_gp_configure(m->apps[w->jobs[i].app].gp, j, &w->jobs[i], plv, k);
                }
                if (d > 0) {
                    j->started = 1;
                    j->stall_until = t + c->restart_s;
                }
            }

        /* advance one interval */
        double t1 = t + c->interval_s;
        for (int a = 0; a < na; a++) {
            int i = active[a];
            sim_js *j = &js[i];
            if (j->n <= 0)
                continue;
            const sim_wjob *wj = &w->jobs[i];
            int *mine = &place[(size_t)i * c->nodes];
            double start = j->stall_until > t ? j->stall_until : t;
            double run = t1 > start ? t1 - start : 0, need = j->total - j->done;
            double end = t1, did = 0, rate;
            int done = 0;
            if (gpm) {
                const sim_gp *g = m->apps[wj->app].gp;
                int k = sim_compact(mine, c->nodes, plv);
                done = run > 0 && sim_gp_advance(g, j, wj, plv, k, start, t1, &end, &did);
                if (run <= 0)
                    did = 0;
                if (done)
                    j->done = j->total;
                r->work_done_iters += did;
                j->attained += j->n * (end - t);
                held += j->n * (end - t);
                rate = sim_gp_rate(g, plv, k, j->atomic, j->accum, j->epoch);
                if (run > 0 && rate > 0)
                    sim_record_tp(j, j->n, rate * g->init_bsz);
                /* reward: progress made over the interval against one agent's rate */
                int one = 1, at1, ac1;
                double rate_min = j->adaptive ? sim_gp_best(g, &one, 1, j->epoch, &at1, &ac1)
                                              : (sim_gp_fixed(g, 1, wj->bsz, &at1, &ac1),
                                                 sim_gp_rate(g, &one, 1, at1, ac1, j->epoch));
                double rew = c->alpha * (did / fmax(end - t, 1e-9)) / fmax(rate_min, 1e-12) +
                             c->beta * (double)j->min / j->n;
                sched_observe(p, wj->name, rew, done);
                goto finish;
            }
            double step = sim_step_time(&m->apps[wj->app], wj->bsz, j->n,
                                        sim_nodes_used(mine, c->nodes));
            rate = 1.0 / step;
            if (rate * run >= need) {
                did = need;
                end = start + need / rate;
                done = 1;
            } else {
                did = rate * run;
            }
            j->done = done ? j->total : j->done + did;
            r->work_done_iters += did;
            j->attained += j->n * (end - t);
            held += j->n * (end - t);
            if (run > 0)
                sim_record_tp(j, j->n, wj->bsz * rate);
            /* the rl reward as sched_reward() predicts it, from the progress made: the
             * speed-up over the job's minimum count (restart stall included) and the
             * share of its agents that its minimum needs */
            double rate_min = 1.0 / sim_step_time(&m->apps[wj->app], wj->bsz, j->min, 1);
            double rew = c->alpha * (did / fmax(end - t, 1e-9)) / rate_min +
                         c->beta * (double)j->min / j->n;
            sched_observe(p, wj->name, rew, done);
        finish:
            if (done) {
                j->finished = 1;
                j->finish = end;
                sim_place(free_slots, mine, c->nodes, j->n, 0);
                j->n = 0;
                jct[i] = end - wj->arrival;
                double slack = gpm ? INFINITY : jct[i] - sim_ideal(m, wj, j, c);
                if (slack < r->min_slack)
                    r->min_slack = slack;
                if (end > r->makespan)
                    r->makespan = end;
                left--;
            }
        }
        t = t1;
    }

    /* statistics over finished jobs */
    double *sorted = calloc((size_t)nj, sizeof(double));
    if (!sorted) {
        rc = kd_errf(err, errlen, KD_ENOMEM, "out of memory");
        goto out;
    }
    double sum = 0, resc = 0;
    for (int i = 0; i < nj; i++) {
        resc += js[i].rescales;
        if (!js[i].finished) {
            if (jct_out)
                jct_out[i] = -1;
            continue;
        }
        sorted[r->finished++] = jct[i];
        sum += jct[i];
        if (jct_out)
            jct_out[i] = jct[i];
    }
    if (r->finished > 0) {
        qsort(sorted, (size_t)r->finished, sizeof(double), sim_cmp_double);
        r->avg_jct = sum / r->finished;
        /* nearest-rank percentiles */
        int i50 = (int)ceil(0.50 * r->finished) - 1, i99 = (int)ceil(0.99 * r->finished) - 1;
        r->p50_jct = sorted[i50 < 0 ? 0 : i50];
        r->p99_jct = sorted[i99 < 0 ? 0 : i99];
    }
    free(sorted);
    r->rescales = resc / nj;
    r->utilization = r->makespan > 0 ? held / (cap * r->makespan) : 0;
    if (!isfinite(r->min_slack))
        r->min_slack = 0;
    if (left > 0)
        rc = kd_errf(err, errlen, KD_ETIMEOUT,
                      "%d of %d jobs unfinished after %.0f simulated seconds", left, nj, horizon);
out:
    sched_episode_end(p);
    free(plv);
    for (int a = 0; gtab && a < m->n_apps; a++)
        free(gtab[a]);
    free(gtab);
    free(js);
    free(place);
    free(free_slots);
    free(active);
    free(nodes);
    free(sj);
    free(dec);
    free(jct);
    return rc;
}
