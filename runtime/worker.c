/* worker: the agent's lifecycle and control loop (see worker.h for the protocol): JOIN,
 * WELCOME (the job loaded, its buffers allocated once), WORLD, READY, STATE, LEAVE, the
 * metrics and epoch reports. The training step itself is in worker_step.c. */
#include "worker_int.h"

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

static volatile sig_atomic_t worker_sigterm;

static void on_signal(int sig)
{
    (void)sig;
    worker_sigterm = 1;
}

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
        worker_log_samples(w, w->pend_epoch, w->pend_start, w->pend_n);
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
    if (worker_step_world(w) != 0)
        return -1;
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
void worker_epoch_end(worker *w, uint32_t done_epoch, int shared)
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
        step_result r = worker_train_step(w);
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
