/* worker_step: the worker's training step in its modes (allreduce with the exchange
 * overlapping backward and the deferred sum, the factors exchange, local-sgd, bf16, the
 * gradient-noise measurement of the adaptive batch size, the next batch's prefetch).
 * The step allocates nothing: batch buffers, the permutation, the control floats and
 * (for local-sgd) the averaging buffer are allocated once the job is known, the factor
 * buffers when a world is announced. */
#include "worker_int.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "kd_error.h"
#include "kd_log.h"
#include "kd_train.h"
#include "kd_wire.h"

void worker_log_samples(worker *w, uint32_t epoch, uint64_t start, uint64_t n)
{
    if (w->sample_log == NULL || n == 0)
        return;
    if ((int64_t)epoch != w->perm_epoch) {
        w->perm_epoch = epoch;
        kd_shuffle_perm(w->seed, epoch, w->perm, w->train.n);
    }
    for (uint64_t i = 0; i < n; i++)
        fprintf(w->sample_log, "%u %u\n", epoch, w->perm[start + i]);
    fflush(w->sample_log);
}

/* One more dependent network hop costs about as much as sending this many more floats.
 * Two processes on loopback that compute on the same cores as their ZeroMQ I/O threads:
 * the sample's two-agent step with the gradient in one 940 KB message each way ran 6%
 * faster than with the factors' 265 KB + 400 KB in two (docs/runtime.md), so a message
 * costs more than 67k floats; a hop alone is ~0.13 ms, moving data ~0.5 us per KiB. */
#define HOP_FLOATS 131072.0

/* Whether this world sends layer 0's factors rather than its gradient. Per rank, the
 * allreduce sends 2(W-1)/W * in*out floats of that gradient. With factors it sends
 * 2(W-1) * batch*out floats of them instead (each rank's rows of the global batch's
 * W*batch x out matrix and zeros elsewhere travel in the same allreduce: a sum that is a
 * gather), and the all-gather of the ranks' blocks of rows of the gradient sends
 * (W-1)/W * in*out, in W-1 more dependent hops; the GEMM work stays one rank's. */
static int want_factors(const worker *w, int world)
{
    /* Factors rebuild a dense first layer; a declared network's first layer is not
     * one (the decoder refuses sync.exchange: factors for it). */
    if (w->m.net != NULL || world < 2 || w->job.sync_mode != KD_SPEC_SYNC_ALLREDUCE ||
        w->job.sync_exchange == KD_SPEC_EXCHANGE_GRADIENTS)
        return 0;
    if (w->job.sync_exchange == KD_SPEC_EXCHANGE_FACTORS)
        return 1;
    double W = world, b = w->job.batch_size, in = w->m.sizes[0], out = w->m.sizes[1];
    double saved = (W - 1) * out * (in / W - 2.0 * b);
    return saved > HOP_FLOATS * (W - 1);
}

/* Sizes the factor buffers for a world (between steps, so a step never allocates).
 * Every rank of a world must exchange the same way, so a rank without the memory cannot
 * fall back alone: it fails (the coordinator forms a world without it). */
static int factor_buffers(worker *w, int world)
{
    size_t rows = (size_t)world * (size_t)w->job.batch_size;
    if (w->frows >= rows && w->gbounds != NULL && w->fworld >= world)
        return 1;
    float *x = realloc(w->xall, rows * w->train.dim * sizeof *x);
    if (x != NULL)
        w->xall = x;
    int32_t *y = realloc(w->yall, rows * sizeof *y);
    if (y != NULL)
        w->yall = y;
    float *dy = realloc(w->dyall, rows * (size_t)w->m.sizes[1] * sizeof *dy);
    if (dy != NULL)
        w->dyall = dy;
    size_t *gb = realloc(w->gbounds, ((size_t)world + 1) * sizeof *gb);
    if (gb != NULL)
        w->gbounds = gb;
    if (x == NULL || y == NULL || dy == NULL || gb == NULL) {
        KD_ERROR("worker: no memory for the factors of %d agents (sync.exchange: gradients "
                 "needs none)", world);
        w->fatal = 1;
        return 0;
    }
    w->fworld = world;
    w->frows = rows;
    return 1;
}

/* Adaptive batch size measures the gradient noise on the layers above the first (with
 * the factors exchange no rank ever holds its own first-layer gradient); a one-layer
 * model measures its only layer, unless it exchanges factors: then nothing. */
static size_t noise_base(const worker *w)
{
    if (w->m.n_layers >= 2)
        return w->m.w_off[1];
    return w->factors ? w->m.n_params : 0;
}

/* Sets up the step modes of a world just announced (between steps, so that a step never
 * allocates). */
int worker_step_world(worker *w)
{
    w->factors = want_factors(w, w->world);
    if (w->factors && !factor_buffers(w, w->world))
        return -1;
    /* Rank k computes and sends rows [in*k/W, in*(k+1)/W) of layer 0's gradient. */
    for (int k = 0; w->factors && k <= w->world; k++)
        w->gbounds[k] = (size_t)((long)w->m.sizes[0] * k / w->world) * (size_t)w->m.sizes[1];
    w->noise_from = w->job.adaptive_batch ? noise_base(w) : w->m.n_params;
    /* local-sgd averages parameters, which sync.compression leaves alone (the spec warns). */
    w->bf16 = w->job.sync_mode == KD_SPEC_SYNC_ALLREDUCE &&
              w->job.sync_compression == KD_SPEC_COMPRESSION_BF16;
    return 0;
}

static double lr_scale(const worker *w)
{
    return kd_lr_ramp(w->scale_from, w->scale_to, w->scale_step, w->warmup, w->step);
}

/* Moves the position past a step of bk samples; returns 1 when an epoch ended. */
static int advance(worker *w, uint64_t bk)
{
    w->step++;
    w->cursor += bk;
    if (w->cursor < w->train.n)
        return 0;
    w->cursor = 0;
    w->epoch++;
    return 1;
}

static double sumsq(const float *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)x[i] * (double)x[i];
    return s;
}

/* Backward hands each final gradient range to the ring as soon as it is computed (the
 * model already weighted it by our share of the global batch), and the allreduce sends
 * what it can while the rest of the backward pass runs. An error is sticky in comm and reported by
 * kd_comm_finish. */
static void on_grad_ready(void *arg, int layer, size_t off, size_t len)
{
    (void)layer;
    worker *w = arg;
    char err[256];
    /* Adaptive batch size: the norm of our own gradient, read before the allreduce adds
     * the peers' into this range. */
    size_t u0 = w->noise_from;
    if (off + len > u0) {
        size_t a = off > u0 ? off : u0;
        w->gsq_local += sumsq(w->m.grads + a, off + len - a);
    }
    double t = kd_now();
    kd_comm_ready(w->comm, 0, off - w->ready_base, len, err, sizeof err);
    w->step_sends += kd_now() - t;
}

/* A failed exchange: in allreduce mode nothing was applied and the step is redone (its
 * samples are logged once the next world shows whether a peer applied it); with
 * local-sgd the local step stands and only the averaging is lost. */
static step_result exchange_failed(worker *w, const char *err, int local, uint64_t start,
                                   uint64_t mine, uint64_t bk)
{
    KD_WARN("worker: %s", err);
    if (local) {
        worker_log_samples(w, w->epoch, start, mine);
        advance(w, bk);
    } else {
        w->pend_step = w->step;
        w->pend_epoch = w->epoch;
        w->pend_start = start;
        w->pend_n = mine;
    }
    return STEP_FAILED;
}

/* Whether what the exchange brought is finite, before any of it is applied: the summed
 * vector in place (the averaged parameters of local-sgd, or the gradient span with its
 * control floats; factors are checked after their all-gather), or of a deferred swap's
 * peer pieces the control floats (the gradient part is checked block by block as the
 * update applies it). A peer's NaN would otherwise spread into every parameter. */
static int exchange_finite(const worker *w, int local, const kd_comm_piece *peer,
                           size_t npeer, size_t span_n, size_t dy_n)
{
    if (npeer > 0) {
        for (size_t i = 0; i < npeer; i++) {
            size_t from = peer[i].off >= span_n ? 0 : span_n - peer[i].off;
            if (from < peer[i].n &&
                !kd_comm_all_finite(peer[i].data + from * sizeof(float), peer[i].n - from))
                return 0;
        }
        return 1;
    }
    if (local)
        return kd_comm_all_finite(w->avg, w->m.n_params) &&
               kd_comm_all_finite(w->tail, TAIL_N);
    return kd_comm_all_finite(w->m.grads + w->ready_base, span_n + TAIL_N) &&
           kd_comm_all_finite(w->dyall, dy_n);
}

/* A deferred swap's peer gradient held a non-finite value (a block the update was about to
 * apply). Before anything was applied the step simply fails, as after a lost peer, and
 * the next world redoes it. After part of it was applied our parameters are no longer the
 * world's: the worker leaves without reporting or sending that state (exit 1; a new one
 * joins fresh and receives a good state), so the values never reach a checkpoint. */
static step_result peer_not_finite(worker *w, int nothing_applied, int local, uint64_t start,
                                   uint64_t mine, uint64_t bk)
{
    kd_wire_drop(KD_WIRE_DROP_NONFINITE, "data");
    if (nothing_applied)
        return exchange_failed(w, "the exchange brought non-finite values, not applied", local,
                               start, mine, bk);
    KD_ERROR("worker: the exchange brought non-finite values after part of the step was "
             "applied; leaving with this state discarded step=%llu",
             (unsigned long long)w->step);
    w->fatal = 1;
    return STEP_FAILED;
}

/* Our share of the global batch that starts at cursor in the current world: bk samples
 * in all (the global batch, or what is left of the epoch), ours perm[*start, +*mine), *row
 * the first of them within the global batch. Ranks split it as evenly as possible, in
 * rank order; the first bk % W get one more. */
static void batch_rows(const worker *w, uint64_t cursor, uint64_t *bk, uint64_t *mine,
                       uint64_t *row, uint64_t *start)
{
    uint64_t gb = (uint64_t)w->world * (uint64_t)w->job.batch_size;
    uint64_t rest = w->train.n - cursor;
    *bk = gb < rest ? gb : rest;
    uint64_t base = *bk / (uint64_t)w->world, extra = *bk % (uint64_t)w->world;
    uint64_t r = (uint64_t)w->rank;
    *mine = base + (r < extra ? 1 : 0);
    *row = r * base + (r < extra ? r : extra);
    *start = cursor + *row;
}

/* Gathers the next step's batch (the same world, the same epoch) into xn/yn while this
 * step's exchange is on the wire: the cores are waiting for the peer's bytes then, and
 * the gather (64 scattered rows) is most of a step's non-GEMM work. */
static void prefetch_next(worker *w, uint64_t bk)
{
    w->pre_n = 0;
    uint64_t next = w->cursor + bk, nbk, mine, row, start;
    if (next >= w->train.n)
        return;
    batch_rows(w, next, &nbk, &mine, &row, &start);
    if (mine == 0)
        return;
    kd_dataset_gather(&w->train, w->perm + start, (size_t)mine, w->xn, w->yn);
    w->pre_epoch = (int64_t)w->epoch;
    w->pre_start = start;
    w->pre_n = mine;
}

/* Our rows of the step's batch, perm[start, +mine): with factors gathered into their place
 * in the global batch (row), else taken from the prefetch when it holds them, else
 * gathered into xb/yb. */
static void step_batch(worker *w, int factors, uint64_t row, uint64_t start, uint64_t mine,
                       float **xp, int32_t **yp)
{
    float *x = w->xb;
    int32_t *y = w->yb;
    if (factors) {
        /* Our rows now; the other ranks' rows (for layer 0's gradient) once our part of
         * the exchange is on its way. */
        size_t width = (size_t)w->m.sizes[1];
        kd_dataset_gather(&w->train, w->perm + start, (size_t)mine, w->xall + row * w->train.dim,
                          w->yall + row);
        x = w->xall + row * w->train.dim;
        y = w->yall + row;
        kd_model_set_first_dy(&w->m, w->dyall + row * width);
    } else if (mine > 0 && w->pre_n == mine && w->pre_start == start &&
               w->pre_epoch == (int64_t)w->epoch) {
        float *xt = w->xb;
        int32_t *yt = w->yb;
        w->xb = w->xn;
        w->yb = w->yn;
        w->xn = xt;
        w->yn = yt;
        x = w->xb;
        y = w->yb;
    } else if (mine > 0) {
        kd_dataset_gather(&w->train, w->perm + start, (size_t)mine, w->xb, w->yb);
    }
    w->pre_n = 0;
    *xp = x;
    *yp = y;
}

/* Factors, once the exchange brought the global batch's output gradients: this rank's
 * block of dW0's rows [r0, r1) for the other ranks' samples (the global batch's rows before
 * and after ours; ours were done while they travelled), layer 0's bias, then the
 * all-gather that gives every rank every block. *tprod: seconds of the products. */
static int factors_finish(worker *w, uint64_t row, uint64_t mine, uint64_t bk, int r0, int r1,
                          double *tprod, char *err, size_t errlen)
{
    size_t width = (size_t)w->m.sizes[1];
    double tf = kd_now();
    uint64_t parts[2][2] = {{0, row}, {row + mine, bk}}; /* [first, end) rows */
    int written = mine > 0;
    for (int k = 0; k < 2; k++) {
        uint64_t a = parts[k][0], n = parts[k][1] - parts[k][0];
        if (n == 0)
            continue;
        kd_model_first_layer_grad(&w->m, w->xall + a * w->train.dim, w->dyall + a * width,
                                  (int)n, r0, r1, written);
        written = 1;
    }
    kd_model_first_layer_bias(&w->m, w->dyall, (int)bk);
    /* Then every rank gets every block of rows (the blocks are disjoint: no sum). */
    *tprod = kd_now() - tf;
    return kd_comm_allgatherv(w->comm, w->m.grads + w->m.w_off[0], w->gbounds, w->bf16,
                              w->step, err, errlen);
}

/* The control floats of this step: votes, loss and sample count, and the adaptive batch's
 * local gradient norm. */
static void fill_tail(const worker *w, float *tail, float loss, uint64_t mine, uint64_t bk)
{
    tail[TAIL_PAUSE] = (float)w->pause_vote;
    tail[TAIL_FINISH] = (float)w->finish_vote;
    tail[TAIL_LOSS] = loss * (float)mine;
    tail[TAIL_COUNT] = (float)mine;
    /* Our gradient is scaled by mine/bk: |mean over our samples|^2 is that times
     * (bk/mine)^2. */
    tail[TAIL_GSQ] = mine > 0 ? (float)(w->gsq_local * ((double)bk / (double)mine) *
                                        ((double)bk / (double)mine))
                              : 0.0f;
}

/* local-sgd: the parameters become the mean of the ranks' (summed into avg). */
static void local_average(worker *w)
{
    float inv = 1.0f / (float)w->world;
    for (size_t i = 0; i < w->m.n_params; i++)
        w->m.params[i] = w->avg[i] * inv;
}

/* The deferred sum: the peer's gradient is added as the update reads it (logical offset =
 * parameter index: without factors the vector starts at the first parameter), a block at
 * a time, each checked for non-finite values just before it is applied (the check then
 * costs a pass over the L1 cache, not over memory). Returns 0 at a non-finite block,
 * *applied telling whether any block went in before it; 1 when all were applied. */
static int apply_peer_sum(worker *w, const kd_comm_piece *peer, size_t npeer, size_t span_n,
                          double lr, int *applied)
{
    for (size_t i = 0; i < npeer; i++) {
        size_t n = peer[i].off >= span_n ? 0
                   : peer[i].off + peer[i].n <= span_n ? peer[i].n : span_n - peer[i].off;
        for (size_t b = 0; b < n; b += FINITE_BLOCK) {
            size_t m = n - b < FINITE_BLOCK ? n - b : FINITE_BLOCK;
            const unsigned char *d = peer[i].data + b * sizeof(float);
            if (!kd_comm_all_finite(d, m))
                return 0;
            kd_optim_step_range_sum(&w->o, w->m.params, w->m.grads, d, (float)lr,
                                    peer[i].off + b, m);
            *applied = 1;
        }
    }
    return 1;
}

step_result worker_train_step(worker *w)
{
    size_t n_total = w->train.n;
    /* A world announced at the very end (a coordinator restarted from the final
     * checkpoint) has nothing left to train. */
    if (w->epoch >= (uint32_t)w->epochs) {
        /* The agents may have finished while no coordinator listened: its successor
         * learns the final accuracy from this world's rank 0. */
        json_t *done = w->last_eval != NULL ? json_object_get(w->last_eval, "epoch_done") : NULL;
        if (w->rank == 0 && json_integer_value(done) < (json_int_t)w->epoch)
            worker_epoch_end(w, w->epoch - 1, 0);
        return STEP_FINISHED;
    }
    if ((int64_t)w->epoch != w->perm_epoch) {
        w->perm_epoch = w->epoch;
        kd_shuffle_perm(w->seed, w->epoch, w->perm, n_total);
    }
    uint64_t bk, mine, row, start;
    batch_rows(w, w->cursor, &bk, &mine, &row, &start);
    int local = w->job.sync_mode == KD_SPEC_SYNC_LOCAL_SGD && w->world > 1;
    /* allreduce mode: the ring runs during backward (kd_comm_begin .. finish). */
    int overlap = !local && w->world > 1;
    int factors = overlap && w->factors;
    double t0 = kd_now();
    float loss = 0.0f;
    char err[256];
    int rc = KD_OK;
    /* allreduce: the control floats sit in the gradient buffer's spare floats, so they
     * ride in the gradient's last message rather than in one of their own. With factors
     * layer 0 (the first part of the buffer) is not in the allreduce; the global batch's
     * factor matrix is, with our rows filled in and zeros elsewhere. */
    size_t width = (size_t)w->m.sizes[1];
    w->ready_base = factors ? w->m.b_off[0] + width : 0;
    size_t span_n = w->m.n_params - w->ready_base;
    float *tail = overlap ? w->m.grads + w->m.n_params : w->tail;
    kd_comm_span spans[2] = {{local ? w->avg : w->m.grads, w->m.n_params, 0},
                             {w->tail, TAIL_N, 0}};
    /* sync.compression: bf16 packs the gradients and factors, never the control floats
     * (counts and votes). */
    kd_comm_span ar[2] = {{w->m.grads + w->ready_base, span_n + TAIL_N, w->bf16 ? span_n : 0},
                          {w->dyall, (size_t)bk * width, w->bf16 ? (size_t)bk * width : 0}};
    w->trained = 1;
    w->gsq_local = 0;
    w->step_sends = 0;
    if (factors) {
        memset(w->dyall, 0, (size_t)row * width * sizeof(float));
        memset(w->dyall + (row + mine) * width, 0, (size_t)(bk - row - mine) * width *
                                                       sizeof(float));
    }
    /* The gradient noise of the adaptive batch size reads the summed gradient; otherwise
     * the sum is taken in the optimizer step (kd_comm_begin_deferred). */
    size_t u0 = w->noise_from;
    int noise = overlap && w->rank == 0 && u0 < w->m.n_params &&
                bk == (uint64_t)w->world * (uint64_t)w->job.batch_size;
    if (overlap) {
        rc = factors || noise ? kd_comm_begin(w->comm, ar, factors ? 2 : 1, w->step, err, sizeof err)
                              : kd_comm_begin_deferred(w->comm, ar, 1, w->step, err, sizeof err);
        kd_model_set_grad_blocks(&w->m, factors ? 1 : w->grad_blocks,
                                 kd_comm_first_offset(w->comm, ar[0].n));
    }
    /* Gradients are batch means: weight each rank by its share so that the sum is the
     * mean over the global batch, as one agent with batch bk would compute. */
    kd_model_set_grad_scale(&w->m, local || w->world == 1 ? 1.0f
                                                          : (float)((double)mine / (double)bk));
    float *x;
    int32_t *y;
    step_batch(w, factors, row, start, mine, &x, &y);
    if (mine > 0) {
        if (overlap && rc == KD_OK)
            kd_model_set_grad_ready(&w->m, on_grad_ready, w);
        kd_model_set_dropout_key(&w->m, w->step, row);
        loss = kd_model_forward_backward(&w->m, x, y, (int)mine);
        kd_model_set_grad_ready(&w->m, NULL, NULL);
        kd_model_set_first_dy(&w->m, NULL);
        if (!isfinite(loss)) {
            KD_ERROR("worker: training diverged loss=%g epoch=%u step=%llu (lower the "
                     "learning rate)", (double)loss, w->epoch, (unsigned long long)w->step);
            w->fatal = 1;
            return STEP_FAILED;
        }
    } else {
        kd_model_set_first_dy(&w->m, NULL);
        memset(w->m.grads, 0, w->m.n_params * sizeof(float));
        if (overlap && rc == KD_OK)
            kd_comm_ready(w->comm, 0, 0, span_n, err, sizeof err);
    }
    fill_tail(w, tail, loss, mine, bk);
    if (overlap && rc == KD_OK) {
        double t = kd_now();
        kd_comm_ready(w->comm, 0, span_n, TAIL_N, err, sizeof err);
        if (factors)
            kd_comm_ready(w->comm, 1, 0, ar[1].n, err, sizeof err);
        w->step_sends += kd_now() - t;
    }
    /* Factors: this rank computes its block of dW0's rows for the whole global batch (one
     * rank computes each row, so every rank ends with the same bits, whatever its BLAS):
     * the part of our own samples while the others' factors travel, theirs (the global
     * batch's rows before and after ours) once they are here. */
    int r0 = factors ? (int)(w->gbounds[w->rank] / width) : 0;
    int r1 = factors ? (int)(w->gbounds[w->rank + 1] / width) : 0;
    if (factors && mine > 0)
        kd_model_first_layer_grad(&w->m, x, w->dyall + row * width, (int)mine, r0, r1, 0);
    double lr = kd_lr_at(&w->sched, w->epoch + (double)w->cursor / (double)n_total,
                         w->epochs) * lr_scale(w);
    w->last_lr = lr;
    if (local)
        kd_optim_step(&w->o, w->m.params, w->m.grads, (float)lr);
    int sync = !local || (w->step + 1) % (uint64_t)w->job.sync_period == 0 ||
               w->cursor + bk == n_total;
    if (factors) {
        size_t dim = w->train.dim;
        kd_dataset_gather(&w->train, w->perm + w->cursor, (size_t)row, w->xall, w->yall);
        kd_dataset_gather(&w->train, w->perm + start + mine, (size_t)(bk - row - mine),
                          w->xall + (row + mine) * dim, w->yall + row + mine);
    }
    if (overlap && !factors && rc == KD_OK)
        prefetch_next(w, bk);
    double t1 = kd_now(), tprod = 0;
    const kd_comm_piece *peer = NULL;
    size_t npeer = 0;
    if (sync && w->world > 1) {
        if (rc == KD_OK) {
            if (overlap) {
                rc = kd_comm_finish(w->comm, err, sizeof err);
            } else {
                memcpy(w->avg, w->m.params, w->m.n_params * sizeof(float));
                rc = kd_comm_allreducev(w->comm, spans, 2, w->step, err, sizeof err);
            }
        }
        if (rc != KD_OK)
            return exchange_failed(w, err, local, start, mine, bk);
        /* The control floats summed now; the gradient in the update (below). */
        npeer = overlap ? kd_comm_peer(w->comm, &peer) : 0;
        if (!exchange_finite(w, local, peer, npeer, span_n, factors ? ar[1].n : 0)) {
            kd_wire_drop(KD_WIRE_DROP_NONFINITE, "data");
            return exchange_failed(w, "the exchange brought non-finite values, not applied",
                                   local, start, mine, bk);
        }
        kd_comm_peer_add(w->comm, span_n, TAIL_N);
        if (local)
            local_average(w);
    }
    if (tail[TAIL_FINISH] > 0.0f && sync)
        return STEP_FINISHED; /* stop with the evaluated model, this step not applied */
    if (factors) {
        rc = factors_finish(w, row, mine, bk, r0, r1, &tprod, err, sizeof err);
        if (rc != KD_OK)
            return exchange_failed(w, err, local, start, mine, bk);
        if (!kd_comm_all_finite(w->m.grads + w->m.w_off[0], w->gbounds[w->world])) {
            kd_wire_drop(KD_WIRE_DROP_NONFINITE, "data");
            return exchange_failed(w, "the exchange brought non-finite values, not applied",
                                   local, start, mine, bk);
        }
    }
    double t2 = kd_now();
    /* Adaptive batch size: with every rank at the full per-agent batch, the global and the
     * local gradient norms give the gradient noise (docs/runtime.md); rank 0 reports them. */
    if (noise) {
        w->g_small += (double)tail[TAIL_GSQ] / (double)w->world;
        w->g_big += sumsq(w->m.grads + u0, w->m.n_params - u0);
        w->g_n++;
    }
    if (npeer > 0) {
        int applied = 0;
        if (!apply_peer_sum(w, peer, npeer, span_n, lr, &applied))
            return peer_not_finite(w, !applied, local, start, mine, bk);
        kd_optim_advance(&w->o);
    } else if (!local) {
        kd_optim_step(&w->o, w->m.params, w->m.grads, (float)lr);
    }
    worker_log_samples(w, w->epoch, start, mine);
    double t3 = kd_now();
    w->m_compute += (t1 - t0) + tprod + (t3 - t2) - w->step_sends;
    w->m_comm += (t2 - t1 - tprod) + w->step_sends;
    w->m_update += t3 - t2;
    w->m_steps++;
    w->m_samples += bk;
    double step_loss = sync && !local ? tail[TAIL_LOSS] : loss * (double)w->world * mine;
    w->m_loss += step_loss;
    w->epoch_loss += step_loss;
    w->epoch_n += bk;
    if (advance(w, bk)) {
        worker_epoch_end(w, w->epoch - 1, 1);
        if (w->epoch >= (uint32_t)w->epochs)
            return STEP_FINISHED;
    }
    if (sync && tail[TAIL_PAUSE] > 0.0f)
        return STEP_PAUSED;
    return STEP_OK;
}
