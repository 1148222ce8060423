/*
 * kd_curve: key files, socket security settings and the ZAP handler thread (see
 * kd_curve.h). The handler speaks ZAP 1.0 (ZeroMQ RFC 27) on inproc://zeromq.zap.01 of
 * its context and decides from the domain the server socket set: CURVE clients by their
 * public key, PLAIN clients by the job's key-derived credential, anything else refused.
 */
#include "kd_curve.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "kd_error.h"
#include "kd_log.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_MAX_LOGGED 64 /* distinct refused peers remembered for logging once each */
#define ZAP_MAX_WATCH 8
#define PLAIN_USER "kadet"
/* The label hashed with the job's secret key into the data plane's PLAIN credential;
 * versioned so that a different derivation never matches this one. */
#define PLAIN_LABEL "kadet data plane credential v1"
/* ZMQ_ZAP_ENFORCE_DOMAIN (a draft option in libzmq 4.3): without it a server socket whose
 * ZAP handler is missing admits everyone, so it is set where the library knows it, and the
 * handler is always started before and stopped after the sockets it serves. */
#define KD_ZMQ_ZAP_ENFORCE_DOMAIN 93

/* Reads one key file: exactly 40 Z85 characters and an optional newline. check_mode: the
 * file holds a secret and must not be readable by group or others when we own it. */
static int read_key(const char *dir, const char *name, int check_mode,
                    char out[KD_CURVE_KEY_LEN + 1], char *err, size_t errlen)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    /* Symbolic links are followed: a Secret volume links each key into its ..data
     * directory. O_NONBLOCK: a FIFO in its place must not hang the start. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return kd_errf(err, errlen, KD_EIO, "key file %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return kd_errf(err, errlen, KD_EFORMAT, "key file %s: not a regular file", path);
    }
    if (check_mode && st.st_uid == geteuid() && (st.st_mode & 077) != 0) {
        close(fd);
        return kd_errf(err, errlen, KD_EFORBIDDEN,
                       "key file %s: readable by group or others (mode %03o); chmod 600 it",
                       path, (unsigned)(st.st_mode & 0777));
    }
    char buf[64];
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    if (n < 0)
        return kd_errf(err, errlen, KD_EIO, "key file %s: %s", path, strerror(errno));
    size_t len = (size_t)n;
    if (len > 0 && buf[len - 1] == '\n')
        len--;
    if (len > 0 && buf[len - 1] == '\r')
        len--;
    uint8_t raw[32];
    if (len != KD_CURVE_KEY_LEN)
        return kd_errf(err, errlen, KD_EFORMAT,
                       "key file %s: expected one line of %d Z85 characters, got %zd bytes",
                       path, KD_CURVE_KEY_LEN, n);
    memcpy(out, buf, KD_CURVE_KEY_LEN);
    out[KD_CURVE_KEY_LEN] = '\0';
    if (zmq_z85_decode(raw, out) == NULL)
        return kd_errf(err, errlen, KD_EFORMAT, "key file %s: not a Z85 key", path);
    return KD_OK;
}

/* The PLAIN credential: hex(BLAKE2b-256(key = secret key, PLAIN_LABEL)). */
static int derive_plain(kd_curve_keys *k)
{
    uint8_t raw[32], mac[32];
    if (sodium_init() < 0 || zmq_z85_decode(raw, k->sec) == NULL)
        return -1;
    crypto_generichash(mac, sizeof mac, (const unsigned char *)PLAIN_LABEL,
                       strlen(PLAIN_LABEL), raw, sizeof raw);
    sodium_bin2hex(k->plain_pass, sizeof k->plain_pass, mac, sizeof mac);
    sodium_memzero(raw, sizeof raw);
    return 0;
}

int kd_curve_load(const char *dir, kd_curve_keys *k, char *err, size_t errlen)
{
    memset(k, 0, sizeof *k);
    if (dir == NULL || dir[0] == '\0')
        dir = getenv(KD_CURVE_ENV);
    if (dir == NULL || dir[0] == '\0')
        return KD_OK;
    if (strlen(dir) >= sizeof k->dir)
        return kd_errf(err, errlen, KD_EINVAL, "keys directory name too long");
    int rc = read_key(dir, "agent.pub", 0, k->pub, err, errlen);
    if (rc == KD_OK)
        rc = read_key(dir, "agent.key", 1, k->sec, err, errlen);
    if (rc != KD_OK) {
        memset(k, 0, sizeof *k);
        return rc;
    }
    char derived[KD_CURVE_KEY_LEN + 1];
    if (zmq_curve_public(derived, k->sec) != 0 || strcmp(derived, k->pub) != 0) {
        memset(k, 0, sizeof *k);
        return kd_errf(err, errlen, KD_EFORMAT,
                       "keys %s: agent.pub is not the public key of agent.key", dir);
    }
    char op_path[600];
    snprintf(op_path, sizeof op_path, "%s/operator.pub", dir);
    if (access(op_path, F_OK) == 0) {
        rc = read_key(dir, "operator.pub", 0, k->op_pub, err, errlen);
        if (rc != KD_OK) {
            memset(k, 0, sizeof *k);
            return rc;
        }
        k->have_operator = 1;
    }
    if (derive_plain(k) != 0) {
        memset(k, 0, sizeof *k);
        return kd_errf(err, errlen, KD_EINTERNAL, "libsodium failed to initialise");
    }
    snprintf(k->dir, sizeof k->dir, "%s", dir);
    k->enabled = 1;
    return KD_OK;
}

static int write_key(const char *dir, const char *name, const char *key, char *err,
                     size_t errlen)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return kd_errf(err, errlen, KD_EIO, "%s: %s", path, strerror(errno));
    char line[KD_CURVE_KEY_LEN + 2];
    snprintf(line, sizeof line, "%s\n", key);
    ssize_t n = write(fd, line, KD_CURVE_KEY_LEN + 1);
    int ok = n == KD_CURVE_KEY_LEN + 1 && fsync(fd) == 0;
    close(fd);
    if (!ok)
        return kd_errf(err, errlen, KD_EIO, "%s: write failed", path);
    return KD_OK;
}

int kd_curve_make(const char *dir, char *err, size_t errlen)
{
    char pub[KD_CURVE_KEY_LEN + 1], sec[KD_CURVE_KEY_LEN + 1];
    if (zmq_curve_keypair(pub, sec) != 0)
        return kd_errf(err, errlen, KD_EUNSUPPORTED, "zmq_curve_keypair: %s",
                       zmq_strerror(zmq_errno()));
    int rc = write_key(dir, "agent.key", sec, err, errlen);
    if (rc == KD_OK)
        rc = write_key(dir, "agent.pub", pub, err, errlen);
    sodium_memzero(sec, sizeof sec);
    if (rc != KD_OK)
        kd_curve_unmake(dir);
    return rc;
}

int kd_curve_make_operator(const char *dir, char *pub, char *sec, char *err, size_t errlen)
{
    if (zmq_curve_keypair(pub, sec) != 0)
        return kd_errf(err, errlen, KD_EUNSUPPORTED, "zmq_curve_keypair: %s",
                       zmq_strerror(zmq_errno()));
    int rc = write_key(dir, "operator.pub", pub, err, errlen);
    if (rc != KD_OK) {
        sodium_memzero(sec, KD_CURVE_KEY_LEN + 1);
        pub[0] = '\0';
    }
    return rc;
}

void kd_curve_unmake(const char *dir)
{
    static const char *const names[] = {"agent.key", "agent.pub", "operator.pub"};
    char path[600];
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
}

int kd_curve_server(void *sock, const kd_curve_keys *k, const char *domain, int plain)
{
    int one = 1;
    /* Best effort: a draft option; see KD_ZMQ_ZAP_ENFORCE_DOMAIN. */
    zmq_setsockopt(sock, KD_ZMQ_ZAP_ENFORCE_DOMAIN, &one, sizeof one);
    if (zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, domain, strlen(domain)) != 0)
        return -1;
    if (plain)
        return zmq_setsockopt(sock, ZMQ_PLAIN_SERVER, &one, sizeof one);
    if (zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, k->sec, KD_CURVE_KEY_LEN) != 0)
        return -1;
    return zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one);
}

int kd_curve_client(void *sock, const char *server_pub, const char *pub, const char *sec)
{
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server_pub, KD_CURVE_KEY_LEN) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, pub, KD_CURVE_KEY_LEN) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, sec, KD_CURVE_KEY_LEN) != 0)
        return -1;
    return 0;
}

int kd_curve_job_client(void *sock, const kd_curve_keys *k, int plain)
{
    if (!plain)
        return kd_curve_client(sock, k->pub, k->pub, k->sec);
    if (zmq_setsockopt(sock, ZMQ_PLAIN_USERNAME, PLAIN_USER, strlen(PLAIN_USER)) != 0)
        return -1;
    return zmq_setsockopt(sock, ZMQ_PLAIN_PASSWORD, k->plain_pass, strlen(k->plain_pass));
}

/* --- ZAP handler ------------------------------------------------------------------- */

typedef struct zap_peer {
    char address[64]; /* the peer's IP address as ZeroMQ reports it ("" for ipc) */
    char who[48];     /* its CURVE key (Z85), "plain:<user>", or the mechanism */
} zap_peer;

struct kd_zap {
    void *zctx;                        /* borrowed */
    kd_curve_keys keys;                /* copy */
    uint8_t job_raw[32], op_raw[32];   /* public keys, binary */
    pthread_t thread;
    atomic_int stop;
    atomic_int ready;                  /* 1: listening, -1: failed, 0: starting */
    atomic_uint_fast64_t admitted, refused, handshakes;
    pthread_mutex_t mu;                /* guards the watch list */
    char watch_addr[ZAP_MAX_WATCH][48]; /* monitor endpoints to connect to */
    char watch_what[ZAP_MAX_WATCH][32]; /* their names in the log */
    int nwatch;                        /* entries added by kd_zap_watch */
    zap_peer logged[ZAP_MAX_LOGGED];   /* refused peers already logged (thread only) */
    int nlogged;
    int overflow_logged;               /* "more refused peers" was logged */
};

static void frame_str(zmq_msg_t *m, char *out, size_t outlen)
{
    size_t n = zmq_msg_size(m);
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, zmq_msg_data(m), n);
    out[n] = '\0';
    for (size_t i = 0; i < n; i++) /* keep the log line one line of printable text */
        if ((unsigned char)out[i] < 0x20 || (unsigned char)out[i] > 0x7e)
            out[i] = '?';
}

/* Logs the first refusal of each peer (address and key), the rest only counted. */
static void zap_log_refusal(kd_zap *z, const char *domain, const char *address,
                            const char *who, const char *why)
{
    for (int i = 0; i < z->nlogged; i++)
        if (strcmp(z->logged[i].address, address) == 0 && strcmp(z->logged[i].who, who) == 0)
            return;
    if (z->nlogged == ZAP_MAX_LOGGED) {
        if (!z->overflow_logged)
            KD_WARN("security: more refused peers, no longer logged each (count in stats)");
        z->overflow_logged = 1;
        return;
    }
    zap_peer *p = &z->logged[z->nlogged++];
    snprintf(p->address, sizeof p->address, "%s", address);
    snprintf(p->who, sizeof p->who, "%s", who);
    KD_WARN("security: refused peer domain=%s address=%s key=%s reason=\"%s\" refused=%llu",
            domain, address[0] ? address : "local", who, why,
            (unsigned long long)atomic_load(&z->refused));
}

/* Decides one ZAP request (frames as received) and returns the status code. */
static int zap_decide(kd_zap *z, zmq_msg_t *f, int nf, const char **why, char *who,
                      size_t wholen, const char **uid)
{
    *uid = KD_ZAP_USER_JOB;
    char mech[16];
    frame_str(&f[5], mech, sizeof mech);
    snprintf(who, wholen, "%s", mech[0] ? mech : "none");
    char domain[32];
    frame_str(&f[2], domain, sizeof domain);
    int data = strcmp(domain, KD_ZAP_DATA) == 0;
    int metrics = strcmp(domain, KD_ZAP_METRICS) == 0;
    if (!data && !metrics && strcmp(domain, KD_ZAP_CONTROL) != 0) {
        *why = "unknown domain";
        return 400;
    }
    if (strcmp(mech, "CURVE") == 0 && nf == 7 && zmq_msg_size(&f[6]) == 32) {
        const uint8_t *key = zmq_msg_data(&f[6]);
        char z85[KD_CURVE_KEY_LEN + 1];
        if (zmq_z85_encode(z85, key, 32) != NULL)
            snprintf(who, wholen, "%s", z85);
        if (sodium_memcmp(key, z->job_raw, 32) == 0)
            return 200;
        /* The operator: its metrics subscription, and on the control socket the messages
         * only it may send (BATCH); the coordinator tells it by the user id. */
        if (!data && z->keys.have_operator && sodium_memcmp(key, z->op_raw, 32) == 0) {
            *uid = KD_ZAP_USER_OPERATOR;
            return 200;
        }
        *why = "public key not admitted";
        return 400;
    }
    if (strcmp(mech, "PLAIN") == 0 && nf == 8 && data) {
        char user[32];
        frame_str(&f[6], user, sizeof user);
        snprintf(who, wholen, "plain:%s", user);
        size_t plen = zmq_msg_size(&f[7]), want = strlen(z->keys.plain_pass);
        if (strcmp(user, PLAIN_USER) == 0 && plen == want &&
            sodium_memcmp(zmq_msg_data(&f[7]), z->keys.plain_pass, want) == 0)
            return 200;
        *why = "wrong credential";
        return 400;
    }
    *why = "mechanism not admitted";
    return 400;
}

static void zap_answer(kd_zap *z, void *rep)
{
    zmq_msg_t f[8];
    int nf = 0, more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, rep, 0) < 0) {
            zmq_msg_close(&m);
            break;
        }
        more = zmq_msg_more(&m);
        if (nf < 8)
            f[nf++] = m;
        else
            zmq_msg_close(&m);
    }
    if (nf >= 6) {
        const char *why = "malformed request";
        char who[48] = "none", address[64];
        const char *user = KD_ZAP_USER_JOB;
        int status = zap_decide(z, f, nf, &why, who, sizeof who, &user);
        frame_str(&f[3], address, sizeof address);
        char domain[32];
        frame_str(&f[2], domain, sizeof domain);
        if (status == 200) {
            atomic_fetch_add(&z->admitted, 1);
        } else {
            atomic_fetch_add(&z->refused, 1);
            zap_log_refusal(z, domain, address, who, why);
        }
        /* Reply: version, request id, status code, status text, user id, metadata. */
        zmq_send(rep, "1.0", 3, ZMQ_SNDMORE);
        zmq_send(rep, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
        zmq_send(rep, status == 200 ? "200" : "400", 3, ZMQ_SNDMORE);
        zmq_send(rep, status == 200 ? "OK" : why, status == 200 ? 2 : strlen(why), ZMQ_SNDMORE);
        zmq_send(rep, status == 200 ? user : "", status == 200 ? strlen(user) : 0, ZMQ_SNDMORE);
        zmq_send(rep, "", 0, 0);
    } else if (nf > 0) {
        /* A REP socket must answer before it can receive again. */
        zmq_send(rep, "", 0, 0);
    }
    for (int i = 0; i < nf; i++)
        zmq_msg_close(&f[i]);
}

/* One monitor event: a failed handshake that ZAP never saw (no or another mechanism). */
static void zap_monitor_event(kd_zap *z, void *mon, const char *what)
{
    zmq_msg_t ev, addr;
    zmq_msg_init(&ev);
    zmq_msg_init(&addr);
    if (zmq_msg_recv(&ev, mon, ZMQ_DONTWAIT) >= 0 && zmq_msg_more(&ev) &&
        zmq_msg_recv(&addr, mon, 0) >= 0 && zmq_msg_size(&ev) >= 2) {
        uint16_t event;
        memcpy(&event, zmq_msg_data(&ev), sizeof event);
        if (event & (ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)) {
            uint64_t n = atomic_fetch_add(&z->handshakes, 1) + 1;
            char ep[64];
            frame_str(&addr, ep, sizeof ep);
            /* The event names our endpoint, not the peer: log the first per socket. */
            if (n == 1 || zmq_msg_size(&addr) == 0)
                KD_WARN("security: refused a connection that failed the handshake socket=%s "
                        "endpoint=%s (no or wrong security mechanism) refused_handshakes=%llu",
                        what, ep, (unsigned long long)n);
        }
    }
    zmq_msg_close(&ev);
    zmq_msg_close(&addr);
}

static void *zap_main(void *arg)
{
    kd_zap *z = arg;
    void *rep = zmq_socket(z->zctx, ZMQ_REP);
    void *mons[ZAP_MAX_WATCH];
    char whats[ZAP_MAX_WATCH][32];
    int nmon = 0, linger = 0;
    zmq_setsockopt(rep, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(rep, ZAP_ENDPOINT) != 0) {
        KD_ERROR("security: cannot bind the ZAP handler: %s", zmq_strerror(zmq_errno()));
        zmq_close(rep);
        atomic_store(&z->ready, -1);
        return NULL;
    }
    atomic_store(&z->ready, 1);
    while (!atomic_load(&z->stop)) {
        pthread_mutex_lock(&z->mu);
        while (nmon < z->nwatch) {
            void *m = zmq_socket(z->zctx, ZMQ_PAIR);
            zmq_setsockopt(m, ZMQ_LINGER, &linger, sizeof linger);
            if (m != NULL && zmq_connect(m, z->watch_addr[nmon]) != 0) {
                zmq_close(m);
                m = NULL;
            }
            snprintf(whats[nmon], sizeof whats[nmon], "%s", z->watch_what[nmon]);
            mons[nmon++] = m;
        }
        pthread_mutex_unlock(&z->mu);
        zmq_pollitem_t it[1 + ZAP_MAX_WATCH];
        int idx[1 + ZAP_MAX_WATCH], n = 0;
        it[n++] = (zmq_pollitem_t){rep, 0, ZMQ_POLLIN, 0};
        for (int i = 0; i < nmon; i++)
            if (mons[i] != NULL) {
                idx[n] = i;
                it[n++] = (zmq_pollitem_t){mons[i], 0, ZMQ_POLLIN, 0};
            }
        if (zmq_poll(it, n, 100) <= 0)
            continue;
        if (it[0].revents & ZMQ_POLLIN)
            zap_answer(z, rep);
        for (int i = 1; i < n; i++)
            if (it[i].revents & ZMQ_POLLIN)
                zap_monitor_event(z, mons[idx[i]], whats[idx[i]]);
    }
    for (int i = 0; i < nmon; i++)
        if (mons[i] != NULL)
            zmq_close(mons[i]);
    zmq_close(rep);
    return NULL;
}

int kd_zap_start(kd_zap **out, void *zctx, const kd_curve_keys *k, char *err, size_t errlen)
{
    kd_zap *z = calloc(1, sizeof *z);
    if (z == NULL)
        return kd_errf(err, errlen, KD_ENOMEM, "out of memory");
    z->zctx = zctx;
    z->keys = *k;
    if (zmq_z85_decode(z->job_raw, k->pub) == NULL ||
        (k->have_operator && zmq_z85_decode(z->op_raw, k->op_pub) == NULL)) {
        free(z);
        return kd_errf(err, errlen, KD_EFORMAT, "bad public key");
    }
    pthread_mutex_init(&z->mu, NULL);
    if (pthread_create(&z->thread, NULL, zap_main, z) != 0) {
        pthread_mutex_destroy(&z->mu);
        free(z);
        return kd_errf(err, errlen, KD_ENOMEM, "cannot start the ZAP thread");
    }
    /* The handler must listen before any server socket binds (without it ZeroMQ would
     * admit every client). */
    for (int i = 0; i < 2000 && atomic_load(&z->ready) == 0; i++)
        usleep(1000);
    if (atomic_load(&z->ready) != 1) {
        kd_zap_stop(&z);
        return kd_errf(err, errlen, KD_ENETWORK, "the ZAP handler did not start");
    }
    *out = z;
    return KD_OK;
}

void kd_zap_watch(kd_zap *z, void *sock, const char *what)
{
    if (z == NULL)
        return;
    pthread_mutex_lock(&z->mu);
    if (z->nwatch < ZAP_MAX_WATCH) {
        char addr[48];
        snprintf(addr, sizeof addr, "inproc://kd-zap-mon-%p-%d", (void *)z, z->nwatch);
        if (zmq_socket_monitor(sock, addr, ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) == 0) {
            snprintf(z->watch_addr[z->nwatch], sizeof z->watch_addr[0], "%s", addr);
            snprintf(z->watch_what[z->nwatch], sizeof z->watch_what[0], "%s", what);
            z->nwatch++;
        }
    }
    pthread_mutex_unlock(&z->mu);
}

void kd_zap_get_stats(const kd_zap *z, kd_zap_stats *out)
{
    memset(out, 0, sizeof *out);
    if (z == NULL)
        return;
    out->admitted = atomic_load(&((kd_zap *)z)->admitted);
    out->refused = atomic_load(&((kd_zap *)z)->refused);
    out->handshakes = atomic_load(&((kd_zap *)z)->handshakes);
}

void kd_zap_stop(kd_zap **zp)
{
    if (zp == NULL || *zp == NULL)
        return;
    kd_zap *z = *zp;
    atomic_store(&z->stop, 1);
    pthread_join(z->thread, NULL);
    pthread_mutex_destroy(&z->mu);
    sodium_memzero(&z->keys, sizeof z->keys);
    free(z);
    *zp = NULL;
}
