/*
 * wq: queue (FIFO list) + dirty set + processing set, as in client-go's workqueue, plus
 * a min-heap of delayed keys and a per-key failure count for the rate limiter.
 *
 * Invariants (all under mu): a key is in `dirty` iff it is in the FIFO or was re-added
 * while processing; a key in the FIFO is never in `processing`. A delayed key is in the
 * heap once, with `waiting` mapping it to its heap slot so that a second add_after can
 * move it earlier instead of adding a duplicate.
 */
#include "wq.h"

#include "kd_clock.h"
#include "kd_error.h"
#include "kube_backoff.h"
#include "kube_map.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct qnode {
    struct qnode *next; /* FIFO link */
    char *key;          /* owned */
};

struct delayed {
    char *key;     /* owned */
    uint64_t when; /* monotonic ns at which the key becomes ready */
    uint64_t seq;  /* insertion order, breaks ties so equal times stay FIFO */
    size_t idx;    /* position in the heap */
};

struct wq {
    pthread_mutex_t mu;
    pthread_cond_t cond;      /* signalled on new ready keys, new delays, shutdown */
    struct qnode *head;       /* FIFO of ready keys */
    struct qnode *tail;
    size_t len;               /* FIFO length */
    kube_map *dirty;          /* set: needs processing */
    kube_map *processing;     /* set: handed out, not yet done */
    kube_map *failures;       /* key -> failure count (stored in the pointer) */
    kube_map *waiting;        /* key -> struct delayed * (borrowed from heap) */
    struct delayed **heap;    /* min-heap on (when, seq) */
    size_t nheap;
    size_t capheap;
    uint64_t seq;
    double base_ms;
    double max_ms;
    int shutdown;
};

int wq_new(const wq_options *opts, wq **out)
{
    *out = NULL;
    wq *q = calloc(1, sizeof *q);
    if (q == NULL) {
        return KD_ENOMEM;
    }
    q->base_ms = opts != NULL && opts->base_delay_ms > 0 ? opts->base_delay_ms : 5.0;
    q->max_ms = opts != NULL && opts->max_delay_ms > 0 ? opts->max_delay_ms : 300000.0;
    q->dirty = kube_map_new(NULL);
    q->processing = kube_map_new(NULL);
    q->failures = kube_map_new(NULL);
    q->waiting = kube_map_new(NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&q->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (q->dirty == NULL || q->processing == NULL || q->failures == NULL ||
        q->waiting == NULL || rc != 0) {
        kube_map_free(&q->dirty);
        kube_map_free(&q->processing);
        kube_map_free(&q->failures);
        kube_map_free(&q->waiting);
        if (rc == 0) {
            pthread_cond_destroy(&q->cond);
        }
        free(q);
        return KD_ENOMEM;
    }
    pthread_mutex_init(&q->mu, NULL);
    *out = q;
    return KD_OK;
}

void wq_free(wq **qp)
{
    if (qp == NULL || *qp == NULL) {
        return;
    }
    wq *q = *qp;
    struct qnode *n = q->head;
    while (n != NULL) {
        struct qnode *next = n->next;
        free(n->key);
        free(n);
        n = next;
    }
    for (size_t i = 0; i < q->nheap; i++) {
        free(q->heap[i]->key);
        free(q->heap[i]);
    }
    free(q->heap);
    kube_map_free(&q->dirty);
    kube_map_free(&q->processing);
    kube_map_free(&q->failures);
    kube_map_free(&q->waiting);
    pthread_cond_destroy(&q->cond);
    pthread_mutex_destroy(&q->mu);
    free(q);
    *qp = NULL;
}

/* --- delayed-key heap ------------------------------------------------------------ */

static int before(const struct delayed *a, const struct delayed *b)
{
    return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void heap_swap(wq *q, size_t i, size_t j)
{
    struct delayed *t = q->heap[i];
    q->heap[i] = q->heap[j];
    q->heap[j] = t;
    q->heap[i]->idx = i;
    q->heap[j]->idx = j;
}

static void heap_up(wq *q, size_t i)
{
    while (i > 0 && before(q->heap[i], q->heap[(i - 1) / 2])) {
        heap_swap(q, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(wq *q, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < q->nheap && before(q->heap[l], q->heap[m])) {
            m = l;
        }
        if (r < q->nheap && before(q->heap[r], q->heap[m])) {
            m = r;
        }
        if (m == i) {
            return;
        }
        heap_swap(q, i, m);
        i = m;
    }
}

static struct delayed *heap_pop(wq *q)
{
    struct delayed *top = q->heap[0];
    q->nheap--;
    if (q->nheap > 0) {
        q->heap[0] = q->heap[q->nheap];
        q->heap[0]->idx = 0;
        heap_down(q, 0);
    }
    return top;
}

/* --- ready queue ------------------------------------------------------------------ */

/* client-go's Add: skip if dirty; mark dirty; queue unless being processed. */
static int add_locked(wq *q, const char *key)
{
    if (kube_map_has(q->dirty, key)) {
        return KD_OK;
    }
    if (kube_map_put(q->dirty, key, NULL) != KD_OK) {
        return KD_ENOMEM;
    }
    if (kube_map_has(q->processing, key)) {
        return KD_OK;
    }
    struct qnode *n = malloc(sizeof *n);
    char *k = strdup(key);
    if (n == NULL || k == NULL) {
        free(n);
        free(k);
        kube_map_del(q->dirty, key);
        return KD_ENOMEM;
    }
    n->key = k;
    n->next = NULL;
    if (q->tail != NULL) {
        q->tail->next = n;
    } else {
        q->head = n;
    }
    q->tail = n;
    q->len++;
    pthread_cond_signal(&q->cond);
    return KD_OK;
}

int wq_add(wq *q, const char *key)
{
    pthread_mutex_lock(&q->mu);
    int rc = q->shutdown ? KD_ESHUTDOWN : add_locked(q, key);
    pthread_mutex_unlock(&q->mu);
    return rc;
}

static int add_after_locked(wq *q, const char *key, double delay_ms)
{
    if (delay_ms <= 0) {
        return add_locked(q, key);
    }
    uint64_t when = kd_mono_ns() + (uint64_t)(delay_ms * 1e6);
    struct delayed *d = kube_map_get(q->waiting, key);
    if (d != NULL) {
        if (when < d->when) {
            d->when = when;
            heap_up(q, d->idx);
            pthread_cond_broadcast(&q->cond);
        }
        return KD_OK;
    }
    if (q->nheap == q->capheap) {
        size_t cap = q->capheap ? q->capheap * 2 : 16;
        struct delayed **h = realloc(q->heap, cap * sizeof *h);
        if (h == NULL) {
            return KD_ENOMEM;
        }
        q->heap = h;
        q->capheap = cap;
    }
    d = malloc(sizeof *d);
    char *k = strdup(key);
    if (d == NULL || k == NULL || kube_map_put(q->waiting, key, d) != KD_OK) {
        free(d);
        free(k);
        return KD_ENOMEM;
    }
    d->key = k;
    d->when = when;
    d->seq = q->seq++;
    d->idx = q->nheap;
    q->heap[q->nheap++] = d;
    heap_up(q, d->idx);
    /* Waiters may be sleeping until a later deadline (or forever): wake them to
     * recompute it. */
    pthread_cond_broadcast(&q->cond);
    return KD_OK;
}

int wq_add_after(wq *q, const char *key, double delay_ms)
{
    pthread_mutex_lock(&q->mu);
    int rc = q->shutdown ? KD_ESHUTDOWN : add_after_locked(q, key, delay_ms);
    pthread_mutex_unlock(&q->mu);
    return rc;
}

double wq_rate_delay_ms(const wq *q, int failures)
{
    return kube_backoff_delay(q->base_ms, q->max_ms, 2.0, failures);
}

int wq_add_rate_limited(wq *q, const char *key)
{
    pthread_mutex_lock(&q->mu);
    if (q->shutdown) {
        pthread_mutex_unlock(&q->mu);
        return KD_ESHUTDOWN;
    }
    intptr_t n = (intptr_t)kube_map_get(q->failures, key);
    double delay = wq_rate_delay_ms(q, (int)n);
    int rc = kube_map_put(q->failures, key, (void *)(n + 1));
    if (rc == KD_OK) {
        rc = add_after_locked(q, key, delay);
    }
    pthread_mutex_unlock(&q->mu);
    return rc;
}

void wq_forget(wq *q, const char *key)
{
    pthread_mutex_lock(&q->mu);
    kube_map_del(q->failures, key);
    pthread_mutex_unlock(&q->mu);
}

int wq_num_requeues(wq *q, const char *key)
{
    pthread_mutex_lock(&q->mu);
    int n = (int)(intptr_t)kube_map_get(q->failures, key);
    pthread_mutex_unlock(&q->mu);
    return n;
}

/* Moves every delayed key whose time has come to the ready queue; returns the time of
 * the next pending one (0 when none). A key that cannot be queued for lack of memory
 * stays in the heap and is retried on the next call. */
static uint64_t promote_due(wq *q, uint64_t now)
{
    while (q->nheap > 0 && q->heap[0]->when <= now) {
        if (add_locked(q, q->heap[0]->key) != KD_OK) {
            return now + 1000000ULL;
        }
        struct delayed *d = heap_pop(q);
        kube_map_del(q->waiting, d->key);
        free(d->key);
        free(d);
    }
    return q->nheap > 0 ? q->heap[0]->when : 0;
}

static int get_locked(wq *q, char **key, uint64_t deadline)
{
    for (;;) {
        uint64_t next = promote_due(q, kd_mono_ns());
        if (q->head != NULL) {
            break;
        }
        if (q->shutdown) {
            return KD_ESHUTDOWN;
        }
        uint64_t wake = next;
        if (deadline != 0 && (wake == 0 || deadline < wake)) {
            wake = deadline;
        }
        if (wake == 0) {
            pthread_cond_wait(&q->cond, &q->mu);
        } else {
            if (deadline != 0 && kd_mono_ns() >= deadline) {
                return KD_ETIMEOUT;
            }
            struct timespec ts = {(time_t)(wake / 1000000000ULL),
                                  (long)(wake % 1000000000ULL)};
            pthread_cond_timedwait(&q->cond, &q->mu, &ts);
        }
    }
    struct qnode *n = q->head;
    q->head = n->next;
    if (q->head == NULL) {
        q->tail = NULL;
    }
    q->len--;
    if (kube_map_put(q->processing, n->key, NULL) != KD_OK) {
        /* Cannot track it: put it back rather than risk handing it out twice. */
        n->next = q->head;
        q->head = n;
        if (q->tail == NULL) {
            q->tail = n;
        }
        q->len++;
        return KD_ENOMEM;
    }
    kube_map_del(q->dirty, n->key);
    *key = n->key;
    free(n);
    return KD_OK;
}

int wq_get(wq *q, char **key)
{
    *key = NULL;
    pthread_mutex_lock(&q->mu);
    int rc = get_locked(q, key, 0);
    pthread_mutex_unlock(&q->mu);
    return rc;
}

int wq_get_timed(wq *q, char **key, long timeout_ms)
{
    *key = NULL;
    uint64_t deadline = kd_mono_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000ULL;
    pthread_mutex_lock(&q->mu);
    int rc = get_locked(q, key, deadline != 0 ? deadline : 1);
    pthread_mutex_unlock(&q->mu);
    return rc;
}

void wq_done(wq *q, const char *key)
{
    pthread_mutex_lock(&q->mu);
    kube_map_del(q->processing, key);
    if (kube_map_has(q->dirty, key)) {
        /* Re-added while it was processed: queue it now. It is already dirty, so add
         * the node directly rather than through add_locked's dirty check. */
        struct qnode *n = malloc(sizeof *n);
        char *k = strdup(key);
        if (n != NULL && k != NULL) {
            n->key = k;
            n->next = NULL;
            if (q->tail != NULL) {
                q->tail->next = n;
            } else {
                q->head = n;
            }
            q->tail = n;
            q->len++;
            pthread_cond_signal(&q->cond);
        } else {
            free(n);
            free(k);
            kube_map_del(q->dirty, key);
        }
    }
    pthread_mutex_unlock(&q->mu);
}

void wq_shutdown(wq *q)
{
    pthread_mutex_lock(&q->mu);
    q->shutdown = 1;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->mu);
}

int wq_shutting_down(wq *q)
{
    pthread_mutex_lock(&q->mu);
    int s = q->shutdown;
    pthread_mutex_unlock(&q->mu);
    return s;
}

size_t wq_len(wq *q)
{
    pthread_mutex_lock(&q->mu);
    size_t n = q->len;
    pthread_mutex_unlock(&q->mu);
    return n;
}

size_t wq_delayed_len(wq *q)
{
    pthread_mutex_lock(&q->mu);
    size_t n = q->nheap;
    pthread_mutex_unlock(&q->mu);
    return n;
}
