/*
 * informer: the reflector loop (list, watch, reconnect, relist) and the cache.
 *
 * One thread per informer. The cache (kube_map of json_t references) is guarded by mu;
 * handlers are called after the cache has been updated and the lock released, so a
 * handler that reads the cache sees at least the state it is told about.
 */
#include "informer.h"

#include "kd_clock.h"
#include "kd_error.h"
#include "kd_log.h"
#include "kube_backoff.h"
#include "kube_map.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define INFORMER_KEY_MAX 512

struct informer {
    kube_client *client;        /* borrowed */
    kube_resource res;          /* strings owned (below) */
    char *group, *version, *plural;
    char *name, *ns, *label_selector, *field_selector;
    long page_size;
    long watch_timeout_s;
    int keep_managed_fields;
    void (*transform)(json_t *obj, void *ud); /* optional, see informer_options */
    void *transform_ud;
    informer_handlers h;
    kube_backoff backoff;       /* used only by the thread */
    kube_watch *watch;
    pthread_t thread;
    int started;                /* thread created and not yet joined */
    atomic_int stop;
    pthread_mutex_t mu;         /* guards everything below */
    pthread_cond_t cond;        /* synced changes, stop */
    kube_map *cache;            /* key -> json_t * (one reference each) */
    int synced;
    char rv[64];                /* last resourceVersion applied */
    informer_stats stats;
};

static void decref_value(void *v)
{
    json_decref(v);
}

static char *dup_opt(const char *s, int *oom)
{
    if (s == NULL || *s == '\0') {
        return NULL;
    }
    char *d = strdup(s);
    if (d == NULL) {
        *oom = 1;
    }
    return d;
}

int informer_new(kube_client *c, const kube_resource *r, const informer_options *opts,
                 const informer_handlers *h, informer **out)
{
    *out = NULL;
    informer *inf = calloc(1, sizeof *inf);
    if (inf == NULL) {
        return KD_ENOMEM;
    }
    atomic_init(&inf->stop, 0);
    pthread_mutex_init(&inf->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&inf->cond, &ca);
    pthread_condattr_destroy(&ca);
    informer_options o = {0};
    if (opts != NULL) {
        o = *opts;
    }
    int oom = 0;
    inf->client = c;
    inf->group = strdup(r->group != NULL ? r->group : "");
    inf->version = dup_opt(r->version, &oom);
    inf->plural = dup_opt(r->plural, &oom);
    inf->name = dup_opt(o.name != NULL ? o.name : r->plural, &oom);
    inf->ns = dup_opt(o.namespace, &oom);
    inf->label_selector = dup_opt(o.label_selector, &oom);
    inf->field_selector = dup_opt(o.field_selector, &oom);
    inf->cache = kube_map_new(decref_value);
    if (oom || inf->group == NULL || inf->version == NULL || inf->plural == NULL ||
        inf->cache == NULL || kube_watch_new(c, &inf->watch) != KD_OK) {
        informer_free(&inf);
        return KD_ENOMEM;
    }
    inf->res.group = inf->group;
    inf->res.version = inf->version;
    inf->res.plural = inf->plural;
    inf->res.namespaced = r->namespaced;
    inf->page_size = o.page_size > 0 ? o.page_size : 500;
    inf->keep_managed_fields = o.keep_managed_fields;
    inf->transform = o.transform;
    inf->transform_ud = o.transform_ud;
    inf->watch_timeout_s = o.watch_timeout_s > 0 ? o.watch_timeout_s : 300;
    kube_backoff_init(&inf->backoff, o.backoff_base_ms > 0 ? o.backoff_base_ms : 100,
                      o.backoff_max_ms > 0 ? o.backoff_max_ms : 30000, 2.0, 0.5, 0);
    if (h != NULL) {
        inf->h = *h;
    }
    *out = inf;
    return KD_OK;
}

/* Sleeps up to ms unless stopped first; returns 1 when stopped. */
static int nap(informer *inf, double ms)
{
    struct timespec ts;
    kd_mono_after(ms / 1e3, &ts);
    pthread_mutex_lock(&inf->mu);
    while (!atomic_load(&inf->stop)) {
        if (pthread_cond_timedwait(&inf->cond, &inf->mu, &ts) != 0) {
            break;
        }
    }
    pthread_mutex_unlock(&inf->mu);
    return atomic_load(&inf->stop);
}

static void set_rv(informer *inf, const char *rv)
{
    if (rv == NULL) {
        return;
    }
    pthread_mutex_lock(&inf->mu);
    size_t n = strlen(rv);
    if (n < sizeof inf->rv) {
        memcpy(inf->rv, rv, n + 1);
    }
    pthread_mutex_unlock(&inf->mu);
}

/* --- watch events ---------------------------------------------------------------- */

/* Objects reaching here are the informer's own (just decoded, not yet shared), so
 * trimming them in place is safe. */
static void trim(informer *inf, json_t *obj)
{
    if (!inf->keep_managed_fields) {
        json_object_del(json_object_get(obj, "metadata"), "managedFields");
    }
    if (inf->transform != NULL) {
        inf->transform(obj, inf->transform_ud);
    }
}

static int on_event(void *ud, kube_event_type type, json_t *obj)
{
    informer *inf = ud;
    if (type == KUBE_BOOKMARK) {
        set_rv(inf, kube_object_rv(obj));
        pthread_mutex_lock(&inf->mu);
        inf->stats.bookmarks++;
        pthread_mutex_unlock(&inf->mu);
        return atomic_load(&inf->stop);
    }
    char key[INFORMER_KEY_MAX];
    trim(inf, obj);
    if (kube_object_key(obj, key, sizeof key) != KD_OK) {
        KD_WARN("informer skipped an event without a usable name informer=%s", inf->name);
        set_rv(inf, kube_object_rv(obj));
        return atomic_load(&inf->stop);
    }
    json_t *old = NULL;
    pthread_mutex_lock(&inf->mu);
    if (type == KUBE_DELETED) {
        old = kube_map_take(inf->cache, key);
    } else {
        old = json_incref(kube_map_get(inf->cache, key));
        if (kube_map_put(inf->cache, key, json_incref(obj)) != KD_OK) {
            json_decref(obj);
        }
    }
    inf->stats.events++;
    const char *rv = kube_object_rv(obj);
    if (strlen(rv) < sizeof inf->rv) {
        memcpy(inf->rv, rv, strlen(rv) + 1);
    }
    pthread_mutex_unlock(&inf->mu);
    if (type == KUBE_DELETED) {
        if (inf->h.on_delete != NULL) {
            inf->h.on_delete(inf->h.ud, obj, 0);
        }
    } else if (old != NULL) {
        if (inf->h.on_update != NULL) {
            inf->h.on_update(inf->h.ud, old, obj);
        }
    } else if (inf->h.on_add != NULL) {
        inf->h.on_add(inf->h.ud, obj);
    }
    json_decref(old);
    return atomic_load(&inf->stop);
}

/* --- relist ---------------------------------------------------------------------- */

struct gone_scan {
    kube_map *seen;   /* keys present in the new list */
    char **keys;      /* cached keys missing from it */
    size_t n, cap;
    int oom;
};

static int collect_gone(void *ud, const char *key, void *value)
{
    struct gone_scan *g = ud;
    (void)value;
    if (kube_map_has(g->seen, key)) {
        return 0;
    }
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 16;
        char **k = realloc(g->keys, cap * sizeof *k);
        if (k == NULL) {
            g->oom = 1;
            return 1;
        }
        g->keys = k;
        g->cap = cap;
    }
    g->keys[g->n] = strdup(key);
    if (g->keys[g->n] == NULL) {
        g->oom = 1;
        return 1;
    }
    g->n++;
    return 0;
}

/* Applies a full list to the cache: adds, updates for changed versions, and tombstones
 * for cached objects the list no longer has. */
static int replace(informer *inf, json_t *items, const char *rv)
{
    kube_map *seen = kube_map_new(NULL);
    if (seen == NULL) {
        return KD_ENOMEM;
    }
    size_t i;
    json_t *obj;
    char key[INFORMER_KEY_MAX];
    int rc = KD_OK;
    json_array_foreach(items, i, obj)
    {
        if (atomic_load(&inf->stop)) {
            break;
        }
        if (kube_object_key(obj, key, sizeof key) != KD_OK) {
            continue;
        }
        trim(inf, obj);
        if (kube_map_put(seen, key, NULL) != KD_OK) {
            rc = KD_ENOMEM;
            break;
        }
        pthread_mutex_lock(&inf->mu);
        json_t *old = json_incref(kube_map_get(inf->cache, key));
        const char *orv = old != NULL ? kube_object_rv(old) : NULL;
        int changed = old == NULL || orv == NULL || strcmp(orv, kube_object_rv(obj)) != 0;
        if (changed && kube_map_put(inf->cache, key, json_incref(obj)) != KD_OK) {
            json_decref(obj);
            rc = KD_ENOMEM;
        }
        pthread_mutex_unlock(&inf->mu);
        if (rc != KD_OK) {
            json_decref(old);
            break;
        }
        if (old == NULL) {
            if (inf->h.on_add != NULL) {
                inf->h.on_add(inf->h.ud, obj);
            }
        } else if (changed && inf->h.on_update != NULL) {
            inf->h.on_update(inf->h.ud, old, obj);
        }
        json_decref(old);
    }
    if (rc == KD_OK && !atomic_load(&inf->stop)) {
        struct gone_scan g = {.seen = seen};
        pthread_mutex_lock(&inf->mu);
        kube_map_foreach(inf->cache, collect_gone, &g);
        pthread_mutex_unlock(&inf->mu);
        for (size_t k = 0; k < g.n; k++) {
            if (!g.oom) {
                pthread_mutex_lock(&inf->mu);
                json_t *old = kube_map_take(inf->cache, g.keys[k]);
                inf->stats.tombstones += old != NULL;
                pthread_mutex_unlock(&inf->mu);
                if (old != NULL && inf->h.on_delete != NULL) {
                    inf->h.on_delete(inf->h.ud, old, 1);
                }
                json_decref(old);
            }
            free(g.keys[k]);
        }
        free(g.keys);
        if (g.oom) {
            rc = KD_ENOMEM;
        }
    }
    kube_map_free(&seen);
    if (rc == KD_OK) {
        set_rv(inf, rv);
    }
    return rc;
}

static int relist(informer *inf)
{
    kube_list_opts lo = {.label_selector = inf->label_selector,
                         .field_selector = inf->field_selector,
                         .limit = inf->page_size,
                         .cancel = &inf->stop};
    json_t *items = NULL;
    char *rv = NULL;
    kube_error e;
    int rc = kube_list_all(inf->client, &inf->res, inf->ns, &lo, &items, &rv, &e);
    if (rc == KD_ESHUTDOWN) {
        return rc;
    }
    if (rc != KD_OK) {
        KD_WARN("informer list failed informer=%s err=%s http=%ld reason=%s msg=\"%s\"",
                inf->name, kd_strerror(rc), e.http_status, e.reason, e.message);
        return rc;
    }
    if (strlen(rv) >= sizeof inf->rv) {
        KD_WARN("informer list returned an oversized resourceVersion informer=%s",
                inf->name);
        json_decref(items);
        free(rv);
        return KD_EFORMAT;
    }
    rc = replace(inf, items, rv);
    json_decref(items);
    free(rv);
    if (rc == KD_OK) {
        pthread_mutex_lock(&inf->mu);
        inf->stats.lists++;
        if (!inf->synced && !atomic_load(&inf->stop)) {
            inf->synced = 1;
            pthread_cond_broadcast(&inf->cond);
        }
        pthread_mutex_unlock(&inf->mu);
    }
    return rc;
}

static void *run(void *arg)
{
    informer *inf = arg;
    int need_list = 1;
    while (!atomic_load(&inf->stop)) {
        if (need_list) {
            int rc = relist(inf);
            if (rc != KD_OK) {
                if (nap(inf, kube_backoff_next(&inf->backoff))) {
                    break;
                }
                continue;
            }
            need_list = 0;
        }
        char rv[64];
        informer_last_rv(inf, rv, sizeof rv);
        /* client-go spreads watch lifetimes over [t, 2t) so that many informers do not
         * reconnect together. */
        long timeout = inf->watch_timeout_s +
                       (long)(kube_rand01(&inf->backoff.rng) * (double)inf->watch_timeout_s);
        kube_list_opts wo = {.label_selector = inf->label_selector,
                             .field_selector = inf->field_selector,
                             .resource_version = rv,
                             .timeout_s = timeout};
        pthread_mutex_lock(&inf->mu);
        inf->stats.watches++;
        long before = inf->stats.events + inf->stats.bookmarks;
        pthread_mutex_unlock(&inf->mu);
        double t0 = kd_mono_s();
        kube_error e;
        int rc = kube_watch_run(inf->watch, &inf->res, inf->ns, &wo, on_event, inf, &e);
        if (rc == KD_ESHUTDOWN || atomic_load(&inf->stop)) {
            break;
        }
        pthread_mutex_lock(&inf->mu);
        int progressed = inf->stats.events + inf->stats.bookmarks > before;
        if (rc == KD_EGONE) {
            inf->stats.gone++;
        } else if (rc != KD_OK) {
            inf->stats.watch_errors++;
        }
        pthread_mutex_unlock(&inf->mu);
        if (rc == KD_EGONE) {
            KD_INFO("informer resourceVersion expired, relisting informer=%s rv=%s",
                    inf->name, rv);
            need_list = 1;
            continue;
        }
        if (progressed || kd_mono_s() - t0 > 1.0) {
            kube_backoff_reset(&inf->backoff);
        }
        if (rc == KD_OK && (progressed || kd_mono_s() - t0 > 1.0)) {
            continue; /* normal end of a stream: reconnect at once */
        }
        double wait = kube_backoff_next(&inf->backoff);
        if (e.retry_after_s * 1000.0 > wait) {
            wait = e.retry_after_s * 1000.0;
        }
        if (rc != KD_OK) {
            KD_WARN("informer watch failed informer=%s err=%s http=%ld msg=\"%s\" "
                    "retry_ms=%.0f",
                    inf->name, kd_strerror(rc), e.http_status, e.message, wait);
        }
        if (nap(inf, wait)) {
            break;
        }
    }
    return NULL;
}

int informer_start(informer *inf)
{
    if (inf->started) {
        return KD_EINVAL;
    }
    if (pthread_create(&inf->thread, NULL, run, inf) != 0) {
        return KD_ENOMEM;
    }
    inf->started = 1;
    return KD_OK;
}

int informer_has_synced(informer *inf)
{
    pthread_mutex_lock(&inf->mu);
    int s = inf->synced;
    pthread_mutex_unlock(&inf->mu);
    return s;
}

int informer_wait_synced(informer *inf, long timeout_ms)
{
    struct timespec ts;
    kd_mono_after(timeout_ms > 0 ? (double)timeout_ms / 1e3 : 0, &ts);
    pthread_mutex_lock(&inf->mu);
    int rc = KD_OK;
    while (!inf->synced) {
        if (atomic_load(&inf->stop)) {
            rc = KD_ESHUTDOWN;
            break;
        }
        if (timeout_ms < 0) {
            pthread_cond_wait(&inf->cond, &inf->mu);
        } else if (pthread_cond_timedwait(&inf->cond, &inf->mu, &ts) != 0) {
            rc = inf->synced ? KD_OK : KD_ETIMEOUT;
            break;
        }
    }
    pthread_mutex_unlock(&inf->mu);
    return rc;
}

json_t *informer_get(informer *inf, const char *key)
{
    pthread_mutex_lock(&inf->mu);
    json_t *o = json_incref(kube_map_get(inf->cache, key));
    pthread_mutex_unlock(&inf->mu);
    return o;
}

static int append_ref(void *ud, const char *key, void *value)
{
    (void)key;
    return json_array_append(ud, value) != 0;
}

json_t *informer_list(informer *inf)
{
    json_t *arr = json_array();
    if (arr == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&inf->mu);
    kube_map_foreach(inf->cache, append_ref, arr);
    pthread_mutex_unlock(&inf->mu);
    return arr;
}

struct select_ctx {
    json_t *out;          /* result array */
    const char *ns;       /* namespace filter or NULL */
    const char *selector; /* label selector */
    int failed;
};

static int append_match(void *ud, const char *key, void *value)
{
    struct select_ctx *s = ud;
    (void)key;
    if (s->ns != NULL) {
        const char *ns = json_string_value(
            json_object_get(json_object_get(value, "metadata"), "namespace"));
        if (ns == NULL || strcmp(ns, s->ns) != 0) {
            return 0;
        }
    }
    int m = kube_label_match(value, s->selector);
    if (m < 0 || (m == 1 && json_array_append(s->out, value) != 0)) {
        s->failed = 1;
        return 1;
    }
    return 0;
}

json_t *informer_select(informer *inf, const char *ns, const char *selector)
{
    json_t *probe = json_object();
    int valid = probe != NULL && kube_label_match(probe, selector) >= 0;
    json_decref(probe);
    if (!valid) {
        return NULL;
    }
    struct select_ctx s = {.out = json_array(), .ns = ns, .selector = selector};
    if (s.out == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&inf->mu);
    kube_map_foreach(inf->cache, append_match, &s);
    pthread_mutex_unlock(&inf->mu);
    if (s.failed) {
        json_decref(s.out);
        return NULL;
    }
    return s.out;
}

size_t informer_size(informer *inf)
{
    pthread_mutex_lock(&inf->mu);
    size_t n = kube_map_size(inf->cache);
    pthread_mutex_unlock(&inf->mu);
    return n;
}

void informer_last_rv(informer *inf, char *buf, size_t len)
{
    pthread_mutex_lock(&inf->mu);
    size_t n = strlen(inf->rv);
    if (len > 0) {
        size_t m = n < len - 1 ? n : len - 1;
        memcpy(buf, inf->rv, m);
        buf[m] = '\0';
    }
    pthread_mutex_unlock(&inf->mu);
}

void informer_get_stats(informer *inf, informer_stats *st)
{
    pthread_mutex_lock(&inf->mu);
    *st = inf->stats;
    pthread_mutex_unlock(&inf->mu);
}

void informer_stop(informer *inf)
{
    atomic_store(&inf->stop, 1);
    if (inf->watch != NULL) {
        kube_watch_stop(inf->watch);
    }
    pthread_mutex_lock(&inf->mu);
    pthread_cond_broadcast(&inf->cond);
    pthread_mutex_unlock(&inf->mu);
    if (inf->started) {
        pthread_join(inf->thread, NULL);
        inf->started = 0;
    }
}

void informer_free(informer **infp)
{
    if (infp == NULL || *infp == NULL) {
        return;
    }
    informer *inf = *infp;
    informer_stop(inf);
    pthread_mutex_destroy(&inf->mu);
    pthread_cond_destroy(&inf->cond);
    kube_watch_free(&inf->watch);
    kube_map_free(&inf->cache);
    free(inf->group);
    free(inf->version);
    free(inf->plural);
    free(inf->name);
    free(inf->ns);
    free(inf->label_selector);
    free(inf->field_selector);
    free(inf);
    *infp = NULL;
}
