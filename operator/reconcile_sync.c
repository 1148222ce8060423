/*
 * reconcile_sync: one sync of one AgentJob key. Gathers rc_input from the informer
 * caches (the job, the pods and Service it controls, the scheduler's decision), computes
 * the plan, executes it (create, delete, Events) and writes the status through the status
 * subresource: a merge patch carrying the resourceVersion the sync read, so a concurrent
 * change (kubectl scale, another writer) makes it fail with a conflict and the key is
 * retried against the fresher cache. Cached objects are never modified: the status is
 * built as a new object from the cached one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobkeys.h"
#include "kd_error.h"
#include "kd_log.h"
#include "kd_spec.h"
#include "podspec.h"
#include "reconcile_int.h"
#include "reconcile_plan.h"

/* --- Events ------------------------------------------------------------------------- */

/* Records a core/v1 Event about the job. Best effort: a failure is logged, not retried
 * (a missing Event must not stop the job). */
static void record_event(rc_controller *c, const json_t *job, int warning, const char *reason,
                         const char *message)
{
    const json_t *md = json_object_get(job, "metadata");
    const char *ns = json_string_value(json_object_get(md, "namespace"));
    const char *name = json_string_value(json_object_get(md, "name"));
    char gen[240], now[40];
    snprintf(gen, sizeof gen, "%.200s.", name != NULL ? name : "agentjob");
    rc_format_time(rc_now(), now, sizeof now);
    json_t *ev = json_pack(
        "{s:s, s:s, s:{s:s, s:s}, s:{s:s, s:s, s:O?, s:O?, s:O?}, s:s, s:s, s:s, s:{s:s},"
        " s:s, s:s, s:i, s:s}",
        "apiVersion", "v1", "kind", "Event", "metadata", "generateName", gen, "namespace", ns,
        "involvedObject", "apiVersion", KD_SPEC_API_VERSION, "kind", KD_SPEC_KIND, "name",
        json_object_get(md, "name"), "namespace", json_object_get(md, "namespace"), "uid",
        json_object_get(md, "uid"), "reason", reason, "message", message, "type",
        warning ? "Warning" : "Normal", "source", "component", "kadet-operator",
        "firstTimestamp", now, "lastTimestamp", now, "count", 1, "reportingComponent",
        "kadet-operator");
    if (ev == NULL)
        return;
    kube_error e;
    int rc = kube_create(c->opt.client, &KUBE_EVENTS, ns, ev, NULL, &e);
    if (rc != KD_OK)
        KD_WARN("event not recorded job=%s/%s reason=%s err=\"%s\"", ns, name, reason,
                e.message);
    json_decref(ev);
}

/* --- gathering ------------------------------------------------------------------------ */

static int owned_by(const json_t *obj, const char *uid)
{
    size_t i;
    json_t *ref;
    json_array_foreach(json_object_get(json_object_get(obj, "metadata"), "ownerReferences"), i,
                       ref)
    {
        const char *u = json_string_value(json_object_get(ref, "uid"));
        if (u != NULL && strcmp(u, uid) == 0 && json_is_true(json_object_get(ref, "controller")))
            return 1;
    }
    return 0;
}

/* 1 when the failed pod `uid` is counted already: listed in status.failedPods
 * (`counted`, the status as cached) or counted by this operator (a cache that has not
 * seen that status write yet). */
static int was_counted(rc_controller *c, const char *key, const json_t *counted,
                       const char *uid)
{
    size_t i;
    json_t *e;
    if (uid[0] == '\0')
        return 0;
    json_array_foreach(counted, i, e)
    {
        const char *u = json_string_value(json_object_get(e, "uid"));
        if (u != NULL && strcmp(u, uid) == 0)
            return 1;
    }
    int found = 0;
    pthread_mutex_lock(&c->mu);
    rc_jobstate *s = kube_map_get(c->jobs, key);
    for (int k = 0; s != NULL && k < RC_COUNTED_MAX && !found; k++)
        found = strcmp(s->counted[k], uid) == 0;
    pthread_mutex_unlock(&c->mu);
    return found;
}

/* Remembers that worker pod `name` was created (it is expected in the cache). */
static void expect_created(rc_controller *c, const char *key, const char *name, long index,
                           double now)
{
    pthread_mutex_lock(&c->mu);
    rc_jobstate *s = kube_map_get(c->jobs, key);
    if (s != NULL) {
        int slot = 0;
        for (int i = 0; i < RC_CREATED_MAX; i++) {
            if (s->created_at[i] <= 0) {
                slot = i;
                break;
            }
            if (s->created_at[i] < s->created_at[slot])
                slot = i;
        }
        snprintf(s->created[slot], sizeof s->created[slot], "%s", name);
        s->created_index[slot] = index;
        s->created_at[slot] = now;
    }
    pthread_mutex_unlock(&c->mu);
}

/* Forgets the expectation of `name` (we deleted it before the cache showed it). */
static void forget_created(rc_controller *c, const char *key, const char *name)
{
    pthread_mutex_lock(&c->mu);
    rc_jobstate *s = kube_map_get(c->jobs, key);
    for (int i = 0; s != NULL && i < RC_CREATED_MAX; i++)
        if (s->created_at[i] > 0 && strcmp(s->created[i], name) == 0)
            s->created_at[i] = 0;
    pthread_mutex_unlock(&c->mu);
}

/* Adds the worker pods we created that the cache does not show yet, as pending pods
 * without a uid, so that the plan counts them (no second replacement under the next
 * number); an expectation ends when the cache shows the pod, or after
 * RC_CREATED_TTL_S. */
static int add_expected(rc_controller *c, const char *key, double now, rc_pod **pods, size_t *n,
                        size_t *cap)
{
    int rc = KD_OK;
    pthread_mutex_lock(&c->mu);
    rc_jobstate *s = kube_map_get(c->jobs, key);
    for (int i = 0; s != NULL && i < RC_CREATED_MAX; i++) {
        if (s->created_at[i] <= 0)
            continue;
        int seen = now - s->created_at[i] > RC_CREATED_TTL_S;
        for (size_t k = 0; k < *n && !seen; k++)
            seen = strcmp((*pods)[k].name, s->created[i]) == 0;
        if (seen) {
            s->created_at[i] = 0;
            continue;
        }
        if (*n == *cap) {
            size_t nc = *cap ? *cap * 2 : 8;
            rc_pod *np = realloc(*pods, nc * sizeof *np);
            if (np == NULL) {
                rc = KD_ENOMEM;
                break;
            }
            *pods = np;
            *cap = nc;
        }
        rc_pod *rp = &(*pods)[(*n)++];
        memset(rp, 0, sizeof *rp);
        snprintf(rp->name, sizeof rp->name, "%s", s->created[i]);
        rp->index = s->created_index[i];
        rp->state = RC_POD_PENDING;
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* 1 when the pod is bound to a node that the node cache no longer holds or that is not
 * Ready (docs/operator.md "Node changes"); 0 when unbound, or without a synced node cache. */
static int pod_node_lost(rc_controller *c, const json_t *pod)
{
    const char *node = json_string_value(json_object_get(json_object_get(pod, "spec"), "nodeName"));
    if (node == NULL || node[0] == '\0' || c->caches.nodes == NULL ||
        !informer_has_synced(c->caches.nodes))
        return 0;
    json_t *obj = informer_get(c->caches.nodes, node);
    int lost = rc_node_lost(obj);
    json_decref(obj);
    return lost;
}

/* The job's pods from the pod cache (pods of an older job of the same name are not its:
 * the garbage collector removes them); `counted` is the cached status.failedPods.
 * *pods is malloc'ed. */
static int gather_pods(rc_controller *c, const char *key, const char *ns, const char *name,
                       const char *uid, const json_t *counted, double now, rc_pod **pods,
                       size_t *n)
{
    *pods = NULL;
    *n = 0;
    json_t *all = c->caches.pods != NULL ? informer_list(c->caches.pods) : json_array();
    if (all == NULL)
        return KD_ENOMEM;
    size_t cap = 0, i;
    json_t *p;
    int rc = KD_OK;
    json_array_foreach(all, i, p)
    {
        const char *pns =
            json_string_value(json_object_get(json_object_get(p, "metadata"), "namespace"));
        if (pns == NULL || strcmp(pns, ns) != 0 || !owned_by(p, uid))
            continue;
        if (*n == cap) {
            size_t nc = cap ? cap * 2 : 8;
            rc_pod *np = realloc(*pods, nc * sizeof *np);
            if (np == NULL) {
                rc = KD_ENOMEM;
                break;
            }
            *pods = np;
            cap = nc;
        }
        if (rc_pod_from_json(p, name, &(*pods)[*n])) {
            rc_pod *rp = &(*pods)[*n];
            if (!rp->deleting && rc_was_deleted(c, key, rp->uid, now))
                rp->deleting = 1;
            rp->counted = rp->state == RC_POD_FAILED && was_counted(c, key, counted, rp->uid);
            rp->node_lost = pod_node_lost(c, p);
            (*n)++;
        }
    }
    json_decref(all);
    if (rc == KD_OK)
        rc = add_expected(c, key, now, pods, n, &cap);
    return rc;
}

static int have_service(rc_controller *c, const char *ns, const char *name)
{
    char svc[PODSPEC_NAME_MAX], key[PODSPEC_NAME_MAX + 80];
    if (podspec_coordinator_name(name, svc, sizeof svc) != KD_OK)
        return 0;
    snprintf(key, sizeof key, "%s/%s", ns, svc);
    for (size_t i = 0; i < c->caches.n_services; i++) {
        json_t *s = informer_get(c->caches.services[i], key);
        if (s != NULL) {
            json_decref(s);
            return 1;
        }
    }
    return 0;
}

static int int_or(const json_t *v, int dflt)
{
    return json_is_integer(v) ? (int)json_integer_value(v) : dflt;
}

/* --- execution ------------------------------------------------------------------------ */

typedef struct sync_ctx {
    rc_controller *c;
    const char *key, *ns, *name;
    const json_t *job;
    const kd_agentjob *spec;
    int failures_counted;   /* failed pods counted by this sync (plan.counted) */
    const rc_pod *last_failed; /* the last of them (with a message, if one has it) */
    char scaled_msg[640];   /* the Scaled event, sent once the status recording it is
                               written (a conflict retries the sync: no duplicate) */
    char ckpt_msg[RC_MSG_MAX]; /* the CheckpointFailing Warning event, likewise */
} sync_ctx;

static int create_obj(sync_ctx *x, const kube_resource *r, json_t *obj, const char *what)
{
    kube_error e;
    const char *oname = json_string_value(json_object_get(json_object_get(obj, "metadata"), "name"));
    int rc = kube_create(x->c->opt.client, r, x->ns, obj, NULL, &e);
    if (rc == KD_EEXISTS)
        return KD_OK; /* the cache had not seen it yet: deterministic names, no duplicate */
    if (rc != KD_OK) {
        KD_WARN("create failed job=%s object=%s err=\"%s\"", x->key, oname, e.message);
        return rc;
    }
    char msg[400];
    snprintf(msg, sizeof msg, "created %s %s", what, oname);
    KD_INFO("created job=%s %s=%s", x->key, what, oname);
    record_event(x->c, x->job, 0, "Created", msg);
    return KD_OK;
}

/* The job's key Secret and NetworkPolicy, before any of its pods is created (a pod whose
 * Secret is missing would wait for it). Creating what exists is a no-op (409), so this
 * runs whenever pods are created and also restores a deleted Secret or policy; the key is
 * derived from the operator's key and the job's uid (jobkeys_derive), so a restored
 * Secret holds the same key as the running pods. */
static int ensure_security_objects(sync_ctx *x)
{
    const podspec_options *o = &x->c->opt.podspec;
    char err[512] = "";
    json_t *obj = NULL;
    int rc = KD_OK;
    if (o->keys) {
        jobkeys_pair kp, op;
        memset(&kp, 0, sizeof kp);
        memset(&op, 0, sizeof op);
        rc = x->c->opt.operator_keys != NULL
                 ? jobkeys_cache_get(x->c->opt.operator_keys, x->c->opt.client, &op, err,
                                     sizeof err)
                 : KD_OK;
        if (rc == KD_OK && x->c->opt.operator_keys != NULL)
            rc = jobkeys_derive(&op, json_string_value(json_object_get(
                                         json_object_get(x->job, "metadata"), "uid")),
                                &kp, err, sizeof err);
        else if (rc == KD_OK)
            rc = jobkeys_generate(&kp, err, sizeof err);
        if (rc == KD_OK)
            rc = podspec_keys_secret(x->job, x->spec, kp.pub, kp.sec, op.pub, &obj, err,
                                     sizeof err);
        memset(&kp, 0, sizeof kp);
        memset(&op, 0, sizeof op);
        if (rc == KD_OK)
            rc = create_obj(x, &KUBE_SECRETS, obj, "Secret");
        else
            KD_WARN("no key Secret job=%s err=\"%s\"", x->key, err);
        json_decref(obj);
        obj = NULL;
        if (rc != KD_OK)
            return rc;
    }
    if (o->network_policy) {
        rc = podspec_network_policy(x->job, x->spec, o, &obj, err, sizeof err);
        if (rc == KD_OK)
            rc = create_obj(x, &KUBE_NETWORKPOLICIES, obj, "NetworkPolicy");
        else
            KD_WARN("no NetworkPolicy job=%s err=\"%s\"", x->key, err);
        json_decref(obj);
    }
    return rc;
}

static int execute(sync_ctx *x, const rc_input *in, const rc_plan *p)
{
    rc_controller *c = x->c;
    char err[512];
    int first_err = KD_OK;
    json_t *obj = NULL;
    /* The failed pods this sync counts: they stay; their Warning events are sent once
     * the status that counts them is written. */
    for (int i = 0; i < p->new_failures; i++) {
        const rc_pod *pod = &in->pods[p->counted[i]];
        x->failures_counted++;
        if (x->last_failed == NULL || pod->message[0] != '\0')
            x->last_failed = pod;
    }
    /* Deletions first. */
    for (size_t i = 0; i < p->n_delete; i++) {
        const rc_pod *pod = &in->pods[p->del[i]];
        kube_delete_opts dopt = {.precondition_uid = pod->uid[0] ? pod->uid : NULL};
        if (p->why[i] == RC_DEL_NODE_LOST) {
            /* No kubelet will confirm a graceful delete on a lost node: remove the object
             * now (as kubectl delete --force), so the replacement is not held back. */
            dopt.set_grace = 1;
            dopt.grace_period_s = 0;
        }
        kube_error e;
        if (pod->uid[0] == '\0')
            forget_created(c, x->key, pod->name); /* one we created, not yet cached */
        int rc = kube_delete(c->opt.client, &KUBE_PODS, x->ns, pod->name, &dopt, NULL, &e);
        if (rc == KD_ENOTFOUND || rc == KD_ECONFLICT)
            continue; /* already gone, or a newer pod of that name */
        if (rc != KD_OK) {
            KD_WARN("delete failed job=%s pod=%s err=\"%s\"", x->key, pod->name, e.message);
            if (first_err == KD_OK)
                first_err = rc;
            continue;
        }
        if (pod->uid[0] != '\0')
            rc_mark_deleted(c, x->key, pod->uid, in->now);
        char msg[1024];
        snprintf(msg, sizeof msg, "deleted pod %s (%s)", pod->name,
                 rc_delete_why_name(p->why[i]));
        KD_INFO("deleted job=%s pod=%s why=\"%s\"", x->key, pod->name,
                rc_delete_why_name(p->why[i]));
        record_event(c, x->job, p->why[i] == RC_DEL_NODE_LOST,
                     p->why[i] == RC_DEL_NODE_LOST ? "NodeLost" : "Deleted", msg);
    }
    if (p->delete_job) {
        kube_delete_opts dopt = {.propagation = "Background"};
        kube_error e;
        int rc = kube_delete(c->opt.client, &RC_AGENTJOBS, x->ns, x->name, &dopt, NULL, &e);
        if (rc == KD_OK)
            KD_INFO("deleted job=%s why=ttlSecondsAfterFinished", x->key);
        return rc == KD_ENOTFOUND ? KD_OK : rc;
    }
    if (p->create_service) {
        int rc = podspec_service(x->job, x->spec, &obj, err, sizeof err);
        if (rc == KD_OK)
            rc = create_obj(x, &KUBE_SERVICES, obj, "Service");
        json_decref(obj);
        obj = NULL;
        if (rc != KD_OK && first_err == KD_OK)
            first_err = rc;
    }
    if (p->create_coordinator || p->n_create > 0) {
        int rc = ensure_security_objects(x);
        if (rc != KD_OK)
            return first_err != KD_OK ? first_err : rc; /* no pod without its keys */
    }
    if (p->create_coordinator) {
        int rc = podspec_coordinator_pod(x->job, x->spec, &c->opt.podspec, &obj, err, sizeof err);
        if (rc == KD_OK)
            rc = create_obj(x, &KUBE_PODS, obj, "coordinator pod");
        json_decref(obj);
        obj = NULL;
        if (rc != KD_OK && first_err == KD_OK)
            first_err = rc;
    }
    long next = p->first_index;
    pthread_mutex_lock(&c->mu);
    rc_jobstate *s = kube_map_get(c->jobs, x->key);
    if (s != NULL && s->next_index > next)
        next = s->next_index;
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < p->n_create; i++, next++) {
        int rc = podspec_worker_pod(x->job, x->spec, &c->opt.podspec, next, &obj, err, sizeof err);
        if (rc == KD_OK)
            rc = create_obj(x, &KUBE_PODS, obj, "worker pod");
        const char *pname =
            json_string_value(json_object_get(json_object_get(obj, "metadata"), "name"));
        if (rc == KD_OK && pname != NULL)
            expect_created(c, x->key, pname, next, in->now);
        json_decref(obj);
        obj = NULL;
        if (rc != KD_OK) {
            if (first_err == KD_OK)
                first_err = rc;
            break;
        }
    }
    if (p->n_create > 0) {
        pthread_mutex_lock(&c->mu);
        s = kube_map_get(c->jobs, x->key);
        if (s != NULL && next > s->next_index)
            s->next_index = next;
        pthread_mutex_unlock(&c->mu);
    }
    return first_err;
}

/* --- status --------------------------------------------------------------------------- */

/* Conditions: the old list with the plan's entries updated; lastTransitionTime moves only
 * when a condition's status flips. New array. */
static json_t *merge_conditions(const json_t *old, const rc_plan *p, long gen, const char *now)
{
    json_t *out = json_is_array(old) ? json_deep_copy(old) : json_array();
    for (int i = 0; out != NULL && i < p->n_cond; i++) {
        const rc_condition *pc = &p->cond[i];
        const char *st = pc->status ? "True" : "False";
        json_t *found = NULL;
        size_t k;
        json_t *c;
        json_array_foreach(out, k, c)
        {
            const char *t = json_string_value(json_object_get(c, "type"));
            if (t != NULL && strcmp(t, pc->type) == 0)
                found = c;
        }
        if (found == NULL) {
            found = json_object();
            json_array_append_new(out, found);
        }
        const char *ost = json_string_value(json_object_get(found, "status"));
        if (ost == NULL || strcmp(ost, st) != 0 ||
            !json_is_string(json_object_get(found, "lastTransitionTime")))
            json_object_set_new(found, "lastTransitionTime", json_string(now));
        json_object_set_new(found, "type", json_string(pc->type));
        json_object_set_new(found, "status", json_string(st));
        json_object_set_new(found, "reason", json_string(pc->reason));
        json_object_set_new(found, "message", json_string(pc->message));
        json_object_set_new(found, "observedGeneration", json_integer(gen));
    }
    return out;
}

/* Before the first evaluation there is no accuracy: the number is left out and the text
 * the printer column shows (testAccuracy) is "-". */
static json_t *progress_json(const rc_progress_info *pi)
{
    char shown[16] = "-";
    if (pi->evaluated)
        snprintf(shown, sizeof shown, "%.4f", pi->accuracy);
    json_t *o = json_pack("{s:I, s:I, s:f, s:f, s:s}", "epoch", (json_int_t)pi->epoch, "step",
                          (json_int_t)pi->step, "loss", pi->loss, "samplesPerSecond",
                          pi->samples_per_s, "testAccuracy", shown);
    if (o != NULL && pi->evaluated)
        json_object_set_new(o, "accuracy", json_real(pi->accuracy));
    if (o != NULL && pi->samples >= 0)
        json_object_set_new(o, "samples", json_integer(pi->samples));
    if (o != NULL && pi->batch > 0)
        json_object_set_new(o, "batchSize", json_integer(pi->batch));
    if (o != NULL && pi->noise_scale > 0)
        json_object_set_new(o, "noiseScale", json_real(pi->noise_scale));
    return o;
}

/* CheckpointFailing from the coordinator's metrics (docs/security-pods.md): True with the
 * coordinator's error while its writes fail, False once they succeed; the Warning event
 * is sent when it turns True. Unchanged when the metrics say nothing. */
static void checkpoint_condition(sync_ctx *x, json_t *st, long gen, const char *now)
{
    rc_controller *c = x->c;
    rc_progress_info pi;
    if (c->opt.progress_lookup == NULL || !c->opt.progress_lookup(c->opt.progress_ud, x->key, &pi))
        return;
    int was = 0;
    size_t i;
    json_t *cond;
    json_array_foreach(json_object_get(st, "conditions"), i, cond)
    {
        const char *t = json_string_value(json_object_get(cond, "type"));
        const char *v = json_string_value(json_object_get(cond, "status"));
        if (t != NULL && v != NULL && strcmp(t, "CheckpointFailing") == 0 &&
            strcmp(v, "True") == 0)
            was = 1;
    }
    rc_plan one;
    memset(&one, 0, sizeof one);
    int warn = 0;
    if (!rc_plan_checkpoint((rc_ckpt_state)pi.checkpoint, pi.checkpoint_error, was, &one.cond[0],
                            &warn))
        return;
    one.n_cond = 1;
    json_t *merged = merge_conditions(json_object_get(st, "conditions"), &one, gen, now);
    if (merged != NULL)
        json_object_set_new(st, "conditions", merged);
    if (warn) {
        snprintf(x->ckpt_msg, sizeof x->ckpt_msg, "%s", one.cond[0].message);
        KD_WARN("checkpoint failing job=%s err=\"%s\"", x->key, pi.checkpoint_error);
    }
}

/* After the status counting them is written: the operator's own record (when and how
 * many, which uids; a sync from a cache that has not seen the write yet must neither cut
 * the backoff short nor count a pod again), and one Warning event per failed pod. */
static void remember_failures(sync_ctx *x, const rc_input *in, const rc_plan *p)
{
    rc_controller *c = x->c;
    pthread_mutex_lock(&c->mu);
    rc_jobstate *s = kube_map_get(c->jobs, x->key);
    if (s != NULL) {
        s->failures = in->failures + x->failures_counted;
        s->last_failure_at = in->now;
        for (int k = 0; k < x->failures_counted; k++) {
            snprintf(s->counted[s->counted_next], sizeof s->counted[0], "%s",
                     in->pods[p->counted[k]].uid);
            s->counted_next = (s->counted_next + 1) % RC_COUNTED_MAX;
        }
    }
    pthread_mutex_unlock(&c->mu);
    for (int k = 0; k < x->failures_counted; k++) {
        const rc_pod *pod = &in->pods[p->counted[k]];
        char msg[1024];
        snprintf(msg, sizeof msg,
                 "%s pod %s failed (exit code %d%s%s); failures %d, backoffLimit %d; the pod "
                 "stays for kubectl logs until %s",
                 pod->coordinator ? "coordinator" : "agent", pod->name, pod->exit_code,
                 pod->message[0] ? ": " : "", pod->message, in->failures + k + 1,
                 in->backoff_limit,
                 pod->coordinator ? "its replacement is due" : "the job ends");
        KD_WARN("pod failed job=%s pod=%s exit=%d", x->key, pod->name, pod->exit_code);
        record_event(c, x->job, 1, "Failed", msg);
    }
}

static int write_status(sync_ctx *x, const rc_input *in, const rc_plan *p, double *requeue_s)
{
    rc_controller *c = x->c;
    const json_t *old = json_object_get(x->job, "status");
    json_t *st = json_is_object(old) ? json_deep_copy(old) : json_object();
    if (st == NULL)
        return KD_ENOMEM;
    const json_t *md = json_object_get(x->job, "metadata");
    long gen = (long)json_integer_value(json_object_get(md, "generation"));
    char now[40], sel[PODSPEC_NAME_MAX + 80];
    rc_format_time(in->now, now, sizeof now);
    json_object_set_new(st, "phase", json_string(rc_phase_name(p->phase)));
    if (p->act) {
        json_t *ag = p->awaiting ? NULL
                                 : json_pack("{s:i, s:i}", "desired", p->desired, "ready",
                                             p->ready);
        /* The batch the scheduler chose with the count (pollux, rl by goodput); it stays
         * once chosen, as the coordinator keeps it. */
        const json_t *ob = json_object_get(json_object_get(old, "agents"), "desiredBatchSize");
        int db = in->sched_batch > 0 ? in->sched_batch
                                     : json_is_integer(ob) ? (int)json_integer_value(ob) : 0;
        if (ag != NULL && db > 0)
            json_object_set_new(ag, "desiredBatchSize", json_integer(db));
        if (ag != NULL)
            json_object_set_new(st, "agents", ag);
        json_object_set_new(st, "failures", json_integer(in->failures + x->failures_counted));
        /* The failed pods counted, while they exist: written with the count in one status
         * write, so a restarted operator (or a retried sync) never counts one twice. */
        json_t *fp = json_array();
        if (fp == NULL) {
            json_decref(st);
            return KD_ENOMEM;
        }
        for (size_t i = 0; i < in->n_pods; i++) {
            int now_counted = 0;
            for (int k = 0; k < x->failures_counted && !now_counted; k++)
                now_counted = p->counted[k] == i;
            if (in->pods[i].counted || now_counted)
                json_array_append_new(fp, json_pack("{s:s, s:s}", "name", in->pods[i].name,
                                                    "uid", in->pods[i].uid));
        }
        if (json_array_size(fp) > 0)
            json_object_set_new(st, "failedPods", fp);
        else {
            json_object_del(st, "failedPods");
            json_decref(fp);
        }
    }
    if (x->last_failed != NULL) {
        const rc_pod *f = x->last_failed;
        json_t *lf = json_pack("{s:s, s:s, s:i}", "time", now, "pod", f->name, "exitCode",
                               f->exit_code);
        if (lf != NULL && f->message[0] != '\0')
            json_object_set_new(lf, "message", json_string(f->message));
        if (lf != NULL)
            json_object_set_new(st, "lastFailure", lf);
    }
    if (podspec_worker_selector(x->name, sel, sizeof sel) == KD_OK)
        json_object_set_new(st, "selector", json_string(sel));
    json_object_set_new(st, "observedGeneration", json_integer(gen));
    if (p->set_start)
        json_object_set_new(st, "startTime", json_string(now));
    if (p->set_completion)
        json_object_set_new(st, "completionTime", json_string(now));
    json_object_set_new(st, "conditions", merge_conditions(json_object_get(old, "conditions"),
                                                           p, gen, now));
    checkpoint_condition(x, st, gen, now);

    /* The scaling record, and its Event, when the desired count changes. */
    int from = in->status_desired > 0 ? in->status_desired : 0;
    int normal = p->act && !p->awaiting && (p->phase == RC_PENDING || p->phase == RC_RUNNING);
    if (normal && p->desired != from) {
        rc_sched_info si;
        memset(&si, 0, sizeof si);
        int have = c->opt.sched_lookup != NULL && c->opt.sched_lookup(c->opt.sched_ud, x->key, &si);
        char policy[40], reason[200];
        if (in->pin > 0) {
            snprintf(policy, sizeof policy, "pinned");
            snprintf(reason, sizeof reason, "spec.replicas is %d", in->pin);
        } else if (have) {
            /* Some policies name themselves in their reason ("rl: ..."): say it once. */
            size_t pl = strlen(si.policy);
            const char *r = si.reason;
            if (pl > 0 && strncmp(r, si.policy, pl) == 0 && strncmp(r + pl, ": ", 2) == 0)
                r += pl + 2;
            snprintf(policy, sizeof policy, "%s", si.policy);
            snprintf(reason, sizeof reason, "%s", r);
        } else if (in->status_desired < 0) {
            snprintf(policy, sizeof policy, "initial");
            snprintf(reason, sizeof reason, "no scheduling decision yet: agents.min");
        } else {
            snprintf(policy, sizeof policy, "clamp");
            snprintf(reason, sizeof reason, "kept within agents [%d, %d]", in->min, in->max);
        }
        json_object_set_new(st, "lastScheduling",
                            json_pack("{s:s, s:i, s:i, s:s, s:s}", "time", now, "from", from,
                                      "to", p->desired, "policy", policy, "reason", reason));
        char *msg = x->scaled_msg;
        size_t msgsz = sizeof x->scaled_msg;
        /* A prediction only when the policy made one (the model had a measured speed). */
        if (have && in->pin <= 0 && si.pred_speed > 0)
            snprintf(msg, msgsz,
                     "scaled from %d to %d agents (policy %s: %s; predicted %.1f samples/s, "
                     "cost %.0f agent-s, reward %.3f)",
                     from, p->desired, policy, reason, si.pred_speed, si.pred_cost,
                     si.pred_reward);
        else
            snprintf(msg, msgsz, "scaled from %d to %d agents (%s: %s)", from, p->desired,
                     policy, reason);
        KD_INFO("scaled job=%s from=%d to=%d policy=%s", x->key, from, p->desired, policy);
    }

    /* Progress from the coordinator's metrics, at most every progress_interval_s (and
     * always on the transition to a finished phase, so the final accuracy is kept). */
    rc_progress_info pi;
    if (c->opt.progress_lookup != NULL && c->opt.progress_lookup(c->opt.progress_ud, x->key, &pi)) {
        json_t *pj = progress_json(&pi);
        if (pj != NULL && !json_equal(pj, json_object_get(old, "progress"))) {
            pthread_mutex_lock(&c->mu);
            rc_jobstate *s = kube_map_get(c->jobs, x->key);
            double since = s != NULL ? in->now - s->last_progress_write : 1e9;
            int finishing = p->phase == RC_SUCCEEDED || p->phase == RC_FAILED;
            if (since >= c->opt.progress_interval_s || finishing) {
                json_object_set(st, "progress", pj);
                if (s != NULL)
                    s->last_progress_write = in->now;
            } else if (*requeue_s <= 0 || *requeue_s > c->opt.progress_interval_s - since) {
                *requeue_s = c->opt.progress_interval_s - since;
            }
            pthread_mutex_unlock(&c->mu);
        }
        json_decref(pj);
    }

    int rc = KD_OK;
    if (!json_equal(st, old)) {
        const char *rv = kube_object_rv((json_t *)x->job);
        json_t *patch = json_pack("{s:{s:s?}, s:O}", "metadata", "resourceVersion", rv,
                                  "status", st);
        kube_error e;
        rc = patch != NULL ? kube_patch(c->opt.client, &RC_AGENTJOBS, x->ns, x->name, "status",
                                        patch, NULL, &e)
                           : KD_ENOMEM;
        json_decref(patch);
        if (rc == KD_OK && x->failures_counted > 0)
            remember_failures(x, in, p);
        if (rc == KD_ENOTFOUND)
            rc = KD_OK; /* deleted meanwhile */
        else if (rc == KD_ECONFLICT)
            KD_DEBUG("status conflict job=%s: retried from the cache", x->key);
        else if (rc != KD_OK)
            KD_WARN("status write failed job=%s err=\"%s\"", x->key, e.message);
    }
    json_decref(st);
    return rc;
}

/* Gives the progress subscription the job's public key (derived, see jobkeys_derive):
 * its CURVE client must know the coordinator's server key. Skipped while the operator's
 * key is not loaded (the next sync tries again). */
static void tell_job_key(rc_controller *c, const json_t *job, const char *key)
{
    if (c->opt.progress_job_key == NULL || c->opt.operator_keys == NULL ||
        !c->opt.podspec.keys)
        return;
    jobkeys_pair op, kp;
    char err[256];
    const char *uid = json_string_value(json_object_get(json_object_get(job, "metadata"), "uid"));
    if (jobkeys_cache_get(c->opt.operator_keys, c->opt.client, &op, err, sizeof err) == KD_OK &&
        jobkeys_derive(&op, uid, &kp, err, sizeof err) == KD_OK) {
        if (c->opt.progress_operator_key != NULL)
            c->opt.progress_operator_key(c->opt.progress_ud, op.pub, op.sec);
        c->opt.progress_job_key(c->opt.progress_ud, key, kp.pub);
    }
    memset(&op, 0, sizeof op);
    memset(&kp, 0, sizeof kp);
}

/* The scheduler's batch to the running coordinator while its metrics show another one
 * (level-based: a restarted coordinator gets it again), at most every
 * RC_BATCH_RESEND_S per job. */
#define RC_BATCH_RESEND_S 5.0
static void send_batch(rc_controller *c, const char *key, const char *ip, int batch, double now,
                       double *requeue_s)
{
    rc_progress_info pi;
    if (batch <= 0 || c->opt.progress_send_batch == NULL || c->opt.progress_lookup == NULL ||
        !c->opt.progress_lookup(c->opt.progress_ud, key, &pi) || pi.batch == batch)
        return;
    pthread_mutex_lock(&c->mu);
    rc_jobstate *s = kube_map_get(c->jobs, key);
    int due = s != NULL && now - s->last_batch_sent >= RC_BATCH_RESEND_S;
    if (due)
        s->last_batch_sent = now;
    pthread_mutex_unlock(&c->mu);
    if (!due) {
        if (*requeue_s <= 0 || *requeue_s > RC_BATCH_RESEND_S)
            *requeue_s = RC_BATCH_RESEND_S;
        return;
    }
    char ep[128];
    snprintf(ep, sizeof ep, "tcp://%s:%d", ip, PODSPEC_CONTROL_PORT);
    if (c->opt.progress_send_batch(c->opt.progress_ud, key, ep, batch) == KD_OK)
        KD_INFO("batch sent job=%s batch=%d running=%d", key, batch, pi.batch);
    if (*requeue_s <= 0 || *requeue_s > RC_BATCH_RESEND_S)
        *requeue_s = RC_BATCH_RESEND_S;
}

/* --- one sync ------------------------------------------------------------------------- */

static void forget_job(rc_controller *c, const char *key)
{
    pthread_mutex_lock(&c->mu);
    kube_map_del(c->jobs, key);
    pthread_mutex_unlock(&c->mu);
    if (c->opt.progress_forget != NULL)
        c->opt.progress_forget(c->opt.progress_ud, key);
}

int rc_sync(rc_controller *c, const char *key, double *requeue_s)
{
    *requeue_s = 0;
    json_t *job = rc_caches_get_job(&c->caches, key);
    if (job == NULL) {
        forget_job(c, key); /* gone: the garbage collector removes what it owned */
        return KD_OK;
    }
    const json_t *md = json_object_get(job, "metadata");
    const char *ns = json_string_value(json_object_get(md, "namespace"));
    const char *name = json_string_value(json_object_get(md, "name"));
    const char *uid = json_string_value(json_object_get(md, "uid"));
    if (ns == NULL || name == NULL || uid == NULL || json_object_get(md, "deletionTimestamp")) {
        json_decref(job);
        return KD_OK;
    }
    double now = rc_now();
    pthread_mutex_lock(&c->mu);
    rc_jobstate *s = rc_jobstate_get(c, key);
    pthread_mutex_unlock(&c->mu);
    if (s == NULL) {
        json_decref(job);
        return KD_ENOMEM;
    }

    kd_agentjob spec;
    char derr[512] = "";
    int drc = kd_agentjob_decode(job, &spec, derr, sizeof derr);
    if (drc == KD_ENOMEM) {
        json_decref(job);
        return drc;
    }
    if (drc == KD_OK) /* a template beyond the pod policy is an invalid spec too */
        drc = podspec_check_template(&spec, &c->opt.podspec, derr, sizeof derr);
    const json_t *st = json_object_get(job, "status");
    rc_input in;
    memset(&in, 0, sizeof in);
    in.valid = drc == KD_OK;
    in.invalid_msg = derr;
    char unknown[256] = "";
    for (size_t k = 0; in.valid && k < spec.n_warnings; k++) {
        const char *w = spec.warnings[k];
        const char *tail = strstr(w, ": unknown field (ignored");
        if (tail == NULL || strncmp(w, "spec", 4) != 0)
            continue;
        const char *hint = strstr(tail, "; did you mean ");
        size_t used = strlen(unknown);
        snprintf(unknown + used, sizeof unknown - used, "%s%.*s%s%s", used ? ", " : "",
                 (int)(tail - w), w, hint != NULL ? " (" : "", hint != NULL ? hint + 2 : "");
    }
    in.unknown_fields = unknown;
    in.min = in.valid ? spec.agents_min : 1;
    in.max = in.valid ? spec.agents_max : 1;
    in.pin = in.valid ? spec.replicas : -1;
    in.backoff_limit = in.valid ? spec.backoff_limit : 0;
    in.active_deadline_s = in.valid ? spec.active_deadline : 0;
    in.ttl_s = in.valid ? spec.ttl_after_finished : -1;
    in.clean = in.valid ? (rc_clean)spec.clean_pod_policy : RC_CLEAN_NONE;
    in.suspend = in.valid && spec.suspend;
    int ph = rc_phase_parse(json_string_value(json_object_get(st, "phase")));
    in.has_phase = ph >= 0;
    in.phase = ph >= 0 ? (rc_phase)ph : RC_PENDING;
    size_t i;
    json_t *cond;
    json_array_foreach(json_object_get(st, "conditions"), i, cond)
    {
        const char *t = json_string_value(json_object_get(cond, "type"));
        const char *r = json_string_value(json_object_get(cond, "reason"));
        const char *v = json_string_value(json_object_get(cond, "status"));
        if (t && r && v && strcmp(t, "Failed") == 0 && strcmp(r, "InvalidSpec") == 0 &&
            strcmp(v, "True") == 0)
            in.failed_invalid = 1;
    }
    in.failures = int_or(json_object_get(st, "failures"), 0);
    const json_t *lf = json_object_get(st, "lastFailure");
    in.last_failure_time = rc_parse_time(json_string_value(json_object_get(lf, "time")));
    in.last_failure = json_string_value(json_object_get(lf, "message"));
    /* A sync from a cache that has not seen our last status write yet must not replace
     * a failed pod before its backoff is over: what we counted ourselves wins. */
    pthread_mutex_lock(&c->mu);
    if (s->failures > in.failures)
        in.failures = s->failures;
    if (s->last_failure_at > in.last_failure_time)
        in.last_failure_time = s->last_failure_at;
    pthread_mutex_unlock(&c->mu);
    in.start_time = rc_parse_time(json_string_value(json_object_get(st, "startTime")));
    in.completion_time = rc_parse_time(json_string_value(json_object_get(st, "completionTime")));
    in.status_desired = int_or(json_object_get(json_object_get(st, "agents"), "desired"), -1);
    in.sched_desired = -1;
    in.await_sched = c->opt.sched_lookup != NULL;
    in.created_time = rc_parse_time(json_string_value(json_object_get(md, "creationTimestamp")));
    rc_sched_info si;
    /* Only a policy the job chose (the default rl is no choice) is reported as honoured
     * or ignored. */
    const json_t *chosen = json_object_get(
        json_object_get(json_object_get(job, "spec"), "scheduling"), "policy");
    in.spec_policy = in.valid && json_is_string(chosen) ? kd_spec_policy_name(spec.policy) : NULL;
    if (c->opt.sched_lookup != NULL && c->opt.sched_lookup(c->opt.sched_ud, key, &si)) {
        in.sched_desired = si.desired;
        in.sched_policy = si.policy;
        in.sched_batch = si.batch;
    }
    in.have_service = have_service(c, ns, name);
    in.now = now;
    rc_pod *pods = NULL;
    size_t npods = 0;
    int rc = gather_pods(c, key, ns, name, uid, json_object_get(st, "failedPods"), now, &pods,
                         &npods);
    in.pods = pods;
    in.n_pods = npods;

    rc_plan plan;
    if (rc == KD_OK)
        rc = rc_plan_compute(&in, &plan);
    else
        memset(&plan, 0, sizeof plan);
    if (rc == KD_OK) {
        sync_ctx x = {c, key, ns, name, job, &spec, 0, NULL, "", ""};
        int send_invalid = 0;
        long gen = (long)json_integer_value(json_object_get(md, "generation"));
        pthread_mutex_lock(&c->mu);
        send_invalid = !in.valid && s->last_invalid_gen != gen;
        pthread_mutex_unlock(&c->mu);
        int xrc = in.valid && plan.act ? execute(&x, &in, &plan) : KD_OK;
        if (plan.requeue_s > 0)
            *requeue_s = plan.requeue_s;
        if (!plan.delete_job)
            rc = write_status(&x, &in, &plan, requeue_s);
        /* Transitions are announced once the status recording them is written: the next
         * sync sees no transition, and a conflict (retried) sends nothing twice. */
        if (rc == KD_OK && x.scaled_msg[0] != '\0')
            record_event(c, job, 0, "Scaled", x.scaled_msg);
        if (rc == KD_OK && x.ckpt_msg[0] != '\0')
            record_event(c, job, 1, "CheckpointFailing", x.ckpt_msg);
        if (rc == KD_OK && plan.event_reason[0] != '\0' &&
            (strcmp(plan.event_reason, "InvalidSpec") != 0 || send_invalid)) {
            if (strcmp(plan.event_reason, "InvalidSpec") == 0) {
                KD_WARN("invalid spec job=%s err=\"%s\"", key, derr);
                pthread_mutex_lock(&c->mu);
                s->last_invalid_gen = gen; /* one InvalidSpec event per generation */
                pthread_mutex_unlock(&c->mu);
            }
            record_event(c, job, plan.event_warning, plan.event_reason, plan.event_message);
        }
        if (rc == KD_OK)
            rc = xrc;
        /* Follow the coordinator's metrics while it runs. */
        const rc_pod *coord = NULL;
        for (size_t k = 0; k < npods; k++)
            if (pods[k].coordinator && !pods[k].deleting && pods[k].state == RC_POD_RUNNING &&
                pods[k].ip[0] != '\0')
                coord = &pods[k];
        if (coord != NULL)
            tell_job_key(c, job, key);
        if (coord != NULL && rc == KD_OK)
            send_batch(c, key, coord->ip, in.sched_batch, now, requeue_s);
        if (c->opt.progress_watch != NULL) {
            char ep[128];
            snprintf(ep, sizeof ep, "tcp://%s:%d", coord != NULL ? coord->ip : "",
                     PODSPEC_METRICS_PORT);
            c->opt.progress_watch(c->opt.progress_ud, key, coord != NULL ? ep : NULL);
        }
        if (plan.phase == RC_SUCCEEDED || plan.phase == RC_FAILED)
            KD_DEBUG("finished job=%s phase=%s", key, rc_phase_name(plan.phase));
    }
    rc_plan_free(&plan);
    free(pods);
    kd_agentjob_free(&spec);
    json_decref(job);
    return rc;
}
