/*
 * sched_rl.c: the rl policy, tabular Q-learning over per-job decisions.
 *
 * Every decision interval each running job is in a discretised state (agents held,
 * scaling efficiency, free cluster fraction, queue pressure, progress, estimated time
 * left) and takes an action: change its count by -2..+2. The reward of the interval that
 * follows is R = alpha * T_min / T + beta * min / n (see sched_reward()), either
 * predicted from the next snapshot or supplied by the caller through sched_observe() (the
 * simulator supplies the progress actually made, restart stalls included). Decisions start
 * from greedy's: queued jobs are admitted as greedy admits them, and a running job may
 * only keep its count or change it less than greedy would, when an action with enough
 * experience in its state beats greedy's choice; without that experience the job takes
 * greedy's choice, so an empty table behaves exactly like greedy. Every proposal then
 * passes the same safety stage as the other policies.
 */
#include "sched_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_error.h"

/* Per-decision scratch kept on the rl state (sized with the policy's job buffers). */
typedef struct sched_rl_scratch {
    int *greedy;   /* greedy's proposal per job */
    int *state;    /* state index per job; -1 = not in a decidable state */
    int *fixed;    /* count rl fixed for a job (deviation from greedy); -1 = none */
    int cap;       /* allocated entries */
} sched_rl_scratch;

static sched_rl_scratch *sched_rl_scr(sched_rl *rl)
{
    return (sched_rl_scratch *)(void *)(rl + 1);
}

int sched_rl_create(sched_policy *p)
{
    /* the scratch descriptor lives right after the rl state in one allocation */
    sched_rl *rl = calloc(1, sizeof(sched_rl) + sizeof(sched_rl_scratch));
    if (!rl)
        return KD_ENOMEM;
    size_t n = (size_t)SCHED_N_STATES * SCHED_N_ACTIONS;
    rl->q1 = calloc(n, sizeof(double));
    rl->visits = calloc(n, sizeof(unsigned));
    if (p->o.double_q)
        rl->q2 = calloc(n, sizeof(double));
    if (!rl->q1 || !rl->visits || (p->o.double_q && !rl->q2)) {
        sched_rl_free(rl);
        return KD_ENOMEM;
    }
    rl->epsilon = p->o.epsilon;
    sched_rlc_clear(&rl->c);
    p->rl = rl;
    return KD_OK;
}

void sched_rl_free(sched_rl *rl)
{
    if (!rl)
        return;
    sched_rl_scratch *sc = sched_rl_scr(rl);
    free(sc->greedy);
    free(sc->state);
    free(sc->fixed);
    free(rl->q1);
    free(rl->q2);
    free(rl->visits);
    free(rl->pend);
    free(rl);
}

void sched_rl_clear(sched_rl *rl)
{
    size_t n = (size_t)SCHED_N_STATES * SCHED_N_ACTIONS;
    memset(rl->q1, 0, n * sizeof(double));
    if (rl->q2)
        memset(rl->q2, 0, n * sizeof(double));
    memset(rl->visits, 0, n * sizeof(unsigned));
    rl->updates = 0;
    rl->n_pend = 0;
    sched_rlc_clear(&rl->c);
}

/* ---- state ---- */

static int sched_bucket(double x, const double *edges, int n_edges)
{
    int b = 0;
    while (b < n_edges && x >= edges[b])
        b++;
    return b;
}

/* Discretises job i's situation; the features are documented in sched_internal.h. */
static int sched_rl_state(const sched_policy *p, const sched_snapshot *s, int i,
                          double free_frac, double queue_frac, int *feat)
{
    static const double eff_edges[] = {0.5, 0.7, 0.85};
    static const double free_edges[] = {1e-9, 0.1, 0.3};
    static const double queue_edges[] = {1e-9, 0.1, 0.5};
    static const double prog_edges[] = {1.0 / 3, 2.0 / 3};
    static const double time_edges[] = {900, 3600, 14400};
    const sched_job *j = &s->jobs[i];
    int n = j->current;
    double k = p->o.prior_k;
    double sp1 = sched_predict_speed(j, 1, k), spn = sched_predict_speed(j, n, k);
    double eff = sp1 > 0 ? spn / (n * sp1) : 1.0 / (1 + k * (n - 1));

    feat[0] = n <= 1 ? 0 : n == 2 ? 1 : n <= 4 ? 2 : n <= 8 ? 3 : n <= 16 ? 4 : 5;
    feat[1] = sched_bucket(eff, eff_edges, 3);
    feat[2] = sched_bucket(free_frac, free_edges, 3);
    feat[3] = sched_bucket(queue_frac, queue_edges, 3);
    feat[4] = sched_bucket(j->progress, prog_edges, 2);
    feat[5] = sched_bucket(sched_time_left(j, n, k), time_edges, 3);
    return ((((feat[0] * SCHED_F_EFF + feat[1]) * SCHED_F_FREE + feat[2]) * SCHED_F_QUEUE +
             feat[3]) * SCHED_F_PROG + feat[4]) * SCHED_F_TIME + feat[5];
}

static double sched_rl_q(const sched_rl *rl, int s, int a)
{
    size_t x = (size_t)s * SCHED_N_ACTIONS + (size_t)a;
    return rl->q2 ? 0.5 * (rl->q1[x] + rl->q2[x]) : rl->q1[x];
}

/* Value of a state for bootstrapping: the best tried action, or `fallback` (the reward
 * just seen, held forever) when nothing was tried there yet. */
static double sched_rl_value(const sched_rl *rl, const double *q, int s, double fallback)
{
    double best = -INFINITY;
    for (int a = 0; a < SCHED_N_ACTIONS; a++)
        if (rl->visits[(size_t)s * SCHED_N_ACTIONS + a] > 0) {
            double v = q ? q[(size_t)s * SCHED_N_ACTIONS + a] : sched_rl_q(rl, s, a);
            if (v > best)
                best = v;
        }
    return isfinite(best) ? best : fallback;
}

static int sched_rl_argmax(const sched_rl *rl, const double *q, int s)
{
    int best = -1;
    for (int a = 0; a < SCHED_N_ACTIONS; a++)
        if (rl->visits[(size_t)s * SCHED_N_ACTIONS + a] > 0 &&
            (best < 0 || q[(size_t)s * SCHED_N_ACTIONS + a] > q[(size_t)s * SCHED_N_ACTIONS + best]))
            best = a;
    return best;
}

/* One Q update of (s, a) with reward r and next state s2 (-1 = terminal). */
static void sched_rl_update(sched_policy *p, int s, int a, double r, int s2)
{
    sched_rl *rl = p->rl;
    size_t x = (size_t)s * SCHED_N_ACTIONS + (size_t)a;
    double steady = r / (1 - p->o.gamma);
    unsigned v = ++rl->visits[x];
    /* 1/visits early on: the first experiences set the value instead of nudging a 0 */
    double lr = fmax(p->o.lr, 1.0 / v);
    double *q = rl->q1, *other = rl->q2;

    if (rl->q2 && sched_rand(p) < 0.5) {
        q = rl->q2;
        other = rl->q1;
    }
    /* a finished job is absorbed at the rate it ended with: finishing must neither earn
     * nor lose future reward, or jobs would learn to linger */
    double target = s2 < 0 ? steady : r;
    if (s2 >= 0) {
        if (other) { /* Double Q: one table picks the action, the other values it */
            int a2 = sched_rl_argmax(rl, q, s2);
            target += p->o.gamma * (a2 >= 0 ? other[(size_t)s2 * SCHED_N_ACTIONS + a2] : steady);
        } else {
            target += p->o.gamma * sched_rl_value(rl, q, s2, steady);
        }
    }
    if (v == 1 && rl->q2) { /* first visit: seed both tables alike */
        rl->q1[x] = target;
        rl->q2[x] = target;
    } else {
        q[x] += lr * (target - q[x]);
    }
    rl->updates++;
}

static sched_pending *sched_rl_find(sched_rl *rl, const char *id)
{
    for (int i = 0; i < rl->n_pend; i++)
        if (rl->pend[i].id[0] != '\0' && strcmp(rl->pend[i].id, id) == 0)
            return &rl->pend[i];
    return NULL;
}

static sched_pending *sched_rl_slot(sched_rl *rl, const char *id)
{
    sched_pending *pd = sched_rl_find(rl, id);
    if (pd)
        return pd;
    for (int i = 0; i < rl->n_pend; i++)
        if (rl->pend[i].id[0] == '\0')
            return &rl->pend[i];
    if (rl->n_pend == rl->cap_pend) {
        int cap = rl->cap_pend ? rl->cap_pend * 2 : 64;
        sched_pending *np = realloc(rl->pend, sizeof(*np) * (size_t)cap);
        if (!np)
            return NULL;
        rl->pend = np;
        rl->cap_pend = cap;
    }
    pd = &rl->pend[rl->n_pend++];
    pd->id[0] = '\0';
    return pd;
}

int sched_rl_observe(sched_policy *p, const char *job_id, double reward, int done)
{
    sched_pending *pd = sched_rl_find(p->rl, job_id);
    if (!pd)
        return KD_ENOTFOUND;
    pd->reward += reward;
    pd->has_reward = 1;
    if (done) {
        if (p->o.learn)
            sched_rl_update(p, pd->state, pd->action, pd->reward, -1);
        pd->id[0] = '\0';
    }
    return KD_OK;
}

void sched_rl_episode_end(sched_policy *p)
{
    p->rl->n_pend = 0;
    sched_rlc_end(p);
}

static int sched_rl_grow(sched_rl *rl, int n)
{
    sched_rl_scratch *sc = sched_rl_scr(rl);
    if (n <= sc->cap)
        return KD_OK;
    int cap = n < 16 ? 16 : n;
    int *g = realloc(sc->greedy, sizeof(int) * (size_t)cap);
    if (!g)
        return KD_ENOMEM;
    sc->greedy = g;
    int *st = realloc(sc->state, sizeof(int) * (size_t)cap);
    if (!st)
        return KD_ENOMEM;
    sc->state = st;
    int *fx = realloc(sc->fixed, sizeof(int) * (size_t)cap);
    if (!fx)
        return KD_ENOMEM;
    sc->fixed = fx;
    sc->cap = cap;
    return KD_OK;
}

int sched_policy_rl(sched_policy *p, const sched_snapshot *s, sched_decision *out)
{
    sched_rl *rl = p->rl;
    sched_rl_scratch *scr = sched_rl_scr(rl);
    sched_pack pk;
    int feat[6], deviations = 0;

    if (sched_rl_grow(rl, s->n_jobs) != KD_OK)
        return KD_ENOMEM;
    /* the cluster layer picks the rule; 0 = greedy moderated by the per-job table below */
    int ca = sched_rlc_step(p, s);
    if (ca > 0) {
        char why[SCHED_REASON_MAX];
        rl->n_pend = 0; /* per-job transitions do not span another rule's decisions */
        if (sched_c_pow[ca] > 0) { /* greedy's rule with a flatter time term, preempting */
            p->gr_pow = sched_c_pow[ca];
            p->gr_pre = sched_c_pre[ca];
            sched_policy_greedy(p, s, out);
            p->gr_pow = 1;
            p->gr_pre = 0;
        } else {
            p->px_k = sched_c_k[ca];
            sched_policy_pollux(p, s, out);
            p->px_k = 0;
        }
        for (int i = 0; i < s->n_jobs; i++) {
            snprintf(why, sizeof(why), "%s", out[i].reason);
            if (sched_c_pow[ca] > 0)
                snprintf(out[i].reason, SCHED_REASON_MAX,
                         "rl rule power=%.1f preempt=%.1f: %.100s", sched_c_pow[ca],
                         sched_c_pre[ca], why);
            else
                snprintf(out[i].reason, SCHED_REASON_MAX, "rl goodput rule k=%.1f: %.100s",
                         sched_c_k[ca], why);
        }
        sched_finish(p, s, out, 0, 0);
        if (p->o.learn)
            rl->epsilon = fmax(p->o.epsilon_min, rl->epsilon * p->o.epsilon_decay);
        return KD_OK;
    }
    sched_greedy_alloc(p, s, NULL);
    memcpy(scr->greedy, p->want, sizeof(int) * (size_t)s->n_jobs);

    /* cluster-level features: what is free once every job keeps its count, and how much
     * queued demand waits, both in agents of the job at hand */
    sched_pack_init(&pk, s, p->ncpu, p->nmem, p->nslots);
    for (int i = 0; i < s->n_jobs; i++)
        if (s->jobs[i].current > 0)
            sched_pack_place(&pk, &s->jobs[i], s->jobs[i].current);
    double queued = 0;
    for (int i = 0; i < s->n_jobs; i++)
        if (s->jobs[i].current == 0)
            queued += s->jobs[i].min;
    for (int i = 0; i < s->n_jobs; i++) {
        const sched_job *j = &s->jobs[i];
        scr->state[i] = -1;
        if (j->current <= 0)
            continue;
        int cap = sched_capacity_for(s, j);
        double ff = cap > 0 ? (double)sched_pack_fits(&pk, j, cap) / cap : 0;
        double qf = cap > 0 ? queued / cap : 0;
        scr->state[i] = sched_rl_state(p, s, i, ff, qf, feat);
    }

    /* complete the transitions of the previous decision */
    if (p->o.learn) {
        for (int i = 0; i < s->n_jobs; i++) {
            const sched_job *j = &s->jobs[i];
            sched_pending *pd = sched_rl_find(rl, j->id);
            if (!pd)
                continue;
            double r = pd->has_reward ? pd->reward
                                      : sched_reward(s->interval_s, j, j->current, &p->o, 0);
            sched_rl_update(p, pd->state, pd->action, r, scr->state[i]);
        }
        /* jobs that left without a done report have an unknown outcome: dropped */
        rl->n_pend = 0;
    }

    /* an action per running job; deviations from greedy become fixed counts */
    for (int i = 0; i < s->n_jobs; i++) {
        const sched_job *j = &s->jobs[i];
        int st = scr->state[i];
        scr->fixed[i] = -1;
        if (st < 0 || j->pin > 0 || sched_cooling(p, j))
            continue; /* queued jobs keep greedy's admission; pins and cool-down are fixed */
        int lo = -p->o.max_step, hi = p->o.max_step;
        if (j->current + lo < j->min)
            lo = j->min - j->current;
        if (j->current + hi > j->max)
            hi = j->max - j->current;
        if (lo > 0) /* below min (spec changed): climb to it */
            hi = lo;
        if (hi < lo)
            hi = lo;
        int g_full = scr->greedy[i] - j->current; /* greedy's own change, unclamped */
        if (g_full < -p->o.max_step || g_full > p->o.max_step)
            continue; /* a jump beyond the action set has no Q to weigh it: greedy's */
        int g = g_full < lo ? lo : (g_full > hi ? hi : g_full);
        /* the reward is the job's own: it cannot see what its agents would do for the jobs
         * that wait, so while any job waits rl may grow a job no further than greedy */
        /* rl only moderates greedy: it keeps the count or changes it less than greedy
         * would. Its reward is the job's own, blind to what the job's agents would do for
         * the others, so it may judge whether a change pays for the job (a restart
         * stall, a speed-up the model overrates) but not take agents greedy gives away */
        lo = g < 0 ? g : 0;
        hi = g > 0 ? g : 0;
        int d;
        const char *how;
        if (p->o.learn && sched_rand(p) < rl->epsilon) {
            d = lo + (int)(sched_rand(p) * (hi - lo + 1));
            d = d > hi ? hi : d;
            how = "exploring";
        } else {
            int best = 0, found = 0;
            for (int a = lo; a <= hi; a++) {
                if (rl->visits[(size_t)st * SCHED_N_ACTIONS + (size_t)(a + 2)] < (unsigned)p->o.min_visits)
                    continue;
                if (!found || sched_rl_q(rl, st, a + 2) > sched_rl_q(rl, st, best + 2))
                    best = a;
                found = 1;
            }
            int g_seen =
                rl->visits[(size_t)st * SCHED_N_ACTIONS + (size_t)(g + 2)] >= (unsigned)p->o.min_visits;
            if (!found || !g_seen) {
                /* greedy's choice was not tried often enough here to compare it */
                d = g_full;
                how = "greedy fallback (unvisited)";
                rl->fallbacks++;
            } else if (sched_rl_q(rl, st, g + 2) + p->o.margin * fabs(sched_rl_q(rl, st, g + 2)) >=
                           sched_rl_q(rl, st, best + 2)) {
                /* depart from greedy only where experience says it pays by a margin:
                 * small Q differences are mostly noise of the other jobs' behaviour */
                d = g_full;
                how = "learned, agrees with greedy";
            } else {
                d = best;
                how = "learned";
            }
        }
        if (d != g_full) {
            scr->fixed[i] = j->current + d;
            deviations++;
        }
        snprintf(out[i].reason, SCHED_REASON_MAX,
                 "rl %s: %+d at %d agents (Q=%.3f, greedy %+d), est. %.0fs left", how, d,
                 j->current, sched_rl_q(rl, st, (d < -2 ? -2 : d > 2 ? 2 : d) + 2), g_full,
                 sched_time_left(j, j->current, p->o.prior_k));
    }
    /* greedy hands out what the deviations leave (or take) among the other jobs */
    if (deviations > 0)
        sched_greedy_alloc(p, s, scr->fixed);
    for (int i = 0; i < s->n_jobs; i++)
        if (out[i].reason[0] == '\0')
            snprintf(out[i].reason, SCHED_REASON_MAX, p->want[i] > 0
                     ? "rl: greedy admission with %d agents" : "rl: queued (%d agents do not fit)",
                     p->want[i] > 0 ? p->want[i] : s->jobs[i].min);
    sched_finish(p, s, out, 0, 1);

    if (p->o.learn) {
        for (int i = 0; i < s->n_jobs; i++) {
            const sched_job *j = &s->jobs[i];
            if (scr->state[i] < 0 || out[i].desired <= 0)
                continue;
            int d = out[i].desired - j->current;
            d = d < -2 ? -2 : (d > 2 ? 2 : d);
            sched_pending *pd = sched_rl_slot(rl, j->id);
            if (!pd)
                return KD_ENOMEM;
            snprintf(pd->id, sizeof(pd->id), "%s", j->id);
            pd->state = scr->state[i];
            pd->action = d + 2;
            pd->reward = 0;
            pd->has_reward = 0;
        }
        rl->epsilon = fmax(p->o.epsilon_min, rl->epsilon * p->o.epsilon_decay);
    }
    return KD_OK;
}
