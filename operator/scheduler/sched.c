/*
 * sched.c: the policy handle, snapshot validation, and what every policy shares: the
 * speed model fitted to a job's measured throughput, the reward model, the packing of
 * agents onto nodes and the final safety stage (pins, cool-down, [min, max], capacity)
 * that every decision passes through, whatever the policy proposed.
 */
#include "sched_internal.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_error.h"

void sched_options_default(sched_options *o)
{
    memset(o, 0, sizeof(*o));
    o->seed = 1;
    o->cooldown_s = 0;
    o->alpha = 1.0;
    o->beta = 0.1;
    o->max_step = 2;
    o->learn = 0;
    o->double_q = 0;
    o->lr = 0.1;
    o->gamma = 0.9;
    o->epsilon = 0.2;
    o->epsilon_min = 0.02;
    o->epsilon_decay = 0.999;
    o->prior_k = 0.05;
    o->min_visits = 300;
    o->margin = 0;
    o->n_las = 2;
    o->las_s[0] = 3600.0;
    o->las_s[1] = 36000.0;
}

static int sched_options_check(const sched_options *o, char *err, size_t errlen)
{
    if (!(o->cooldown_s >= 0) || !isfinite(o->cooldown_s))
        return kd_errf(err, errlen, KD_EINVAL, "cooldown_s must be >= 0");
    if (!(o->alpha >= 0) || !(o->beta >= 0) || !isfinite(o->alpha) || !isfinite(o->beta))
        return kd_errf(err, errlen, KD_EINVAL, "alpha and beta must be finite and >= 0");
    if (o->n_las < 0 || o->n_las > SCHED_LAS_MAX)
        return kd_errf(err, errlen, KD_EINVAL, "n_las must be in [0, %d]", SCHED_LAS_MAX);
    for (int i = 0; i < o->n_las; i++)
        if (!(o->las_s[i] > 0) || !isfinite(o->las_s[i]) || (i > 0 && o->las_s[i] <= o->las_s[i - 1]))
            return kd_errf(err, errlen, KD_EINVAL,
                              "tiresias thresholds must be positive and ascending");
    if (o->max_step < 1 || o->max_step > 2)
        return kd_errf(err, errlen, KD_EINVAL, "max_step must be 1 or 2, got %d",
                          o->max_step);
    if (!(o->lr > 0 && o->lr <= 1))
        return kd_errf(err, errlen, KD_EINVAL, "lr must be in (0, 1]");
    if (!(o->gamma >= 0 && o->gamma < 1))
        return kd_errf(err, errlen, KD_EINVAL, "gamma must be in [0, 1)");
    if (!(o->epsilon >= 0 && o->epsilon <= 1) || !(o->epsilon_min >= 0 && o->epsilon_min <= 1))
        return kd_errf(err, errlen, KD_EINVAL, "epsilon and epsilon_min must be in [0, 1]");
    if (!(o->epsilon_decay > 0 && o->epsilon_decay <= 1))
        return kd_errf(err, errlen, KD_EINVAL, "epsilon_decay must be in (0, 1]");
    if (!(o->prior_k >= 0 && o->prior_k <= 10))
        return kd_errf(err, errlen, KD_EINVAL, "prior_k must be in [0, 10]");
    if (o->min_visits < 1 || !(o->margin >= 0) || !isfinite(o->margin))
        return kd_errf(err, errlen, KD_EINVAL, "min_visits must be >= 1 and margin >= 0");
    return KD_OK;
}

int sched_policy_create(const char *name, const sched_options *opt, sched_policy **out,
                        char *err, size_t errlen)
{
    static const struct { const char *name; enum sched_kind kind; } names[] = {
        {"static", SCHED_STATIC}, {"tiresias", SCHED_TIRESIAS}, {"fair", SCHED_FAIR},
        {"pollux", SCHED_POLLUX},
        {"greedy", SCHED_GREEDY}, {"rl", SCHED_RL},
    };
    sched_options o;
    int kind = -1, rc;

    if (!out)
        return kd_errf(err, errlen, KD_EINVAL, "no output pointer");
    *out = NULL;
    for (size_t i = 0; name && i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(name, names[i].name) == 0)
            kind = (int)names[i].kind;
    if (kind < 0)
        return kd_errf(err, errlen, KD_EINVAL,
                          "unknown policy '%s' (static, tiresias, fair, greedy, pollux, rl)",
                          name ? name : "(null)");
    if (opt)
        o = *opt;
    else
        sched_options_default(&o);
    rc = sched_options_check(&o, err, errlen);
    if (rc != KD_OK)
        return rc;

    sched_policy *p = calloc(1, sizeof(*p));
    if (!p)
        return kd_errf(err, errlen, KD_ENOMEM, "out of memory");
    p->kind = (enum sched_kind)kind;
    p->gr_pow = 1;
    snprintf(p->name, sizeof(p->name), "%s", name);
    p->o = o;
    /* xorshift must not start at 0; mix the seed so that nearby seeds diverge */
    p->rng = (o.seed ^ 0x9e3779b97f4a7c15ULL) * 0xbf58476d1ce4e5b9ULL;
    if (p->rng == 0)
        p->rng = 0x2545f4914f6cdd1dULL;
    if (p->kind == SCHED_RL && sched_rl_create(p) != KD_OK) {
        free(p);
        return kd_errf(err, errlen, KD_ENOMEM, "out of memory for the rl table");
    }
    *out = p;
    return KD_OK;
}

void sched_policy_free(sched_policy **pp)
{
    if (!pp || !*pp)
        return;
    sched_policy *p = *pp;
    sched_rl_free(p->rl);
    free(p->want);
    free(p->order);
    free(p->score);
    free(p->placed);
    free(p->spare);
    free(p->aux);
    free(p->pxg);
    free(p->ncpu);
    free(p->nmem);
    free(p->nslots);
    free(p);
    *pp = NULL;
}

const char *sched_policy_name(const sched_policy *p)
{
    return p ? p->name : "";
}

double sched_rand(sched_policy *p)
{
    uint64_t x = p->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p->rng = x;
    return (double)(x >> 11) * (1.0 / 9007199254740992.0);
}

/* ---- speed and reward models ---- */

/* Fits speed(n) = n / (a + b (n - 1)) (Amdahl-like: b is the per-agent contention) to the
 * measured points by least squares on n / speed, which is linear in n - 1. One point (or
 * several at one count) fixes the level and takes b from prior_k. Returns 0 without
 * measurements. */
static int sched_fit(const sched_job *j, double prior_k, double *a, double *b)
{
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    int n = 0, nmin = INT_MAX, nmax = 0;

    for (int i = 0; i < j->n_tp; i++) {
        double x = j->tp[i].agents - 1, y = j->tp[i].agents / j->tp[i].samples_per_s;
        sx += x;
        sy += y;
        sxx += x * x;
        sxy += x * y;
        n++;
        if (j->tp[i].agents < nmin)
            nmin = j->tp[i].agents;
        if (j->tp[i].agents > nmax)
            nmax = j->tp[i].agents;
    }
    if (n == 0)
        return 0;
    if (nmax > nmin) {
        double den = n * sxx - sx * sx;
        double bb = (n * sxy - sx * sy) / den;
        double aa = (sy - bb * sx) / n;
        if (bb < 0) { /* superlinear noise: treat as perfectly linear, y = a n */
            bb = 0;
            aa = 0;
            for (int i = 0; i < j->n_tp; i++)
                aa += 1.0 / j->tp[i].samples_per_s;
            aa /= n;
        }
        if (aa > 0) {
            *a = aa;
            *b = bb;
            return 1;
        }
    }
    /* level from the mean of y / (1 + k x) so that the prior shape passes the points */
    double s1inv = 0;
    for (int i = 0; i < j->n_tp; i++) {
        double x = j->tp[i].agents - 1, y = j->tp[i].agents / j->tp[i].samples_per_s;
        s1inv += y / (1 + prior_k * x);
    }
    s1inv /= n;
    *a = s1inv;
    *b = prior_k * s1inv;
    return 1;
}

#define SCHED_MAX_POINTS 64

/* Measured points by agent count, ascending, duplicates averaged; returns how many. */
static int sched_points(const sched_job *j, int *ns, double *sp)
{
    int m = 0, cnt[SCHED_MAX_POINTS];
    for (int i = 0; i < j->n_tp; i++) {
        int k = 0;
        while (k < m && ns[k] != j->tp[i].agents)
            k++;
        if (k == m) {
            if (m == SCHED_MAX_POINTS)
                continue;
            /* insertion keeps ns ascending */
            int at = m;
            while (at > 0 && ns[at - 1] > j->tp[i].agents) {
                ns[at] = ns[at - 1];
                sp[at] = sp[at - 1];
                cnt[at] = cnt[at - 1];
                at--;
            }
            ns[at] = j->tp[i].agents;
            sp[at] = 0;
            cnt[at] = 0;
            m++;
            k = at;
        }
        sp[k] += j->tp[i].samples_per_s;
        cnt[k]++;
    }
    for (int k = 0; k < m; k++)
        sp[k] /= cnt[k];
    return m;
}

/* Speed at n agents: measured points are interpolated linearly (so a count that was
 * slower than a smaller one stays slower: placements across nodes, saturation), and
 * extrapolated from the nearest measured count with the Amdahl shape
 * n / (1 + k (n - 1)), k the fitted contention but at least prior_k. */
double sched_predict_speed(const sched_job *j, int n, double prior_k)
{
    int ns[SCHED_MAX_POINTS];
    double sp[SCHED_MAX_POINTS], a, b;
    if (!j || n <= 0 || j->n_tp <= 0)
        return 0;
    int m = sched_points(j, ns, sp);
    if (m == 0)
        return 0;
    double k = prior_k;
    if (m >= 2 && sched_fit(j, prior_k, &a, &b) && b / a > k)
        k = b / a;
    for (int i = 0; i < m; i++) {
        if (ns[i] == n)
            return sp[i];
        if (i > 0 && ns[i - 1] < n && n < ns[i])
            return sp[i - 1] + (sp[i] - sp[i - 1]) * (n - ns[i - 1]) / (ns[i] - ns[i - 1]);
    }
    int ref = n < ns[0] ? 0 : m - 1;
    double shape_n = n / (1 + k * (n - 1)), shape_r = ns[ref] / (1 + k * (ns[ref] - 1));
    return sp[ref] * shape_n / shape_r;
}

/* Samples of work left; <= 0 when it cannot be estimated. */
static double sched_work_left(const sched_job *j, double prior_k)
{
    if (j->remaining > 0)
        return j->remaining;
    if (j->progress >= 1)
        return 0;
    if (j->progress > 0 && j->attained_s > 0 && j->current > 0) {
        double sp = sched_predict_speed(j, j->current, prior_k);
        if (sp > 0) {
            double done = j->attained_s * sp / j->current;
            return done * (1 - j->progress) / j->progress;
        }
    }
    return -1;
}

/* Without a measurement or a work estimate a job is assumed to need this long at its
 * current (or minimum) count: it makes unknown jobs comparable without favouring them. */
#define SCHED_UNKNOWN_T 3600.0

double sched_time_left(const sched_job *j, int n, double prior_k)
{
    if (n <= 0)
        return INFINITY;
    double a, b;
    int base = j->current > 0 ? j->current : j->min;
    if (!sched_fit(j, prior_k, &a, &b)) {
        /* unknown speed: the prior shape, trusted only up to the count the job asks for
         * (the user's own estimate of where it scales), flat beyond it until measured */
        int req = sched_requested(j);
        int nn = n < req ? n : req, bb = base < req ? base : req;
        return SCHED_UNKNOWN_T * (bb / (1 + prior_k * (bb - 1))) / (nn / (1 + prior_k * (nn - 1)));
    }
    double w = sched_work_left(j, prior_k);
    double sp = sched_predict_speed(j, n, prior_k);
    if (w < 0)
        return SCHED_UNKNOWN_T * sched_predict_speed(j, base, prior_k) / sp;
    return w / sp;
}

void sched_scale_init(sched_scale *sc, const sched_snapshot *s, const sched_options *o)
{
    double inv_t = 0, inv_c = 0;
    int cnt = 0, running = 0;
    sc->interval_s = s->interval_s;
    sc->pow = 1;
    for (int i = 0; i < s->n_jobs; i++)
        running += s->jobs[i].current > 0;
    /* over the running jobs; over everyone at min when nothing runs yet */
    for (int i = 0; i < s->n_jobs; i++) {
        const sched_job *j = &s->jobs[i];
        if (running && j->current <= 0)
            continue;
        int n = j->current > 0 ? j->current : j->min;
        inv_t += 1.0 / fmax(1.0, sched_time_left(j, n, o->prior_k));
        inv_c += 1.0 / n;
        cnt++;
    }
    sc->inv_t_mean = cnt > 0 ? inv_t / cnt : 1;
    sc->inv_c_mean = cnt > 0 ? inv_c / cnt : 1;
}

/* Greedy's objective: U = alpha * (1/T) / mean(1/T) + beta * (1/n) / mean(1/n), T the job's
 * estimated time to finish at n agents (plus extra_s, a restart stall); the means run over
 * the running jobs (over all jobs at min when none runs). Dividing by the means makes both
 * terms about 1 for a typical job of this snapshot, so beta prices an agent relative to
 * what the other jobs hold, and short jobs still earn more per agent than long ones. */
double sched_utility(const sched_scale *sc, const sched_job *j, int n, const sched_options *o,
                     double extra_s)
{
    if (n <= 0)
        return 0;
    double alpha = j->alpha >= 0 ? j->alpha : o->alpha;
    double beta = j->beta >= 0 ? j->beta : o->beta;
    double t = sched_time_left(j, n, o->prior_k);
    double time_term = isfinite(t) ? (1.0 / fmax(t + extra_s, 1.0)) / sc->inv_t_mean : 0;
    if (sc->pow != 1 && time_term > 0) /* < 1: a short job's lead over a long one counts less */
        time_term = pow(time_term, sc->pow);
    return alpha * time_term + beta * (1.0 / n) / sc->inv_c_mean;
}

/* The rl reward of one interval: R = alpha * (1/T) / (1/T_min) + beta * (1/C) / (1/C_min)
 * with T the job's time to finish at n agents, C = n the agents it holds, and T_min, C_min
 * the same at the job's minimum count. Normalising each job by itself makes R the speed-up
 * over its minimum (time term, reduced by the part of the interval a restart stalls) plus
 * the share of its agents its minimum needs (cost term): both independent of the job's
 * size, so that jobs of any length land in comparable Q-values. The simulator measures
 * the same quantity from the progress actually made. */
double sched_reward(double interval_s, const sched_job *j, int n, const sched_options *o,
                    double extra_s)
{
    if (n <= 0)
        return 0;
    double alpha = j->alpha >= 0 ? j->alpha : o->alpha;
    double beta = j->beta >= 0 ? j->beta : o->beta;
    double tn = sched_time_left(j, n, o->prior_k), tm = sched_time_left(j, j->min, o->prior_k);
    double speedup = isfinite(tn) && isfinite(tm) && tn > 0 ? tm / tn : 1;
    double live = fmax(interval_s - extra_s, 0) / interval_s;
    return alpha * speedup * live + beta * (double)j->min / n;
}

/* ---- packing ---- */

void sched_pack_init(sched_pack *pk, const sched_snapshot *s, double *cpu, double *mem,
                     int *slots)
{
    pk->s = s;
    pk->cpu = cpu;
    pk->mem = mem;
    pk->slots = slots;
    pk->lo = 0;
    for (int i = 0; i < s->n_nodes; i++) {
        cpu[i] = s->nodes[i].cpu;
        mem[i] = s->nodes[i].mem;
        slots[i] = s->nodes[i].slots > 0 ? s->nodes[i].slots : INT_MAX / 4;
    }
}

/* Agents of job j that fit on node i. */
static int sched_node_fits(const sched_pack *pk, int i, const sched_job *j)
{
    const sched_node *nd = &pk->s->nodes[i];
    long fit = pk->slots[i];
    /* a small epsilon keeps 0.5 + 0.5 cores from failing on rounding */
    if (j->cpu_per_agent > 0 && nd->cpu > 0)
        fit = fit < (long)floor(pk->cpu[i] / j->cpu_per_agent + 1e-9)
                  ? fit : (long)floor(pk->cpu[i] / j->cpu_per_agent + 1e-9);
    if (j->mem_per_agent > 0 && nd->mem > 0)
        fit = fit < (long)floor(pk->mem[i] / j->mem_per_agent + 1e-9)
                  ? fit : (long)floor(pk->mem[i] / j->mem_per_agent + 1e-9);
    return fit > 0 ? (int)(fit > INT_MAX / 4 ? INT_MAX / 4 : fit) : 0;
}

int sched_pack_fits(const sched_pack *pk, const sched_job *j, int limit)
{
    long total = 0;
    for (int i = pk->lo; i < pk->s->n_nodes && total < limit; i++)
        total += sched_node_fits(pk, i, j);
    return total < limit ? (int)total : limit;
}

int sched_pack_place(sched_pack *pk, const sched_job *j, int n)
{
    int placed = 0;
    for (int i = pk->lo; i < pk->s->n_nodes && placed < n; i++) {
        int k = sched_node_fits(pk, i, j);
        if (k > n - placed)
            k = n - placed;
        if (k <= 0)
            continue;
        pk->slots[i] -= k;
        if (j->cpu_per_agent > 0 && pk->s->nodes[i].cpu > 0)
            pk->cpu[i] -= k * j->cpu_per_agent;
        if (j->mem_per_agent > 0 && pk->s->nodes[i].mem > 0)
            pk->mem[i] -= k * j->mem_per_agent;
        placed += k;
    }
    /* capacity only shrinks while packing: nodes without a free slot stay full */
    while (pk->lo < pk->s->n_nodes && pk->slots[pk->lo] <= 0)
        pk->lo++;
    return placed;
}

void sched_pack_totals(const sched_pack *pk, double *slots, double *cpu, double *mem)
{
    *slots = *cpu = *mem = 0;
    for (int i = 0; i < pk->s->n_nodes; i++) {
        const sched_node *nd = &pk->s->nodes[i];
        /* a resource that does not limit some node does not limit the total */
        *slots += nd->slots > 0 ? pk->slots[i] : 1e18;
        *cpu += nd->cpu > 0 ? pk->cpu[i] : 1e18;
        *mem += nd->mem > 0 ? pk->mem[i] : 1e30;
    }
}

int sched_capacity_for(const sched_snapshot *s, const sched_job *j)
{
    long total = 0;
    for (int i = 0; i < s->n_nodes; i++) {
        const sched_node *nd = &s->nodes[i];
        long fit = nd->slots > 0 ? nd->slots : INT_MAX / 4;
        if (j->cpu_per_agent > 0 && nd->cpu > 0 && floor(nd->cpu / j->cpu_per_agent + 1e-9) < fit)
            fit = (long)floor(nd->cpu / j->cpu_per_agent + 1e-9);
        if (j->mem_per_agent > 0 && nd->mem > 0 && floor(nd->mem / j->mem_per_agent + 1e-9) < fit)
            fit = (long)floor(nd->mem / j->mem_per_agent + 1e-9);
        total += fit > 0 ? fit : 0;
        if (total > INT_MAX / 4)
            return INT_MAX / 4;
    }
    return (int)total;
}

int sched_requested(const sched_job *j)
{
    int r = j->pin > 0 ? j->pin : (j->request > 0 ? j->request : j->max);
    return r < j->min ? j->min : (r > j->max ? j->max : r);
}

int sched_cooling(const sched_policy *p, const sched_job *j)
{
    return p->o.cooldown_s > 0 && j->current > 0 && j->since_change_s >= 0 &&
           j->since_change_s < p->o.cooldown_s;
}

/* ---- sorting ---- */

static const double *sched_sort_key;

static int sched_cmp_desc(const void *x, const void *y)
{
    int a = *(const int *)x, b = *(const int *)y;
    double ka = sched_sort_key[a], kb = sched_sort_key[b];
    if (ka > kb)
        return -1;
    if (ka < kb)
        return 1;
    return a < b ? -1 : (a > b);
}

void sched_sort_desc(int *idx, int n, const double *key)
{
    /* qsort has no context argument in C11; a policy is driven by one caller at a time
     * and the key is only read during this call */
    sched_sort_key = key;
    qsort(idx, (size_t)n, sizeof(int), sched_cmp_desc);
    sched_sort_key = NULL;
}

/* ---- the safety stage ---- */

static int sched_clamp_pin(const sched_job *j)
{
    return j->pin < j->min ? j->min : (j->pin > j->max ? j->max : j->pin);
}

void sched_finish(sched_policy *p, const sched_snapshot *s, sched_decision *out,
                  int all_or_nothing, int keep_running)
{
    sched_pack pk;
    sched_scale sc;
    int *placed = p->placed;

    sched_pack_init(&pk, s, p->ncpu, p->nmem, p->nslots);
    sched_scale_init(&sc, s, &p->o);
    for (int k = 0; k < s->n_jobs; k++)
        placed[k] = 0;

    /* pass 1: pins and cooling jobs keep their fixed count first, whatever the order */
    for (int k = 0; k < s->n_jobs; k++) {
        int i = p->order[k];
        const sched_job *j = &s->jobs[i];
        int fixed = -1;
        if (j->pin > 0)
            fixed = sched_clamp_pin(j);
        else if (sched_cooling(p, j) && p->kind != SCHED_TIRESIAS && p->want[i] != 0)
            fixed = j->current < j->min ? j->min : (j->current > j->max ? j->max : j->current);
        if (fixed < 0)
            continue;
        int n = sched_pack_fits(&pk, j, fixed);
        if (n < fixed && j->pin > 0) {
            /* the pin does not fit: keep what the job holds (a pin never shrinks a job
             * below what it already has because of other jobs) */
            int keep = j->current < fixed ? j->current : fixed;
            n = n < keep ? n : keep;
            snprintf(out[i].reason, SCHED_REASON_MAX, "pinned to %d but only %d fit", fixed, n);
        } else if (j->pin > 0) {
            snprintf(out[i].reason, SCHED_REASON_MAX, "pinned to %d", fixed);
        } else if (n < fixed) {
            snprintf(out[i].reason, SCHED_REASON_MAX, "in cool-down, capacity left for %d", n);
        } else {
            snprintf(out[i].reason, SCHED_REASON_MAX, "in cool-down (%.0fs since last change)",
                     j->since_change_s);
        }
        if (n < j->min)
            n = 0;
        placed[i] = sched_pack_place(&pk, j, n);
        p->want[i] = -1; /* done */
    }
    /* pass 2: running elastic jobs keep their minimum before anyone grows */
    if (keep_running) {
        for (int k = 0; k < s->n_jobs; k++) {
            int i = p->order[k];
            const sched_job *j = &s->jobs[i];
            if (p->want[i] <= 0 || j->current <= 0)
                continue;
            int n = sched_pack_fits(&pk, j, j->min);
            if (n >= j->min)
                placed[i] = sched_pack_place(&pk, j, j->min);
        }
    }
    /* pass 3: everyone else in policy order */
    for (int k = 0; k < s->n_jobs; k++) {
        int i = p->order[k];
        const sched_job *j = &s->jobs[i];
        int want = p->want[i];
        if (want < 0)
            continue;
        if (want > 0 && want < j->min)
            want = j->min;
        if (want > j->max)
            want = j->max;
        if (want <= placed[i]) {
            placed[i] = want >= j->min ? want : 0; /* shrinking below the reserved min */
            continue;
        }
        int more = sched_pack_fits(&pk, j, want - placed[i]);
        if (all_or_nothing && placed[i] + more < want)
            more = 0;
        if (placed[i] + more < j->min)
            more = 0;
        placed[i] += sched_pack_place(&pk, j, more);
        if (placed[i] < want && out[i].reason[0] == '\0')
            snprintf(out[i].reason, SCHED_REASON_MAX, "wants %d, capacity left for %d", want,
                     placed[i]);
    }
    for (int i = 0; i < s->n_jobs; i++) {
        const sched_job *j = &s->jobs[i];
        int d = placed[i] >= j->min ? placed[i] : 0;
        out[i].desired = d;
        out[i].pred_speed = d > 0 ? sched_predict_speed(j, d, p->o.prior_k) : 0;
        out[i].pred_cost = d * s->interval_s;
        out[i].pred_reward =
            sched_reward(s->interval_s, j, d, &p->o, d == j->current ? 0 : s->restart_s);
        if (out[i].reason[0] == '\0')
            snprintf(out[i].reason, SCHED_REASON_MAX, "%s", d > 0 ? "running" : "queued");
    }
}

/* ---- decide ---- */

static int sched_check(const sched_policy *p, const sched_snapshot *s, char *err, size_t errlen)
{
    if (!s)
        return kd_errf(err, errlen, KD_EINVAL, "no snapshot");
    if (s->n_nodes < 0 || s->n_jobs < 0 || (s->n_nodes > 0 && !s->nodes) ||
        (s->n_jobs > 0 && !s->jobs))
        return kd_errf(err, errlen, KD_EINVAL, "snapshot counts and arrays disagree");
    if (!(s->interval_s > 0) || !isfinite(s->interval_s))
        return kd_errf(err, errlen, KD_EINVAL, "interval_s must be > 0");
    if (!(s->restart_s >= 0) || !isfinite(s->restart_s))
        return kd_errf(err, errlen, KD_EINVAL, "restart_s must be >= 0");
    for (int i = 0; i < s->n_nodes; i++) {
        const sched_node *n = &s->nodes[i];
        if (!isfinite(n->cpu) || !isfinite(n->mem))
            return kd_errf(err, errlen, KD_EINVAL, "node %d: capacity not finite", i);
    }
    for (int i = 0; i < s->n_jobs; i++) {
        const sched_job *j = &s->jobs[i];
        const char *id = j->id ? j->id : "";
        if (j->min < 1 || j->max < j->min)
            return kd_errf(err, errlen, KD_EINVAL,
                              "job %d (%s): need 1 <= min <= max, got min=%d max=%d", i, id,
                              j->min, j->max);
        if (j->pin < 0 || j->request < 0 || j->current < 0 || j->n_tp < 0 ||
            (j->n_tp > 0 && !j->tp))
            return kd_errf(err, errlen, KD_EINVAL,
                              "job %d (%s): negative pin, request, current or n_tp", i, id);
        if (!isfinite(j->age_s) || !isfinite(j->attained_s) || !isfinite(j->since_change_s) ||
            !isfinite(j->progress) || !isfinite(j->remaining) || !isfinite(j->alpha) ||
            !isfinite(j->beta) || !isfinite(j->cpu_per_agent) || !isfinite(j->mem_per_agent))
            return kd_errf(err, errlen, KD_EINVAL, "job %d (%s): a field is not finite", i,
                              id);
        if (j->progress < 0 || j->progress > 1)
            return kd_errf(err, errlen, KD_EINVAL, "job %d (%s): progress %g not in [0,1]",
                              i, id, j->progress);
        for (int t = 0; t < j->n_tp; t++)
            if (j->tp[t].agents < 1 || !(j->tp[t].samples_per_s > 0) ||
                !isfinite(j->tp[t].samples_per_s))
                return kd_errf(err, errlen, KD_EINVAL,
                                  "job %d (%s): throughput point %d needs agents >= 1 and "
                                  "0 < samples/s < inf", i, id, t);
        if (j->n_goodput < 0 || (j->n_goodput > 0 && !j->goodput) || j->restarts < 0)
            return kd_errf(err, errlen, KD_EINVAL,
                              "job %d (%s): negative n_goodput or restarts, or no table", i, id);
        for (int t = 0; t < j->n_goodput; t++)
            if (!(j->goodput[t] >= 0) || !isfinite(j->goodput[t]))
                return kd_errf(err, errlen, KD_EINVAL,
                                  "job %d (%s): goodput at %d agents must be finite and >= 0",
                                  i, id, t + 1);
        if (p->kind == SCHED_RL) {
            if (!j->id || j->id[0] == '\0' || strlen(j->id) >= SCHED_ID_MAX)
                return kd_errf(err, errlen, KD_EINVAL,
                                  "job %d: rl needs an id of 1..%d bytes", i, SCHED_ID_MAX - 1);
            for (int k = 0; k < i; k++)
                if (strcmp(s->jobs[k].id, j->id) == 0)
                    return kd_errf(err, errlen, KD_EINVAL, "job id '%s' appears twice",
                                      j->id);
        }
    }
    return KD_OK;
}

static int sched_grow(sched_policy *p, int n_jobs, int n_nodes)
{
    if (n_jobs > p->cap_jobs) {
        int cap = n_jobs < 16 ? 16 : n_jobs;
        int *w = realloc(p->want, sizeof(int) * (size_t)cap);
        if (!w)
            return KD_ENOMEM;
        p->want = w;
        int *o = realloc(p->order, sizeof(int) * (size_t)cap);
        if (!o)
            return KD_ENOMEM;
        p->order = o;
        int *pl = realloc(p->placed, sizeof(int) * (size_t)cap);
        if (!pl)
            return KD_ENOMEM;
        p->placed = pl;
        int *sp = realloc(p->spare, sizeof(int) * (size_t)cap);
        if (!sp)
            return KD_ENOMEM;
        p->spare = sp;
        double *sc = realloc(p->score, sizeof(double) * (size_t)cap);
        if (!sc)
            return KD_ENOMEM;
        p->score = sc;
        double *ax = realloc(p->aux, 2 * sizeof(double) * (size_t)cap);
        if (!ax)
            return KD_ENOMEM;
        p->aux = ax;
        p->cap_jobs = cap;
    }
    if (n_nodes > p->cap_nodes) {
        int cap = n_nodes < 16 ? 16 : n_nodes;
        double *c = realloc(p->ncpu, sizeof(double) * (size_t)cap);
        if (!c)
            return KD_ENOMEM;
        p->ncpu = c;
        double *m = realloc(p->nmem, sizeof(double) * (size_t)cap);
        if (!m)
            return KD_ENOMEM;
        p->nmem = m;
        int *sl = realloc(p->nslots, sizeof(int) * (size_t)cap);
        if (!sl)
            return KD_ENOMEM;
        p->nslots = sl;
        p->cap_nodes = cap;
    }
    return KD_OK;
}

int sched_decide(sched_policy *p, const sched_snapshot *s, sched_decision *out, char *err,
                 size_t errlen)
{
    if (!p || !out)
        return kd_errf(err, errlen, KD_EINVAL, "no policy or no output array");
    int rc = sched_check(p, s, err, errlen);
    if (rc != KD_OK)
        return rc;
    if (sched_grow(p, s->n_jobs, s->n_nodes) != KD_OK)
        return kd_errf(err, errlen, KD_ENOMEM, "out of memory");
    for (int i = 0; i < s->n_jobs; i++) {
        memset(&out[i], 0, sizeof(out[i]));
        p->want[i] = 0;
        p->order[i] = i;
    }
    switch (p->kind) {
    case SCHED_STATIC:
        sched_policy_static(p, s, out);
        sched_finish(p, s, out, 1, 0);
        break;
    case SCHED_TIRESIAS:
        sched_policy_tiresias(p, s, out);
        sched_finish(p, s, out, 1, 0);
        break;
    case SCHED_FAIR:
        sched_policy_fair(p, s, out);
        sched_finish(p, s, out, 0, 1);
        break;
    case SCHED_GREEDY:
        sched_policy_greedy(p, s, out);
        sched_finish(p, s, out, 0, 1);
        break;
    case SCHED_POLLUX:
        sched_policy_pollux(p, s, out);
        sched_finish(p, s, out, 0, 0);
        break;
    case SCHED_RL:
        rc = sched_policy_rl(p, s, out);
        if (rc != KD_OK)
            return kd_errf(err, errlen, rc, "rl: out of memory");
        break;
    }
    /* Policies that allocate by goodput choose the batch with the count: the one the
     * job's goodput table assumes at the count decided (after the safety stage). */
    if (p->kind == SCHED_POLLUX || p->kind == SCHED_RL)
        for (int i = 0; i < s->n_jobs; i++) {
            const sched_job *j = &s->jobs[i];
            int d = out[i].desired;
            if (d > 0 && j->goodput_batch != NULL && j->n_goodput > 0)
                out[i].batch = j->goodput_batch[(d <= j->n_goodput ? d : j->n_goodput) - 1];
        }
    return KD_OK;
}

int sched_observe(sched_policy *p, const char *job_id, double reward, int done)
{
    if (!p || !job_id)
        return KD_EINVAL;
    if (p->kind != SCHED_RL)
        return KD_OK;
    return sched_rl_observe(p, job_id, reward, done);
}

void sched_episode_end(sched_policy *p)
{
    if (p && p->kind == SCHED_RL)
        sched_rl_episode_end(p);
}

int sched_rl_set_epsilon(sched_policy *p, double epsilon)
{
    if (!p || p->kind != SCHED_RL || !(epsilon >= 0 && epsilon <= 1))
        return KD_EINVAL;
    p->rl->epsilon = epsilon;
    return KD_OK;
}

int sched_rl_set_baseline(sched_policy *p, double jobs)
{
    if (!p || p->kind != SCHED_RL)
        return KD_EINVAL;
    p->rl->c.base = jobs >= 0 ? jobs : -1; /* NaN fails the test too */
    return KD_OK;
}

int sched_rl_get_stats(const sched_policy *p, sched_rl_stats *st)
{
    if (!p || !st || p->kind != SCHED_RL)
        return KD_EINVAL;
    long visited = 0;
    for (int i = 0; i < SCHED_N_STATES; i++)
        visited += p->rl->visits[i] > 0;
    st->states_visited = visited + sched_rlc_states(&p->rl->c);
    st->updates = p->rl->updates + p->rl->c.updates;
    st->fallbacks = p->rl->fallbacks;
    st->epsilon = p->rl->epsilon;
    return KD_OK;
}
