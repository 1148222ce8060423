/*
 * leader: the elector thread (candidate loop, renew loop, release) and the single
 * acquire-or-renew step on the Lease object.
 */
#include "leader.h"

#include "kd_clock.h"
#include "kd_error.h"
#include "kd_log.h"
#include "kube_backoff.h"
#include "kube_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct leader_elector {
    kube_client *client;       /* private clone: short timeouts, no retries */
    leader_options o;          /* copy; strings below */
    char *ns, *name, *identity;
    pthread_t thread;
    int started;
    atomic_int stop;
    atomic_int leading;
    pthread_mutex_t mu;        /* guards the fields below, and the nap condition */
    pthread_cond_t cond;
    char observed_rv[64];      /* resourceVersion of the Lease when last seen */
    char observed_holder[256]; /* holderIdentity when last seen */
    double observed_mono;      /* monotonic time at which observed_rv was first seen */
    uint64_t rng;
};

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* RFC 3339 with microseconds, the MicroTime format of Lease fields. */
static void micro_time(double t, char *buf, size_t len)
{
    time_t s = (time_t)t;
    long us = (long)((t - (double)s) * 1e6);
    struct tm tm;
    gmtime_r(&s, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, len, "%s.%06ldZ", base, us);
}

int leader_new(kube_client *c, const leader_options *opts, leader_elector **out, char *err,
               size_t errlen)
{
    *out = NULL;
    if (opts == NULL || opts->name == NULL || *opts->name == '\0' || opts->identity == NULL ||
        *opts->identity == '\0') {
        return kd_errf(err, errlen, KD_EINVAL, "leader election: lease name and identity "
                                               "are required");
    }
    leader_options o = *opts;
    o.lease_duration_s = o.lease_duration_s > 0 ? o.lease_duration_s : 15;
    o.renew_deadline_s = o.renew_deadline_s > 0 ? o.renew_deadline_s : 10;
    o.retry_period_s = o.retry_period_s > 0 ? o.retry_period_s : 2;
    if (!(o.lease_duration_s > o.renew_deadline_s) ||
        !(o.renew_deadline_s > 1.2 * o.retry_period_s)) {
        return kd_errf(err, errlen, KD_EINVAL,
                       "leader election: need lease duration (%.1fs) > renew deadline "
                       "(%.1fs) > 1.2 x retry period (%.1fs)",
                       o.lease_duration_s, o.renew_deadline_s, o.retry_period_s);
    }
    if (strlen(opts->identity) >= 256) {
        return kd_errf(err, errlen, KD_EINVAL, "leader election: identity too long");
    }
    leader_elector *le = calloc(1, sizeof *le);
    if (le == NULL) {
        return kd_errf(err, errlen, KD_ENOMEM, "leader election: out of memory");
    }
    /* A request must give up well inside the renew deadline, and the renew loop itself
     * is the retry: no retries in the client. */
    long timeout_ms = (long)(o.renew_deadline_s * 1000 / 2);
    kube_client_options co = {.connect_timeout_ms = timeout_ms,
                              .request_timeout_ms = timeout_ms,
                              .max_attempts = 1};
    int rc = kube_client_clone(c, &co, &le->client, err, errlen);
    const char *ns = opts->namespace != NULL && *opts->namespace != '\0'
                         ? opts->namespace
                         : kube_client_namespace(c);
    le->ns = strdup(ns);
    le->name = strdup(opts->name);
    le->identity = strdup(opts->identity);
    if (rc != KD_OK || le->ns == NULL || le->name == NULL || le->identity == NULL) {
        kube_client_free(&le->client);
        free(le->ns);
        free(le->name);
        free(le->identity);
        free(le);
        return rc != KD_OK ? rc : kd_errf(err, errlen, KD_ENOMEM, "out of memory");
    }
    le->o = o;
    le->o.namespace = le->ns;
    le->o.name = le->name;
    le->o.identity = le->identity;
    atomic_init(&le->stop, 0);
    atomic_init(&le->leading, 0);
    pthread_mutex_init(&le->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&le->cond, &ca);
    pthread_condattr_destroy(&ca);
    le->rng = (uint64_t)(kd_mono_s() * 1e9) ^ (uint64_t)(uintptr_t)le;
    *out = le;
    return KD_OK;
}

/* Lease requests for the elector's loop: they give up as soon as leader_stop is called
 * (the release on the way out uses the plain verbs). method GET, POST or PUT. */
static int lease_call(leader_elector *le, const char *method, json_t *body, json_t **out,
                      kube_error *e)
{
    char path[1024];
    const char *name = strcmp(method, "POST") == 0 ? NULL : le->name;
    int rc = kube__path(&KUBE_LEASES, le->ns, name, NULL, path, sizeof path, e);
    if (rc != KD_OK) {
        return rc;
    }
    return kube__request(le->client, method, path, NULL, body, NULL, out, e, &le->stop);
}

static void observe(leader_elector *le, const char *rv, const char *holder, double mono)
{
    int new_holder = 0;
    char holder_copy[256];
    pthread_mutex_lock(&le->mu);
    if (strcmp(rv, le->observed_rv) != 0) {
        snprintf(le->observed_rv, sizeof le->observed_rv, "%s", rv);
        le->observed_mono = mono;
    }
    if (strcmp(holder, le->observed_holder) != 0) {
        snprintf(le->observed_holder, sizeof le->observed_holder, "%s", holder);
        new_holder = 1;
    }
    snprintf(holder_copy, sizeof holder_copy, "%s", le->observed_holder);
    pthread_mutex_unlock(&le->mu);
    if (new_holder && le->o.on_new_leader != NULL) {
        le->o.on_new_leader(le->o.ud, holder_copy);
    }
}

int leader_try_acquire_or_renew(leader_elector *le, double now, double mono)
{
    char ts[64];
    micro_time(now, ts, sizeof ts);
    json_int_t duration = (json_int_t)ceil(le->o.lease_duration_s);
    json_t *lease = NULL;
    kube_error e;
    int rc = lease_call(le, "GET", NULL, &lease, &e);
    if (rc == KD_ENOTFOUND) {
        json_t *obj = json_pack("{s:s,s:s,s:{s:s,s:s},s:{s:s,s:I,s:s,s:s,s:i}}",
                                "apiVersion", "coordination.k8s.io/v1", "kind", "Lease",
                                "metadata", "name", le->name, "namespace", le->ns, "spec",
                                "holderIdentity", le->identity, "leaseDurationSeconds",
                                duration, "acquireTime", ts, "renewTime", ts,
                                "leaseTransitions", 0);
        if (obj == NULL) {
            return KD_ENOMEM;
        }
        json_t *created = NULL;
        rc = lease_call(le, "POST", obj, &created, &e);
        json_decref(obj);
        if (rc == KD_OK) {
            const char *rv = kube_object_rv(created);
            observe(le, rv != NULL ? rv : "", le->identity, mono);
        } else if (rc == KD_EEXISTS) {
            rc = KD_ECONFLICT; /* another candidate created it first */
        }
        json_decref(created);
        return rc;
    }
    if (rc != KD_OK) {
        return rc;
    }
    json_t *spec = json_object_get(lease, "spec");
    const char *rv = kube_object_rv(lease);
    if (rv == NULL || (spec != NULL && !json_is_object(spec))) {
        json_decref(lease);
        return KD_EFORMAT;
    }
    const char *holder = json_string_value(json_object_get(spec, "holderIdentity"));
    if (holder == NULL) {
        holder = "";
    }
    json_t *dur = json_object_get(spec, "leaseDurationSeconds");
    double held_for = json_is_integer(dur) ? (double)json_integer_value(dur)
                                           : le->o.lease_duration_s;
    observe(le, rv, holder, mono);
    int mine = strcmp(holder, le->identity) == 0;
    pthread_mutex_lock(&le->mu);
    double seen_at = le->observed_mono;
    pthread_mutex_unlock(&le->mu);
    if (*holder != '\0' && !mine && seen_at + held_for > mono) {
        json_decref(lease);
        return KD_ECONFLICT;
    }
    json_t *transitions = json_object_get(spec, "leaseTransitions");
    json_int_t trans = json_is_integer(transitions) ? json_integer_value(transitions) : 0;
    json_t *upd = json_deep_copy(lease);
    json_decref(lease);
    if (upd == NULL) {
        return KD_ENOMEM;
    }
    json_t *nspec = json_object_get(upd, "spec");
    if (nspec == NULL) {
        nspec = json_object();
        json_object_set_new(upd, "spec", nspec);
    }
    json_object_set_new(nspec, "holderIdentity", json_string(le->identity));
    json_object_set_new(nspec, "leaseDurationSeconds", json_integer(duration));
    json_object_set_new(nspec, "renewTime", json_string(ts));
    if (!mine) {
        json_object_set_new(nspec, "acquireTime", json_string(ts));
        json_object_set_new(nspec, "leaseTransitions", json_integer(trans + 1));
    }
    json_t *updated = NULL;
    rc = lease_call(le, "PUT", upd, &updated, &e);
    json_decref(upd);
    if (rc == KD_OK) {
        const char *nrv = kube_object_rv(updated);
        observe(le, nrv != NULL ? nrv : "", le->identity, mono);
    }
    json_decref(updated);
    return rc;
}

/* Gives the Lease up if we still hold it: empty holder, 1 s duration. */
static void release(leader_elector *le)
{
    json_t *lease = NULL;
    kube_error e;
    if (kube_get(le->client, &KUBE_LEASES, le->ns, le->name, &lease, &e) != KD_OK) {
        return;
    }
    json_t *spec = json_object_get(lease, "spec");
    const char *holder = json_string_value(json_object_get(spec, "holderIdentity"));
    if (holder != NULL && strcmp(holder, le->identity) == 0) {
        json_t *upd = json_deep_copy(lease);
        json_t *nspec = json_object_get(upd, "spec");
        char ts[64];
        micro_time(wall_s(), ts, sizeof ts);
        json_object_set_new(nspec, "holderIdentity", json_string(""));
        json_object_set_new(nspec, "leaseDurationSeconds", json_integer(1));
        json_object_set_new(nspec, "renewTime", json_string(ts));
        json_object_set_new(nspec, "acquireTime", json_string(ts));
        int rc = kube_update(le->client, &KUBE_LEASES, le->ns, le->name, NULL, upd, NULL, &e);
        json_decref(upd);
        if (rc == KD_OK) {
            KD_INFO("leader released lease=%s/%s identity=%s", le->ns, le->name,
                    le->identity);
        } else {
            KD_WARN("leader release failed lease=%s/%s err=%s msg=\"%s\"", le->ns, le->name,
                    kd_strerror(rc), e.message);
        }
    }
    json_decref(lease);
}

static int nap(leader_elector *le, double s)
{
    struct timespec ts;
    kd_mono_after(s, &ts);
    pthread_mutex_lock(&le->mu);
    while (!atomic_load(&le->stop)) {
        if (pthread_cond_timedwait(&le->cond, &le->mu, &ts) != 0) {
            break;
        }
    }
    pthread_mutex_unlock(&le->mu);
    return atomic_load(&le->stop);
}

static void *run(void *arg)
{
    leader_elector *le = arg;
    while (!atomic_load(&le->stop)) {
        /* Candidate: try every retry period, jittered by up to 20% like client-go. */
        for (;;) {
            int rc = leader_try_acquire_or_renew(le, wall_s(), kd_mono_s());
            if (rc == KD_OK) {
                break;
            }
            if (rc != KD_ECONFLICT && rc != KD_ESHUTDOWN) {
                KD_WARN("leader acquire failed lease=%s/%s err=%s", le->ns, le->name,
                        kd_strerror(rc));
            }
            if (nap(le, le->o.retry_period_s * (1.0 + 0.2 * kube_rand01(&le->rng)))) {
                return NULL;
            }
        }
        atomic_store(&le->leading, 1);
        KD_INFO("leader acquired lease=%s/%s identity=%s", le->ns, le->name, le->identity);
        if (le->o.on_started != NULL) {
            le->o.on_started(le->o.ud);
        }
        double last_renew = kd_mono_s();
        while (!nap(le, le->o.retry_period_s)) {
            int rc = leader_try_acquire_or_renew(le, wall_s(), kd_mono_s());
            if (rc == KD_OK) {
                last_renew = kd_mono_s();
                continue;
            }
            if (rc == KD_ESHUTDOWN) {
                break;
            }
            KD_WARN("leader renew failed lease=%s/%s err=%s", le->ns, le->name,
                    kd_strerror(rc));
            if (rc == KD_ECONFLICT || kd_mono_s() - last_renew >= le->o.renew_deadline_s) {
                /* Someone else holds it now, or we could not renew in time: whatever
                 * we do as leader must stop before the lease can pass to another. */
                break;
            }
        }
        if (atomic_load(&le->stop)) {
            break;
        }
        atomic_store(&le->leading, 0);
        KD_WARN("leader lost lease=%s/%s identity=%s", le->ns, le->name, le->identity);
        if (le->o.on_stopped != NULL) {
            le->o.on_stopped(le->o.ud);
        }
    }
    return NULL;
}

int leader_start(leader_elector *le)
{
    if (le->started) {
        return KD_EINVAL;
    }
    if (pthread_create(&le->thread, NULL, run, le) != 0) {
        return KD_ENOMEM;
    }
    le->started = 1;
    return KD_OK;
}

int leader_is_leader(leader_elector *le)
{
    return atomic_load(&le->leading);
}

void leader_current(leader_elector *le, char *buf, size_t len)
{
    pthread_mutex_lock(&le->mu);
    snprintf(buf, len, "%s", le->observed_holder);
    pthread_mutex_unlock(&le->mu);
}

void leader_stop(leader_elector *le)
{
    atomic_store(&le->stop, 1);
    pthread_mutex_lock(&le->mu);
    pthread_cond_broadcast(&le->cond);
    pthread_mutex_unlock(&le->mu);
    if (le->started) {
        pthread_join(le->thread, NULL);
        le->started = 0;
    }
    if (atomic_load(&le->leading)) {
        if (!le->o.no_release) {
            release(le);
        }
        atomic_store(&le->leading, 0);
        if (le->o.on_stopped != NULL) {
            le->o.on_stopped(le->o.ud);
        }
    }
}

void leader_free(leader_elector **lep)
{
    if (lep == NULL || *lep == NULL) {
        return;
    }
    leader_elector *le = *lep;
    leader_stop(le);
    kube_client_free(&le->client);
    pthread_mutex_destroy(&le->mu);
    pthread_cond_destroy(&le->cond);
    free(le->ns);
    free(le->name);
    free(le->identity);
    free(le);
    *lep = NULL;
}
