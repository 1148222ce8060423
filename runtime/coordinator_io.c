/* coordinator_io: what the coordinator writes and reads besides its control socket:
 * checkpoints (checkpoint.h), the debug range log, the metrics it publishes, the final
 * summary, and the epoch metrics rank 0 reports. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "checkpoint.h"
#include "coordinator_int.h"
#include "kd_error.h"
#include "kd_log.h"
#include "kd_train.h"
#include "kd_wire.h"

const char *coord_checkpoint_dir(const coord *c)
{
    return c->cfg->checkpoint_dir ? c->cfg->checkpoint_dir : c->job.checkpoint_path;
}

/* Records the outcome of a checkpoint write: the first failure (or a new error) is logged
 * as an error, repeats are not; the failure is published in the metrics (the operator's
 * CheckpointFailing condition, `kadet run`'s warning) and kept for the summary. */
static void ckpt_outcome(coord *c, int rc, const char *err)
{
    if (rc != KD_OK) {
        if (!c->ckpt_failing || strcmp(c->ckpt_error, err) != 0)
            KD_ERROR("coordinator: checkpoint failing err=\"%s\" (training goes on; a restart "
                     "would begin from %s)",
                     err, c->ckpt_written ? "the last checkpoint written" : "epoch 0");
        c->ckpt_failing = 1;
        snprintf(c->ckpt_error, sizeof c->ckpt_error, "%s", err);
        return;
    }
    if (c->ckpt_failing)
        KD_INFO("coordinator: checkpoints are written again dir=%s", coord_checkpoint_dir(c));
    c->ckpt_failing = 0;
    c->ckpt_error[0] = '\0';
}

void coord_probe_checkpoint(coord *c)
{
    const char *dir = coord_checkpoint_dir(c);
    char err[512];
    if (dir != NULL)
        ckpt_outcome(c, kd_ckpt_probe(dir, err, sizeof err), err);
}

void coord_save_checkpoint(coord *c)
{
    const char *dir = coord_checkpoint_dir(c);
    if (dir == NULL || !c->have_state)
        return;
    float *p = malloc((c->n_params + c->n_state) * sizeof(float));
    if (p == NULL)
        return;
    kd_wire_floats_from_le(p, c->state, c->n_params + c->n_state);
    kd_ckpt ck = {.fingerprint = c->fingerprint, .generation = c->gen, .epoch = c->sp.epoch,
                  .cursor = c->sp.cursor, .step = c->sp.step, .optim_t = c->sp.step,
                  .seed = c->cfg->seed, .n_params = c->n_params, .n_state = c->n_state,
                  .params = p, .state = c->n_state > 0 ? p + c->n_params : NULL,
                  .eval_epoch = (uint32_t)c->epochs_done, .accuracy = c->accuracy,
                  .train_loss = c->train_loss, .batch = (uint32_t)c->batch,
                  .noise_g2 = c->gns_g2, .noise_s = c->gns_s};
    char err[512];
    int rc = kd_ckpt_save(dir, &ck, err, sizeof err);
    ckpt_outcome(c, rc, err);
    if (rc == KD_OK) {
        c->ckpt_written = 1;
        c->saved = 1;
        c->saved_step = c->sp.step;
        c->saved_eval = c->epochs_done;
        KD_INFO("coordinator: checkpoint saved dir=%s step=%llu epoch=%u cursor=%llu", dir,
                (unsigned long long)c->sp.step, c->sp.epoch, (unsigned long long)c->sp.cursor);
    }
    free(p);
    c->last_ckpt = kd_now();
}

/* Logs the cursor ranges the world that just stopped trained (debug, for tests). */
void coord_log_ranges(coord *c, pos from, pos to)
{
    if (c->range_log == NULL || to.step <= from.step)
        return;
    while (from.epoch < to.epoch) {
        fprintf(c->range_log, "range %u %llu %zu\n", from.epoch,
                (unsigned long long)from.cursor, c->n_train);
        from.epoch++;
        from.cursor = 0;
    }
    if (to.cursor > from.cursor)
        fprintf(c->range_log, "range %u %llu %llu\n", to.epoch,
                (unsigned long long)from.cursor, (unsigned long long)to.cursor);
    fflush(c->range_log);
}

void coord_publish(coord *c, const char *state_name)
{
    kd_metrics m;
    memset(&m, 0, sizeof m);
    m.has = KD_MET_JOB | KD_MET_STATE | KD_MET_GENERATION | KD_MET_AGENTS | KD_MET_EPOCH |
            KD_MET_STEP | KD_MET_SAMPLES_PER_S | KD_MET_COMPUTE_MS | KD_MET_COMM_MS |
            KD_MET_LOSS | KD_MET_ACCURACY | KD_MET_WALL_SECONDS | KD_MET_EPOCHS | KD_MET_BATCH |
            KD_MET_CHECKPOINT | KD_MET_EPOCHS_DONE;
    snprintf(m.job, sizeof m.job, "%s", c->job_id);
    snprintf(m.state, sizeof m.state, "%s", state_name);
    m.generation = c->gen;
    m.agents = c->st == C_RUNNING ? c->world : 0;
    m.epoch = c->st == C_DONE ? c->sp.epoch : c->start.epoch + 1;
    m.step = (long long)(c->st == C_DONE ? c->sp.step : c->start.step);
    m.accuracy = c->accuracy;
    m.wall_seconds = kd_now() - c->t_start;
    m.epochs = c->epochs;
    m.batch = c->batch;
    /* "none": the job keeps no checkpoints; "failing": the last write failed (error in
     * checkpoint_error); "ok": writable (written, or the start probe passed). */
    snprintf(m.checkpoint, sizeof m.checkpoint, "%s",
             coord_checkpoint_dir(c) == NULL ? "none" : c->ckpt_failing ? "failing" : "ok");
    if (c->ckpt_failing) {
        m.has |= KD_MET_CHECKPOINT_ERROR;
        snprintf(m.checkpoint_error, sizeof m.checkpoint_error, "%s", c->ckpt_error);
    }
    const json_t *mt = c->last_metrics;
    if (mt != NULL && c->st == C_RUNNING) {
        long long steps = 0;
        double v;
        kd_wire_get_int(mt, "steps", 0, INT64_MAX, &steps);
        if (kd_wire_get_num(mt, "samples_per_s", 0, 1e12, &v) == 0)
            m.samples_per_s = v;
        if (steps > 0 && kd_wire_get_num(mt, "compute_s", 0, 1e9, &v) == 0)
            m.compute_ms = v * 1000.0 / steps;
        if (steps > 0 && kd_wire_get_num(mt, "comm_s", 0, 1e9, &v) == 0)
            m.comm_ms = v * 1000.0 / steps;
        if (kd_wire_get_num(mt, "loss", 0, 1e30, &v) == 0)
            m.loss = v;
        long long ep;
        if (kd_wire_get_int(mt, "epoch", 0, 999999999LL, &ep) == 0)
            m.epoch = ep + 1;
        if (kd_wire_get_int(mt, "step", 0, 9000000000000000LL, &ep) == 0)
            m.step = ep;
        if (kd_wire_get_num(mt, "lr", 0, 1e9, &v) == 0) {
            m.has |= KD_MET_LR;
            m.lr = v;
        }
    }
    /* How many epochs have been evaluated (accuracy means nothing while it is 0) and the
     * last one's record, so that `kadet run` prints a line for every epoch even when two
     * end between two publications. */
    m.epochs_done = c->epochs_done;
    /* What a goodput model of the job needs: the measured gradient noise (when the
     * adaptive batch has measured it) and the throughput per configuration run. */
    if (c->gns_reports > 0 && isfinite(c->gns_g2) && isfinite(c->gns_s)) {
        m.has |= KD_MET_NOISE;
        m.noise_scale = fmin(coord_batch_noise(c), 1e30);
        m.noise_g2 = fmax(-1e30, fmin(c->gns_g2, 1e30));
        m.noise_s = fmax(-1e30, fmin(c->gns_s, 1e30));
    }
    m.has |= KD_MET_CONFIGS;
    m.n_configs = c->n_cfgs;
    memcpy(m.configs, c->cfgs, (size_t)c->n_cfgs * sizeof c->cfgs[0]);
    if (c->have_last_epoch) {
        m.has |= KD_MET_LAST_EPOCH;
        m.last_epoch = c->last_epoch;
    }
    char *text = kd_metrics_encode(&m, NULL);
    if (text != NULL) {
        zmq_send(c->pub, text, strlen(text), ZMQ_DONTWAIT);
        free(text);
    }
    c->last_pub = kd_now();
}

void coord_write_summary(coord *c)
{
    if (c->cfg->summary_json == NULL)
        return;
    json_t *o = json_pack("{s:f, s:f, s:i, s:i, s:f, s:f, s:O, s:i}", "test_accuracy",
                          c->accuracy, "train_loss", c->train_loss, "epochs", c->epochs_done,
                          "agents", c->world, "samples_per_second",
                          c->train_seconds > 0 ? (double)c->samples_trained / c->train_seconds
                                               : 0.0,
                          "wall_seconds", kd_now() - c->t_start, "epoch_log", c->epoch_log,
                          "generation", (int)c->gen);
    if (o == NULL)
        return;
    json_object_set_new(o, "batch", json_integer(c->batch));
    if (c->adaptive_batch)
        json_object_set_new(o, "noise_scale", json_real(coord_batch_noise(c)));
    /* Whether the job has a checkpoint to resume from: written by this coordinator or
     * loaded at its start (c->saved), and whether the last write failed. */
    const char *dir = coord_checkpoint_dir(c);
    json_t *ck = json_pack("{s:s?, s:b, s:I, s:b}", "dir", dir, "saved", dir != NULL && c->saved,
                           "step", (json_int_t)(c->saved ? c->saved_step : 0), "failing",
                           c->ckpt_failing);
    if (ck != NULL && c->ckpt_failing)
        json_object_set_new(ck, "error", json_string(c->ckpt_error));
    json_object_set_new(o, "checkpoint", ck);
    /* What the coordinator refused: peers without the job key (handshake), and messages
     * of admitted peers that the checks of docs/security.md turned away. */
    kd_zap_stats zs;
    kd_zap_get_stats(c->zap, &zs);
    json_object_set_new(
        o, "security",
        json_pack("{s:b, s:I, s:I, s:I, s:I, s:I}", "authenticated", c->zap != NULL,
                  "refused_peers", (json_int_t)zs.refused, "refused_handshakes",
                  (json_int_t)zs.handshakes, "rejected_sender",
                  (json_int_t)kd_wire_drops(KD_WIRE_DROP_SENDER), "rejected_nonfinite",
                  (json_int_t)kd_wire_drops(KD_WIRE_DROP_NONFINITE), "dropped_messages",
                  (json_int_t)kd_wire_drops(KD_WIRE_DROP_COUNT)));
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", c->cfg->summary_json);
    if (json_dump_file(o, tmp, JSON_INDENT(2) | JSON_REAL_PRECISION(6)) != 0 ||
        rename(tmp, c->cfg->summary_json) != 0)
        KD_ERROR("coordinator: cannot write summary %s", c->cfg->summary_json);
    json_decref(o);
}

void coord_reject(coord *c, const member *mb, const char *what, kd_wire_drop_reason why)
{
    static int logged[KD_WIRE_DROP_COUNT][4];
    int kind = what[0] == 'S' ? 0 : what[0] == 'M' ? 1 : what[0] == 'R' ? 2 : 3;
    kd_wire_drop(why, "control");
    if (!logged[why][kind]) {
        logged[why][kind] = 1;
        KD_WARN("coordinator: refused %s from an authenticated peer name=%.*s rank=%d gen=%u "
                "reason=\"%s\" (further ones only counted)", what, (int)mb->ident_len,
                (const char *)mb->ident, mb->rank, c->gen, kd_wire_drop_name(why));
    }
}

void coord_on_metrics(coord *c, member *mb, const kd_ctl_msg *msg)
{
    long long ed;
    double acc, tl, trl, es;
    const json_t *b = msg->json;
    if (kd_wire_get_int(b, "epoch_done", 1, INT32_MAX, &ed) == 0) {
        if (kd_wire_get_num(b, "accuracy", 0, 1, &acc) != 0 ||
            kd_wire_get_num(b, "test_loss", 0, 1e30, &tl) != 0 ||
            kd_wire_get_num(b, "train_loss", 0, 1e30, &trl) != 0 ||
            kd_wire_get_num(b, "epoch_seconds", 0, 1e9, &es) != 0) {
            kd_wire_drop(KD_WIRE_DROP_FIELD, "control");
            return;
        }
        /* Rank 0 re-sends its latest report when it (re)joins: only a newer epoch counts. */
        if ((int)ed <= c->epochs_done)
            return;
        /* Only the rank that evaluates, in the current world, reports epochs; a report re-sent
         * with READY counts only before this coordinator formed a world (it restarted while
         * the agents trained on). An epoch is done only once the sender's position is past
         * it, and never beyond the job's epochs. */
        int evaluator = (mb->rank == 0 && msg->h.generation == c->gen) ||
                        (!c->formed && mb->ready && mb->rank < 0);
        if (!evaluator || ed > c->epochs || (uint64_t)ed > msg->h.epoch ||
            (mb->ready && (uint64_t)ed > mb->p.epoch && mb->rank < 0)) {
            coord_reject(c, mb, "METRICS (epoch report)", KD_WIRE_DROP_SENDER);
            return;
        }
        c->accuracy = acc;
        c->test_loss = tl;
        c->train_loss = trl;
        c->epochs_done = (int)ed;
        c->train_seconds += es;
        c->samples_trained += c->n_train;
        /* train_seconds counts from the first world, so that start-up and data loading
         * (seconds, and not the trainer's speed) stay out of time-to-accuracy. */
        kd_metrics_epoch rec = {.epoch = (int)ed, .accuracy = acc, .train_loss = trl,
                                .wall_seconds = kd_now() - c->t_start,
                                .train_seconds = kd_now() - c->t_first_world,
                                .epoch_seconds = es, .agents = c->world, .batch = c->batch};
        double lr;
        if (kd_wire_get_num(b, "lr", 0, 1e9, &lr) == 0) {
            rec.has |= KD_MET_EPOCH_LR;
            rec.lr = lr;
        }
        if (es > 0) {
            rec.has |= KD_MET_EPOCH_SAMPLES_PER_S;
            rec.samples_per_s = (double)c->n_train / es;
        }
        json_t *jr = kd_metrics_epoch_to_json(&rec);
        if (jr != NULL)
            json_array_append_new(c->epoch_log, jr);
        c->last_epoch = rec;
        c->have_last_epoch = 1;
        KD_INFO("coordinator: epoch done epoch=%lld accuracy=%.4f train_loss=%.4f agents=%d "
                "seconds=%.2f", ed, acc, trl, c->world, es);
        /* At once rather than at the next second: every epoch gets its progress line. */
        if (c->st != C_DONE)
            coord_publish(c, c->st == C_RUNNING ? "running"
                             : c->st == C_WAITING ? "waiting" : "rescaling");
        return;
    }
    if (mb->rank == 0 && msg->h.generation == c->gen) {
        coord_batch_observe(c, b);
        coord_configs_observe(c, b, kd_now());
        json_t *copy = json_deep_copy(b);
        json_object_set_new(copy, "epoch", json_integer(msg->h.epoch));
        json_object_set_new(copy, "step", json_integer((json_int_t)msg->h.step));
        json_decref(c->last_metrics);
        c->last_metrics = copy;
    }
}

int coord_load_checkpoint(coord *c)
{
    const char *dir = c->cfg->checkpoint_dir ? c->cfg->checkpoint_dir : c->job.checkpoint_path;
    if (dir == NULL)
        return KD_OK;
    kd_ckpt ck;
    const char *which = NULL;
    char err[512];
    int rc = kd_ckpt_load(dir, 0, &ck, &which, err, sizeof err);
    if (rc == KD_ENOTFOUND)
        return KD_OK;
    if (rc != KD_OK) {
        KD_WARN("coordinator: no usable checkpoint, starting fresh: %s", err);
        return KD_OK;
    }
    size_t n = ck.n_params + ck.n_state;
    c->state = malloc(n * sizeof(float));
    if (c->state == NULL) {
        kd_ckpt_free(&ck);
        return KD_ENOMEM;
    }
    kd_wire_floats_to_le(c->state, ck.params, ck.n_params);
    if (ck.n_state > 0)
        kd_wire_floats_to_le(c->state + ck.n_params, ck.state, ck.n_state);
    c->n_params = ck.n_params;
    c->n_state = ck.n_state;
    c->fingerprint = ck.fingerprint;
    c->have_state = 1;
    c->sp = (pos){ck.step, ck.epoch, ck.cursor};
    c->start = c->sp;
    c->gen = ck.generation;
    /* The last evaluation carries over: progress shows it before the next epoch ends,
     * and a job that was already complete reports it without any worker. */
    c->epochs_done = (int)ck.eval_epoch;
    c->accuracy = ck.accuracy;
    c->train_loss = ck.train_loss;
    coord_batch_restore(c, (int)ck.batch, ck.noise_g2, ck.noise_s);
    /* Nothing new to write until the state or the evaluation moves on. */
    c->saved = 1;
    c->saved_step = ck.step;
    c->saved_eval = c->epochs_done;
    KD_INFO("coordinator: resuming from checkpoint file=%s/%s step=%llu epoch=%u cursor=%llu "
            "evaluated_epoch=%u accuracy=%.4f format=%d", dir, which,
            (unsigned long long)ck.step, ck.epoch, (unsigned long long)ck.cursor,
            ck.eval_epoch, ck.accuracy, ck.format);
    if (c->range_log != NULL) {
        fprintf(c->range_log, "restart %u %llu\n", ck.epoch, (unsigned long long)ck.cursor);
        fflush(c->range_log);
    }
    kd_ckpt_free(&ck);
    return KD_OK;
}

