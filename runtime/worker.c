/* worker: the agent's control loop and training step (see worker.h for the protocol).
 * The step allocates nothing: batch buffers, the permutation, the control floats and
 * (for local-sgd) the averaging buffer are allocated once the job is known. */
#include "worker.h"

#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "comm.h"
#include "comm_ctl.h"
#include "kd_curve.h"
#include "kd_error.h"
#include "kd_hosts.h"
#include "kd_log.h"
#include "kd_train.h"
#include "kd_wire.h"

#define TAIL_PAUSE 0  /* control floats riding on the allreduce: pause votes */
#define TAIL_FINISH 1 /* finish votes (target accuracy reached) */
#define TAIL_LOSS 2   /* sum of loss * samples */
#define TAIL_COUNT 3  /* samples in the step */
#define TAIL_GSQ 4    /* adaptive batch: |mean gradient over our samples|^2 (upper layers) */
#define TAIL_N 5
#define MAX_PEERS 1024
/* Floats of a peer's gradient checked for non-finite values and then applied together:
 * 16 KiB stays in the L1 cache between the two. */
#define FINITE_BLOCK 4096

static volatile sig_atomic_t worker_sigterm;

static void on_signal(int sig)
{
    (void)sig;
    worker_sigterm = 1;
}

typedef enum step_result { STEP_OK, STEP_PAUSED, STEP_FINISHED, STEP_FAILED } step_result;

typedef struct worker {
    const kd_worker_config *cfg;  /* borrowed settings */
    char name[128];               /* routing id and log name */
    void *zctx;                   /* ZeroMQ context */
    void *ctl;                    /* DEALER to the coordinator */
    kd_comm *comm;                /* data plane */
    kd_zap *zap;                  /* ZAP handler of the data endpoint, NULL without keys */
    int data_curve;               /* the data endpoint's mode: CURVE or authenticated */
    char data_ep[256];            /* our data endpoint as announced */
    char coord_ep[512];           /* the coordinator endpoint connected (name resolved) */
    double last_coord;            /* when the coordinator was last heard */
    double last_sent;             /* when we last sent anything to it */
    double last_join;             /* when JOIN was last sent */
    /* The job, known after WELCOME. */
    int have_job;                 /* data and model are loaded */
    kd_agentjob job;              /* decoded spec */
    int epochs;                   /* epochs to train */
    uint64_t seed;                /* shuffle and initialisation seed */
    kd_dataset train, test;       /* the data */
    kd_model m;                   /* the model (params, grads) */
    kd_optim o;                   /* the optimizer state */
    kd_lr_schedule sched;         /* base learning-rate schedule */
    uint32_t *perm;               /* permutation of the current epoch */
    int64_t perm_epoch;           /* epoch perm belongs to, -1 = none */
    float *xb;                    /* batch features */
    int32_t *yb;                  /* batch labels */
    float *xn;                    /* the next step's batch, gathered while the exchange */
    int32_t *yn;                  /* of this one is on the wire (prefetch_next) */
    int64_t pre_epoch;            /* what xn/yn hold: perm[pre_start, +pre_n) of pre_epoch */
    uint64_t pre_start, pre_n;    /* (pre_n = 0: nothing) */
    float *avg;                   /* local-sgd: parameters being averaged */
    float tail[TAIL_N];           /* control floats of the current step */
    int grad_blocks;              /* row blocks of the first layer's gradient */
    size_t noise_from;            /* adaptive batch: gradient offset from which the noise
                                   * is measured (noise_base), n_params = not measured */
    /* The "factors" exchange (docs/runtime.md): layer 0's gradient is rebuilt from the
     * global batch's inputs and all-gathered output gradients. */
    int factors;                  /* this world exchanges factors */
    int bf16;                     /* sync.compression bf16 in allreduce mode: gradients and
                                   * factors travel as bfloat16 */
    size_t ready_base;            /* grads offset where the allreduced vector starts */
    float *xall;                  /* global batch features [world*batch x dim] */
    int32_t *yall;                /* global batch labels */
    float *dyall;                 /* dL/d(layer 0 output) of the global batch
                                   * [world*batch x width], summed with zeros elsewhere */
    size_t *gbounds;              /* world+1 bounds of the ranks' rows of dW0, in floats */
    int fworld;                   /* world the factor buffers are sized for */
    size_t frows;                 /* global-batch rows the factor buffers hold */
    int bmax;                     /* per-agent batch ceiling the buffers are sized for */
    /* Adaptive batch size: the gradient noise measured on the layers above the first. */
    double gsq_local;             /* this step: sum of squares of our scaled gradient */
    double g_small, g_big;        /* window sums of the ranks' mean |g_local|^2 and of
                                   * |g_global|^2 */
    uint64_t g_n;                 /* steps in them */
    /* The world, known after WORLD. */
    uint32_t gen;                 /* generation */
    int rank, world;              /* our rank and the world size */
    uint64_t step;                /* next global step */
    uint32_t epoch;               /* epoch of the next step */
    uint64_t cursor;              /* samples of that epoch already trained */
    double scale_from, scale_to;  /* learning-rate scale ramp over the warm-up */
    uint64_t scale_step, warmup;  /* ramp start step and length in steps */
    int finish_vote;              /* target accuracy reached: vote to finish */
    int pause_vote;               /* coordinator asked to pause, or we are leaving */
    int leave_sent;               /* LEAVE already sent */
    int fatal;                    /* unrecoverable (diverged): exit with failure */
    int trained;                  /* params moved away from the seeded initialisation */
    /* Samples of a step that failed after our contribution may have been applied by a
     * peer; logged once the next world shows whether the step counted. */
    uint64_t pend_step;           /* that step, UINT64_MAX = none */
    uint32_t pend_epoch;          /* its epoch */
    uint64_t pend_start, pend_n;  /* its slice of the permutation */
    FILE *sample_log;             /* debug sample-id log or NULL */
    /* Metrics accumulated since the last report. */
    double m_compute, m_comm, m_loss, m_t0; /* seconds, summed loss*n, window start */
    double m_update;              /* seconds of it in the optimizer step (per step, not
                                   * per sample: the adaptive batch's step-time model) */
    double step_sends;            /* this step: seconds in the exchange's sends and
                                   * progress during the backward pass (comm, not compute) */
    uint64_t m_samples, m_steps;  /* global samples and steps in the window */
    double epoch_loss;            /* loss*n summed over the epoch (global) */
    uint64_t epoch_n;             /* samples in it */
    double epoch_t0;              /* wall clock at the epoch's first step */
    int64_t epoch_t0_of;          /* the epoch epoch_t0 and epoch_loss belong to, -1 none */
    double last_train_loss;       /* mean training loss of the last finished epoch */
    double last_lr;               /* learning rate of the last step (progress lines) */
    json_t *last_eval;            /* rank 0's latest epoch report: re-sent with READY, so a
                                   * coordinator restarted while we trained on still learns
                                   * the accuracy of the epochs it missed */
} worker;

void kd_worker_config_default(kd_worker_config *c)
{
    memset(c, 0, sizeof *c);
    c->bind = "tcp://127.0.0.1:*";
    c->threads = 1;
    c->comm_timeout_ms = 1500;
    c->chunk_bytes = 1024 * 1024;
    c->coord_timeout_ms = 4000;
}

static int ctl_send(worker *w, uint16_t type, const json_t *body)
{
    kd_wire_hdr h = {.type = type, .generation = w->gen,
                     .sender = w->world > 0 ? (uint32_t)w->rank : KD_WIRE_NO_RANK,
                     .step = w->step, .epoch = w->epoch, .offset = w->cursor};
    w->last_sent = kd_now();
    return body != NULL ? kd_ctl_send_json(w->ctl, NULL, 0, h, body)
                        : kd_ctl_send(w->ctl, NULL, 0, h, NULL, 0);
}

static void send_join(worker *w)
{
    json_t *b = json_pack("{s:s, s:s, s:I}", "name", w->name, "endpoint", w->data_ep, "pid",
                          (json_int_t)getpid());
    if (b != NULL)
        ctl_send(w, KD_WIRE_JOIN, b);
    json_decref(b);
    w->last_join = kd_now();
}

/* A restarted coordinator pod may have a new address behind the same Service name: in
 * the emulator (KADET_HOSTS) the name moves to the new pod's IP, so follow it; a real
 * Service keeps its address and this changes nothing. */
static void follow_coordinator(worker *w)
{
    char ep[512];
    if (kd_resolve_endpoint(w->cfg->coordinator, ep, sizeof ep) != KD_OK ||
        strcmp(ep, w->coord_ep) == 0)
        return;
    zmq_disconnect(w->ctl, w->coord_ep);
    if (zmq_connect(w->ctl, ep) != 0) {
        KD_WARN("worker: connect %s: %s", ep, zmq_strerror(zmq_errno()));
        zmq_connect(w->ctl, w->coord_ep);
        return;
    }
    KD_INFO("worker: coordinator moved from=%s to=%s", w->coord_ep, ep);
    snprintf(w->coord_ep, sizeof w->coord_ep, "%s", ep);
}

static void send_state(worker *w)
{
    size_t n = w->m.n_params + w->o.state_len;
    float *buf = malloc(n * sizeof *buf);
    if (buf == NULL) {
        KD_ERROR("worker: out of memory for a state transfer");
        return;
    }
    kd_wire_floats_to_le(buf, w->m.params, w->m.n_params);
    if (w->o.state_len > 0)
        kd_wire_floats_to_le(buf + w->m.n_params, w->o.state, w->o.state_len);
    kd_wire_hdr h = {.type = KD_WIRE_STATE, .generation = w->gen, .sender = (uint32_t)w->rank,
                     .step = w->step, .epoch = w->epoch, .offset = w->cursor};
    /* A full queue only delays the checkpoint; the coordinator asks again. */
    if (kd_ctl_send(w->ctl, NULL, 0, h, buf, n * sizeof *buf) != KD_OK)
        KD_WARN("worker: could not send state step=%llu", (unsigned long long)w->step);
    free(buf);
    w->last_sent = kd_now();
}

/* Opens the data endpoint in the current mode (w->data_curve) and sets data_ep to what
 * peers connect to. A fixed port may still be held for a moment by the endpoint being
 * replaced (rebind_data), so a bind is retried for up to two seconds. */
static int open_data(worker *w, char *err, size_t errlen)
{
    const kd_worker_config *cfg = w->cfg;
    int rc = KD_ENETWORK;
    for (int i = 0; i < 100; i++) {
        rc = kd_comm_open_keyed(&w->comm, w->zctx, cfg->bind, cfg->keys, w->data_curve,
                                w->data_ep, sizeof w->data_ep, err, errlen);
        if (rc == KD_OK || strstr(cfg->bind, ":*") != NULL)
            break;
        usleep(20000);
    }
    if (rc != KD_OK)
        return rc;
    kd_comm_set_timeout(w->comm, cfg->comm_timeout_ms);
    kd_comm_set_chunk_bytes(w->comm, cfg->chunk_bytes);
    if (cfg->advertise != NULL) {
        const char *port = strrchr(w->data_ep, ':');
        char ep[256];
        snprintf(ep, sizeof ep, "tcp://%s%s", cfg->advertise, port != NULL ? port : "");
        snprintf(w->data_ep, sizeof w->data_ep, "%s", ep);
    }
    return KD_OK;
}

/* The job's spec.security.dataPlane decides the data endpoint's mode; when the worker was
 * started with the other one, the endpoint is bound again (READY announces it). */
static int rebind_data(worker *w)
{
    const kd_curve_keys *k = w->cfg->keys;
    int want = w->job.data_plane == KD_SPEC_DATA_CURVE;
    if (k == NULL || !k->enabled || want == w->data_curve)
        return KD_OK;
    char err[256];
    kd_comm_close(&w->comm);
    w->data_curve = want;
    if (open_data(w, err, sizeof err) != KD_OK) {
        KD_ERROR("worker: %s", err);
        return KD_ENETWORK;
    }
    KD_INFO("worker: data endpoint rebound data=%s data_plane=%s", w->data_ep,
            kd_spec_data_plane_name(w->job.data_plane));
    return KD_OK;
}

/* Loads the job sent in WELCOME (once: a coordinator restart re-sends the same job). */
static int load_job(worker *w, const json_t *body)
{
    if (w->have_job)
        return KD_OK;
    char err[512];
    long long epochs, seed, maxs;
    const json_t *doc = json_object_get(body, "job");
    const char *data = NULL;
    if (!json_is_object(doc) || kd_wire_get_int(body, "epochs", 1, 1000000, &epochs) != 0 ||
        kd_wire_get_int(body, "seed", 0, INT64_MAX, &seed) != 0 ||
        kd_wire_get_int(body, "max_samples", 0, INT64_MAX, &maxs) != 0) {
        kd_wire_drop(KD_WIRE_DROP_FIELD, "control");
        return KD_EPROTO;
    }
    if (json_object_get(body, "data") != NULL &&
        kd_wire_get_str(body, "data", 4096, &data) != 0) {
        kd_wire_drop(KD_WIRE_DROP_FIELD, "control");
        return KD_EPROTO;
    }
    int rc = kd_agentjob_decode(doc, &w->job, err, sizeof err);
    if (rc != KD_OK) {
        KD_ERROR("worker: the coordinator sent an invalid job: %s", err);
        return rc;
    }
    long long batch;
    if (kd_wire_get_int(body, "batch", 1, 1 << 20, &batch) == 0)
        w->job.batch_size = (int)batch;
    w->epochs = (int)epochs;
    w->seed = (uint64_t)seed;
    const char *dir = data != NULL ? data : w->job.dataset_path;
    rc = kd_dataset_load_dir(w->job.dataset_format, dir, "train", w->job.dataset_label_column,
                             &w->train, err, sizeof err);
    if (rc == KD_OK)
        rc = kd_dataset_load_dir(w->job.dataset_format, dir, "test",
                                 w->job.dataset_label_column, &w->test, err, sizeof err);
    if (rc == KD_OK && w->train.dim != w->test.dim)
        rc = kd_errf(err, sizeof err, KD_EFORMAT, "train and test feature counts differ");
    if (rc != KD_OK) {
        KD_ERROR("worker: %s", err);
        return rc;
    }
    if (maxs > 0 && (size_t)maxs < w->train.n)
        w->train.n = (size_t)maxs;
    int classes = w->train.n_classes > w->test.n_classes ? w->train.n_classes
                                                         : w->test.n_classes;
    w->train.n_classes = w->test.n_classes = classes;
    kd_train_math_setup(w->cfg->threads);
    /* With adaptive batch sizes the coordinator may announce any per-agent batch up to
     * the ceiling: every buffer is sized for it once, so that a step never allocates. */
    int b = kd_spec_batch_ceiling(&w->job, w->job.batch_size);
    w->bmax = b;
    rc = kd_train_setup_model(&w->job, (int)w->train.dim, classes, b, w->seed, &w->m, &w->o,
                              err, sizeof err);
    if (rc != KD_OK) {
        KD_ERROR("worker: %s", err);
        return rc;
    }
    kd_train_schedule(&w->job, &w->sched);
    w->perm = malloc(w->train.n * sizeof *w->perm);
    w->xb = malloc((size_t)b * w->train.dim * sizeof(float));
    w->yb = malloc((size_t)b * sizeof *w->yb);
    w->xn = malloc((size_t)b * w->train.dim * sizeof(float));
    w->yn = malloc((size_t)b * sizeof *w->yn);
    w->pre_n = 0;
    w->avg = malloc(w->m.n_params * sizeof(float));
    if (w->perm == NULL || w->xb == NULL || w->yb == NULL || w->xn == NULL || w->yn == NULL ||
        w->avg == NULL) {
        KD_ERROR("worker: out of memory for the batch buffers");
        return KD_ENOMEM;
    }
    w->perm_epoch = -1;
    w->grad_blocks = 8;
    const char *gb = getenv("KADET_GRAD_BLOCKS");
    if (gb != NULL && atoi(gb) > 0)
        w->grad_blocks = atoi(gb);
    w->have_job = 1;
    KD_INFO("worker: job loaded name=%s train=%zu test=%zu params=%zu", w->name, w->train.n,
            w->test.n, w->m.n_params);
    return rebind_data(w);
}

static void send_ready(worker *w)
{
    json_t *b = json_pack("{s:I, s:I, s:I, s:b, s:s}", "n_params", (json_int_t)w->m.n_params,
                          "n_state", (json_int_t)w->o.state_len, "n_train",
                          (json_int_t)w->train.n, "fresh", !w->trained, "endpoint",
                          w->data_ep);
    if (b != NULL)
        ctl_send(w, KD_WIRE_READY, b);
    json_decref(b);
    if (w->last_eval != NULL)
        ctl_send(w, KD_WIRE_METRICS, w->last_eval);
}

static void log_samples(worker *w, uint32_t epoch, uint64_t start, uint64_t n)
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

/* Applies a WORLD announcement; returns 1 when a STATE message follows. */
static int apply_world(worker *w, const kd_ctl_msg *msg)
{
    const json_t *b = msg->json;
    long long rank, world, epoch, cursor, step, sstep, warm, state;
    double sfrom, sto;
    const json_t *peers = json_object_get(b, "peers");
    if (kd_wire_get_int(b, "rank", 0, MAX_PEERS - 1, &rank) != 0 ||
        kd_wire_get_int(b, "world", 1, MAX_PEERS, &world) != 0 || rank >= world ||
        kd_wire_get_int(b, "epoch", 0, UINT32_MAX, &epoch) != 0 ||
        kd_wire_get_int(b, "cursor", 0, (long long)w->train.n - 1, &cursor) != 0 ||
        kd_wire_get_int(b, "step", 0, INT64_MAX, &step) != 0 ||
        kd_wire_get_int(b, "scale_step", 0, step, &sstep) != 0 || /* not after step */
        kd_wire_get_int(b, "warmup_steps", 0, INT64_MAX, &warm) != 0 ||
        kd_wire_get_int(b, "state", 0, 1, &state) != 0 ||
        kd_wire_get_num(b, "scale_from", 1e-6, 1e6, &sfrom) != 0 ||
        kd_wire_get_num(b, "scale_to", 1e-6, 1e6, &sto) != 0 || !json_is_array(peers) ||
        json_array_size(peers) != (size_t)world) {
        kd_wire_drop(KD_WIRE_DROP_FIELD, "control");
        return -1;
    }
    const char *eps[MAX_PEERS];
    for (size_t i = 0; i < (size_t)world; i++) {
        eps[i] = json_string_value(json_array_get(peers, i));
        if (eps[i] == NULL || strlen(eps[i]) > 255) {
            kd_wire_drop(KD_WIRE_DROP_FIELD, "control");
            return -1;
        }
    }
    /* The per-agent batch of this world (adaptive batch sizes change it between worlds);
     * absent = unchanged. */
    long long batch = w->job.batch_size;
    if (json_object_get(b, "batch") != NULL &&
        kd_wire_get_int(b, "batch", 1, w->bmax, &batch) != 0) {
        kd_wire_drop(KD_WIRE_DROP_FIELD, "control");
        return -1;
    }
    /* Where the world we last trained in ended (the coordinator's word; absent = this
     * world's start, which is that end unless we missed worlds in between). */
    long long prev_end = step;
    if (json_object_get(b, "prev_end") != NULL &&
        kd_wire_get_int(b, "prev_end", 0, step, &prev_end) != 0) {
        kd_wire_drop(KD_WIRE_DROP_FIELD, "control");
        return -1;
    }
    char err[256];
    if (kd_comm_set_world(w->comm, msg->h.generation, (int)rank, (int)world, eps, err,
                          sizeof err) != KD_OK) {
        KD_ERROR("worker: %s", err);
        return -1;
    }
    /* The failed step counted if the world it failed in ended after it (a peer applied
     * it). Not if that world went on without us and redid it (a world of the others
     * formed while we still waited for a dead peer): its start is what counts, not this
     * later world's. */
    if (w->pend_step != UINT64_MAX && (uint64_t)prev_end > w->pend_step)
        log_samples(w, w->pend_epoch, w->pend_start, w->pend_n);
    w->pend_step = UINT64_MAX;
    w->gen = msg->h.generation;
    w->rank = (int)rank;
    w->world = (int)world;
    w->epoch = (uint32_t)epoch;
    w->cursor = (uint64_t)cursor;
    w->step = (uint64_t)step;
    w->scale_from = sfrom;
    w->scale_to = sto;
    w->scale_step = (uint64_t)sstep;
    w->warmup = (uint64_t)warm;
    w->pause_vote = 0;
    w->finish_vote = 0;
    w->job.batch_size = (int)batch;
    w->g_small = w->g_big = 0;
    w->g_n = 0;
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
    KD_INFO("worker: world gen=%u rank=%d agents=%d batch=%d epoch=%u cursor=%llu step=%llu "
            "lr_scale=%g ramp_from=%g ramp_steps=%llu..%llu exchange=%s compression=%s", w->gen,
            w->rank, w->world, w->job.batch_size, w->epoch, (unsigned long long)w->cursor,
            (unsigned long long)w->step, sto, w->scale_from, (unsigned long long)w->scale_step,
            (unsigned long long)(w->scale_step + w->warmup), w->factors ? "factors" : "gradients",
            kd_spec_compression_name(w->bf16 ? KD_SPEC_COMPRESSION_BF16
                                             : KD_SPEC_COMPRESSION_NONE));
    /* An epoch report sent just before this world formed carried the old generation, which
     * the coordinator refuses (only the current world's evaluating rank reports): rank 0
     * sends its latest one again in this world; the coordinator takes only a newer epoch. */
    if (w->rank == 0 && w->last_eval != NULL)
        ctl_send(w, KD_WIRE_METRICS, w->last_eval);
    return (int)state;
}

static int apply_state(worker *w, const kd_ctl_msg *msg)
{
    size_t n = w->m.n_params + w->o.state_len;
    if (zmq_msg_size((zmq_msg_t *)&msg->payload) != n * sizeof(float)) {
        kd_wire_drop(KD_WIRE_DROP_LENGTH, "control");
        return -1;
    }
    const unsigned char *p = zmq_msg_data((zmq_msg_t *)&msg->payload);
    if (!kd_comm_all_finite(p, n)) {
        kd_wire_drop(KD_WIRE_DROP_NONFINITE, "control");
        return -1;
    }
    kd_wire_floats_from_le(w->m.params, p, w->m.n_params);
    if (w->o.state_len > 0)
        kd_wire_floats_from_le(w->o.state, p + w->m.n_params * sizeof(float), w->o.state_len);
    w->o.t = msg->h.step;
    w->trained = 1;
    return 0;
}

static double lr_scale(const worker *w)
{
    return kd_lr_ramp(w->scale_from, w->scale_to, w->scale_step, w->warmup, w->step);
}

static void report_metrics(worker *w, int force)
{
    double now = kd_now();
    if (!force && now - w->m_t0 < 0.5)
        return;
    double dt = now - w->m_t0;
    json_t *b = json_pack("{s:i, s:I, s:f, s:f, s:f, s:f, s:I}", "rank", w->rank, "steps",
                          (json_int_t)w->m_steps, "samples_per_s",
                          dt > 0 ? (double)w->m_samples / dt : 0.0, "compute_s",
                          w->m_compute, "comm_s", w->m_comm, "loss",
                          w->m_samples > 0 ? w->m_loss / (double)w->m_samples : 0.0,
                          "samples", (json_int_t)w->m_samples);
    if (b != NULL) {
        json_object_set_new(b, "batch", json_integer(w->job.batch_size));
        json_object_set_new(b, "lr", json_real(w->last_lr));
        json_object_set_new(b, "update_s", json_real(w->m_update));
        json_object_set_new(b, "wall_s", json_real(dt));
        if (w->g_n > 0) {
            json_object_set_new(b, "gsq_local", json_real(w->g_small / (double)w->g_n));
            json_object_set_new(b, "gsq_global", json_real(w->g_big / (double)w->g_n));
            json_object_set_new(b, "gsq_steps", json_integer((json_int_t)w->g_n));
        }
        ctl_send(w, KD_WIRE_METRICS, b);
    }
    json_decref(b);
    w->g_small = w->g_big = 0;
    w->g_n = 0;
    w->m_t0 = now;
    w->m_compute = w->m_comm = w->m_loss = w->m_update = 0;
    w->m_samples = w->m_steps = 0;
}

/* Test accuracy and mean loss after an epoch, on rank 0 (other ranks return KD_EAGAIN).
 * Every rank holds the same parameters at an epoch's end, so with shared each evaluates
 * its share of the test set in place and the correct counts and loss sums are summed over
 * the ranks (W times faster than rank 0 alone while the others wait). If that sum fails (a
 * peer died; the next step will fail too and form a new world), or without shared, rank 0
 * evaluates the whole test set itself. */
static int evaluate_shared(worker *w, int shared, double *acc, double *tloss)
{
    char err[256];
    size_t n = w->test.n, W = (size_t)(w->world > 0 ? w->world : 1), r = (size_t)w->rank;
    if (shared && W > 1 && n >= W) {
        size_t lo = n * r / W, hi = n * (r + 1) / W;
        kd_dataset part = w->test;
        part.x = w->test.x + lo * w->test.dim;
        part.y = w->test.y + lo;
        part.n = hi - lo;
        double a = 0, l = 0;
        if (kd_evaluate(&w->m, &part, &a, &l, err, sizeof err) == KD_OK) {
            /* Counts up to 2^24 are exact in float; larger test sets round the accuracy
             * at the 1e-7 level. */
            float sums[2] = {(float)llround(a * (double)part.n), (float)(l * (double)part.n)};
            if (kd_comm_allreduce(w->comm, sums, 2, w->step, err, sizeof err) == KD_OK) {
                *acc = (double)sums[0] / (double)n;
                *tloss = (double)sums[1] / (double)n;
                return r == 0 ? KD_OK : KD_EAGAIN;
            }
            KD_WARN("worker: shared evaluation: %s", err);
        }
    }
    if (r != 0)
        return KD_EAGAIN;
    if (kd_evaluate(&w->m, &w->test, acc, tloss, err, sizeof err) != KD_OK) {
        KD_ERROR("worker: %s", err);
        return KD_EINVAL;
    }
    return KD_OK;
}

/* Starts the clock and the loss sums of epoch w->epoch at `now`. */
static void epoch_clock_start(worker *w, double now)
{
    w->epoch_t0 = now;
    w->epoch_t0_of = w->epoch;
    w->epoch_loss = 0;
    w->epoch_n = 0;
}

/* After each epoch the ranks evaluate together (shared = 1: every rank of the world calls
 * this at the same step) or rank 0 alone (shared = 0); rank 0 reports and decides the
 * finish vote. */
static void epoch_end(worker *w, uint32_t done_epoch, int shared)
{
    double acc = 0, tloss = 0, dt = kd_now() - w->epoch_t0;
    if (w->epoch_n > 0)
        w->last_train_loss = w->epoch_loss / (double)w->epoch_n;
    if (evaluate_shared(w, shared, &acc, &tloss) == KD_OK) {
        json_t *b = json_pack("{s:i, s:f, s:f, s:f, s:f, s:i}", "epoch_done", done_epoch + 1,
                              "accuracy", acc, "test_loss", tloss, "train_loss",
                              w->last_train_loss,
                              "epoch_seconds", dt, "agents", w->world);
        if (b != NULL) {
            json_object_set_new(b, "lr", json_real(w->last_lr));
            ctl_send(w, KD_WIRE_METRICS, b);
            json_decref(w->last_eval);
            w->last_eval = json_incref(b);
        }
        json_decref(b);
        if (w->job.target_accuracy > 0 && acc >= w->job.target_accuracy)
            w->finish_vote = 1;
    }
    epoch_clock_start(w, kd_now());
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
        log_samples(w, w->epoch, start, mine);
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

static step_result train_step(worker *w)
{
    size_t n_total = w->train.n;
    /* A world announced at the very end (a coordinator restarted from the final
     * checkpoint) has nothing left to train. */
    if (w->epoch >= (uint32_t)w->epochs) {
        /* The agents may have finished while no coordinator listened: its successor
         * learns the final accuracy from this world's rank 0. */
        json_t *done = w->last_eval != NULL ? json_object_get(w->last_eval, "epoch_done") : NULL;
        if (w->rank == 0 && json_integer_value(done) < (json_int_t)w->epoch)
            epoch_end(w, w->epoch - 1, 0);
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
    float *x = w->xb;
    int32_t *y = w->yb;
    if (factors) {
        /* Our rows now; the other ranks' rows (for layer 0's gradient) once our part of
         * the exchange is on its way. */
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
    tail[TAIL_PAUSE] = (float)w->pause_vote;
    tail[TAIL_FINISH] = (float)w->finish_vote;
    tail[TAIL_LOSS] = loss * (float)mine;
    tail[TAIL_COUNT] = (float)mine;
    /* Our gradient is scaled by mine/bk: |mean over our samples|^2 is that times
     * (bk/mine)^2. */
    tail[TAIL_GSQ] = mine > 0 ? (float)(w->gsq_local * ((double)bk / (double)mine) *
                                        ((double)bk / (double)mine))
                              : 0.0f;
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
        if (local) {
            float inv = 1.0f / (float)w->world;
            for (size_t i = 0; i < w->m.n_params; i++)
                w->m.params[i] = w->avg[i] * inv;
        }
    }
    if (tail[TAIL_FINISH] > 0.0f && sync)
        return STEP_FINISHED; /* stop with the evaluated model, this step not applied */
    if (factors) {
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
        tprod = kd_now() - tf;
        rc = kd_comm_allgatherv(w->comm, w->m.grads + w->m.w_off[0], w->gbounds, w->bf16,
                                w->step, err, sizeof err);
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
        /* The peer's gradient is added as the update reads it (logical offset = parameter
         * index: without factors the vector starts at the first parameter), a block at a
         * time, each checked for non-finite values just before it is applied (the check
         * then costs a pass over the L1 cache, not over memory). */
        int applied = 0;
        for (size_t i = 0; i < npeer; i++) {
            size_t n = peer[i].off >= span_n ? 0
                       : peer[i].off + peer[i].n <= span_n ? peer[i].n : span_n - peer[i].off;
            for (size_t b = 0; b < n; b += FINITE_BLOCK) {
                size_t m = n - b < FINITE_BLOCK ? n - b : FINITE_BLOCK;
                const unsigned char *d = peer[i].data + b * sizeof(float);
                if (!kd_comm_all_finite(d, m))
                    return peer_not_finite(w, !applied, local, start, mine, bk);
                kd_optim_step_range_sum(&w->o, w->m.params, w->m.grads, d, (float)lr,
                                        peer[i].off + b, m);
                applied = 1;
            }
        }
        kd_optim_advance(&w->o);
    } else if (!local) {
        kd_optim_step(&w->o, w->m.params, w->m.grads, (float)lr);
    }
    log_samples(w, w->epoch, start, mine);
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
        epoch_end(w, w->epoch - 1, 1);
        if (w->epoch >= (uint32_t)w->epochs)
            return STEP_FINISHED;
    }
    if (sync && tail[TAIL_PAUSE] > 0.0f)
        return STEP_PAUSED;
    return STEP_OK;
}

static void send_paused(worker *w, int ok, uint16_t type)
{
    json_t *b = json_pack("{s:b}", "ok", ok);
    if (b != NULL)
        ctl_send(w, type, b);
    json_decref(b);
}

/* Handles one control message. Returns 1 when the worker must exit (DONE). */
static int handle_ctl(worker *w, kd_ctl_msg *msg, int *in_world, int *want_state)
{
    w->last_coord = kd_now();
    switch (msg->h.type) {
    case KD_WIRE_WELCOME:
        if (load_job(w, msg->json) != KD_OK)
            return 2;
        send_ready(w);
        break;
    case KD_WIRE_WORLD: {
        if (!w->have_job || *in_world) {
            kd_wire_drop(KD_WIRE_DROP_UNEXPECTED, "control");
            break;
        }
        int st = apply_world(w, msg);
        if (st < 0)
            break;
        *want_state = st;
        *in_world = st == 0;
        break;
    }
    case KD_WIRE_STATE:
        if (!w->have_job || !*want_state || msg->h.generation != w->gen) {
            kd_wire_drop(KD_WIRE_DROP_STALE, "control");
            break;
        }
        if (apply_state(w, msg) == 0) {
            *want_state = 0;
            *in_world = 1;
        }
        break;
    case KD_WIRE_STATE_REQ:
        if (w->have_job)
            send_state(w);
        break;
    case KD_WIRE_PAUSE:
        if (msg->h.aux == 1) { /* a restarted coordinator does not know us: rejoin */
            if (*in_world)
                w->pause_vote = 1;
            else
                send_join(w);
        } else if (msg->h.generation == w->gen) {
            w->pause_vote = 1;
        }
        break;
    case KD_WIRE_DONE:
        return 1;
    case KD_WIRE_HEARTBEAT:
        break;
    default:
        kd_wire_drop(KD_WIRE_DROP_UNEXPECTED, "control");
    }
    return 0;
}

static int drain_ctl(worker *w, int *in_world, int *want_state)
{
    kd_ctl_msg msg;
    while (kd_ctl_recv(w->ctl, 0, &msg, "control") == KD_OK) {
        int st = handle_ctl(w, &msg, in_world, want_state);
        kd_ctl_msg_close(&msg);
        if (st != 0)
            return st;
    }
    return 0;
}

/* After LEAVE: stay until the coordinator has what it needs from us (our state, when we
 * hold the most advanced one) and says DONE, but not forever. */
static int linger_after_leave(worker *w, int *in_world, int *want_state)
{
    double until = kd_now() + 5.0;
    while (kd_now() < until) {
        zmq_pollitem_t it = {w->ctl, 0, ZMQ_POLLIN, 0};
        zmq_poll(&it, 1, 100);
        if (drain_ctl(w, in_world, want_state) != 0 || *in_world)
            break;
    }
    KD_INFO("worker: left name=%s step=%llu", w->name, (unsigned long long)w->step);
    return 0;
}

static int worker_loop(worker *w)
{
    int in_world = 0, want_state = 0;
    send_join(w);
    w->last_coord = kd_now();
    for (;;) {
        if (!in_world) {
            zmq_pollitem_t it = {w->ctl, 0, ZMQ_POLLIN, 0};
            zmq_poll(&it, 1, 200);
            int st = drain_ctl(w, &in_world, &want_state);
            if (st != 0)
                return st == 1 ? 0 : 1;
            if (w->fatal)
                return 1;
            double now = kd_now();
            if (worker_sigterm && !w->leave_sent) {
                ctl_send(w, KD_WIRE_LEAVE, NULL);
                w->leave_sent = 1;
                KD_INFO("worker: leaving name=%s (between worlds)", w->name);
                return linger_after_leave(w, &in_world, &want_state);
            }
            /* A silent coordinator may have restarted elsewhere in time: say JOIN again
             * (the new one answers; the old one, if alive, ignores a known worker). */
            if (now - w->last_coord > w->cfg->coord_timeout_ms / 1000.0 &&
                now - w->last_join > 2.0) {
                follow_coordinator(w);
                send_join(w);
            }
            else if (now - w->last_sent > 0.5)
                ctl_send(w, KD_WIRE_HEARTBEAT, NULL);
            if (in_world) {
                w->m_t0 = kd_now();
                /* A new world in the middle of an epoch continues it: its time (the
                 * rescale included) and loss count from the epoch's start. */
                if ((int64_t)w->epoch != w->epoch_t0_of)
                    epoch_clock_start(w, w->m_t0);
            }
            continue;
        }
        int st = drain_ctl(w, &in_world, &want_state);
        if (st != 0)
            return st == 1 ? 0 : 1;
        double now = kd_now();
        if (worker_sigterm && !w->leave_sent) {
            ctl_send(w, KD_WIRE_LEAVE, NULL);
            w->leave_sent = 1;
            w->pause_vote = 1;
            KD_INFO("worker: SIGTERM, leaving at the next step boundary name=%s", w->name);
        }
        if (now - w->last_coord > w->cfg->coord_timeout_ms / 1000.0 && !w->pause_vote) {
            KD_WARN("worker: coordinator silent for %.1fs, pausing", now - w->last_coord);
            w->pause_vote = 1;
        }
        step_result r = train_step(w);
        report_metrics(w, r != STEP_OK);
        if (now - w->last_sent > 0.25)
            ctl_send(w, KD_WIRE_HEARTBEAT, NULL);
        if (r == STEP_OK)
            continue;
        if (w->fatal)
            return 1;
        in_world = 0;
        if (r == STEP_FINISHED) {
            send_paused(w, 1, KD_WIRE_FINISHED);
            continue;
        }
        send_paused(w, r == STEP_PAUSED, KD_WIRE_PAUSED);
        if (w->leave_sent)
            return linger_after_leave(w, &in_world, &want_state);
    }
}

int kd_worker_run(const kd_worker_config *cfg)
{
    worker *w = calloc(1, sizeof *w);
    if (w == NULL)
        return 1;
    w->cfg = cfg;
    w->pend_step = UINT64_MAX;
    w->perm_epoch = -1;
    w->epoch_t0_of = -1;
    if (cfg->name != NULL)
        snprintf(w->name, sizeof w->name, "%s", cfg->name);
    else {
        char host[64] = "worker";
        gethostname(host, sizeof host - 1);
        snprintf(w->name, sizeof w->name, "%s-%ld-%04x", host, (long)getpid(),
                 (unsigned)(kd_now() * 1e6) & 0xffff);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int rc = 1;
    char err[256];
    w->zctx = zmq_ctx_new();
    if (cfg->sample_log != NULL && (w->sample_log = fopen(cfg->sample_log, "a")) == NULL) {
        KD_ERROR("worker: cannot open sample log %s", cfg->sample_log);
        goto out;
    }
    int keyed = cfg->keys != NULL && cfg->keys->enabled;
    w->data_curve = cfg->data_curve;
    /* The data endpoint admits only holders of the job key: its ZAP handler runs before
     * it binds and stops after it is closed (kd_curve.h). */
    if (keyed && kd_zap_start(&w->zap, w->zctx, cfg->keys, err, sizeof err) != KD_OK) {
        KD_ERROR("worker: %s", err);
        goto out;
    }
    if (!keyed)
        KD_WARN("worker: no keys (--keys-dir, KADET_KEYS_DIR): control and data traffic are "
                "unauthenticated, anyone who reaches the ports can join or feed gradients");
    if (open_data(w, err, sizeof err) != KD_OK) {
        KD_ERROR("worker: %s", err);
        goto out;
    }
    w->ctl = zmq_socket(w->zctx, ZMQ_DEALER);
    if (keyed && kd_curve_job_client(w->ctl, cfg->keys, 0) != 0) {
        KD_ERROR("worker: CURVE: %s", zmq_strerror(zmq_errno()));
        goto out;
    }
    /* No control frame is larger than a state transfer (see the coordinator's sockets). */
    int64_t max_frame = (int64_t)KD_WIRE_MAX_FLOAT_BYTES;
    zmq_setsockopt(w->ctl, ZMQ_MAXMSGSIZE, &max_frame, sizeof max_frame);
    int linger = 500, hwm = 1000;
    zmq_setsockopt(w->ctl, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(w->ctl, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(w->ctl, ZMQ_ROUTING_ID, w->name, strlen(w->name));
    /* Without cluster DNS (the API emulator's fake kubelet) the Service name resolves
     * through the KADET_HOSTS file, where it appears once the coordinator pod runs (so
     * wait for it a while); elsewhere the endpoint is used as given. */
    char *coord_ep = w->coord_ep;
    if (kd_resolve_endpoint_wait(cfg->coordinator, coord_ep, sizeof w->coord_ep, 30000) != KD_OK)
        snprintf(coord_ep, sizeof w->coord_ep, "%s", cfg->coordinator);
    if (zmq_connect(w->ctl, coord_ep) != 0) {
        KD_ERROR("worker: connect %s: %s", coord_ep, zmq_strerror(zmq_errno()));
        goto out;
    }
    KD_INFO("worker: started name=%s coordinator=%s data=%s security=%s", w->name,
            cfg->coordinator, w->data_ep,
            !keyed ? "none" : w->data_curve ? "curve" : "authenticated");
    rc = worker_loop(w);
out:
    if (w->ctl != NULL)
        zmq_close(w->ctl);
    kd_comm_close(&w->comm);
    if (w->zap != NULL) {
        kd_zap_stats zs;
        kd_zap_get_stats(w->zap, &zs);
        KD_INFO("worker: security admitted=%llu refused=%llu refused_handshakes=%llu "
                "rejected_nonfinite=%llu", (unsigned long long)zs.admitted,
                (unsigned long long)zs.refused, (unsigned long long)zs.handshakes,
                (unsigned long long)kd_wire_drops(KD_WIRE_DROP_NONFINITE));
    }
    kd_zap_stop(&w->zap); /* after the data endpoint it serves is closed */
    if (w->zctx != NULL)
        zmq_ctx_term(w->zctx);
    if (w->sample_log != NULL)
        fclose(w->sample_log);
    free(w->perm);
    json_decref(w->last_eval);
    free(w->xb);
    free(w->yb);
    free(w->xn);
    free(w->yn);
    free(w->avg);
    free(w->xall);
    free(w->yall);
    free(w->dyall);
    free(w->gbounds);
    kd_optim_free(&w->o);
    kd_model_free(&w->m);
    kd_dataset_free(&w->train);
    kd_dataset_free(&w->test);
    if (w->have_job || w->job.name != NULL)
        kd_agentjob_free(&w->job);
    free(w);
    return rc;
}
