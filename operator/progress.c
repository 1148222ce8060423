/*
 * progress: one thread, one ZeroMQ context, one SUB socket per followed job (see
 * progress.h). Subscriptions change under the mutex (the desired endpoint per job); the
 * thread compares desired with connected endpoints each round and reconnects, so no
 * socket is ever touched outside the thread that owns it (ZeroMQ sockets are not
 * thread-safe).
 */
#include "progress.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "kd_clock.h"
#include "kd_curve.h"
#include "kd_error.h"
#include "kd_log.h"
#include "kd_metrics.h"
#include "kd_wire.h"
#include "kube_map.h"
#include "reconcile_plan.h"

#define PROGRESS_MAX_SUBS 4096
#define PROGRESS_MSG_MAX 65536

typedef struct sub {
    char want[128];          /* endpoint to follow, "" = none */
    char have[128];          /* endpoint the socket is connected to */
    char key_want[KD_CURVE_KEY_LEN + 1]; /* the job's public key, "" = unknown */
    char key_have[KD_CURVE_KEY_LEN + 1]; /* the key the socket was connected with */
    long gen;                /* newest generation taken from this connection, -1 = none */
    int foreign_logged;      /* a foreign message was logged for this job */
    void *sock;              /* owned by the thread */
    int have_info;
    rc_progress_info info;
    sched_tp tp[PROGRESS_MAX_TP];
    int n_tp;
    sched_cfg cfg[KD_METRICS_MAX_CONFIGS]; /* the coordinator's configuration table */
    int n_cfg;
    double last_notify;
} sub;

struct progress {
    progress_options opt;
    pthread_mutex_t mu;
    kube_map *subs;          /* key -> sub */
    void *zctx;
    pthread_t thread;
    int started;
    atomic_int stop;
    atomic_long dropped;
    atomic_long foreign;
    char op_pub[KD_CURVE_KEY_LEN + 1]; /* the operator's keypair, "" = none */
    char op_sec[KD_CURVE_KEY_LEN + 1];
};

static void sub_free(void *v)
{
    sub *s = v;
    if (s != NULL && s->sock != NULL)
        zmq_close(s->sock);
    free(s);
}

int progress_new(const progress_options *o, progress **out)
{
    progress *p = calloc(1, sizeof *p);
    if (p == NULL)
        return KD_ENOMEM;
    if (o != NULL)
        p->opt = *o;
    if (p->opt.notify_interval_s <= 0)
        p->opt.notify_interval_s = 3.0;
    if (p->opt.curve_public != NULL && p->opt.curve_secret != NULL &&
        strlen(p->opt.curve_public) == KD_CURVE_KEY_LEN &&
        strlen(p->opt.curve_secret) == KD_CURVE_KEY_LEN) {
        memcpy(p->op_pub, p->opt.curve_public, KD_CURVE_KEY_LEN + 1);
        memcpy(p->op_sec, p->opt.curve_secret, KD_CURVE_KEY_LEN + 1);
    }
    p->opt.curve_public = p->opt.curve_secret = NULL; /* not kept: the copies are */
    p->subs = kube_map_new(sub_free);
    p->zctx = zmq_ctx_new();
    if (p->subs == NULL || p->zctx == NULL) {
        kube_map_free(&p->subs);
        if (p->zctx != NULL)
            zmq_ctx_term(p->zctx);
        free(p);
        return KD_ENOMEM;
    }
    pthread_mutex_init(&p->mu, NULL);
    *out = p;
    return KD_OK;
}

static int decode_msg(const kd_metrics *m, rc_progress_info *out);

int progress_decode(const char *text, size_t len, rc_progress_info *out)
{
    kd_metrics *m = malloc(sizeof *m);
    char err[256];
    int rc = -1;
    memset(out, 0, sizeof *out);
    out->samples = -1;
    if (m != NULL && kd_metrics_decode(text, len, m, err, sizeof err) == KD_OK)
        rc = decode_msg(m, out);
    free(m);
    return rc;
}

/* progress_decode_job into a caller's kd_metrics as well (the configuration table). */
static int decode_job(const char *text, size_t len, const char *key, rc_progress_info *out,
                      long *generation, kd_metrics *m)
{
    char err[256];
    int rc = -1;
    memset(out, 0, sizeof *out);
    out->samples = -1;
    if (kd_metrics_decode(text, len, m, err, sizeof err) == KD_OK && (m->has & KD_MET_JOB) &&
        (m->has & KD_MET_GENERATION)) {
        if (strcmp(m->job, key) != 0)
            rc = -2;
        else {
            *generation = (long)m->generation;
            rc = decode_msg(m, out);
        }
    }
    return rc;
}

int progress_decode_job(const char *text, size_t len, const char *key, rc_progress_info *out,
                        long *generation)
{
    kd_metrics *m = malloc(sizeof *m);
    int rc = m != NULL ? decode_job(text, len, key, out, generation, m) : -1;
    free(m);
    return rc;
}

/* The reconciler's view of a decoded message. */
static int decode_msg(const kd_metrics *m, rc_progress_info *out)
{
    memset(out, 0, sizeof *out);
    out->batch = m->batch;
    out->epoch = (long)m->epoch;
    out->step = (long)m->step;
    out->agents = m->agents;
    out->loss = m->loss;
    out->accuracy = m->accuracy;
    out->samples_per_s = m->samples_per_s;
    out->samples = (m->has & KD_MET_SAMPLES) ? (long)m->samples : -1;
    out->checkpoint = (int)rc_ckpt_parse((m->has & KD_MET_CHECKPOINT) ? m->checkpoint : NULL);
    if (m->has & KD_MET_CHECKPOINT_ERROR)
        snprintf(out->checkpoint_error, sizeof out->checkpoint_error, "%s",
                 m->checkpoint_error);
    /* A coordinator without epochs_done: its accuracy is 0 until the first evaluation. */
    out->evaluated = (m->has & KD_MET_EPOCHS_DONE) ? m->epochs_done > 0 : out->accuracy > 0;
    out->noise_scale = (m->has & KD_MET_NOISE) ? m->noise_scale : 0;
    return 0;
}

/* Throughput per agent count: exponential average, so a noisy interval does not decide. */
static void add_tp(sub *s, int agents, double sps)
{
    if (agents < 1 || sps <= 0)
        return;
    for (int i = 0; i < s->n_tp; i++) {
        if (s->tp[i].agents == agents) {
            s->tp[i].samples_per_s = 0.7 * s->tp[i].samples_per_s + 0.3 * sps;
            return;
        }
    }
    if (s->n_tp < PROGRESS_MAX_TP) {
        s->tp[s->n_tp].agents = agents;
        s->tp[s->n_tp].samples_per_s = sps;
        s->n_tp++;
    }
}

typedef struct round_ctx {
    progress *p;
    zmq_pollitem_t items[PROGRESS_MAX_SUBS];
    sub *subs[PROGRESS_MAX_SUBS];
    char *keys[PROGRESS_MAX_SUBS];
    int n;
} round_ctx;

/* Under the lock: (re)connect sockets whose endpoint changed; collect poll items. */
static int prepare(void *ud, const char *key, void *value)
{
    round_ctx *r = ud;
    sub *s = value;
    if (strcmp(s->want, s->have) != 0 || strcmp(s->key_want, s->key_have) != 0) {
        if (s->sock != NULL) {
            zmq_close(s->sock);
            s->sock = NULL;
        }
        s->have[0] = '\0';
        s->key_have[0] = '\0';
        s->gen = -1; /* a new connection (a new coordinator) may start its generations anew */
        if (s->want[0] != '\0') {
            void *sock = zmq_socket(r->p->zctx, ZMQ_SUB);
            int linger = 0, hwm = 16;
            size_t maxmsg = PROGRESS_MSG_MAX;
            int64_t mm = (int64_t)maxmsg;
            if (sock != NULL) {
                zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
                zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
                zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &mm, sizeof mm);
                zmq_setsockopt(sock, ZMQ_SUBSCRIBE, "", 0);
                int curve = r->p->op_pub[0] != '\0' && s->key_want[0] != '\0';
                if (curve && kd_curve_client(sock, s->key_want, r->p->op_pub, r->p->op_sec) != 0)
                    KD_WARN("metrics CURVE setup failed job=%s err=\"%s\"", key,
                            zmq_strerror(zmq_errno()));
                if (zmq_connect(sock, s->want) != 0) {
                    KD_WARN("metrics subscribe failed job=%s endpoint=%s err=\"%s\"", key,
                            s->want, zmq_strerror(zmq_errno()));
                    zmq_close(sock);
                    sock = NULL;
                }
            }
            s->sock = sock;
            if (sock != NULL) {
                snprintf(s->have, sizeof s->have, "%s", s->want);
                snprintf(s->key_have, sizeof s->key_have, "%s", s->key_want);
            }
        }
    }
    if (s->sock != NULL && r->n < PROGRESS_MAX_SUBS) {
        r->items[r->n] = (zmq_pollitem_t){.socket = s->sock, .events = ZMQ_POLLIN};
        r->subs[r->n] = s;
        r->keys[r->n] = strdup(key);
        r->n++;
    }
    return 0;
}

static void *progress_main(void *arg)
{
    progress *p = arg;
    round_ctx *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->p = p;
    char *buf = malloc(PROGRESS_MSG_MAX + 1);
    kd_metrics *m = malloc(sizeof *m);
    while (buf != NULL && m != NULL && !atomic_load(&p->stop)) {
        pthread_mutex_lock(&p->mu);
        r->n = 0;
        kube_map_foreach(p->subs, prepare, r);
        pthread_mutex_unlock(&p->mu);
        if (r->n == 0) {
            struct timespec ts = {0, 200 * 1000 * 1000};
            nanosleep(&ts, NULL);
            continue;
        }
        /* The sockets stay valid during the poll: only this thread closes them. */
        int rc = zmq_poll(r->items, r->n, 200);
        for (int i = 0; rc > 0 && i < r->n; i++) {
            if (!(r->items[i].revents & ZMQ_POLLIN))
                continue;
            char notify_key[600] = "";
            for (;;) {
                int n = zmq_recv(r->items[i].socket, buf, PROGRESS_MSG_MAX, ZMQ_DONTWAIT);
                if (n < 0)
                    break;
                rc_progress_info info;
                long gen = 0;
                int d = n > PROGRESS_MSG_MAX
                            ? -1
                            : decode_job(buf, (size_t)n, r->keys[i], &info, &gen, m);
                if (d == -1) {
                    atomic_fetch_add(&p->dropped, 1);
                    continue;
                }
                pthread_mutex_lock(&p->mu);
                sub *s = r->subs[i];
                if (d == -2 || gen < s->gen) {
                    /* Another job's metrics (a reused address), or an older generation
                     * than this coordinator already reported: not this job's progress. */
                    atomic_fetch_add(&p->foreign, 1);
                    if (!s->foreign_logged)
                        KD_WARN("metrics dropped job=%s reason=%s (further ones counted)",
                                r->keys[i], d == -2 ? "another job" : "older generation");
                    s->foreign_logged = 1;
                    pthread_mutex_unlock(&p->mu);
                    continue;
                }
                s->gen = gen;
                /* The coordinator's last message (training done) carries no step
                 * metrics: keep the last measured loss and speed. */
                if (s->have_info && info.samples_per_s <= 0 && info.loss <= 0) {
                    info.samples_per_s = s->info.samples_per_s;
                    info.loss = s->info.loss;
                }
                /* The first report after a membership change averages over the pause
                 * and the warm-up: only a count seen twice in a row is a measurement. */
                if (s->have_info && s->info.agents == info.agents)
                    add_tp(s, info.agents, info.samples_per_s);
                s->info = info;
                s->have_info = 1;
                /* The coordinator's own table (smoothed there): the latest one stands. */
                if (m->has & KD_MET_CONFIGS) {
                    s->n_cfg = 0;
                    for (int k = 0; k < m->n_configs; k++)
                        if (m->configs[k].step_ms > 0)
                            s->cfg[s->n_cfg++] =
                                (sched_cfg){m->configs[k].agents, m->configs[k].batch,
                                            m->configs[k].step_ms / 1000.0,
                                            m->configs[k].compute_ms / 1000.0};
                }

                double now = kd_mono_s();
                if (now - s->last_notify >= p->opt.notify_interval_s) {
                    s->last_notify = now;
                    snprintf(notify_key, sizeof notify_key, "%s", r->keys[i]);
                }
                pthread_mutex_unlock(&p->mu);
            }
            if (notify_key[0] != '\0' && p->opt.notify != NULL)
                p->opt.notify(p->opt.ud, notify_key);
        }
        for (int i = 0; i < r->n; i++)
            free(r->keys[i]);
        r->n = 0;
    }
    free(buf);
    free(m);
    free(r);
    return NULL;
}

int progress_start(progress *p)
{
    if (pthread_create(&p->thread, NULL, progress_main, p) != 0)
        return KD_ENOMEM;
    p->started = 1;
    return KD_OK;
}

/* A sub record for key (lock held); NULL when out of memory or full. */
static sub *get_sub(progress *p, const char *key, int create)
{
    sub *s = kube_map_get(p->subs, key);
    if (s == NULL && create && kube_map_size(p->subs) < PROGRESS_MAX_SUBS) {
        s = calloc(1, sizeof *s);
        if (s != NULL && kube_map_put(p->subs, key, s) != KD_OK) {
            free(s);
            s = NULL;
        }
    }
    return s;
}

void progress_watch(progress *p, const char *key, const char *endpoint)
{
    pthread_mutex_lock(&p->mu);
    sub *s = get_sub(p, key, endpoint != NULL);
    if (s != NULL)
        snprintf(s->want, sizeof s->want, "%s", endpoint != NULL ? endpoint : "");
    pthread_mutex_unlock(&p->mu);
}

void progress_set_job_key(progress *p, const char *key, const char *job_public)
{
    pthread_mutex_lock(&p->mu);
    sub *s = get_sub(p, key, job_public != NULL);
    if (s != NULL) {
        if (job_public != NULL && strlen(job_public) == KD_CURVE_KEY_LEN)
            memcpy(s->key_want, job_public, KD_CURVE_KEY_LEN + 1);
        else
            s->key_want[0] = '\0';
    }
    pthread_mutex_unlock(&p->mu);
}

static int reconnect_all(void *ud, const char *key, void *value)
{
    (void)ud;
    (void)key;
    sub *s = value;
    s->key_have[0] = '\0';
    if (s->key_want[0] == '\0') /* unkeyed subscriptions must be redone as well */
        s->have[0] = '\0';
    return 0;
}

void progress_set_operator_key(progress *p, const char *public_key, const char *secret_key)
{
    pthread_mutex_lock(&p->mu);
    int ok = public_key != NULL && secret_key != NULL &&
             strlen(public_key) == KD_CURVE_KEY_LEN && strlen(secret_key) == KD_CURVE_KEY_LEN;
    if (!ok || strcmp(p->op_pub, public_key) != 0 || strcmp(p->op_sec, secret_key) != 0) {
        snprintf(p->op_pub, sizeof p->op_pub, "%s", ok ? public_key : "");
        snprintf(p->op_sec, sizeof p->op_sec, "%s", ok ? secret_key : "");
        kube_map_foreach(p->subs, reconnect_all, NULL);
    }
    pthread_mutex_unlock(&p->mu);
}

void progress_forget(progress *p, const char *key)
{
    pthread_mutex_lock(&p->mu);
    sub *s = kube_map_get(p->subs, key);
    /* The socket belongs to the thread: mark it unwanted with no data, and drop the
     * record only when no socket is attached. */
    if (s != NULL && s->sock == NULL)
        kube_map_del(p->subs, key);
    else if (s != NULL) {
        s->want[0] = '\0';
        s->have_info = 0;
        s->n_tp = 0;
        s->n_cfg = 0;
    }
    pthread_mutex_unlock(&p->mu);
}

int progress_get(progress *p, const char *key, rc_progress_info *out)
{
    pthread_mutex_lock(&p->mu);
    sub *s = kube_map_get(p->subs, key);
    int have = s != NULL && s->have_info;
    if (have)
        *out = s->info;
    pthread_mutex_unlock(&p->mu);
    return have;
}

int progress_throughput(progress *p, const char *key, sched_tp *tp, int max)
{
    pthread_mutex_lock(&p->mu);
    sub *s = kube_map_get(p->subs, key);
    int n = 0;
    for (int i = 0; s != NULL && i < s->n_tp && n < max; i++)
        tp[n++] = s->tp[i];
    pthread_mutex_unlock(&p->mu);
    return n;
}

int progress_send_batch(progress *p, const char *key, const char *endpoint, int batch,
                        char *err, size_t errlen)
{
    char job_pub[KD_CURVE_KEY_LEN + 1] = "", op_pub[KD_CURVE_KEY_LEN + 1],
         op_sec[KD_CURVE_KEY_LEN + 1];
    pthread_mutex_lock(&p->mu);
    sub *s = kube_map_get(p->subs, key);
    if (s != NULL)
        memcpy(job_pub, s->key_want, sizeof job_pub);
    memcpy(op_pub, p->op_pub, sizeof op_pub);
    memcpy(op_sec, p->op_sec, sizeof op_sec);
    pthread_mutex_unlock(&p->mu);
    /* The coordinator takes BATCH only from the operator's key: without CURVE it would
     * refuse it, so nothing is sent. */
    if (job_pub[0] == '\0' || op_pub[0] == '\0')
        return kd_errf(err, errlen, KD_EINVAL, "no CURVE keys for job %s: batch not sent", key);
    char body[KD_WIRE_BATCH_BODY_MAX];
    unsigned char hdr[KD_WIRE_HDR_SIZE];
    size_t body_len = kd_wire_batch_encode(batch, hdr, body);
    /* One short-lived DEALER on the shared context (contexts are thread-safe, this socket
     * is used by this thread only); the linger lets the handshake and the message go out
     * after the close. */
    void *sock = zmq_socket(p->zctx, ZMQ_DEALER);
    int rc = KD_OK, linger = 2000;
    if (sock == NULL) {
        memset(op_sec, 0, sizeof op_sec);
        return kd_errf(err, errlen, KD_ENOMEM, "socket: %s", zmq_strerror(zmq_errno()));
    }
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (kd_curve_client(sock, job_pub, op_pub, op_sec) != 0 || zmq_connect(sock, endpoint) != 0 ||
        zmq_send(sock, hdr, sizeof hdr, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(sock, body, body_len, ZMQ_DONTWAIT) < 0)
        rc = kd_errf(err, errlen, KD_ENETWORK, "batch to %s: %s", endpoint,
                     zmq_strerror(zmq_errno()));
    zmq_close(sock);
    memset(op_sec, 0, sizeof op_sec);
    return rc;
}

int progress_configs(progress *p, const char *key, sched_cfg *cfg, int max)
{
    pthread_mutex_lock(&p->mu);
    sub *s = kube_map_get(p->subs, key);
    int n = 0;
    for (int i = 0; s != NULL && s->have_info && i < s->n_cfg && n < max; i++)
        cfg[n++] = s->cfg[i];
    pthread_mutex_unlock(&p->mu);
    return n;
}

long progress_dropped(progress *p)
{
    return atomic_load(&p->dropped);
}

long progress_foreign(progress *p)
{
    return atomic_load(&p->foreign);
}

void progress_stop(progress *p)
{
    if (p == NULL || !p->started)
        return;
    atomic_store(&p->stop, 1);
    pthread_join(p->thread, NULL);
    p->started = 0;
}

void progress_free(progress **pp)
{
    if (pp == NULL || *pp == NULL)
        return;
    progress *p = *pp;
    progress_stop(p);
    kube_map_free(&p->subs); /* closes the sockets: the thread is gone */
    zmq_ctx_term(p->zctx);
    pthread_mutex_destroy(&p->mu);
    free(p);
    *pp = NULL;
}

int progress_lookup_cb(void *ud, const char *key, rc_progress_info *out)
{
    return progress_get(ud, key, out);
}

void progress_watch_cb(void *ud, const char *key, const char *endpoint)
{
    if (endpoint == NULL)
        progress_watch(ud, key, NULL);
    else
        progress_watch(ud, key, endpoint);
}

void progress_job_key_cb(void *ud, const char *key, const char *job_public)
{
    progress_set_job_key(ud, key, job_public);
}

int progress_send_batch_cb(void *ud, const char *key, const char *endpoint, int batch)
{
    char err[256];
    int rc = progress_send_batch(ud, key, endpoint, batch, err, sizeof err);
    if (rc != KD_OK)
        KD_DEBUG("batch not sent job=%s err=\"%s\"", key, err);
    return rc;
}

void progress_operator_key_cb(void *ud, const char *public_key, const char *secret_key)
{
    progress_set_operator_key(ud, public_key, secret_key);
}
