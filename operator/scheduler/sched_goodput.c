/*
 * sched_goodput.c: the goodput model of one live job, built from what its coordinator
 * measures (docs/scheduler.md, "Co-adaptation in the cluster"): the step time at each
 * (agents, per-agent batch) configuration it has run, the part of it that grows with the
 * batch, and the gradient noise scale. The operator and `kadet run` call it to give the
 * pollux policy (and rl's goodput rules) the table kadet-sim's goodput model gives them:
 * goodput at 1..n agents, each with the batch chosen for that count.
 *
 * Step time at W agents and per-agent batch b: t(W, b) = a b + k(W). a (seconds per
 * sample on one agent) is the mean over the configurations of compute / batch; k(W), the
 * rest (exchange, optimizer, waiting), is measured at the counts the job has run at,
 * interpolated linearly between them, extended beyond the largest with the slope of the
 * last two, and, with a single measured count, scaled as the speed model's prior does
 * (a step at W agents costs (1 + prior_k (W - 1)) times a step at one). The statistical
 * efficiency of a global batch M is (Bn + M0) / (Bn + M) (Bn the noise scale, M0 the
 * job's smallest batch), so goodput(W, b) = W b / t(W, b) * (Bn + M0) / (Bn + W b): the
 * AdaptDL/Pollux model the coordinator's adaptive batch uses. Its best b is
 * sqrt(k Bn / (a W)), taken to multiples of 8 within the job's bounds, and taken only
 * when it promises 5% more goodput than the job's current batch; without a noise
 * scale (or with fixed bounds) the batch stays the job's current one and goodput is the
 * throughput.
 */
#include <math.h>
#include <string.h>

#include "kd_sched.h"

#define GP_ROUND 8      /* batches are multiples of this (or the bounds) */
#define GP_MIN_GAIN 1.05 /* goodput gain that justifies leaving the current batch */

/* Overhead per step at w agents from the measured (count, overhead) points, sorted. */
static double gp_overhead(const int *ws, const double *ks, int m, int w, double prior_k,
                          double t_ref, double a, int b_ref)
{
    if (m == 1) {
        double t = t_ref * (1.0 + prior_k * (w - 1)) / (1.0 + prior_k * (ws[0] - 1));
        double k = t - a * b_ref;
        return k > 0 ? k : 0;
    }
    for (int i = 0; i < m; i++) {
        if (ws[i] == w)
            return ks[i];
        if (i > 0 && ws[i - 1] < w && w < ws[i])
            return ks[i - 1] + (ks[i] - ks[i - 1]) * (w - ws[i - 1]) / (ws[i] - ws[i - 1]);
    }
    if (w < ws[0])
        return ks[0];
    double slope = (ks[m - 1] - ks[m - 2]) / (ws[m - 1] - ws[m - 2]);
    double k = ks[m - 1] + (slope > 0 ? slope : 0) * (w - ws[m - 1]);
    return k > 0 ? k : 0;
}

/* A configuration the model can read (a step whose compute part fits inside it). */
static int cfg_usable(const sched_cfg *c)
{
    return c->agents >= 1 && c->batch >= 1 && c->step_s > 0 && c->compute_s >= 0 &&
           c->compute_s <= c->step_s;
}

static double gp_value(double a, double k, double bn, double m0, int w, int b)
{
    double t = a * b + k;
    if (t <= 0)
        return 0;
    double g = (double)w * b / t;
    return bn > 0 ? g * (bn + m0) / (bn + (double)w * b) : g;
}

int sched_goodput_table(const sched_goodput_in *in, int max_agents, double *goodput,
                        int *batch)
{
    if (in == NULL || goodput == NULL || batch == NULL || max_agents < 1 || in->n_cfg <= 0 ||
        in->cfg == NULL || in->batch < 1)
        return 0;
    int n = in->n_cfg < SCHED_GP_MAX_CFG ? in->n_cfg : SCHED_GP_MAX_CFG;
    /* a: seconds per sample per agent. */
    double asum = 0;
    int na = 0;
    for (int i = 0; i < n; i++) {
        const sched_cfg *c = &in->cfg[i];
        if (!cfg_usable(c))
            continue;
        asum += c->compute_s / c->batch;
        na++;
    }
    if (na == 0)
        return 0;
    double a = asum / na;
    /* k per measured count (mean over its batches), sorted by count. */
    int ws[SCHED_GP_MAX_CFG], cnt[SCHED_GP_MAX_CFG], m = 0, b_ref = in->batch;
    double ks[SCHED_GP_MAX_CFG], t_ref = 0;
    for (int i = 0; i < n; i++) {
        const sched_cfg *c = &in->cfg[i];
        if (!cfg_usable(c))
            continue;
        double k = c->step_s - a * c->batch;
        if (k < 0)
            k = 0;
        int j = 0;
        while (j < m && ws[j] != c->agents)
            j++;
        if (j == m) {
            ws[m] = c->agents;
            ks[m] = 0;
            cnt[m] = 0;
            m++;
        }
        ks[j] += k;
        cnt[j]++;
        if (m == 1 || j == 0) {
            t_ref = c->step_s;
            b_ref = c->batch;
        }
    }
    for (int j = 0; j < m; j++)
        ks[j] /= cnt[j];
    for (int i = 1; i < m; i++) /* insertion sort by count (at most 16) */
        for (int j = i; j > 0 && ws[j - 1] > ws[j]; j--) {
            int tw = ws[j];
            ws[j] = ws[j - 1];
            ws[j - 1] = tw;
            double tk = ks[j];
            ks[j] = ks[j - 1];
            ks[j - 1] = tk;
        }
    int lo = in->batch_min >= 1 ? in->batch_min : in->batch;
    int hi = in->batch_max >= lo ? in->batch_max : lo;
    double bn = in->noise_scale > 0 && isfinite(in->noise_scale) ? in->noise_scale : 0;
    double m0 = lo;
    int choose = bn > 0 && hi > lo;
    for (int w = 1; w <= max_agents; w++) {
        double k = gp_overhead(ws, ks, m, w, in->prior_k, t_ref, a, b_ref);
        int best = in->batch < lo ? lo : in->batch > hi ? hi : in->batch;
        if (choose) {
            double star = a > 0 ? sqrt(k * bn / (a * w)) : hi;
            int cand[5] = {lo, hi, 0, 0, 0};
            int r = (int)lround(star / GP_ROUND) * GP_ROUND;
            cand[2] = r;
            cand[3] = r - GP_ROUND;
            cand[4] = r + GP_ROUND;
            /* The current batch stays unless another promises GP_MIN_GAIN more: a
             * change of batch restarts the world, and the estimates move a little at
             * every report. */
            double gbest = gp_value(a, k, bn, m0, w, best) * GP_MIN_GAIN;
            for (int c = 0; c < 5; c++) {
                int b = cand[c] < lo ? lo : cand[c] > hi ? hi : cand[c];
                double g = gp_value(a, k, bn, m0, w, b);
                if (g > gbest * (1 + 1e-12)) {
                    gbest = g;
                    best = b;
                }
            }
        }
        batch[w - 1] = best;
        goodput[w - 1] = gp_value(a, k, bn, m0, w, best);
    }
    return max_agents;
}

int sched_job_set_goodput(sched_job *j, const sched_goodput_in *in, int max_agents,
                          int choose_batch, double *goodput, int *batch)
{
    int n = sched_goodput_table(in, max_agents, goodput, batch);
    if (n > 0) {
        j->goodput = goodput;
        j->goodput_batch = choose_batch ? batch : NULL;
        j->n_goodput = n;
    }
    return n;
}
