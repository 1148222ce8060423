/*
 * reconcile: the AgentJob controller's queue, workers and sync (see reconcile.h).
 *
 * A sync gathers rc_input from the caches, computes the plan (reconcile_plan.c),
 * executes it and writes the status (reconcile_sync.c). Creations use deterministic
 * names (<job>-coordinator, <job>-worker-<n>), so a sync that runs on a stale cache (or a
 * restarted operator) gets AlreadyExists instead of creating a duplicate. Deletions carry
 * a uid precondition, and the uids deleted recently are remembered per job so that a
 * cache that has not caught up yet does not make us delete (or count a failure) twice.
 */
#include "reconcile.h"
#include "reconcile_int.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kd_clock.h"
#include "kd_error.h"
#include "kd_log.h"
#include "kd_spec.h"
#include "kube_map.h"
#include "reconcile_plan.h"
#include "wq.h"

const kube_resource RC_AGENTJOBS = {"kadet.io", "v1alpha1", "agentjobs", 1};

double rc_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

json_t *rc_caches_get_job(const rc_caches *c, const char *key)
{
    for (size_t i = 0; i < c->n_jobs; i++) {
        json_t *j = informer_get(c->jobs[i], key);
        if (j != NULL)
            return j;
    }
    return NULL;
}

json_t *rc_caches_list_jobs(const rc_caches *c)
{
    json_t *all = json_array();
    for (size_t i = 0; all != NULL && i < c->n_jobs; i++) {
        json_t *l = informer_list(c->jobs[i]);
        json_array_extend(all, l);
        json_decref(l);
    }
    return all;
}

int rc_caches_synced(const rc_caches *c)
{
    for (size_t i = 0; i < c->n_jobs; i++)
        if (!informer_has_synced(c->jobs[i]))
            return 0;
    for (size_t i = 0; i < c->n_services; i++)
        if (!informer_has_synced(c->services[i]))
            return 0;
    return (c->pods == NULL || informer_has_synced(c->pods)) &&
           (c->nodes == NULL || informer_has_synced(c->nodes));
}

/* --- per-job memory ---------------------------------------------------------------- */

static void jobstate_free(void *v)
{
    free(v);
}


rc_jobstate *rc_jobstate_get(rc_controller *c, const char *key)
{
    rc_jobstate *s = kube_map_get(c->jobs, key);
    if (s == NULL) {
        s = calloc(1, sizeof *s);
        if (s == NULL || kube_map_put(c->jobs, key, s) != KD_OK) {
            free(s);
            return NULL;
        }
        s->last_invalid_gen = -1;
    }
    return s;
}

int rc_was_deleted(rc_controller *c, const char *key, const char *uid, double now)
{
    int hit = 0;
    pthread_mutex_lock(&c->mu);
    rc_jobstate *s = kube_map_get(c->jobs, key);
    for (int i = 0; s != NULL && i < RC_DELETED_MAX; i++) {
        if (s->deleted_at[i] > 0 && now - s->deleted_at[i] > RC_DELETED_TTL_S)
            s->deleted_at[i] = 0;
        if (s->deleted_at[i] > 0 && strcmp(s->deleted[i], uid) == 0)
            hit = 1;
    }
    pthread_mutex_unlock(&c->mu);
    return hit;
}

void rc_mark_deleted(rc_controller *c, const char *key, const char *uid, double now)
{
    pthread_mutex_lock(&c->mu);
    rc_jobstate *s = rc_jobstate_get(c, key);
    if (s != NULL) {
        int slot = 0;
        for (int i = 0; i < RC_DELETED_MAX; i++) {
            if (s->deleted_at[i] <= 0) {
                slot = i;
                break;
            }
            if (s->deleted_at[i] < s->deleted_at[slot])
                slot = i;
        }
        snprintf(s->deleted[slot], sizeof s->deleted[slot], "%s", uid);
        s->deleted_at[slot] = now;
    }
    pthread_mutex_unlock(&c->mu);
}

/* --- handlers ---------------------------------------------------------------------- */

void rc_controller_enqueue(rc_controller *c, const char *key)
{
    wq_add(c->q, key);
}

static void poke(rc_controller *c)
{
    if (c->opt.on_change != NULL)
        c->opt.on_change(c->opt.change_ud);
}

static void enqueue_obj(rc_controller *c, json_t *obj)
{
    char key[600];
    if (kube_object_key(obj, key, sizeof key) == KD_OK)
        wq_add(c->q, key);
}

static void job_add(void *ud, json_t *obj)
{
    enqueue_obj(ud, obj);
    poke(ud);
}

static void job_update(void *ud, json_t *old_obj, json_t *new_obj)
{
    enqueue_obj(ud, new_obj);
    const json_t *om = json_object_get(old_obj, "metadata"), *nm = json_object_get(new_obj, "metadata");
    const char *op = json_string_value(json_object_get(json_object_get(old_obj, "status"), "phase"));
    const char *np = json_string_value(json_object_get(json_object_get(new_obj, "status"), "phase"));
    int phase_changed = (op == NULL) != (np == NULL) || (op != NULL && strcmp(op, np) != 0);
    if (phase_changed ||
        json_integer_value(json_object_get(om, "generation")) !=
            json_integer_value(json_object_get(nm, "generation")))
        poke(ud);
}

static void job_delete(void *ud, json_t *obj, int unknown)
{
    (void)unknown;
    enqueue_obj(ud, obj);
    poke(ud);
}

/* Pods and Services: the key of their controlling AgentJob, if any. */
static void enqueue_owner(rc_controller *c, json_t *obj)
{
    const json_t *md = json_object_get(obj, "metadata");
    const char *ns = json_string_value(json_object_get(md, "namespace"));
    size_t i;
    json_t *ref;
    json_array_foreach(json_object_get(md, "ownerReferences"), i, ref)
    {
        const char *kind = json_string_value(json_object_get(ref, "kind"));
        const char *name = json_string_value(json_object_get(ref, "name"));
        if (ns == NULL || kind == NULL || name == NULL || strcmp(kind, KD_SPEC_KIND) != 0 ||
            !json_is_true(json_object_get(ref, "controller")))
            continue;
        char key[600];
        int n = snprintf(key, sizeof key, "%s/%s", ns, name);
        if (n > 0 && (size_t)n < sizeof key)
            wq_add(c->q, key);
    }
}

/* Every job with a pod bound to this node: its pods may have to be replaced. */
static void enqueue_node_pods(rc_controller *c, json_t *node)
{
    const json_t *md = json_object_get(node, "metadata");
    const char *name = json_string_value(json_object_get(md, "name"));
    if (name == NULL || c->caches.pods == NULL)
        return;
    json_t *all = informer_list(c->caches.pods);
    size_t i;
    json_t *p;
    json_array_foreach(all, i, p)
    {
        const char *on = json_string_value(json_object_get(json_object_get(p, "spec"), "nodeName"));
        if (on != NULL && strcmp(on, name) == 0)
            enqueue_owner(c, p);
    }
    json_decref(all);
}

static void owned_add(void *ud, json_t *obj)
{
    enqueue_owner(ud, obj);
    poke(ud);
}

static void owned_update(void *ud, json_t *old_obj, json_t *new_obj)
{
    enqueue_owner(ud, new_obj);
    const char *op = json_string_value(json_object_get(json_object_get(old_obj, "status"), "phase"));
    const char *np = json_string_value(json_object_get(json_object_get(new_obj, "status"), "phase"));
    const json_t *on = json_object_get(json_object_get(old_obj, "spec"), "nodeName");
    const json_t *nn = json_object_get(json_object_get(new_obj, "spec"), "nodeName");
    if ((op == NULL) != (np == NULL) || (op != NULL && strcmp(op, np) != 0) ||
        !json_equal(on, nn))
        poke(ud);
}

static void owned_delete(void *ud, json_t *obj, int unknown)
{
    (void)unknown;
    enqueue_owner(ud, obj);
    poke(ud);
}

static void node_add(void *ud, json_t *obj)
{
    (void)obj;
    poke(ud);
}

static void node_update(void *ud, json_t *o, json_t *n)
{
    /* Capacity, cordon (spec.unschedulable) or readiness changed: the scheduler decides
     * again, and the jobs with pods on a node that stopped being Ready are synced so that
     * those pods are replaced (rc_node_lost). Heartbeats alone change none of these. */
    int lost_changed = rc_node_lost(o) != rc_node_lost(n);
    if (lost_changed || !json_equal(json_object_get(json_object_get(o, "status"), "allocatable"),
                                    json_object_get(json_object_get(n, "status"), "allocatable")) ||
        json_is_true(json_object_get(json_object_get(o, "spec"), "unschedulable")) !=
            json_is_true(json_object_get(json_object_get(n, "spec"), "unschedulable")))
        poke(ud);
    if (lost_changed)
        enqueue_node_pods(ud, n);
}

static void node_delete(void *ud, json_t *obj, int unknown)
{
    (void)unknown;
    enqueue_node_pods(ud, obj);
    poke(ud);
}

informer_handlers rc_controller_job_handlers(rc_controller *c)
{
    return (informer_handlers){job_add, job_update, job_delete, c};
}

informer_handlers rc_controller_owned_handlers(rc_controller *c)
{
    return (informer_handlers){owned_add, owned_update, owned_delete, c};
}

informer_handlers rc_controller_node_handlers(rc_controller *c)
{
    return (informer_handlers){node_add, node_update, node_delete, c};
}

/* --- lifecycle and the worker loop ---------------------------------------------------- */

int rc_controller_new(const rc_options *o, rc_controller **out, char *err, size_t errlen)
{
    if (o == NULL || o->client == NULL || o->metrics == NULL)
        return kd_errf(err, errlen, KD_EINVAL, "reconcile: client and metrics are required");
    rc_controller *c = calloc(1, sizeof *c);
    if (c == NULL)
        return KD_ENOMEM;
    c->opt = *o;
    if (c->opt.workers < 1)
        c->opt.workers = 1;
    if (c->opt.workers > RC_MAX_WORKERS)
        c->opt.workers = RC_MAX_WORKERS;
    if (c->opt.progress_interval_s <= 0)
        c->opt.progress_interval_s = 3.0;
    wq_options wo = {.base_delay_ms = 50, .max_delay_ms = 60000};
    c->jobs = kube_map_new(jobstate_free);
    if (c->jobs == NULL || wq_new(&wo, &c->q) != KD_OK) {
        kube_map_free(&c->jobs);
        free(c);
        return KD_ENOMEM;
    }
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return KD_OK;
}

void rc_controller_set_caches(rc_controller *c, const rc_caches *caches)
{
    c->caches = *caches;
}

static void count(rc_controller *c, const char *result)
{
    const char *v[] = {result};
    opm_add(c->opt.metrics->reconciles, v, 1);
}

static void *worker_main(void *arg)
{
    rc_controller *c = arg;
    char *key = NULL;
    while (wq_get(c->q, &key) == KD_OK) {
        if (!atomic_load(&c->acting)) {
            /* A standby keeps nothing queued; becoming leader re-enqueues every job. */
            wq_forget(c->q, key);
        } else if (!rc_caches_synced(&c->caches)) {
            wq_add_after(c->q, key, 50);
        } else {
            double requeue_s = 0;
            double t0 = kd_mono_s();
            int rc = rc_sync(c, key, &requeue_s);
            opm_observe(c->opt.metrics->reconcile_seconds, NULL, kd_mono_s() - t0);
            atomic_fetch_add(&c->syncs, 1);
            if (rc == KD_OK) {
                wq_forget(c->q, key);
                if (requeue_s > 0)
                    wq_add_after(c->q, key, requeue_s * 1000.0);
                count(c, requeue_s > 0 ? "requeue" : "success");
            } else {
                if (rc != KD_ECONFLICT) {
                    const char *v[] = {"reconcile"};
                    opm_add(c->opt.metrics->errors, v, 1);
                    KD_WARN("reconcile failed job=%s err=%s", key, kd_strerror(rc));
                }
                wq_add_rate_limited(c->q, key);
                count(c, "error");
            }
        }
        wq_done(c->q, key);
        free(key);
        key = NULL;
        opm_set(c->opt.metrics->queue_depth, NULL, (double)wq_len(c->q));
    }
    return NULL;
}

int rc_controller_start(rc_controller *c)
{
    for (int i = 0; i < c->opt.workers; i++) {
        if (pthread_create(&c->threads[i], NULL, worker_main, c) != 0) {
            rc_controller_stop(c);
            return KD_ENOMEM;
        }
        c->n_threads++;
    }
    return KD_OK;
}

void rc_controller_set_acting(rc_controller *c, int acting)
{
    atomic_store(&c->acting, acting ? 1 : 0);
    if (!acting)
        return;
    json_t *jobs = rc_caches_list_jobs(&c->caches);
    size_t i;
    json_t *j;
    json_array_foreach(jobs, i, j) enqueue_obj(c, j);
    json_decref(jobs);
}

long rc_controller_syncs(rc_controller *c)
{
    return atomic_load(&c->syncs);
}

void rc_controller_stop(rc_controller *c)
{
    if (c == NULL)
        return;
    wq_shutdown(c->q);
    for (int i = 0; i < c->n_threads; i++)
        pthread_join(c->threads[i], NULL);
    c->n_threads = 0;
}

void rc_controller_free(rc_controller **cp)
{
    if (cp == NULL || *cp == NULL)
        return;
    rc_controller *c = *cp;
    rc_controller_stop(c);
    wq_free(&c->q);
    kube_map_free(&c->jobs);
    pthread_mutex_destroy(&c->mu);
    free(c);
    *cp = NULL;
}

void rc_format_time(double t, char *buf, size_t len)
{
    time_t s = (time_t)t;
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

double rc_parse_time(const char *text)
{
    if (text == NULL)
        return 0;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int y, mo, d, h, mi;
    double sec;
    if (sscanf(text, "%d-%d-%dT%d:%d:%lf", &y, &mo, &d, &h, &mi, &sec) != 6)
        return 0;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = (int)sec;
    return (double)timegm(&tm) + (sec - (int)sec);
}
