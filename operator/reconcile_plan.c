/*
 * reconcile_plan: the pure decision core of the AgentJob reconciler (see
 * reconcile_plan.h). The rules, in order of precedence:
 *   finished (Succeeded/Failed) > invalid spec > suspend > deadline > backoff limit >
 *   coordinator exited 0 > normal operation (ensure Service, coordinator, workers).
 * Failed pods are counted first (once each: rc_pod.counted), so a job that runs out
 * of backoff in this sync already sees the failure that pushed it over. They are not
 * deleted: they stay, for kubectl logs, until the job ends and cleanPodPolicy applies
 * (replacement workers get new numbers). The coordinator has one name (the Service's),
 * so a failed coordinator stays through its backoff and is deleted for its replacement.
 */
#include "reconcile_plan.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_error.h"

static const char *const phase_names[] = {"Pending", "Running", "Succeeded", "Failed",
                                          "Suspended"};

const char *rc_phase_name(rc_phase p)
{
    return (unsigned)p < 5 ? phase_names[p] : "Pending";
}

int rc_phase_parse(const char *name)
{
    for (int i = 0; name != NULL && i < 5; i++)
        if (strcmp(name, phase_names[i]) == 0)
            return i;
    return -1;
}

const char *rc_delete_why_name(rc_delete_why w)
{
    static const char *const n[] = {"scale down", "failed, replaced", "suspend",
                                    "cleanPodPolicy", "node lost"};
    return (unsigned)w < 5 ? n[w] : "?";
}

int rc_node_lost(const json_t *node)
{
    if (node == NULL)
        return 1;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(json_object_get(node, "status"), "conditions"), i, c)
    {
        const char *t = json_string_value(json_object_get(c, "type"));
        const char *st = json_string_value(json_object_get(c, "status"));
        if (t != NULL && strcmp(t, "Ready") == 0)
            return st == NULL || strcmp(st, "True") != 0;
    }
    return 1;
}

static void copy_str(char *dst, size_t len, const char *src)
{
    snprintf(dst, len, "%s", src != NULL ? src : "");
}

int rc_pod_from_json(const json_t *pod, const char *job, rc_pod *out)
{
    memset(out, 0, sizeof *out);
    const json_t *md = json_object_get(pod, "metadata");
    const json_t *labels = json_object_get(md, "labels");
    const char *jn = json_string_value(json_object_get(labels, "kadet.io/job-name"));
    const char *role = json_string_value(json_object_get(labels, "kadet.io/role"));
    const char *name = json_string_value(json_object_get(md, "name"));
    if (jn == NULL || role == NULL || name == NULL || strcmp(jn, job) != 0)
        return 0;
    if (strcmp(role, "coordinator") == 0) {
        out->coordinator = 1;
        out->index = -1;
    } else if (strcmp(role, "worker") == 0) {
        /* The number is the name's suffix: labels can be edited, names cannot. */
        const char *dash = strrchr(name, '-');
        char *end = NULL;
        long idx = dash != NULL ? strtol(dash + 1, &end, 10) : -1;
        out->index = end != NULL && end != dash + 1 && *end == '\0' && idx >= 0 ? idx : -1;
    } else {
        return 0;
    }
    copy_str(out->name, sizeof out->name, name);
    copy_str(out->uid, sizeof out->uid, json_string_value(json_object_get(md, "uid")));
    out->deleting = json_object_get(md, "deletionTimestamp") != NULL &&
                    !json_is_null(json_object_get(md, "deletionTimestamp"));
    const json_t *st = json_object_get(pod, "status");
    const char *phase = json_string_value(json_object_get(st, "phase"));
    out->state = RC_POD_PENDING;
    if (phase != NULL && strcmp(phase, "Running") == 0)
        out->state = RC_POD_RUNNING;
    else if (phase != NULL && strcmp(phase, "Succeeded") == 0)
        out->state = RC_POD_SUCCEEDED;
    else if (phase != NULL && strcmp(phase, "Failed") == 0)
        out->state = RC_POD_FAILED;
    copy_str(out->ip, sizeof out->ip, json_string_value(json_object_get(st, "podIP")));
    out->ready = out->state == RC_POD_RUNNING;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(st, "conditions"), i, c)
    {
        const char *t = json_string_value(json_object_get(c, "type"));
        const char *s = json_string_value(json_object_get(c, "status"));
        if (t != NULL && s != NULL && strcmp(t, "Ready") == 0 && strcmp(s, "False") == 0)
            out->ready = 0;
    }
    json_array_foreach(json_object_get(st, "containerStatuses"), i, c)
    {
        const json_t *term = json_object_get(json_object_get(c, "state"), "terminated");
        if (json_is_object(term) && i == 0) {
            out->exit_code = (int)json_integer_value(json_object_get(term, "exitCode"));
            rc_message_line(json_string_value(json_object_get(term, "message")), out->message,
                            sizeof out->message);
        }
    }
    return 1;
}

void rc_message_line(const char *text, char *out, size_t n)
{
    if (n == 0)
        return;
    out[0] = '\0';
    if (text == NULL)
        return;
    /* A termination message may be the end of a log: keep its last non-empty line, the
     * one that says why (kadet writes one line; a crash leaves its last words last). */
    const char *start = text, *end = text + strlen(text);
    while (end > text && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' '))
        end--;
    for (const char *q = text; q < end; q++)
        if (*q == '\n')
            start = q + 1;
    size_t k = 0;
    for (const char *q = start; q < end && k + 1 < n; q++)
        out[k++] = (*q == '\t' || *q == '\r') ? ' ' : *q;
    /* Cut on a character boundary: half a UTF-8 sequence is not valid JSON text. */
    if (start + k < end)
        while (k > 0 && ((unsigned char)start[k] & 0xC0) == 0x80)
            k--;
    out[k] = '\0';
}

double rc_backoff_delay(int failures)
{
    if (failures <= 0)
        return 0;
    double d = RC_BACKOFF_BASE_S;
    for (int i = 1; i < failures && d < RC_BACKOFF_MAX_S; i++)
        d *= 2;
    return d < RC_BACKOFF_MAX_S ? d : RC_BACKOFF_MAX_S;
}

static void add_cond(rc_plan *p, const char *type, int status, const char *reason,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void add_cond(rc_plan *p, const char *type, int status, const char *reason,
                     const char *fmt, ...)
{
    if (p->n_cond >= RC_COND_MAX)
        return;
    rc_condition *c = &p->cond[p->n_cond++];
    c->type = type;
    c->status = status;
    c->reason = reason;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->message, sizeof c->message, fmt, ap);
    va_end(ap);
}

static void set_event(rc_plan *p, const char *reason, int warning, const char *msg)
{
    p->event_reason = reason;
    p->event_warning = warning;
    copy_str(p->event_message, sizeof p->event_message, msg);
}

/* Adds pod i to the deletions unless it is there already (a failed pod is also a
 * cleanPodPolicy All candidate): at most one entry per pod, so n_pods entries suffice. */
static void del(rc_plan *p, size_t i, rc_delete_why why)
{
    for (size_t k = 0; k < p->n_delete; k++)
        if (p->del[k] == i)
            return;
    p->del[p->n_delete] = i;
    p->why[p->n_delete] = why;
    p->n_delete++;
}

static int live(const rc_pod *pod)
{
    return !pod->deleting && !pod->node_lost &&
           (pod->state == RC_POD_PENDING || pod->state == RC_POD_RUNNING);
}

/* cleanPodPolicy on a finished job. */
static void cleanup(const rc_input *in, rc_plan *p)
{
    for (size_t i = 0; i < in->n_pods; i++) {
        const rc_pod *pod = &in->pods[i];
        if (pod->deleting || in->clean == RC_CLEAN_NONE)
            continue;
        if (in->clean == RC_CLEAN_ALL || live(pod))
            del(p, i, RC_DEL_CLEANUP);
    }
}

static void finish(const rc_input *in, rc_plan *p, rc_phase phase, const char *reason,
                   const char *msg)
{
    p->phase = phase;
    p->set_completion = in->completion_time <= 0;
    int ok = phase == RC_SUCCEEDED;
    add_cond(p, "Running", 0, reason, "%s", msg);
    add_cond(p, ok ? "Succeeded" : "Failed", 1, reason, "%s", msg);
    if (!in->has_phase || in->phase != phase)
        set_event(p, ok ? "Succeeded" : "Failed", !ok, msg);
    cleanup(in, p);
}

static int cmp_index_desc(const void *a, const void *b, const rc_pod *pods)
{
    long x = pods[*(const size_t *)a].index, y = pods[*(const size_t *)b].index;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Newest first (highest index), by insertion sort: a job has at most a few hundred pods. */
static void sort_newest_first(size_t *idx, size_t n, const rc_pod *pods)
{
    for (size_t i = 1; i < n; i++) {
        size_t v = idx[i], j = i;
        while (j > 0 && cmp_index_desc(&idx[j - 1], &v, pods) > 0) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = v;
    }
}

static int clamp_desired(const rc_input *in)
{
    int d;
    if (in->pin > 0)
        d = in->pin;
    else if (in->sched_desired >= 0)
        d = in->sched_desired;
    else if (in->status_desired > 0)
        d = in->status_desired; /* a restarted operator keeps what it had decided (0 is
                                   what suspend leaves behind, not a decision) */
    else
        d = in->min;
    if (d == 0 && in->pin <= 0)
        return 0;
    return d < in->min ? in->min : d > in->max ? in->max : d;
}

int rc_plan_compute(const rc_input *in, rc_plan *p)
{
    memset(p, 0, sizeof *p);
    p->event_reason = "";
    p->act = 1;
    p->phase = in->has_phase ? in->phase : RC_PENDING;
    p->failures = in->failures;
    p->desired = in->status_desired > 0 ? in->status_desired : 0;
    size_t n = in->n_pods > 0 ? in->n_pods : 1;
    p->del = calloc(n, sizeof *p->del);
    p->why = calloc(n, sizeof *p->why);
    p->counted = calloc(n, sizeof *p->counted);
    if (p->del == NULL || p->why == NULL || p->counted == NULL)
        return KD_ENOMEM;

    const rc_pod *coord = NULL;
    int workers_live = 0, workers_ready = 0, workers_done = 0, workers_alive = 0;
    long max_index = -1;
    for (size_t i = 0; i < in->n_pods; i++) {
        const rc_pod *pod = &in->pods[i];
        if (pod->coordinator) {
            /* A failed coordinator (kept until its replacement is due) is the one seen
             * only when there is no other. */
            if (coord == NULL || (coord->deleting && !pod->deleting) ||
                (coord->state == RC_POD_FAILED && pod->state != RC_POD_FAILED))
                coord = pod;
            continue;
        }
        if (pod->index > max_index)
            max_index = pod->index;
        if (live(pod))
            workers_live++;
        if (live(pod) && pod->ready)
            workers_ready++;
        if (!pod->deleting && pod->state == RC_POD_SUCCEEDED)
            workers_done++;
        if (pod->state == RC_POD_PENDING || pod->state == RC_POD_RUNNING)
            workers_alive++;
    }
    p->ready = workers_ready;

    /* 1. Finished jobs only clean up and expire. A job Failed for an invalid spec is
     * not finished for good: fixing the spec starts it. */
    int terminal = in->has_phase && (in->phase == RC_SUCCEEDED || in->phase == RC_FAILED) &&
                   !(in->phase == RC_FAILED && in->failed_invalid && in->valid);
    if (terminal) {
        p->ready = 0;
        cleanup(in, p);
        if (in->ttl_s >= 0) {
            double done = in->completion_time > 0 ? in->completion_time : in->now;
            double left = done + (double)in->ttl_s - in->now;
            if (left <= 0)
                p->delete_job = 1;
            else
                p->requeue_s = left;
        }
        if (in->completion_time <= 0)
            p->set_completion = 1;
        return KD_OK;
    }

    /* 2. Invalid spec: report, never act on it, never retry (the user must edit). */
    if (!in->valid) {
        add_cond(p, "Valid", 0, "InvalidSpec", "%s",
                 in->invalid_msg != NULL ? in->invalid_msg : "invalid spec");
        p->act = 0;
        if (in->start_time <= 0) {
            p->phase = RC_FAILED;
            add_cond(p, "Failed", 1, "InvalidSpec", "the spec is invalid: %s",
                     in->invalid_msg != NULL ? in->invalid_msg : "");
        }
        set_event(p, "InvalidSpec", 1, in->invalid_msg != NULL ? in->invalid_msg : "");
        return KD_OK;
    }
    /* A job's own policy is what `kadet run` uses; on a cluster one policy arbitrates
     * the shared capacity. Say so where the user looks, rather than ignore it silently. */
    /* Unknown fields (where the schema keeps them) are ignored, but named: a misspelt
     * field would otherwise silently leave its default. */
    char unknown[300] = "";
    if (in->unknown_fields != NULL && in->unknown_fields[0] != '\0')
        snprintf(unknown, sizeof unknown, "; unknown fields ignored: %s", in->unknown_fields);
    if (in->spec_policy != NULL && in->sched_policy != NULL &&
        strcmp(in->spec_policy, in->sched_policy) != 0)
        add_cond(p, "Valid", 1, "SpecValid",
                 "the spec is valid; the cluster's scheduling policy %s decides for every job "
                 "(spec.scheduling.policy %s is used by kadet run)%s", in->sched_policy,
                 in->spec_policy, unknown);
    else
        add_cond(p, "Valid", 1, "SpecValid", "the spec is valid%s", unknown);
    if (in->has_phase && in->phase == RC_FAILED && in->failed_invalid)
        add_cond(p, "Failed", 0, "SpecValid", "the spec was corrected");
    /* PolicyHonored: whether spec.scheduling.policy is the one deciding (issue 16 part 6;
     * one cluster policy allocates the shared capacity, docs/operator.md section 4). */
    if (in->spec_policy != NULL && in->sched_policy != NULL) {
        if (strcmp(in->spec_policy, in->sched_policy) != 0)
            add_cond(p, "PolicyHonored", 0, "ClusterPolicy",
                     "spec.scheduling.policy %s is ignored: the cluster's policy %s allocates "
                     "the shared capacity for every job in one decision (kadet run uses %s)",
                     in->spec_policy, in->sched_policy, in->spec_policy);
        else
            add_cond(p, "PolicyHonored", 1, "ClusterPolicy",
                     "spec.scheduling.policy %s is the cluster's policy", in->spec_policy);
    }

    /* Failed pods are counted whatever happens next, each once; they stay (kubectl logs)
     * until the job ends. A pod we deleted (scale down, suspend) that then reports Failed
     * is not a failure. */
    const rc_pod *failed = NULL; /* one that failed now, with a message if any has one */
    for (size_t i = 0; i < in->n_pods; i++) {
        /* A pod that lost its node is gone with it, whatever its last status says: it is
         * replaced and not counted against backoffLimit (the job did nothing wrong). */
        if (!in->pods[i].deleting && in->pods[i].node_lost &&
            in->pods[i].state != RC_POD_SUCCEEDED) {
            del(p, i, RC_DEL_NODE_LOST);
            continue;
        }
        if (!in->pods[i].deleting && in->pods[i].state == RC_POD_FAILED &&
            !in->pods[i].counted) {
            p->counted[p->new_failures++] = i;
            if (failed == NULL || (failed->message[0] == '\0' && in->pods[i].message[0]))
                failed = &in->pods[i];
        }
    }
    p->failures = in->failures + p->new_failures;

    /* 3. Suspend: workers go first, the coordinator once they are gone (it writes its
     * final checkpoint on SIGTERM). */
    if (in->suspend) {
        p->phase = RC_SUSPENDED;
        p->desired = 0;
        p->ready = 0;
        for (size_t i = 0; i < in->n_pods; i++)
            if (!in->pods[i].coordinator && live(&in->pods[i]))
                del(p, i, RC_DEL_SUSPEND);
        if (workers_alive == 0 && coord != NULL && live(coord))
            del(p, (size_t)(coord - in->pods), RC_DEL_SUSPEND);
        add_cond(p, "Suspended", 1, "Suspended", "runPolicy.suspend is true");
        add_cond(p, "Running", 0, "Suspended", "the job is suspended");
        if (!in->has_phase || in->phase != RC_SUSPENDED)
            set_event(p, "Suspended", 0, "job suspended: agent pods deleted");
        return KD_OK;
    }
    if (in->has_phase && in->phase == RC_SUSPENDED) {
        add_cond(p, "Suspended", 0, "Resumed", "runPolicy.suspend is false");
        set_event(p, "Resumed", 0, "job resumed");
    }

    /* 4. Deadline and backoff. */
    if (in->active_deadline_s > 0 && in->start_time > 0) {
        double left = in->start_time + (double)in->active_deadline_s - in->now;
        if (left <= 0) {
            char msg[128];
            snprintf(msg, sizeof msg, "the job ran longer than activeDeadlineSeconds (%lld s)",
                     (long long)in->active_deadline_s);
            finish(in, p, RC_FAILED, "DeadlineExceeded", msg);
            return KD_OK;
        }
        p->requeue_s = left;
    }
    if (p->failures > in->backoff_limit) {
        char msg[1024]; /* the condition keeps RC_MSG_MAX of it */
        /* The cause, not only the count: the last failed pod's own words. */
        if (failed != NULL && failed->message[0] != '\0')
            snprintf(msg, sizeof msg,
                     "%d agent pod failures exceed backoffLimit %d; the last, pod %s (exit "
                     "code %d): %s",
                     p->failures, in->backoff_limit, failed->name, failed->exit_code,
                     failed->message);
        else if (failed == NULL && in->last_failure != NULL && in->last_failure[0] != '\0')
            snprintf(msg, sizeof msg, "%d agent pod failures exceed backoffLimit %d; the last: %s",
                     p->failures, in->backoff_limit, in->last_failure);
        else
            snprintf(msg, sizeof msg, "%d agent pod failures exceed backoffLimit %d",
                     p->failures, in->backoff_limit);
        finish(in, p, RC_FAILED, "BackoffLimitExceeded", msg);
        return KD_OK;
    }

    /* 5. The coordinator exiting 0 is the end of training. */
    if (coord != NULL && !coord->deleting && coord->state == RC_POD_SUCCEEDED) {
        p->ready = 0;
        finish(in, p, RC_SUCCEEDED, "Completed", "training finished: the coordinator exited 0");
        return KD_OK;
    }

    /* 6. Normal operation. After a failure, replacements wait (10 s doubling per
     * failure, capped, as the Job controller backs off) so that a pod that cannot start
     * does not burn the whole backoffLimit within a second. */
    p->desired = clamp_desired(in);
    p->create_service = !in->have_service;
    /* The first pods only once the policy decided how many: a job that must wait gets no
     * pod at all rather than one deleted a moment later (a job whose spec.replicas pins
     * the count has nothing to wait for). Should no decision come (a
     * scheduler host that fails), the job starts at agents.min after RC_SCHED_WAIT_S. */
    if (in->await_sched && in->pin <= 0 && in->sched_desired < 0 && in->status_desired < 0 &&
        !(in->created_time > 0 && in->now - in->created_time >= RC_SCHED_WAIT_S)) {
        p->awaiting = 1;
        p->desired = 0;
        p->phase = RC_PENDING;
        double left = in->created_time > 0 ? in->created_time + RC_SCHED_WAIT_S - in->now
                                           : RC_SCHED_WAIT_S;
        if (p->requeue_s <= 0 || left < p->requeue_s)
            p->requeue_s = left > 0.5 ? left : 0.5;
        add_cond(p, "Running", 0, "AwaitingScheduler",
                 "waiting for the scheduler's first decision (how many agents)");
        return KD_OK;
    }
    double failed_at = p->new_failures > 0 ? in->now : in->last_failure_time;
    double wait = p->failures > 0 && failed_at > 0
                      ? failed_at + rc_backoff_delay(p->failures) - in->now : 0;
    if (wait > 0) {
        p->backoff = 1;
        if (p->requeue_s <= 0 || wait < p->requeue_s)
            p->requeue_s = wait;
    }
    /* A job the scheduler queued (no agent) starts no coordinator either. */
    p->create_coordinator = coord == NULL && !p->backoff && p->desired > 0;
    /* The failed coordinator's name is its replacement's: it goes when that is due (the
     * replacement is created by the sync that sees it gone). */
    if (coord != NULL && coord->state == RC_POD_FAILED && !coord->deleting && !p->backoff)
        del(p, (size_t)(coord - in->pods), RC_DEL_FAILED);
    int coord_up = coord != NULL && coord->state != RC_POD_FAILED;
    int created = p->create_service || p->create_coordinator;
    /* A worker that exited 0 unasked got DONE from the coordinator: the job is finishing,
     * so no replacements are started. */
    if (workers_live < p->desired && workers_done == 0 && !p->backoff) {
        p->n_create = p->desired - workers_live;
        p->first_index = max_index + 1;
        created = 1;
    } else if (workers_live > p->desired) {
        size_t *order = calloc(in->n_pods, sizeof *order);
        if (order == NULL)
            return KD_ENOMEM;
        size_t k = 0;
        for (size_t i = 0; i < in->n_pods; i++)
            if (!in->pods[i].coordinator && live(&in->pods[i]))
                order[k++] = i;
        sort_newest_first(order, k, in->pods);
        for (int j = 0; j < workers_live - p->desired; j++)
            del(p, order[j], RC_DEL_SCALE_DOWN);
        free(order);
        if (p->ready > p->desired)
            p->ready = p->desired;
    }
    if (created && in->start_time <= 0)
        p->set_start = 1;
    int coord_running = coord != NULL && !coord->deleting && !coord->node_lost &&
                        coord->state == RC_POD_RUNNING;
    if (p->desired == 0) {
        p->phase = RC_PENDING;
        add_cond(p, "Running", 0, "WaitingForCapacity",
                 "no room for agents in the cluster; the scheduler queued the job");
    } else if (coord_running && workers_ready > 0) {
        p->phase = RC_RUNNING;
        add_cond(p, "Running", 1, "Training", "%d of %d agents ready", p->ready, p->desired);
    } else if (p->backoff && (!coord_up || workers_live < p->desired)) {
        p->phase = RC_PENDING;
        add_cond(p, "Running", 0, "BackOff",
                 "replacing the failed pods in %.0f s (failure %d of backoffLimit %d)",
                 wait, p->failures, in->backoff_limit);
    } else {
        /* A job that ran and lost its pods (failures, restart) shows Pending again until
         * they are back: the printer column tells the truth. */
        p->phase = RC_PENDING;
        add_cond(p, "Running", 0, "Starting", "waiting for the coordinator and %d agents",
                 p->desired);
    }
    return KD_OK;
}

void rc_plan_free(rc_plan *p)
{
    if (p == NULL)
        return;
    free(p->del);
    free(p->why);
    free(p->counted);
    p->del = NULL;
    p->why = NULL;
    p->counted = NULL;
    p->n_delete = 0;
    p->new_failures = 0;
}

rc_ckpt_state rc_ckpt_parse(const char *text)
{
    if (text == NULL)
        return RC_CKPT_UNKNOWN;
    if (strcmp(text, "none") == 0)
        return RC_CKPT_NONE;
    if (strcmp(text, "ok") == 0)
        return RC_CKPT_OK;
    if (strcmp(text, "failing") == 0)
        return RC_CKPT_FAILING;
    return RC_CKPT_UNKNOWN;
}

int rc_plan_checkpoint(rc_ckpt_state st, const char *error, int was_failing, rc_condition *out,
                       int *warn)
{
    *warn = 0;
    memset(out, 0, sizeof *out);
    out->type = "CheckpointFailing";
    if (st == RC_CKPT_FAILING) {
        out->status = 1;
        out->reason = "CheckpointWriteFailed";
        snprintf(out->message, sizeof out->message,
                 "checkpoints cannot be written: %s; training goes on, but a restarted or "
                 "resumed job starts from an older checkpoint or from epoch 0 (mount a volume "
                 "at spec.checkpoint.path)",
                 error != NULL && error[0] != '\0' ? error : "no detail");
        *warn = !was_failing;
        return 1;
    }
    if (st == RC_CKPT_OK) {
        out->status = 0;
        out->reason = "CheckpointsWritten";
        snprintf(out->message, sizeof out->message, "%s",
                 was_failing ? "checkpoints are written again" : "checkpoints are written");
        return 1;
    }
    return 0;
}
