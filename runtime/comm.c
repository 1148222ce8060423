/* comm: ring allreduce over ZeroMQ PUSH/PULL (see comm.h for the algorithm and the
 * guarantees). This file: sockets and worlds, the chunk plan and the checked sends and
 * receives of chunks; comm_ring.c runs the schedules (ring, two-rank swap, all-gather)
 * on them. The chunk plan for a vector shape is built once and reused; the steady state
 * allocates nothing: headers are 48-byte copies, payloads are zero-copy views of the
 * caller's buffer or forwarded receive buffers, or, when some elements travel as
 * bfloat16, of comm's own packing buffers (comm_pack.c). */
#include "comm_int.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/socket.h>
#include <time.h>

#include "kd_clock.h"
#include "kd_error.h"
#include "kd_log.h"
#include "kd_wire.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "comm sends float buffers zero-copy and needs a little-endian host"
#endif

double comm_now(void)
{
    return kd_mono_s();
}

/* libzmq applies ZMQ_SNDBUF to TCP sockets only: an ipc:// (Unix) socket keeps the
 * system's default send buffer (~208 KiB), so a larger message crosses it in several
 * writes, each a round of epoll wake-ups in both I/O threads. The size is set on the
 * connected socket itself, whose descriptor the socket monitor's CONNECTED event
 * carries; comm_tune_push reads that event before the world's sends. */
static void comm_watch_push(kd_comm *c, const char *endpoint)
{
    static atomic_uint seq;
    if (strncmp(endpoint, "ipc://", 6) != 0)
        return;
    const char *v = getenv("KADET_COMM_SOCKBUF");
    c->sockbuf = v != NULL ? atoi(v) : COMM_SOCKBUF;
    if (c->sockbuf <= 0)
        return;
    char addr[64];
    snprintf(addr, sizeof addr, "inproc://kadet-comm-monitor-%u", atomic_fetch_add(&seq, 1));
    if (zmq_socket_monitor(c->push, addr, ZMQ_EVENT_CONNECTED) != 0)
        return;
    c->mon = zmq_socket(c->zctx, ZMQ_PAIR);
    if (c->mon != NULL && zmq_connect(c->mon, addr) != 0) {
        zmq_close(c->mon);
        c->mon = NULL;
    }
    if (c->mon == NULL)
        zmq_socket_monitor(c->push, NULL, 0);
}

static void comm_unwatch_push(kd_comm *c)
{
    if (c->mon == NULL)
        return;
    zmq_socket_monitor(c->push, NULL, 0);
    zmq_close(c->mon);
    c->mon = NULL;
}

/* Sets the send buffer of the push socket's connection once it is up (see
 * comm_watch_push); until then, and on any failure, the system default stays. */
static void comm_tune_push(kd_comm *c)
{
    unsigned char ev[6];
    int n = zmq_recv(c->mon, ev, sizeof ev, ZMQ_DONTWAIT);
    if (n < 0)
        return;
    int more = 0;
    size_t len = sizeof more;
    char ep[8];
    while (zmq_getsockopt(c->mon, ZMQ_RCVMORE, &more, &len) == 0 && more)
        if (zmq_recv(c->mon, ep, sizeof ep, ZMQ_DONTWAIT) < 0)
            break;
    uint16_t event; /* the monitor's event frame is in host order */
    uint32_t value;
    memcpy(&event, ev, sizeof event);
    memcpy(&value, ev + 2, sizeof value);
    if (n != (int)sizeof ev || event != ZMQ_EVENT_CONNECTED)
        return;
    int fd = (int)value, domain = 0, type = 0;
    socklen_t sl = sizeof domain;
    /* The event was queued when the connection came up: make sure the descriptor is
     * still that Unix stream socket before touching it. */
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &sl) != 0 || domain != AF_UNIX)
        goto done;
    sl = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &sl) != 0 || type != SOCK_STREAM)
        goto done;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &c->sockbuf, sizeof c->sockbuf) != 0) {
        KD_DEBUG("comm: SO_SNDBUF %d: %s", c->sockbuf, strerror(errno));
        goto done;
    }
    sl = sizeof c->stats.sndbuf;
    if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &c->stats.sndbuf, &sl) != 0)
        c->stats.sndbuf = 0;
done:
    comm_unwatch_push(c);
}

int kd_comm_open(kd_comm **out, void *zctx, const char *bind_endpoint, char *endpoint,
                 size_t endpoint_len, char *err, size_t errlen)
{
    return kd_comm_open_keyed(out, zctx, bind_endpoint, NULL, 0, endpoint, endpoint_len, err,
                              errlen);
}

int kd_comm_open_keyed(kd_comm **out, void *zctx, const char *bind_endpoint,
                       const kd_curve_keys *keys, int curve, char *endpoint,
                       size_t endpoint_len, char *err, size_t errlen)
{
    *out = NULL;
    /* ZeroMQ mallocs a receive buffer per chunk; above glibc's mmap threshold each one
     * is a fresh mapping that page-faults in and is unmapped on free, which halves
     * the bandwidth of large allreduces. Keeping chunks on the heap reuses the pages.
     * Process-wide, and meant to be: a worker process is mostly this data plane. */
    mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
    kd_comm *c = calloc(1, sizeof *c);
    if (c == NULL)
        return kd_errf(err, errlen, KD_ENOMEM, "comm: out of memory");
    c->zctx = zctx;
    c->keys = keys != NULL && keys->enabled ? keys : NULL;
    c->curve = curve;
    c->timeout_ms = 2000;
    c->spin = 1000;
    const char *spin = getenv("KADET_COMM_SPIN");
    if (spin != NULL)
        c->spin = atoi(spin) > 0 ? atoi(spin) : 0;
    atomic_init(&c->inflight, 0);
    const char *algo = getenv("KADET_COMM_ALGO");
    c->algo = algo == NULL                   ? COMM_ALGO_AUTO
              : strcmp(algo, "ring") == 0 ? COMM_ALGO_RING
              : strcmp(algo, "swap") == 0 ? COMM_ALGO_SWAP
                                          : COMM_ALGO_AUTO;
    kd_comm_set_chunk_bytes(c, 256u * 1024);
    if (c->scratch == NULL) {
        free(c);
        return kd_errf(err, errlen, KD_ENOMEM, "comm: out of memory");
    }
    c->pull = zmq_socket(zctx, ZMQ_PULL);
    if (c->pull == NULL) {
        kd_errf(err, errlen, KD_ENETWORK, "comm: socket: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    int linger = 0, hwm = 0;
    zmq_setsockopt(c->pull, ZMQ_LINGER, &linger, sizeof linger);
    /* Unlimited receive queue: flow control is the ring itself, a bounded queue
     * would only add a second, invisible one. */
    zmq_setsockopt(c->pull, ZMQ_RCVHWM, &hwm, sizeof hwm);
    /* libzmq allocates a frame as soon as it has read the length, and garbage on the port
     * (parsed as old ZMTP/1.0 framing) can announce up to 2^64 bytes: no data frame is
     * larger than the largest chunk (kd_comm_set_chunk_bytes caps it at 16 MiB). */
    int64_t max_frame = 16 * 1024 * 1024;
    zmq_setsockopt(c->pull, ZMQ_MAXMSGSIZE, &max_frame, sizeof max_frame);
    /* With keys, only peers holding the job key get a connection (kd_curve.h): the
     * caller's ZAP handler on zctx decides, before any chunk reaches comm_recv. */
    if (c->keys != NULL && kd_curve_server(c->pull, c->keys, KD_ZAP_DATA, !curve) != 0) {
        kd_errf(err, errlen, KD_ENETWORK, "comm: data plane security: %s",
                zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (zmq_bind(c->pull, bind_endpoint) != 0) {
        kd_errf(err, errlen, KD_ENETWORK, "comm: bind %s: %s", bind_endpoint,
                zmq_strerror(zmq_errno()));
        goto fail;
    }
    size_t len = endpoint_len;
    if (zmq_getsockopt(c->pull, ZMQ_LAST_ENDPOINT, endpoint, &len) != 0) {
        kd_errf(err, errlen, KD_ENETWORK, "comm: endpoint: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    *out = c;
    return KD_OK;
fail:
    kd_comm_close(&c);
    return KD_ENETWORK;
}

/* ZeroMQ calls this from its I/O thread once a zero-copy payload has been sent or
 * dropped; the caller's buffer may be rewritten only when the count is back to 0. */
static void comm_release(void *data, void *hint)
{
    (void)data;
    atomic_fetch_sub((atomic_int *)hint, 1);
}

/* Waits until ZeroMQ has let go of every zero-copy payload, at most timeout_ms. */
int comm_wait_released(kd_comm *c, int timeout_ms)
{
    double deadline = comm_now() + timeout_ms / 1000.0;
    /* The last sends are usually released within microseconds by the I/O thread:
     * yield to it first; a timed sleep costs a scheduler slice on a busy machine. */
    for (int spin = 0; spin < 1000 && atomic_load(&c->inflight) > 0; spin++)
        sched_yield();
    while (atomic_load(&c->inflight) > 0) {
        if (comm_now() > deadline)
            return KD_ETIMEOUT;
        struct timespec ts = {0, 20000};
        nanosleep(&ts, NULL);
    }
    return KD_OK;
}

static void comm_drop_push(kd_comm *c)
{
    if (c->push == NULL)
        return;
    comm_unwatch_push(c);
    zmq_close(c->push);
    c->push = NULL;
    /* With linger 0 the close discards queued messages and releases their payloads
     * shortly after, in the I/O thread; the buffers must stay valid until then. */
    if (comm_wait_released(c, 5000) != KD_OK)
        KD_ERROR("comm: ZeroMQ kept zero-copy buffers after close inflight=%d",
                 atomic_load(&c->inflight));
}

void kd_comm_close(kd_comm **cp)
{
    if (cp == NULL || *cp == NULL)
        return;
    kd_comm *c = *cp;
    comm_release_peer(c);
    comm_drop_push(c);
    if (c->pull != NULL)
        zmq_close(c->pull);
    free(c->chunks);
    free(c->seg_first);
    free(c->ready);
    free(c->scratch);
    free(c->sendbuf);
    free(c->packbuf);
    free(c->held);
    free(c->peer);
    free(c);
    *cp = NULL;
}

void kd_comm_set_timeout(kd_comm *c, int timeout_ms)
{
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 1;
}

void kd_comm_set_chunk_bytes(kd_comm *c, size_t bytes)
{
    if (bytes < 4096)
        bytes = 4096;
    if (bytes > 16u * 1024 * 1024)
        bytes = 16u * 1024 * 1024;
    float *s = malloc(bytes);
    if (s == NULL)
        return; /* keep the previous size and its scratch buffer */
    free(c->scratch);
    c->scratch = s;
    c->chunk_elems = bytes / sizeof(float);
}

int kd_comm_set_world(kd_comm *c, uint32_t generation, int rank, int world,
                      const char *const *peers, char *err, size_t errlen)
{
    if (world < 1 || (unsigned)world > KD_WIRE_MAX_WORLD || rank < 0 || rank >= world)
        return kd_errf(err, errlen, KD_EINVAL, "comm: rank %d of world %d", rank, world);
    comm_release_peer(c);
    comm_drop_push(c);
    c->world = 0;
    c->stats.sndbuf = 0;
    if (world > 1) {
        const char *next = peers[(rank + 1) % world];
        if (next == NULL || next[0] == '\0')
            return kd_errf(err, errlen, KD_EINVAL, "comm: no endpoint for rank %d",
                           (rank + 1) % world);
        c->push = zmq_socket(c->zctx, ZMQ_PUSH);
        if (c->push == NULL)
            return kd_errf(err, errlen, KD_ENETWORK, "comm: socket: %s",
                           zmq_strerror(zmq_errno()));
        int linger = 0, hwm = 0;
        zmq_setsockopt(c->push, ZMQ_LINGER, &linger, sizeof linger);
        zmq_setsockopt(c->push, ZMQ_SNDHWM, &hwm, sizeof hwm);
        zmq_setsockopt(c->push, ZMQ_SNDTIMEO, &c->timeout_ms, sizeof c->timeout_ms);
        if (c->keys != NULL && kd_curve_job_client(c->push, c->keys, !c->curve) != 0) {
            int e = zmq_errno();
            zmq_close(c->push);
            c->push = NULL;
            return kd_errf(err, errlen, KD_ENETWORK, "comm: data plane security: %s",
                           zmq_strerror(e));
        }
        comm_watch_push(c, next); /* before connecting: the event would be lost */
        if (zmq_connect(c->push, next) != 0) {
            int e = zmq_errno();
            comm_unwatch_push(c);
            zmq_close(c->push);
            c->push = NULL;
            return kd_errf(err, errlen, KD_EINVAL, "comm: connect %s: %s", next,
                           zmq_strerror(e));
        }
    }
    c->generation = generation;
    c->rank = rank;
    c->world = world;
    return KD_OK;
}

/* Builds the chunk plan for this shape: W segments of the logical vector of near-equal
 * size, each cut into chunks at chunk_elems and at span boundaries. */
int comm_plan(kd_comm *c, const kd_comm_span *spans, int nspans)
{
    uint64_t total = 0;
    for (int i = 0; i < nspans; i++)
        total += spans[i].n;
    /* The swap's limit is in bytes on the wire: bfloat16 doubles it in elements. */
    uint64_t wire = c->packed ? comm_pack_bytes(&c->layout, 0, (size_t)total)
                              : total * sizeof(float);
    int swap = c->world == 2 && (c->algo == COMM_ALGO_SWAP ||
                                 (c->algo == COMM_ALGO_AUTO && wire <= COMM_SWAP_MAX));
    int same = c->plan_world == c->world && c->plan_chunk == c->chunk_elems &&
               c->plan_nspans == nspans && c->chunks != NULL && c->plan_swap == swap;
    for (int i = 0; same && i < nspans; i++)
        same = c->plan_n[i] == spans[i].n;
    if (same)
        return KD_OK;
    int w = c->world;
    /* Upper bound: every segment splits at chunk size plus once per span boundary. */
    size_t cap = (size_t)(total / c->chunk_elems) + (size_t)w * (nspans + 2) + 1;
    comm_chunk *chunks = malloc(cap * sizeof *chunks);
    size_t *first = malloc(((size_t)w + 1) * sizeof *first);
    size_t *ready = malloc(cap * sizeof *ready);
    if (swap && c->sendcap < total) {
        float *sb = realloc(c->sendbuf, (size_t)total * sizeof *sb);
        if (sb == NULL) {
            free(chunks);
            free(first);
            free(ready);
            return KD_ENOMEM;
        }
        c->sendbuf = sb;
        c->sendcap = (size_t)total;
    }
    if (chunks == NULL || first == NULL || ready == NULL) {
        free(chunks);
        free(first);
        free(ready);
        return KD_ENOMEM;
    }
    size_t n = 0;
    int span = 0;
    size_t span_off = 0;
    uint64_t pos = 0;
    /* The swap cuts the logical vector at the chunk size only: one message may carry
     * pieces of several spans (it is then copied), so small spans cost no message. A
     * chunk records the span it starts in, so that one inside a single span can be sent
     * as a view of it. */
    for (; swap && pos < total; n++) {
        size_t len = total - pos < c->chunk_elems ? (size_t)(total - pos) : c->chunk_elems;
        while (span_off == spans[span].n) {
            span++;
            span_off = 0;
        }
        chunks[n] = (comm_chunk){span, span_off, len, pos};
        pos += len;
        for (size_t left = len; left > 0;) {
            while (span_off == spans[span].n) {
                span++;
                span_off = 0;
            }
            size_t k = spans[span].n - span_off < left ? spans[span].n - span_off : left;
            span_off += k;
            left -= k;
        }
    }
    for (int s = 0; s < w && !swap; s++) {
        first[s] = n;
        uint64_t end = total * (uint64_t)(s + 1) / (uint64_t)w;
        while (pos < end) {
            while (span_off == spans[span].n) {
                span++;
                span_off = 0;
            }
            size_t len = spans[span].n - span_off;
            if (len > c->chunk_elems)
                len = c->chunk_elems;
            if (len > end - pos)
                len = (size_t)(end - pos);
            chunks[n++] = (comm_chunk){span, span_off, len, pos};
            span_off += len;
            pos += len;
        }
    }
    first[w] = n;
    if (swap)
        first[0] = first[1] = 0;
    free(c->chunks);
    free(c->seg_first);
    free(c->ready);
    c->chunks = chunks;
    c->seg_first = first;
    c->ready = ready;
    c->nchunks = n;
    c->cap = cap;
    c->plan_world = w;
    c->plan_chunk = c->chunk_elems;
    c->plan_nspans = nspans;
    c->plan_swap = swap;
    for (int i = 0; i < nspans; i++)
        c->plan_n[i] = spans[i].n;
    return KD_OK;
}

static int comm_send_hdr(kd_comm *c, uint16_t type, uint32_t aux, uint64_t step,
                         uint64_t off, size_t bytes)
{
    kd_wire_hdr h = {.type = type, .generation = c->generation,
                     .sender = (uint32_t)c->rank, .step = step, .epoch = 0, .aux = aux,
                     .offset = off, .payload_len = (uint32_t)bytes};
    unsigned char buf[KD_WIRE_HDR_SIZE];
    kd_wire_encode(&h, buf);
    if (c->mon != NULL)
        comm_tune_push(c);
    while (zmq_send(c->push, buf, sizeof buf, ZMQ_SNDMORE) < 0) {
        if (zmq_errno() != EINTR)
            return zmq_errno() == EAGAIN ? KD_ETIMEOUT : KD_ENETWORK;
    }
    return KD_OK;
}

static int comm_send_msg(kd_comm *c, zmq_msg_t *m)
{
    while (zmq_msg_send(m, c->push, 0) < 0) {
        if (zmq_errno() != EINTR) {
            zmq_msg_close(m);
            return zmq_errno() == EAGAIN ? KD_ETIMEOUT : KD_ENETWORK;
        }
    }
    return KD_OK;
}

/* Sends bytes as the payload of logical offset off without copying them: they must stay
 * untouched until comm_wait_released. */
int comm_send_bytes(kd_comm *c, uint16_t type, uint32_t aux, uint64_t step, uint64_t off,
                    const void *data, size_t bytes)
{
    int rc = comm_send_hdr(c, type, aux, step, off, bytes);
    if (rc != KD_OK)
        return rc;
    zmq_msg_t m;
    atomic_fetch_add(&c->inflight, 1);
    if (zmq_msg_init_data(&m, (void *)data, bytes, comm_release, &c->inflight) != 0) {
        atomic_fetch_sub(&c->inflight, 1);
        return KD_ENOMEM;
    }
    c->stats.bytes_sent += bytes;
    return comm_send_msg(c, &m);
}

/* Sends a chunk of the caller's buffer as float32, without copying it. */
int comm_send_view(kd_comm *c, uint32_t aux, uint64_t step, const comm_chunk *ch,
                   const kd_comm_span *spans)
{
    return comm_send_bytes(c, KD_WIRE_DATA, aux, step, ch->off,
                           spans[ch->span].data + ch->span_off, ch->len * sizeof(float));
}

/* Packs a chunk of the operation (float32 and bfloat16 elements) into area, at the
 * chunk's float offset (an area holds every chunk of one phase at its own place, so that
 * nothing still being sent is overwritten), and sends it from there. keep: see
 * comm_pack. */
int comm_send_packed(kd_comm *c, uint32_t aux, uint64_t step, const comm_chunk *ch,
                     unsigned char *area, int keep)
{
    unsigned char *out = area + ch->off * sizeof(float);
    size_t bytes = comm_pack(&c->layout, (size_t)ch->off, ch->len, out, keep);
    return comm_send_bytes(c, KD_WIRE_DATA_BF16, aux, step, ch->off, out, bytes);
}

/* Receives the next chunk from the previous rank and checks that it is exactly the one
 * the ring order says comes next; on KD_OK *payload holds the float frame (the caller
 * closes it). Stale and unexpected messages are dropped and waited past. */
int comm_recv(kd_comm *c, uint32_t aux, uint64_t step, const comm_chunk *ch,
              zmq_msg_t *payload, int wait)
{
    uint16_t type = c->packed ? KD_WIRE_DATA_BF16 : KD_WIRE_DATA;
    size_t bytes = c->packed ? comm_pack_bytes(&c->layout, (size_t)ch->off, ch->len)
                             : ch->len * sizeof(float);
    double deadline = comm_now() + c->timeout_ms / 1000.0;
    uint32_t prev = (uint32_t)((c->rank + c->world - 1) % c->world);
    for (;;) {
        int left = (int)((deadline - comm_now()) * 1000.0);
        if (left <= 0)
            return KD_ETIMEOUT;
        zmq_pollitem_t item = {c->pull, 0, ZMQ_POLLIN, 0};
        /* Spin (yielding) for a short while before sleeping: the next chunk is usually
         * a few microseconds away, and on a loaded machine a sleeping process waits a
         * whole scheduler slice to run again, which dominated the step time. */
        int n = 0;
        if (!wait) {
            n = zmq_poll(&item, 1, 0);
            if (n == 0)
                return COMM_PENDING;
        }
        for (int spin = 0; spin < c->spin && n == 0; spin++) {
            n = zmq_poll(&item, 1, 0);
            if (n == 0)
                sched_yield();
        }
        if (n == 0)
            n = zmq_poll(&item, 1, left);
        if (n < 0) {
            if (zmq_errno() == EINTR)
                continue;
            return KD_ENETWORK;
        }
        if (n == 0)
            return KD_ETIMEOUT;
        zmq_msg_t frames[3];
        size_t nframes = 0, total = 0;
        int more = 1;
        /* Read the whole multipart message; keep at most 3 frames, count the rest. */
        while (more) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, c->pull, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&m);
                break;
            }
            more = zmq_msg_more(&m);
            if (nframes < 3)
                frames[nframes++] = m;
            else
                zmq_msg_close(&m);
            total++;
        }
        if (nframes == 0)
            continue;
        const void *data[3];
        size_t lens[3];
        for (size_t i = 0; i < nframes; i++) {
            data[i] = zmq_msg_data(&frames[i]);
            lens[i] = zmq_msg_size(&frames[i]);
        }
        kd_wire_hdr h;
        kd_wire_drop_reason why = KD_WIRE_DROP_UNEXPECTED;
        int ok = total == nframes &&
                 kd_wire_decode(data, lens, nframes, &h, &why) == KD_OK;
        if (ok && h.type != type) {
            ok = 0;
            why = KD_WIRE_DROP_UNEXPECTED;
        } else if (ok && (h.generation != c->generation || h.step != step)) {
            ok = 0;
            why = KD_WIRE_DROP_STALE;
        } else if (ok && (h.sender != prev || h.aux != aux || h.offset != ch->off ||
                          h.payload_len != bytes)) {
            ok = 0;
            why = KD_WIRE_DROP_UNEXPECTED;
        } else if (total != nframes) {
            why = KD_WIRE_DROP_FRAMES;
        }
        for (size_t i = 0; i + 1 < nframes || (!ok && i < nframes); i++)
            zmq_msg_close(&frames[i]);
        if (!ok) {
            kd_wire_drop(why, "data");
            continue;
        }
        *payload = frames[1];
        return KD_OK;
    }
}

/* A received payload, 2-byte aligned as comm_unpack needs (it reads float32 elements with
 * memcpy): ZeroMQ packs small messages into shared buffers without alignment, and those
 * are read through a copy (payloads fit in scratch). */
const unsigned char *comm_payload(kd_comm *c, zmq_msg_t *m)
{
    const unsigned char *p = zmq_msg_data(m);
    if (((uintptr_t)p & 1) == 0)
        return p;
    memcpy(c->scratch, p, zmq_msg_size(m));
    return (const unsigned char *)c->scratch;
}

void comm_release_peer(kd_comm *c)
{
    for (size_t i = 0; i < c->nheld; i++)
        zmq_msg_close(&c->held[i]);
    c->nheld = 0;
    c->peer_ok = 0;
}

size_t kd_comm_peer(const kd_comm *c, const kd_comm_piece **pieces)
{
    *pieces = c->peer_ok ? c->peer : NULL;
    return c->peer_ok ? c->nheld : 0;
}

void kd_comm_peer_add(kd_comm *c, size_t off, size_t n)
{
    const kd_comm_piece *pc;
    size_t np = kd_comm_peer(c, &pc);
    for (size_t i = 0; i < np; i++) {
        size_t a = pc[i].off > off ? pc[i].off : off;
        size_t b = pc[i].off + pc[i].n < off + n ? pc[i].off + pc[i].n : off + n;
        /* float32 only (a deferred swap never packs): read at any alignment. */
        if (b > a)
            comm_unpack(&c->layout, a, b - a, pc[i].data + 4 * (a - pc[i].off), 1);
    }
}

/* Grows packbuf to at least bytes; KD_ENOMEM leaves it as it was. */
int comm_reserve_pack(kd_comm *c, size_t bytes)
{
    if (c->packcap >= bytes)
        return KD_OK;
    unsigned char *p = realloc(c->packbuf, bytes);
    if (p == NULL)
        return KD_ENOMEM;
    c->packbuf = p;
    c->packcap = bytes;
    return KD_OK;
}

int comm_fail_op(kd_comm *c, const char *op, uint64_t step, int rc, char *err,
                 size_t errlen)
{
    return kd_errf(err, errlen, rc, "comm: %s gen=%u step=%llu rank=%d world=%d: %s", op,
                   c->generation, (unsigned long long)step, c->rank, c->world,
                   rc == KD_ETIMEOUT ? "a peer stayed silent" : kd_strerror(rc));
}

void kd_comm_get_stats(const kd_comm *c, kd_comm_stats *out) { *out = c->stats; }

size_t kd_comm_first_offset(const kd_comm *c, size_t total)
{
    if (c->world <= 1)
        return 0;
    /* Same split as comm_plan: segment s starts at total * s / W. */
    return (size_t)((uint64_t)total * (uint64_t)c->rank / (uint64_t)c->world);
}
