/* coordinator: membership state machine and world formation (see coordinator.h;
 * checkpoints, metrics and the summary are in coordinator_io.c). Single-threaded: one
 * poll loop over the ROUTER socket with timers for heartbeats, liveness, pause
 * deadlines, checkpoints and metrics. */
#include "coordinator.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <zmq.h>

#include "checkpoint.h"
#include "comm.h"
#include "comm_ctl.h"
#include "coordinator_int.h"
#include "kd_error.h"
#include "kd_log.h"
#include "kd_spec.h"
#include "kd_train.h"
#include "kd_wire.h"

#define MEMBER_TIMEOUT_S 8.0 /* silence after which a member is forgotten */
#define LOADING_TIMEOUT_S 300.0 /* ... while it loads the data (it cannot heartbeat) */
#define DONE_LINGER_S 2.0 /* see linger_done */
/* JOIN limits (docs/security.md): one JOIN per identity per JOIN_MIN_INTERVAL_S (a worker
 * repeats its own every 2 s while the coordinator is silent), and new identities at
 * JOIN_RATE per second with bursts of JOIN_BURST (a whole job starting at once). */
#define JOIN_MIN_INTERVAL_S 1.0
#define JOIN_RATE 20.0
#define JOIN_BURST 300.0

static volatile sig_atomic_t coord_sigterm;

static void on_signal(int sig)
{
    (void)sig;
    coord_sigterm = 1;
}

void kd_coord_config_default(kd_coord_config *c)
{
    memset(c, 0, sizeof *c);
    c->bind = "tcp://0.0.0.0:7070";
    c->metrics_bind = "tcp://0.0.0.0:7071";
    c->seed = 1;
    c->initial_agents = 1;
    c->initial_wait_s = 10.0;
    c->lr_scaling = KD_LR_SCALE_LINEAR;
    c->warmup_steps = 200;
    c->start_warmup_epochs = 2.0;
    c->comm_timeout_ms = 1500;
}

const char *kd_lr_scaling_name(kd_lr_scaling s)
{
    return s == KD_LR_SCALE_SQRT ? "sqrt" : s == KD_LR_SCALE_NONE ? "none" : "linear";
}

int kd_lr_scaling_parse(const char *text, kd_lr_scaling *out)
{
    static const char *names[] = {"linear", "sqrt", "none"};
    for (int i = 0; i < 3; i++)
        if (strcasecmp(text, names[i]) == 0) {
            *out = (kd_lr_scaling)i;
            return 0;
        }
    return -1;
}

/* The lr scale of a world of agents at the current batch: the agent-count rule times
 * the adaptive batch's gain (1 at the spec's batch). */
static double scale_for(const coord *c, int agents)
{
    double gain = coord_batch_lr_gain(c, agents);
    switch (c->scaling) {
    case KD_LR_SCALE_LINEAR:
        return (double)agents * gain;
    case KD_LR_SCALE_SQRT:
        return sqrt((double)agents) * gain;
    default:
        return 1.0;
    }
}

/* The lr scale in effect at step s of the current world's ramp. */
static double scale_at(const coord *c, uint64_t s)
{
    return kd_lr_ramp(c->scale_from, c->scale, c->scale_step, c->scale_steps, s);
}

/* The step at which the start warm-up of a world of `agents` ends: the first
 * --start-warmup-epochs (at most a fifth of the job) at that world's global batch. */
static uint64_t start_warmup_end(const coord *c, int agents)
{
    double epochs = fmin(c->cfg->start_warmup_epochs, c->epochs / 5.0);
    double global = (double)agents * (double)c->batch;
    if (epochs <= 0 || global <= 0)
        return 0;
    return (uint64_t)ceil(epochs * (double)c->n_train / global);
}

/* Moves the lr scale to a new world of n agents starting at `step` (c->world still the
 * previous world's size, 0 if none), with the ramp that leads there. The linear scaling
 * rule comes with a gradual warm-up (Goyal et al., 2017): a large global batch starts
 * training at the small batch's rate and reaches its own over the first epochs. So the
 * first world ramps from one agent's scale, as if it had started at step 0 (a coordinator
 * restarted within that window continues the ramp); a later world ramps from the scale in
 * effect over --warmup-steps, or until the start warm-up's end if that is later. */
static void set_scale(coord *c, int n, uint64_t step)
{
    int had_world = c->world > 0;
    double prev = had_world ? scale_at(c, step) : 0.0;
    c->scale = scale_for(c, n);
    uint64_t end = 0, warm = 0;
    if (c->scaling != KD_LR_SCALE_NONE) {
        end = start_warmup_end(c, n);
        warm = (uint64_t)c->cfg->warmup_steps;
    }
    if (!had_world) {
        c->scale_from = step < end ? scale_for(c, 1) : c->scale;
        c->scale_step = 0;
        c->scale_steps = step < end ? end : 0;
        return;
    }
    c->scale_from = prev;
    c->scale_step = step;
    c->scale_steps = end > step + warm ? end - step : warm;
}

int coord_pos_reachable(const coord *c, pos p)
{
    uint64_t n = c->n_train;
    if (n == 0 || p.cursor >= n || p.epoch > (uint32_t)c->epochs ||
        (p.epoch == (uint32_t)c->epochs && p.cursor != 0))
        return 0;
    if (c->world <= 0 || p.step < c->start.step)
        return 0;
    /* Every step of a world trains one global batch (less at an epoch's end): walk from
     * the world's start, an epoch at a time. */
    uint64_t gb = (uint64_t)c->world * (uint64_t)(c->wbatch > 0 ? c->wbatch : c->batch);
    uint64_t left = p.step - c->start.step, cursor = c->start.cursor;
    uint32_t epoch = c->start.epoch;
    while (left > 0 && epoch < (uint32_t)c->epochs) {
        uint64_t to_end = (n - cursor + gb - 1) / gb;
        if (left < to_end) {
            cursor += left * gb;
            left = 0;
            break;
        }
        left -= to_end;
        cursor = 0;
        epoch++;
    }
    return left == 0 && epoch == p.epoch && cursor == p.cursor;
}

static int send_to(coord *c, member *mb, uint16_t type, uint32_t aux, const json_t *body)
{
    kd_wire_hdr h = {.type = type, .generation = c->gen, .sender = KD_WIRE_NO_RANK,
                     .aux = aux, .step = c->start.step};
    return body != NULL ? kd_ctl_send_json(c->router, mb->ident, mb->ident_len, h, body)
                        : kd_ctl_send(c->router, mb->ident, mb->ident_len, h, NULL, 0);
}

static void send_state_to(coord *c, member *mb)
{
    kd_wire_hdr h = {.type = KD_WIRE_STATE, .generation = c->gen, .sender = KD_WIRE_NO_RANK,
                     .step = c->sp.step, .epoch = c->sp.epoch, .offset = c->sp.cursor};
    if (kd_ctl_send(c->router, mb->ident, mb->ident_len, h, c->state,
                    (c->n_params + c->n_state) * sizeof(float)) != KD_OK)
        KD_WARN("coordinator: state transfer to a worker failed (queue full)");
}

static member *find(coord *c, const unsigned char *id, size_t len)
{
    for (int i = 0; i < MAX_MEMBERS; i++)
        if (c->m[i].used && c->m[i].ident_len == len && memcmp(c->m[i].ident, id, len) == 0)
            return &c->m[i];
    return NULL;
}

/* Starts a pause of the current world (no-op if one is in progress). */
static void start_pause(coord *c, const char *why, double deadline_s)
{
    if (c->st != C_RUNNING)
        return;
    c->st = C_PAUSING;
    c->pause_deadline = kd_now() + deadline_s;
    for (int i = 0; i < MAX_MEMBERS; i++)
        if (c->m[i].used && c->m[i].rank >= 0) {
            c->m[i].replied = 0;
            c->m[i].finished = 0;
            send_to(c, &c->m[i], KD_WIRE_PAUSE, 0, NULL);
        }
    KD_INFO("coordinator: pausing gen=%u reason=%s", c->gen, why);
}

static void forget(coord *c, member *mb, const char *why)
{
    KD_INFO("coordinator: worker removed name=%.*s reason=%s", (int)mb->ident_len,
            (const char *)mb->ident, why);
    if (mb->rank >= 0 && c->st == C_RUNNING)
        start_pause(c, why, c->cfg->comm_timeout_ms / 1000.0 + 1.5);
    int idx = (int)(mb - c->m);
    if (c->state_from == idx)
        c->state_from = -1;
    if (c->ckpt_from == idx) {
        c->ckpt_from = -1;
        c->ckpt_requested = 0;
    }
    memset(mb, 0, sizeof *mb);
    mb->rank = -1;
}

/* Picks the most advanced state available; returns the member index holding it, -1 for
 * the coordinator's own state, -2 when there is none. */
static int best_source(coord *c, pos *best)
{
    int src = -2;
    if (c->have_state) {
        *best = c->sp;
        src = -1;
    }
    for (int i = 0; i < MAX_MEMBERS; i++) {
        member *mb = &c->m[i];
        if (!mb->used || !mb->ready || !mb->valid)
            continue;
        if (mb->rank >= 0 && !mb->replied)
            continue;
        /* Prefer a member of the world at equal steps: it needs no transfer itself. */
        if (src == -2 || mb->p.step > best->step ||
            (mb->p.step == best->step && src == -1 && !c->have_state)) {
            *best = mb->p;
            src = i;
        }
    }
    return src;
}

static void finish(coord *c);

/* Forms the next world from the members that can train, once the state is in place. */
static void form_world(coord *c)
{
    pos best;
    int src = best_source(c, &best);
    int local = c->job.sync_mode == KD_SPEC_SYNC_LOCAL_SGD;
    /* Members that are in the candidate set. */
    int cand[MAX_MEMBERS], n = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < MAX_MEMBERS && n < c->max_agents; i++) {
            member *mb = &c->m[i];
            if (!mb->used || !mb->ready || mb->leaving)
                continue;
            int old = mb->rank >= 0;
            if ((pass == 0) != old)
                continue; /* current members first, then joiners */
            cand[n++] = i;
        }
    int need_transfer = 0;
    for (int k = 0; k < n; k++) {
        member *mb = &c->m[cand[k]];
        if (!mb->valid || mb->p.step != best.step || (local && cand[k] != src))
            need_transfer = 1;
    }
    if (src == -2) {
        KD_ERROR("coordinator: no state to continue from");
        c->st = C_WAITING;
        return;
    }
    /* Everyone who needs the state gets it from the coordinator's copy, so fetch it
     * first when a member holds the best one (also needed for a leaving source). */
    int leaving_src = src >= 0 && c->m[src].leaving;
    if (src >= 0 && (need_transfer || leaving_src || c->finishing)) {
        if (!c->have_state || c->sp.step != best.step) {
            c->state_from = src;
            c->gather_deadline = kd_now() + 5.0;
            c->st = C_GATHER;
            send_to(c, &c->m[src], KD_WIRE_STATE_REQ, 0, NULL);
            return;
        }
    }
    coord_log_ranges(c, c->start, best);
    if (c->finishing) {
        finish(c);
        return;
    }
    /* Leavers are released now that their state, if needed, is safe. */
    for (int i = 0; i < MAX_MEMBERS; i++)
        if (c->m[i].used && c->m[i].leaving) {
            send_to(c, &c->m[i], KD_WIRE_DONE, 0, NULL);
            forget(c, &c->m[i], "left");
        }
    for (int i = 0; i < MAX_MEMBERS; i++)
        if (c->m[i].used) {
            if (c->m[i].rank >= 0)
                c->m[i].world_end = best.step;
            c->m[i].rank = -1;
        }
    if (n == 0) {
        c->st = C_WAITING;
        c->world = 0;
        c->start = best;
        KD_INFO("coordinator: no workers left, waiting step=%llu",
                (unsigned long long)best.step);
        return;
    }
    set_scale(c, n, best.step);
    c->gen++;
    c->ckpt_requested = 0; /* an answer still on its way is stale now (on_state) */
    if (!c->formed)
        c->t_first_world = kd_now();
    c->formed = 1;
    c->world = n;
    c->wbatch = c->batch;
    c->start = best;
    coord_batch_new_world(c);
    json_t *peers = json_array();
    for (int k = 0; k < n; k++)
        json_array_append_new(peers, json_string(c->m[cand[k]].endpoint));
    for (int k = 0; k < n; k++) {
        member *mb = &c->m[cand[k]];
        int give = !mb->valid || mb->p.step != best.step || (local && cand[k] != src);
        mb->rank = k;
        mb->replied = 0;
        mb->finished = 0;
        /* A worker that missed worlds learns where its own last one ended: whether a
         * step that failed for it there was applied (its samples trained) or redone. */
        uint64_t prev_end = mb->world_end < best.step ? mb->world_end : best.step;
        json_t *b = json_pack(
            "{s:i, s:i, s:i, s:O, s:I, s:I, s:I, s:f, s:f, s:I, s:I, s:i, s:I}", "rank", k,
            "world", n, "batch", c->batch,
            "peers", peers, "epoch", (json_int_t)best.epoch, "cursor", (json_int_t)best.cursor,
            "step", (json_int_t)best.step, "scale_from", c->scale_from, "scale_to", c->scale,
            "scale_step", (json_int_t)c->scale_step, "warmup_steps",
            (json_int_t)c->scale_steps, "state", give, "prev_end", (json_int_t)prev_end);
        if (b != NULL)
            send_to(c, mb, KD_WIRE_WORLD, 0, b);
        json_decref(b);
        if (give)
            send_state_to(c, mb);
        mb->valid = 1;
        mb->p = best;
    }
    json_decref(peers);
    c->st = C_RUNNING;
    if (c->range_log != NULL) {
        fprintf(c->range_log, "world %u %d\n", c->gen, n);
        fflush(c->range_log);
    }
    KD_INFO("coordinator: world gen=%u agents=%d batch=%d epoch=%u cursor=%llu step=%llu "
            "lr_scale=%g ramp_from=%g ramp_steps=%llu..%llu", c->gen, n, c->batch, best.epoch,
            (unsigned long long)best.cursor, (unsigned long long)best.step, c->scale,
            c->scale_from, (unsigned long long)c->scale_step,
            (unsigned long long)(c->scale_step + c->scale_steps));
}

static void finish(coord *c)
{
    /* The final checkpoint also records the last evaluation: a coordinator restarted
     * from it reports the result without any worker (restored_complete). */
    if (!c->saved || c->saved_step != c->sp.step || c->saved_eval != c->epochs_done)
        coord_save_checkpoint(c);
    for (int i = 0; i < MAX_MEMBERS; i++)
        if (c->m[i].used)
            send_to(c, &c->m[i], KD_WIRE_DONE, 0, NULL);
    c->st = C_DONE;
    coord_publish(c, "succeeded");
    coord_write_summary(c);
    KD_INFO("coordinator: training finished job=%s epochs=%d accuracy=%.4f step=%llu",
            c->job_id, c->epochs_done, c->accuracy, (unsigned long long)c->sp.step);
    c->st = C_DONE;
}

static void on_state(coord *c, member *mb, kd_ctl_msg *msg)
{
    size_t want = (c->n_params + c->n_state) * sizeof(float);
    if (c->n_params == 0 || zmq_msg_size(&msg->payload) != want) {
        kd_wire_drop(KD_WIRE_DROP_LENGTH, "control");
        return;
    }
    /* Only the member asked, in the generation it was asked in, at the position it
     * reported (a transfer source) or one its world can have reached (a checkpoint). */
    int idx = (int)(mb - c->m);
    pos claim = {msg->h.step, msg->h.epoch, msg->h.offset};
    int gather = c->st == C_GATHER && c->state_from == idx && msg->h.generation == c->gen;
    int ckpt = c->ckpt_from == idx && msg->h.generation == c->ckpt_gen;
    if (!gather && ckpt && (!c->ckpt_requested || c->ckpt_gen != c->gen)) {
        kd_wire_drop(KD_WIRE_DROP_STALE, "control"); /* a late answer to an older request */
        return;
    }
    if (!gather && !ckpt) {
        if (msg->h.generation < c->gen)
            kd_wire_drop(KD_WIRE_DROP_STALE, "control");
        else
            coord_reject(c, mb, "STATE (not asked for)", KD_WIRE_DROP_SENDER);
        return;
    }
    int off_source = gather && (claim.step != mb->p.step || claim.epoch != mb->p.epoch ||
                                claim.cursor != mb->p.cursor);
    if (off_source && ckpt) {
        kd_wire_drop(KD_WIRE_DROP_STALE, "control"); /* the checkpoint answer, overtaken */
        return;
    }
    if (gather ? off_source : !coord_pos_reachable(c, claim)) {
        coord_reject(c, mb, "STATE (claimed position)", KD_WIRE_DROP_SENDER);
        if (gather)
            c->gather_deadline = 0; /* choose another source now */
        return;
    }
    if (!kd_comm_all_finite(zmq_msg_data(&msg->payload), want / sizeof(float))) {
        coord_reject(c, mb, "STATE (non-finite values)", KD_WIRE_DROP_NONFINITE);
        if (gather)
            c->gather_deadline = 0;
        return;
    }
    if (c->have_state && msg->h.step < c->sp.step)
        return; /* an answer to an older request; we already hold a newer state */
    if (c->state == NULL && (c->state = malloc(want)) == NULL)
        return;
    memcpy(c->state, zmq_msg_data(&msg->payload), want);
    c->have_state = 1;
    c->sp.step = msg->h.step;
    c->sp.epoch = msg->h.epoch;
    c->sp.cursor = msg->h.offset;
    c->ckpt_requested = 0;
    coord_save_checkpoint(c);
    if (c->st == C_GATHER && c->state_from == (int)(mb - c->m)) {
        c->state_from = -1;
        form_world(c);
    }
}

uint64_t coord_fingerprint(const coord *c, uint64_t np, uint64_t ns)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a of the job's namespace/name */
    for (const char *s = c->job_id; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    /* The architecture too: two models of the same size are not interchangeable. */
    return (h ^ (np << 20) ^ ns) * 1099511628211ull ^ kd_spec_model_hash(&c->job);
}

/* A position a READY may claim: inside the job, and, once this coordinator has formed a
 * world (so that it knows how far training got), not past the furthest step it knows of
 * (a worker only trains in worlds this coordinator forms). Before that (a coordinator
 * restarted while the agents trained on) the workers' positions are all it has. */
static int ready_pos_plausible(const coord *c, const member *self, pos p)
{
    if (p.cursor >= c->n_train || p.epoch > (uint32_t)c->epochs ||
        (p.epoch == (uint32_t)c->epochs && p.cursor != 0))
        return 0;
    if (!c->formed)
        return 1;
    uint64_t known = c->start.step > c->sp.step ? c->start.step : c->sp.step;
    for (int i = 0; i < MAX_MEMBERS; i++)
        if (&c->m[i] != self && c->m[i].used && c->m[i].valid && c->m[i].p.step > known &&
            coord_pos_reachable(c, c->m[i].p))
            known = c->m[i].p.step;
    long long ms = 0;
    if (c->last_metrics != NULL &&
        kd_wire_get_int(c->last_metrics, "step", 0, INT64_MAX, &ms) == 0 &&
        (uint64_t)ms > known)
        known = (uint64_t)ms;
    /* Steps rank 0 trained since its last report (at most a second): generous slack. */
    return p.step <= known + 4096;
}

static void on_ready(coord *c, member *mb, const kd_ctl_msg *msg)
{
    long long np, ns, nt;
    int fresh = json_is_true(json_object_get(msg->json, "fresh"));
    if (kd_wire_get_int(msg->json, "n_params", 1, 1LL << 30, &np) != 0 ||
        kd_wire_get_int(msg->json, "n_state", 0, 1LL << 31, &ns) != 0 ||
        kd_wire_get_int(msg->json, "n_train", 1, 1LL << 32, &nt) != 0) {
        kd_wire_drop(KD_WIRE_DROP_FIELD, "control");
        return;
    }
    uint64_t fp = coord_fingerprint(c, (uint64_t)np, (uint64_t)ns);
    if (c->n_train == 0) {
        /* The first READY fixes the sizes; a checkpoint of another model is dropped. */
        if (c->have_state && fp != c->fingerprint) {
            KD_WARN("coordinator: checkpoint belongs to another job or model, ignored");
            c->have_state = 0;
            free(c->state);
            c->state = NULL;
            c->sp = c->start = (pos){0, 0, 0};
            c->saved = 0;
            c->epochs_done = 0;
            c->accuracy = c->train_loss = c->test_loss = 0.0;
        }
        c->n_params = (size_t)np;
        c->n_state = (size_t)ns;
        c->n_train = (size_t)nt;
        c->fingerprint = fp;
    } else if ((size_t)np != c->n_params || (size_t)ns != c->n_state ||
               (size_t)nt != c->n_train) {
        KD_ERROR("coordinator: worker disagrees on the model or data size, ignored");
        send_to(c, mb, KD_WIRE_DONE, 0, NULL);
        forget(c, mb, "incompatible");
        return;
    }
    /* A data endpoint bound again for the job's data plane mode (worker rebind_data). */
    const char *ep;
    if (json_object_get(msg->json, "endpoint") != NULL) {
        if (kd_wire_get_str(msg->json, "endpoint", 255, &ep) != 0 ||
            (strncmp(ep, "tcp://", 6) != 0 && strncmp(ep, "ipc://", 6) != 0)) {
            kd_wire_drop(KD_WIRE_DROP_FIELD, "control");
            return;
        }
        snprintf(mb->endpoint, sizeof mb->endpoint, "%s", ep);
    }
    mb->ready = 1;
    mb->valid = fresh || msg->h.step > 0;
    mb->p = (pos){msg->h.step, msg->h.epoch, msg->h.offset};
    if (fresh)
        mb->p = (pos){0, 0, 0};
    if (mb->valid && !fresh && !ready_pos_plausible(c, mb, mb->p)) {
        /* Admitted, but its state is not trusted: it gets the world's by transfer. */
        coord_reject(c, mb, "READY (claimed position)", KD_WIRE_DROP_SENDER);
        mb->valid = 0;
        mb->p = (pos){0, 0, 0};
    }
    if (c->first_ready == 0)
        c->first_ready = kd_now();
    KD_INFO("coordinator: worker ready name=%.*s step=%llu fresh=%d", (int)mb->ident_len,
            (const char *)mb->ident, (unsigned long long)mb->p.step, fresh);
}

static void welcome(coord *c, member *mb)
{
    json_t *b = json_pack("{s:O, s:i, s:I, s:I}", "job", c->cfg->job_doc, "epochs", c->epochs,
                          "seed", (json_int_t)c->cfg->seed, "max_samples",
                          (json_int_t)c->cfg->max_samples);
    if (b == NULL)
        return;
    if (c->cfg->data != NULL)
        json_object_set_new(b, "data", json_string(c->cfg->data));
    json_object_set_new(b, "batch", json_integer(c->batch));
    send_to(c, mb, KD_WIRE_WELCOME, 0, b);
    json_decref(b);
}

/* New identities may join at JOIN_RATE per second (bursts of JOIN_BURST). */
static int join_admit_new(coord *c, double now)
{
    c->join_tokens += (now - c->join_refill) * JOIN_RATE;
    if (c->join_tokens > JOIN_BURST)
        c->join_tokens = JOIN_BURST;
    c->join_refill = now;
    if (c->join_tokens < 1.0) {
        kd_wire_drop(KD_WIRE_DROP_RATE, "control");
        return 0;
    }
    c->join_tokens -= 1.0;
    return 1;
}

/* A free member slot; when every slot is taken, the one of the longest-joined member that
 * never became ready and is in no world (a worker still loading its data rejoins when it
 * is done: its READY comes from an unknown identity and is answered with "rejoin"). */
static member *free_slot(coord *c, double now)
{
    member *old = NULL;
    for (int i = 0; i < MAX_MEMBERS; i++) {
        if (!c->m[i].used)
            return &c->m[i];
        if (!c->m[i].ready && c->m[i].rank < 0 && now - c->m[i].joined > 1.0 &&
            (old == NULL || c->m[i].joined < old->joined))
            old = &c->m[i];
    }
    if (old != NULL)
        forget(c, old, "slot reclaimed (never ready, table full)");
    return old;
}

static void on_message(coord *c, kd_ctl_msg *msg)
{
    /* The operator may send BATCH and nothing else; nobody else may send BATCH
     * (docs/security.md): its peer is told apart by the ZAP handler's user id. */
    if (msg->from_operator || msg->h.type == KD_WIRE_BATCH) {
        static int logged;
        if (msg->from_operator && msg->h.type == KD_WIRE_BATCH) {
            coord_on_batch(c, msg);
            return;
        }
        kd_wire_drop(KD_WIRE_DROP_SENDER, "control");
        if (!logged)
            KD_WARN("coordinator: refused %s from %s (only the operator sends BATCH, and "
                    "only BATCH; further ones only counted)", kd_wire_type_name(msg->h.type),
                    msg->from_operator ? "the operator" : "a peer that is not the operator");
        logged = 1;
        return;
    }
    member *mb = find(c, msg->ident, msg->ident_len);
    if (mb == NULL && msg->h.type != KD_WIRE_JOIN) {
        /* A worker of a previous coordinator instance: ask it to join us. */
        kd_wire_hdr h = {.type = KD_WIRE_PAUSE, .generation = c->gen,
                         .sender = KD_WIRE_NO_RANK, .aux = 1};
        kd_ctl_send(c->router, msg->ident, msg->ident_len, h, NULL, 0);
        return;
    }
    if (mb != NULL)
        mb->last_seen = kd_now();
    switch (msg->h.type) {
    case KD_WIRE_JOIN: {
        const char *ep;
        if (kd_wire_get_str(msg->json, "endpoint", 255, &ep) != 0 ||
            (strncmp(ep, "tcp://", 6) != 0 && strncmp(ep, "ipc://", 6) != 0)) {
            kd_wire_drop(KD_WIRE_DROP_FIELD, "control");
            return;
        }
        double now = kd_now();
        if (mb != NULL && now - mb->last_join < JOIN_MIN_INTERVAL_S) {
            kd_wire_drop(KD_WIRE_DROP_RATE, "control"); /* a repeat: already answered */
            return;
        }
        if (mb == NULL && !join_admit_new(c, now))
            return;
        if (mb != NULL && mb->rank >= 0)
            forget(c, mb, "rejoined"); /* it lost its world: treat as a failure */
        if (mb == NULL || !mb->used) {
            mb = free_slot(c, now);
            if (mb == NULL) {
                KD_WARN("coordinator: too many workers, JOIN ignored");
                return;
            }
            memset(mb, 0, sizeof *mb);
            mb->used = 1;
            mb->rank = -1;
            mb->world_end = UINT64_MAX;
            mb->joined = now;
            memcpy(mb->ident, msg->ident, msg->ident_len);
            mb->ident_len = msg->ident_len;
        }
        mb->last_join = now;
        snprintf(mb->endpoint, sizeof mb->endpoint, "%s", ep);
        /* Workers of a previous coordinator instance may have seen later generations;
         * never reuse a generation whose data may still be in flight. */
        if (c->st == C_WAITING && msg->h.generation > c->gen)
            c->gen = msg->h.generation;
        mb->ready = 0;
        mb->last_seen = kd_now();
        KD_INFO("coordinator: worker joined name=%.*s endpoint=%s", (int)mb->ident_len,
                (const char *)mb->ident, ep);
        welcome(c, mb);
        break;
    }
    case KD_WIRE_READY:
        on_ready(c, mb, msg);
        break;
    case KD_WIRE_HEARTBEAT:
        break;
    case KD_WIRE_METRICS:
        coord_on_metrics(c, mb, msg);
        break;
    case KD_WIRE_LEAVE:
        mb->leaving = 1;
        KD_INFO("coordinator: worker leaving name=%.*s", (int)mb->ident_len,
                (const char *)mb->ident);
        if (mb->rank < 0) {
            send_to(c, mb, KD_WIRE_DONE, 0, NULL);
            forget(c, mb, "left");
        } else if (c->st == C_RUNNING) {
            /* It stops at the next boundary by itself; the deadline covers a slow step. */
            c->st = C_PAUSING;
            c->pause_deadline = kd_now() + c->cfg->comm_timeout_ms / 1000.0 + 1.5;
            for (int i = 0; i < MAX_MEMBERS; i++)
                c->m[i].replied = 0;
        }
        break;
    case KD_WIRE_PAUSED:
    case KD_WIRE_FINISHED:
        if (mb->rank < 0 || msg->h.generation != c->gen) {
            kd_wire_drop(KD_WIRE_DROP_STALE, "control");
            break;
        }
        mb->replied = 1;
        mb->p = (pos){msg->h.step, msg->h.epoch, msg->h.offset};
        mb->valid = 1;
        if (!coord_pos_reachable(c, mb->p)) {
            /* Not where this world can be: its word does not count, its state is replaced
             * by transfer, and a FINISHED from it finishes nothing. */
            coord_reject(c, mb, msg->h.type == KD_WIRE_FINISHED ? "FINISHED (claimed position)"
                                                               : "PAUSED (claimed position)",
                         KD_WIRE_DROP_SENDER);
            mb->valid = 0;
            mb->p = c->start;
        } else if (msg->h.type == KD_WIRE_FINISHED) {
            c->finishing = 1;
        }
        if (c->st == C_RUNNING) {
            int ok = json_is_true(json_object_get(msg->json, "ok"));
            c->st = C_PAUSING;
            /* Peers of a failed step are all blocked on the same ring and time out
             * within a short while of the first; a healthy pause answers at once. */
            c->pause_deadline = kd_now() + (ok ? c->cfg->comm_timeout_ms / 1000.0 + 1.5 : 1.0);
            for (int i = 0; i < MAX_MEMBERS; i++)
                if (c->m[i].used && c->m[i].rank >= 0 && &c->m[i] != mb) {
                    c->m[i].replied = 0;
                    send_to(c, &c->m[i], KD_WIRE_PAUSE, 0, NULL);
                }
            KD_INFO("coordinator: world stopping gen=%u reason=%s", c->gen,
                    msg->h.type == KD_WIRE_FINISHED ? "finished" : ok ? "paused" : "failure");
        }
        break;
    case KD_WIRE_STATE:
        on_state(c, mb, msg);
        break;
    default:
        kd_wire_drop(KD_WIRE_DROP_UNEXPECTED, "control");
    }
}

static void tick(coord *c)
{
    double now = kd_now();
    if (now - c->last_hb > 0.5) {
        for (int i = 0; i < MAX_MEMBERS; i++)
            if (c->m[i].used)
                send_to(c, &c->m[i], KD_WIRE_HEARTBEAT, 0, NULL);
        c->last_hb = now;
    }
    for (int i = 0; i < MAX_MEMBERS; i++)
        if (c->m[i].used &&
            now - c->m[i].last_seen > (c->m[i].ready ? MEMBER_TIMEOUT_S : LOADING_TIMEOUT_S) &&
            !(c->st == C_PAUSING && c->m[i].rank >= 0))
            forget(c, &c->m[i], "silent");
    int ready = 0, joiners = 0;
    for (int i = 0; i < MAX_MEMBERS; i++)
        if (c->m[i].used && c->m[i].ready && !c->m[i].leaving) {
            ready++;
            joiners += c->m[i].rank < 0;
        }
    switch (c->st) {
    case C_WAITING:
        if (ready > 0 && (ready >= c->cfg->initial_agents || c->formed ||
                          now - c->first_ready > c->cfg->initial_wait_s))
            form_world(c);
        break;
    case C_RUNNING: {
        if (joiners > 0 && c->world < c->max_agents)
            start_pause(c, "join", c->cfg->comm_timeout_ms / 1000.0 + 1.5);
        else if (coord_batch_decide(c, now))
            start_pause(c, "batch", c->cfg->comm_timeout_ms / 1000.0 + 1.5);
        int interval = c->cfg->checkpoint_interval > 0 ? c->cfg->checkpoint_interval
                                                       : c->job.checkpoint_interval;
        const char *dir = c->cfg->checkpoint_dir ? c->cfg->checkpoint_dir
                                                 : c->job.checkpoint_path;
        if (dir != NULL && now - c->last_ckpt > interval && !c->ckpt_requested)
            for (int i = 0; i < MAX_MEMBERS; i++)
                if (c->m[i].used && c->m[i].rank == 0) {
                    send_to(c, &c->m[i], KD_WIRE_STATE_REQ, 0, NULL);
                    c->ckpt_from = i;
                    c->ckpt_gen = c->gen;
                    c->ckpt_requested = 1;
                    c->last_ckpt = now;
                }
        break;
    }
    case C_PAUSING: {
        int waiting = 0;
        for (int i = 0; i < MAX_MEMBERS; i++)
            if (c->m[i].used && c->m[i].rank >= 0 && !c->m[i].replied)
                waiting++;
        if (waiting > 0 && now > c->pause_deadline)
            for (int i = 0; i < MAX_MEMBERS; i++)
                if (c->m[i].used && c->m[i].rank >= 0 && !c->m[i].replied) {
                    c->m[i].rank = -1; /* so that forget does not start another pause */
                    forget(c, &c->m[i], "no answer to pause");
                    waiting--;
                }
        if (waiting == 0)
            form_world(c);
        break;
    }
    case C_GATHER:
        if (c->state_from < 0 || now > c->gather_deadline) {
            if (c->state_from >= 0) {
                c->m[c->state_from].valid = 0;
                c->state_from = -1;
            }
            KD_WARN("coordinator: state transfer failed, choosing another source");
            form_world(c);
        }
        break;
    default:
        break;
    }
    if (now - c->last_pub >= 1.0 && c->st != C_DONE)
        coord_publish(c, c->st == C_RUNNING ? "running" : c->st == C_WAITING ? "waiting"
                                                                        : "rescaling");
}

/* Whether the loaded checkpoint is the end of training: the last epoch is done, or the
 * target accuracy was reached at the epoch boundary it was taken at. Its coordinator was
 * stopped just as the job finished (a pod deleted, a kill -9), and the workers got DONE
 * and are gone, so waiting for them would never end. Only the job's name can be checked
 * without a worker (the model's size needs the dataset): a checkpoint of another job is
 * left to the usual READY check. */
static int restored_complete(coord *c)
{
    if (!c->have_state)
        return 0;
    int by_epochs = c->sp.epoch >= (uint32_t)c->epochs;
    int by_target = c->job.target_accuracy > 0 && c->sp.cursor == 0 &&
                    c->epochs_done > 0 && (uint32_t)c->epochs_done == c->sp.epoch &&
                    c->accuracy >= c->job.target_accuracy;
    if (!by_epochs && !by_target)
        return 0;
    if (coord_fingerprint(c, c->n_params, c->n_state) != c->fingerprint) {
        KD_WARN("coordinator: the final checkpoint belongs to another job, ignoring its end");
        return 0;
    }
    if ((uint32_t)c->epochs_done < c->sp.epoch && !by_target)
        KD_WARN("coordinator: the checkpoint does not record the last epoch's accuracy "
                "(evaluated_epoch=%d of %u, older checkpoint format); reporting what it has",
                c->epochs_done, c->sp.epoch);
    KD_INFO("coordinator: training was already complete in the checkpoint, finishing "
            "without workers epoch=%u accuracy=%.4f reason=%s", c->sp.epoch, c->accuracy,
            by_epochs ? "epochs" : "target-accuracy");
    return 1;
}

/* After finishing from a complete checkpoint, stays a moment: workers that are still
 * around (of the previous instance, or ones a launcher just started) get DONE rather than
 * waiting for a world, and a metrics subscriber that connects late still sees the
 * result. */
static void linger_done(coord *c, double seconds)
{
    double until = kd_now() + seconds;
    while (kd_now() < until && !coord_sigterm) {
        zmq_pollitem_t it = {c->router, 0, ZMQ_POLLIN, 0};
        zmq_poll(&it, 1, 50);
        kd_ctl_msg msg;
        while (kd_ctl_recv(c->router, 1, &msg, "control") == KD_OK) {
            kd_wire_hdr h = {.type = KD_WIRE_DONE, .generation = c->gen,
                             .sender = KD_WIRE_NO_RANK};
            kd_ctl_send(c->router, msg.ident, msg.ident_len, h, NULL, 0);
            kd_ctl_msg_close(&msg);
        }
        if (kd_now() - c->last_pub >= 0.5)
            coord_publish(c, "succeeded");
    }
}

static int open_sockets(coord *c)
{
    c->zctx = zmq_ctx_new();
    c->router = zmq_socket(c->zctx, ZMQ_ROUTER);
    c->pub = zmq_socket(c->zctx, ZMQ_PUB);
    if (c->router == NULL || c->pub == NULL)
        return KD_ENETWORK;
    int one = 1, linger = 200, hwm = 10000;
    /* libzmq allocates a frame as soon as its length is read, and also speaks the old
     * ZMTP/1.0 framing, in which any byte stream parses as frames: garbage on a port
     * announces a frame of up to 2^64 bytes, which the allocator refuses (under ASan it
     * aborts the process). No valid control frame exceeds the largest float payload;
     * a metrics subscriber only sends short subscriptions. */
    int64_t max_ctl = (int64_t)KD_WIRE_MAX_FLOAT_BYTES, max_sub = 4096;
    zmq_setsockopt(c->router, ZMQ_MAXMSGSIZE, &max_ctl, sizeof max_ctl);
    zmq_setsockopt(c->pub, ZMQ_MAXMSGSIZE, &max_sub, sizeof max_sub);
    zmq_setsockopt(c->router, ZMQ_ROUTER_HANDOVER, &one, sizeof one);
    zmq_setsockopt(c->router, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(c->router, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(c->pub, ZMQ_LINGER, &linger, sizeof linger);
    const kd_curve_keys *k = c->cfg->keys;
    if (k != NULL && k->enabled) {
        /* Only holders of the job key (and, for the metrics, the operator) get a
         * connection; everyone else is refused in the handshake (kd_curve.h). */
        char err[256];
        if (kd_zap_start(&c->zap, c->zctx, k, err, sizeof err) != KD_OK) {
            KD_ERROR("coordinator: %s", err);
            return KD_ENETWORK;
        }
        if (kd_curve_server(c->router, k, KD_ZAP_CONTROL, 0) != 0 ||
            kd_curve_server(c->pub, k, KD_ZAP_METRICS, 0) != 0) {
            KD_ERROR("coordinator: CURVE: %s", zmq_strerror(zmq_errno()));
            return KD_ENETWORK;
        }
        kd_zap_watch(c->zap, c->router, "control");
        kd_zap_watch(c->zap, c->pub, "metrics");
        KD_INFO("coordinator: CURVE on control and metrics keys=%s operator_key=%s", k->dir,
                k->have_operator ? "yes" : "no");
    } else {
        KD_WARN("coordinator: no keys (--keys-dir, KADET_KEYS_DIR): control plane and metrics "
                "are unauthenticated, anyone who reaches the ports can join the job");
    }
    if (zmq_bind(c->router, c->cfg->bind) != 0) {
        KD_ERROR("coordinator: bind %s: %s", c->cfg->bind, zmq_strerror(zmq_errno()));
        return KD_ENETWORK;
    }
    if (zmq_bind(c->pub, c->cfg->metrics_bind) != 0) {
        KD_ERROR("coordinator: bind %s: %s", c->cfg->metrics_bind, zmq_strerror(zmq_errno()));
        return KD_ENETWORK;
    }
    char ctl[256], met[256];
    size_t l1 = sizeof ctl, l2 = sizeof met;
    zmq_getsockopt(c->router, ZMQ_LAST_ENDPOINT, ctl, &l1);
    zmq_getsockopt(c->pub, ZMQ_LAST_ENDPOINT, met, &l2);
    KD_INFO("coordinator: listening job=%s control=%s metrics=%s", c->job_id, ctl, met);
    if (c->cfg->endpoint_file != NULL) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", c->cfg->endpoint_file);
        FILE *f = fopen(tmp, "w");
        if (f == NULL || fprintf(f, "control=%s\nmetrics=%s\n", ctl, met) < 0 ||
            fclose(f) != 0 || rename(tmp, c->cfg->endpoint_file) != 0) {
            KD_ERROR("coordinator: cannot write %s", c->cfg->endpoint_file);
            return KD_EIO;
        }
    }
    return KD_OK;
}

int kd_coord_run(const kd_coord_config *cfg)
{
    coord *c = calloc(1, sizeof *c);
    if (c == NULL)
        return 1;
    c->cfg = cfg;
    c->state_from = -1;
    c->ckpt_from = -1;
    c->join_tokens = JOIN_BURST;
    for (int i = 0; i < MAX_MEMBERS; i++)
        c->m[i].rank = -1;
    int rc = 1;
    char err[512];
    if (kd_agentjob_decode(cfg->job_doc, &c->job, err, sizeof err) != KD_OK) {
        KD_ERROR("coordinator: %s", err);
        free(c);
        return 2;
    }
    snprintf(c->job_id, sizeof c->job_id, "%s/%s", c->job.namespace_, c->job.name);
    c->epochs = cfg->epochs > 0 ? cfg->epochs : c->job.epochs;
    c->batch = cfg->batch > 0 ? cfg->batch : c->job.batch_size;
    coord_batch_init(c);
    c->max_agents = cfg->max_agents > 0 ? cfg->max_agents : c->job.agents_max;
    if (c->max_agents > MAX_MEMBERS)
        c->max_agents = MAX_MEMBERS;
    c->scaling = cfg->lr_scaling_set ? cfg->lr_scaling
                 : c->job.adaptive_lr ? KD_LR_SCALE_LINEAR : KD_LR_SCALE_NONE;
    c->epoch_log = json_array();
    c->t_start = c->last_ckpt = kd_now();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (cfg->range_log != NULL && (c->range_log = fopen(cfg->range_log, "a")) == NULL) {
        KD_ERROR("coordinator: cannot open %s", cfg->range_log);
        goto out;
    }
    if (coord_load_checkpoint(c) != KD_OK || open_sockets(c) != KD_OK)
        goto out;
    coord_probe_checkpoint(c);
    if (restored_complete(c)) {
        finish(c);
        linger_done(c, DONE_LINGER_S);
    }
    while (c->st != C_DONE && !coord_sigterm) {
        zmq_pollitem_t it = {c->router, 0, ZMQ_POLLIN, 0};
        zmq_poll(&it, 1, 50);
        kd_ctl_msg msg;
        while (c->st != C_DONE && kd_ctl_recv(c->router, 1, &msg, "control") == KD_OK) {
            on_message(c, &msg);
            kd_ctl_msg_close(&msg);
        }
        if (c->st != C_DONE)
            tick(c);
    }
    rc = 0;
    if (coord_sigterm && c->st != C_DONE) {
        /* Not finished: a non-zero status, so that nobody mistakes it for success; the
         * workers keep their state and rejoin a restarted coordinator. */
        KD_INFO("coordinator: terminated before the end, keeping the last checkpoint");
        coord_save_checkpoint(c);
        rc = 1;
    }
out:
    if (c->router != NULL)
        zmq_close(c->router);
    if (c->pub != NULL)
        zmq_close(c->pub);
    if (c->zap != NULL) {
        kd_zap_stats zs;
        kd_zap_get_stats(c->zap, &zs);
        KD_INFO("coordinator: security admitted=%llu refused=%llu refused_handshakes=%llu",
                (unsigned long long)zs.admitted, (unsigned long long)zs.refused,
                (unsigned long long)zs.handshakes);
    }
    kd_zap_stop(&c->zap); /* after the sockets it serves are closed */
    if (c->zctx != NULL)
        zmq_ctx_term(c->zctx);
    if (c->range_log != NULL)
        fclose(c->range_log);
    json_decref(c->last_metrics);
    json_decref(c->epoch_log);
    free(c->state);
    kd_agentjob_free(&c->job);
    free(c);
    return rc;
}
