/* coordinator_batch: adaptive batch size (spec.training.adaptive.batchSize).
 *
 * The coordinator picks the per-agent batch b that maximises the job's goodput, the
 * training progress per second: throughput times statistical efficiency, as AdaptDL
 * (Qiao et al., OSDI 2021) does. Both factors are measured while the job trains:
 *
 * - Gradient noise. With W agents at batch b, rank 0 reports the mean over the ranks of
 *   |g_local|^2 (each rank's gradient over its b samples) and |g_global|^2 (the allreduced
 *   gradient over W*b). Their expectations are |G|^2 + S/b and |G|^2 + S/(W*b), where G is
 *   the true gradient and S the trace of the per-sample gradient covariance, which gives
 *   unbiased estimates of both (McCandlish et al., "An Empirical Model of Large-Batch
 *   Training", 2018, appendix A.1); each is smoothed on its own and the noise scale
 *   Bn = S/|G|^2 is their ratio. A global batch M then makes (Bn + M0)/(Bn + M) as much
 *   progress per sample as the base batch M0.
 * - Speed. A step at batch b costs a*b (forward and backward, per rank) plus k (the
 *   exchange, the optimizer step and everything else that does not grow with the batch:
 *   the window's wall time per step minus a*b), both from the step times rank 0 reports
 *   for the current world.
 *
 * Goodput W*b / (a*b + k) / (Bn + W*b) is largest at b* = sqrt(k*Bn / (a*W)), clamped to
 * [training.batchSize, adaptive.maxBatchSize]. The coordinator moves to b* when it
 * promises at least MIN_GAIN more goodput than the current batch (with one agent, from
 * the last noise estimate of a larger world: the noise cannot be measured with one batch
 * size), through the same pause
 * and new world as a change of agents (so the cursor, the checkpoints and the warm-up
 * work unchanged); the learning rate follows with AdaScale's gain (Johnson et al.,
 * 2020): r = (Bn/M1 + 1) / (Bn/M + 1) for going from the global batch M1 = W*batchSize to
 * M, between 1 (noise-free: a larger batch does not allow a larger step) and M/M1. */
#include <math.h>
#include <string.h>

#include "coordinator_int.h"
#include "kd_log.h"
#include "kd_wire.h"

#define EMA_NEW 0.3          /* weight of a new report in the smoothed estimates */
#define MIN_STEPS 100        /* noise samples in the current world before deciding */
#define MIN_GAIN 1.05        /* predicted goodput gain that justifies a change */
#define MIN_INTERVAL_S 2.0   /* seconds between two batch changes */
#define BATCH_ROUND 8        /* batches are multiples of this (or the bounds) */

void coord_batch_init(coord *c)
{
    c->batch0 = c->batch;
    c->batch_max = kd_spec_batch_ceiling(&c->job, c->batch);
    c->adaptive_batch = c->job.adaptive_batch && c->job.sync_mode == KD_SPEC_SYNC_ALLREDUCE;
    if (c->job.adaptive_batch && !c->adaptive_batch)
        KD_WARN("coordinator: adaptive batch size needs sync.mode allreduce (local-sgd "
                "does not exchange gradients every step); the batch stays %d", c->batch);
    c->gns_g2 = c->gns_s = 0;
    c->gns_reports = 0;
    c->gns_last = 0;
    c->batch_changed = 0;
}

void coord_batch_new_world(coord *c)
{
    c->cfg_skip = 1; /* the first report of a world includes its forming and warm-up */
    c->gns_steps = 0;
    c->step_a = c->step_k = 0;
    c->step_reports = 0;
}

/* Folds x into the smoothed *v (the first value is taken as it is). */
static void smooth(double *v, double x, int first)
{
    *v = first ? x : *v + EMA_NEW * (x - *v);
}

/* An optional number of the report: -1 only when present and not in [0, hi]. */
static int optional_num(const json_t *b, const char *key, double hi, double *v)
{
    return json_object_get(b, key) != NULL && kd_wire_get_num(b, key, 0, hi, v) != 0 ? -1 : 0;
}

void coord_batch_observe(coord *c, const json_t *b)
{
    if (!c->adaptive_batch || c->world < 1)
        return;
    long long steps, batch, gsteps;
    double comp, comm, upd = 0, wall = 0, gl, gg;
    if (kd_wire_get_int(b, "steps", 1, INT64_MAX, &steps) != 0 ||
        kd_wire_get_int(b, "batch", 1, 1 << 20, &batch) != 0 || batch != c->batch ||
        kd_wire_get_num(b, "compute_s", 0, 1e9, &comp) != 0 ||
        kd_wire_get_num(b, "comm_s", 0, 1e9, &comm) != 0)
        return;
    /* Step times: forward and backward grow with the batch, the rest does not. */
    if (optional_num(b, "update_s", comp, &upd) != 0 ||
        optional_num(b, "wall_s", 1e9, &wall) != 0)
        return;
    double a = (comp - upd) / (double)steps / (double)batch, k = (comm + upd) / (double)steps;
    /* Whatever else the window's wall time holds (data, waiting on the slower rank,
     * ZeroMQ's threads taking the cores) does not grow with the batch either. */
    if (wall > comp + comm)
        k = wall / (double)steps - a * (double)batch;
    smooth(&c->step_a, a, c->step_reports == 0);
    smooth(&c->step_k, k, c->step_reports == 0);
    c->step_reports++;
    /* One agent has one batch size: no noise to measure (the last estimate stands). */
    if (c->world < 2 || kd_wire_get_int(b, "gsq_steps", 1, INT64_MAX, &gsteps) != 0 ||
        kd_wire_get_num(b, "gsq_local", 0, 1e30, &gl) != 0 ||
        kd_wire_get_num(b, "gsq_global", 0, 1e30, &gg) != 0)
        return;
    double bs = (double)batch, bb = (double)batch * c->world;
    double g2 = (bb * gg - bs * gl) / (bb - bs);
    double s = (gl - gg) / (1.0 / bs - 1.0 / bb);
    smooth(&c->gns_g2, g2, c->gns_reports == 0);
    smooth(&c->gns_s, s, c->gns_reports == 0);
    c->gns_reports++;
    if (c->gns_g2 > 0 && c->gns_s > 0)
        c->gns_last = c->gns_s / c->gns_g2;
    c->gns_steps += (uint64_t)gsteps;
}

void coord_configs_observe(coord *c, const json_t *b, double now)
{
    long long steps, batch;
    double sps, comp, comm, upd = 0, wall = 0;
    if (c->world < 1 || kd_wire_get_int(b, "steps", 1, INT64_MAX, &steps) != 0 ||
        kd_wire_get_int(b, "batch", 1, 1 << 20, &batch) != 0 ||
        kd_wire_get_num(b, "samples_per_s", 0, 1e12, &sps) != 0 || sps <= 0 ||
        kd_wire_get_num(b, "compute_s", 0, 1e9, &comp) != 0 ||
        kd_wire_get_num(b, "comm_s", 0, 1e9, &comm) != 0 ||
        optional_num(b, "wall_s", 1e9, &wall) != 0 ||
        optional_num(b, "update_s", comp, &upd) != 0)
        return;
    if (c->cfg_skip > 0) {
        c->cfg_skip--;
        return;
    }
    /* A step's wall time: the window's, or its compute and exchange when not reported. */
    double step_ms = (wall > comp + comm ? wall : comp + comm) * 1000.0 / (double)steps;
    double compute_ms = (comp - upd) * 1000.0 / (double)steps;
    if (step_ms > 1e9)
        return;
    int i = 0;
    while (i < c->n_cfgs && !(c->cfgs[i].agents == c->world && c->cfgs[i].batch == batch))
        i++;
    if (i < c->n_cfgs) {
        smooth(&c->cfgs[i].samples_per_s, sps, 0);
        smooth(&c->cfgs[i].step_ms, step_ms, 0);
        smooth(&c->cfgs[i].compute_ms, compute_ms, 0);
    } else {
        if (c->n_cfgs < KD_METRICS_MAX_CONFIGS)
            i = c->n_cfgs++;
        else
            for (int k = i = 0; k < c->n_cfgs; k++)
                if (c->cfg_used[k] < c->cfg_used[i])
                    i = k;
        c->cfgs[i] = (kd_metrics_config){c->world, (int)batch, sps, step_ms, compute_ms};
    }
    c->cfg_used[i] = now;
}

double coord_batch_noise(const coord *c)
{
    /* Late in training |G|^2 is small and its unbiased estimate may dip below 0 for a
     * while: the last estimate of two positive components stands meanwhile. */
    if (c->gns_reports == 0 || c->gns_g2 <= 0 || c->gns_s <= 0)
        return c->gns_last;
    return c->gns_s / c->gns_g2;
}

/* Goodput of per-agent batch b, up to a constant factor. */
static double goodput(const coord *c, double bn, double b)
{
    double w = c->world;
    return w * b / (c->step_a * b + c->step_k) / (bn + w * b);
}

void coord_on_batch(coord *c, const kd_ctl_msg *msg)
{
    long long b;
    if (kd_wire_get_int(msg->json, "batch", 1, 1 << 20, &b) != 0) {
        kd_wire_drop(KD_WIRE_DROP_FIELD, "control");
        return;
    }
    /* The job's declared bounds: training.batchSize up to adaptive.maxBatchSize (the
     * spec's batch only, when the batch does not adapt). */
    int lo = c->batch0, hi = c->adaptive_batch ? c->batch_max : c->batch0;
    if (b < lo || b > hi) {
        if (c->batch_refused != (int)b)
            KD_WARN("coordinator: refused batch=%lld from the operator: outside the job's "
                    "bounds [%d, %d] (training.batchSize, adaptive.maxBatchSize)", b, lo, hi);
        c->batch_refused = (int)b;
        return;
    }
    if (c->batch_decided != (int)b)
        KD_INFO("coordinator: batch %d decided by the operator's scheduler (was %d)", (int)b,
                c->batch);
    c->batch_decided = (int)b;
    /* Not training: the next world starts with it (coord_batch_decide moves a running
     * world at its next boundary). */
    if (c->st != C_RUNNING && c->st != C_DONE)
        c->batch = (int)b;
}

int coord_batch_decide(coord *c, double now)
{
    /* Every epoch trained and evaluated (or the end under way): a new world would only
     * delay the end, and the summary's batch would not be the last epoch's. */
    if (c->finishing || (c->epochs > 0 && c->epochs_done >= c->epochs))
        return 0;
    /* The operator's scheduler decides: the coordinator's own choice stays out. */
    if (c->batch_decided > 0) {
        if (c->batch == c->batch_decided || now - c->batch_changed < MIN_INTERVAL_S)
            return 0;
        KD_INFO("coordinator: batch %d -> %d (the operator's scheduler)", c->batch,
                c->batch_decided);
        c->batch = c->batch_decided;
        c->batch_changed = now;
        return 1;
    }
    /* With 2 or more agents, on fresh noise measurements of this world; with one agent,
     * on its own step times and the last noise estimate of a larger world (without an
     * exchange to amortise, a smaller batch usually pays there). */
    int measured = c->world >= 2 ? c->gns_steps >= MIN_STEPS : c->step_reports >= 3;
    if (!c->adaptive_batch || c->world < 1 || !measured || c->step_reports < 2 ||
        c->step_a <= 0 || now - c->batch_changed < MIN_INTERVAL_S)
        return 0;
    double bn = coord_batch_noise(c);
    if (bn <= 0)
        return 0;
    double best = sqrt(c->step_k * bn / (c->step_a * c->world));
    int b = (int)lround(best / BATCH_ROUND) * BATCH_ROUND;
    if (b < c->batch0)
        b = c->batch0;
    if (b > c->batch_max)
        b = c->batch_max;
    if (b == c->batch || goodput(c, bn, b) < MIN_GAIN * goodput(c, bn, c->batch))
        return 0;
    KD_INFO("coordinator: batch %d -> %d noise_scale=%.0f compute_us_per_sample=%.2f "
            "step_overhead_ms=%.3f", c->batch, b, bn, c->step_a * 1e6, c->step_k * 1e3);
    c->batch = b;
    c->batch_changed = now;
    return 1;
}

void coord_batch_restore(coord *c, int batch, double noise_g2, double noise_s)
{
    if (!c->adaptive_batch || batch < c->batch0 || batch > c->batch_max)
        return;
    c->batch = batch;
    if (noise_g2 != 0.0 || noise_s != 0.0) {
        c->gns_g2 = noise_g2;
        c->gns_s = noise_s;
        c->gns_reports = 1;
        c->gns_last = noise_g2 > 0 && noise_s > 0 ? noise_s / noise_g2 : 0;
    }
    KD_INFO("coordinator: batch %d from the checkpoint noise_scale=%.0f", c->batch,
            coord_batch_noise(c));
}

double coord_batch_lr_gain(const coord *c, int agents)
{
    double bn = coord_batch_noise(c);
    if (!c->adaptive_batch || c->batch == c->batch0 || bn <= 0)
        return 1.0;
    double m1 = (double)agents * c->batch0, m = (double)agents * c->batch;
    return (bn / m1 + 1.0) / (bn / m + 1.0);
}
