/* comm: ring allreduce over ZeroMQ PUSH/PULL (see comm.h for the algorithm and the
 * guarantees). The chunk plan for a vector shape is built once and reused; the steady
 * state allocates nothing: headers are 48-byte copies, payloads are zero-copy views of
 * the caller's buffer or forwarded receive buffers, or, when some elements travel as
 * bfloat16, of comm's own packing buffers (comm_pack.c). */
#include "comm.h"

#include <errno.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <time.h>
#include <zmq.h>

#include "kd_error.h"
#include "kd_log.h"
#include "kd_wire.h"
#include "comm_pack.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "comm sends float buffers zero-copy and needs a little-endian host"
#endif

#define COMM_PHASE_RS 1u /* reduce-scatter */
#define COMM_PHASE_AG 2u /* all-gather */
#define COMM_PHASE_SWAP 3u /* two ranks: each sends its whole vector to the other */
#define COMM_PHASE_GATHER 4u /* kd_comm_allgatherv */
#define COMM_MAX_SPANS 8
/* Kernel socket buffers for ipc:// data sockets. With the default (~208 KiB) a 512 KiB
 * chunk crosses a Unix socket in several rounds, each waking both I/O threads; a buffer
 * larger than a chunk lets it go in one (the kernel caps it at wmem/rmem_max). TCP keeps
 * the system default: an explicit size turns off its buffer autotuning, which measured
 * slower for 16 MiB allreduces. */
#define COMM_SOCKBUF (4 * 1024 * 1024)

typedef struct comm_chunk {
    int span;        /* index of the span holding the chunk */
    size_t span_off; /* first element inside that span */
    size_t len;      /* elements */
    uint64_t off;    /* first element in the logical vector (sent on the wire) */
} comm_chunk;

struct kd_comm {
    void *zctx;              /* borrowed ZeroMQ context */
    void *pull;              /* bound data socket, receives from the previous rank */
    void *push;              /* connected to the next rank; NULL until a world is set */
    int timeout_ms;          /* per-receive silence that counts as a dead peer */
    size_t chunk_elems;      /* largest chunk in floats */
    uint32_t generation;     /* current world's generation */
    int rank;                /* this worker's rank in it */
    int world;               /* number of ranks; 0 = no world yet */
    atomic_int inflight;     /* zero-copy sends ZeroMQ still holds */
    /* Chunk plan, rebuilt when the shape (span sizes, world, chunk size) changes. */
    comm_chunk *chunks;      /* all chunks, segment by segment */
    size_t nchunks;          /* entries used in chunks */
    size_t cap;              /* entries allocated in chunks */
    size_t *seg_first;       /* world+1 indices: segment s is chunks [first[s], first[s+1]) */
    int plan_world;          /* world the plan was built for */
    size_t plan_chunk;       /* chunk_elems the plan was built for */
    int plan_nspans;         /* span count the plan was built for */
    int plan_swap;           /* the plan is for the two-rank swap */
    int algo;                /* COMM_ALGO_*: KADET_COMM_ALGO=auto|ring|swap */
    size_t span_start[COMM_MAX_SPANS + 1]; /* logical offset of each span, and the total */
    size_t plan_n[COMM_MAX_SPANS]; /* span sizes the plan was built for */
    kd_comm_stats stats;     /* counters for kd_comm_get_stats */
    float *scratch;          /* chunk_elems floats for misaligned receive buffers */
    int spin;                /* non-blocking polls (with sched_yield) before sleeping */
    /* The allreduce in progress (kd_comm_begin .. kd_comm_finish). */
    size_t *ready;           /* per chunk: elements the caller has marked final */
    kd_comm_span spans[COMM_MAX_SPANS]; /* the vector being reduced */
    int nspans;              /* entries used in spans */
    int active;              /* an allreduce is between begin and finish */
    int stage;               /* COMM_ST_*: where the ring schedule stands */
    int k;                   /* ring step inside the stage */
    size_t next;             /* next chunk index inside the stage's segment */
    size_t rnext;            /* swap: next chunk to receive and add */
    float *sendbuf;          /* swap: copy of what we send (ZeroMQ sends it zero-copy) */
    size_t sendcap;          /* floats allocated in sendbuf */
    comm_layout layout;      /* the spans with their offsets, for packing */
    int packed;              /* some elements travel as bfloat16 (DATA_BF16 messages) */
    unsigned char *packbuf;  /* ring and all-gather: packed payloads being sent */
    size_t packcap;          /* bytes allocated in packbuf */
    uint64_t step;           /* step tag of the allreduce */
    int op_rc;               /* first error of the allreduce (sticky), KD_OK */
    double t0;               /* when it began */
};

#define COMM_ST_SEND 0 /* sending our own segment (reduce-scatter step 0) */
#define COMM_ST_RS 1   /* receive, reduce, forward */
#define COMM_ST_AG 2   /* receive the final sums, copy, forward */
#define COMM_ST_DONE 3
#define COMM_ST_SWAP 4 /* two ranks: send chunks as they become final, add the peer's */
#define COMM_ALGO_AUTO 0 /* swap for two ranks and vectors up to COMM_SWAP_MAX bytes */
#define COMM_ALGO_RING 1
#define COMM_ALGO_SWAP 2 /* swap for two ranks whatever the size */
/* Up to this size the swap's single hop wins (two processes on loopback: 256 KiB in
 * 0.25 ms against the ring's 0.35 ms); above it the ring's pipelined halves do (0.9 MiB:
 * 0.64 ms against 1.17 ms). hack/bench/allreduce_bench measures both. */
#define COMM_SWAP_MAX (512u * 1024)
#define COMM_PENDING 1 /* non-blocking progress: waiting for data or a message */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void comm_set_sockbuf(void *sock, const char *endpoint, int option)
{
    if (strncmp(endpoint, "ipc://", 6) != 0)
        return;
    const char *v = getenv("KADET_COMM_SOCKBUF");
    int bytes = v != NULL ? atoi(v) : COMM_SOCKBUF;
    zmq_setsockopt(sock, option, &bytes, sizeof bytes);
}

int kd_comm_open(kd_comm **out, void *zctx, const char *bind_endpoint, char *endpoint,
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
    comm_set_sockbuf(c->pull, bind_endpoint, ZMQ_RCVBUF);
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
static int comm_wait_released(kd_comm *c, int timeout_ms)
{
    double deadline = now_s() + timeout_ms / 1000.0;
    /* The last sends are usually released within microseconds by the I/O thread:
     * yield to it first; a timed sleep costs a scheduler slice on a busy machine. */
    for (int spin = 0; spin < 1000 && atomic_load(&c->inflight) > 0; spin++)
        sched_yield();
    while (atomic_load(&c->inflight) > 0) {
        if (now_s() > deadline)
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
    comm_drop_push(c);
    if (c->pull != NULL)
        zmq_close(c->pull);
    free(c->chunks);
    free(c->seg_first);
    free(c->ready);
    free(c->scratch);
    free(c->sendbuf);
    free(c->packbuf);
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
    comm_drop_push(c);
    c->world = 0;
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
        comm_set_sockbuf(c->push, next, ZMQ_SNDBUF);
        zmq_setsockopt(c->push, ZMQ_SNDTIMEO, &c->timeout_ms, sizeof c->timeout_ms);
        if (zmq_connect(c->push, next) != 0) {
            int e = zmq_errno();
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
static int comm_plan(kd_comm *c, const kd_comm_span *spans, int nspans)
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
     * pieces of several spans (it is copied anyway), so small spans cost no message. */
    for (; swap && pos < total; n++) {
        size_t len = total - pos < c->chunk_elems ? (size_t)(total - pos) : c->chunk_elems;
        chunks[n] = (comm_chunk){0, 0, len, pos};
        pos += len;
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
static int comm_send_bytes(kd_comm *c, uint16_t type, uint32_t aux, uint64_t step,
                           uint64_t off, const void *data, size_t bytes)
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
static int comm_send_view(kd_comm *c, uint32_t aux, uint64_t step, const comm_chunk *ch,
                          const kd_comm_span *spans)
{
    return comm_send_bytes(c, KD_WIRE_DATA, aux, step, ch->off,
                           spans[ch->span].data + ch->span_off, ch->len * sizeof(float));
}

/* Packs a chunk of the operation (float32 and bfloat16 elements) into area, at the
 * chunk's float offset (an area holds every chunk of one phase at its own place, so that
 * nothing still being sent is overwritten), and sends it from there. keep: see
 * comm_pack. */
static int comm_send_packed(kd_comm *c, uint32_t aux, uint64_t step, const comm_chunk *ch,
                            unsigned char *area, int keep)
{
    unsigned char *out = area + ch->off * sizeof(float);
    comm_pack(&c->layout, (size_t)ch->off, ch->len, out, keep);
    return comm_send_bytes(c, KD_WIRE_DATA_BF16, aux, step, ch->off, out,
                           comm_pack_bytes(&c->layout, (size_t)ch->off, ch->len));
}

/* Receives the next chunk from the previous rank and checks that it is exactly the one
 * the ring order says comes next; on KD_OK *payload holds the float frame (the caller
 * closes it). Stale and unexpected messages are dropped and waited past. */
static int comm_recv(kd_comm *c, uint32_t aux, uint64_t step, const comm_chunk *ch,
                     zmq_msg_t *payload, int wait)
{
    uint16_t type = c->packed ? KD_WIRE_DATA_BF16 : KD_WIRE_DATA;
    size_t bytes = c->packed ? comm_pack_bytes(&c->layout, (size_t)ch->off, ch->len)
                             : ch->len * sizeof(float);
    double deadline = now_s() + c->timeout_ms / 1000.0;
    uint32_t prev = (uint32_t)((c->rank + c->world - 1) % c->world);
    for (;;) {
        int left = (int)((deadline - now_s()) * 1000.0);
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

/* A received payload, 4-byte aligned: ZeroMQ packs small messages into shared buffers
 * without alignment, and those are read through a copy (payloads fit in scratch). */
static const unsigned char *comm_payload(kd_comm *c, zmq_msg_t *m)
{
    const unsigned char *p = zmq_msg_data(m);
    if (((uintptr_t)p & (sizeof(float) - 1)) == 0)
        return p;
    memcpy(c->scratch, p, zmq_msg_size(m));
    return (const unsigned char *)c->scratch;
}

static uint32_t comm_aux(uint32_t phase, int ring_step)
{
    return (phase << 16) | (uint32_t)ring_step;
}

/* The segment a stage's ring step k works on. Reduce-scatter: we send our segment r,
 * then W-1 times receive segment (r-k-1), add our values into it and forward the partial
 * sum; the last one received, segment r+1, is complete and starts the all-gather, in
 * which we W-1 times receive the final segment (r-k), copy it and forward it unless the
 * next rank already has it. */
static size_t comm_seg(const kd_comm *c, int stage, int k)
{
    int w = c->world, r = c->rank;
    if (stage == COMM_ST_SEND)
        return (size_t)r;
    if (stage == COMM_ST_RS)
        return (size_t)((r - k - 1 + 2 * w) % w);
    return (size_t)((r - k + 2 * w) % w);
}

/* Moves to ring step k of stage (or to the next stage when k is past the last). */
static void comm_enter(kd_comm *c, int stage, int k)
{
    int steps = stage == COMM_ST_SEND ? 1 : c->world - 1;
    if (stage != COMM_ST_DONE && k >= steps) {
        comm_enter(c, stage + 1, 0);
        return;
    }
    c->stage = stage;
    c->k = k;
    if (stage != COMM_ST_DONE)
        c->next = c->seg_first[comm_seg(c, stage, k)];
}

/* The packing area of the ring's reduce-scatter (0) or all-gather (1) phase: each phase
 * sends every chunk at most once. */
static unsigned char *comm_area(kd_comm *c, int ag)
{
    return c->packbuf + (ag ? c->layout.start[c->layout.nspans] * sizeof(float) : 0);
}

/* Grows packbuf to at least bytes; KD_ENOMEM leaves it as it was. */
static int comm_reserve_pack(kd_comm *c, size_t bytes)
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

/* Two ranks: each sends every chunk to the other as soon as it is final and adds the
 * peer's chunk into its own once that chunk is sent. One network hop instead of the
 * ring's two, the same bytes; a + b == b + a, so both ranks end with bit-identical sums.
 * What is sent is first copied to sendbuf (ZeroMQ then sends that zero-copy), so that
 * adding into our buffer cannot race with ZeroMQ still reading it; bfloat16 elements are
 * rounded in our buffer as they are copied, so both ranks add the same two values. Like
 * the ring, the
 * operation ends only once ZeroMQ has let go of every payload, so that a world change or
 * an exit right after it cannot drop our last chunk on its way to the peer. */
static int comm_progress_swap(kd_comm *c, int wait)
{
    uint32_t aux = comm_aux(COMM_PHASE_SWAP, 0);
    int rc;
    while (c->rnext < c->nchunks) {
        while (c->next < c->nchunks && c->ready[c->next] == c->chunks[c->next].len) {
            const comm_chunk *ch = &c->chunks[c->next];
            unsigned char *out = (unsigned char *)(c->sendbuf + ch->off);
            comm_pack(&c->layout, (size_t)ch->off, ch->len, out, 1);
            rc = comm_send_bytes(c, c->packed ? KD_WIRE_DATA_BF16 : KD_WIRE_DATA, aux, c->step,
                                 ch->off, out,
                                 comm_pack_bytes(&c->layout, (size_t)ch->off, ch->len));
            if (rc != KD_OK)
                return rc;
            c->next++;
        }
        if (c->rnext == c->next)
            return wait ? KD_EINVAL : KD_OK; /* our own values are not final yet */
        const comm_chunk *ch = &c->chunks[c->rnext];
        zmq_msg_t in;
        rc = comm_recv(c, aux, c->step, ch, &in, wait);
        if (rc == COMM_PENDING)
            return KD_OK;
        if (rc != KD_OK)
            return rc;
        comm_unpack(&c->layout, (size_t)ch->off, ch->len, comm_payload(c, &in), 1);
        zmq_msg_close(&in);
        c->rnext++;
    }
    c->stage = COMM_ST_DONE;
    return wait ? comm_wait_released(c, c->timeout_ms) : KD_OK;
}

/* Runs the ring schedule as far as it can. wait = 0: stops (KD_OK) at the first chunk
 * whose local data is not final yet or whose message has not arrived; wait = 1: blocks
 * on messages (all data must be final) and returns once ZeroMQ has released every
 * zero-copy payload. */
static int comm_progress(kd_comm *c, int wait)
{
    int w = c->world, rc;
    const kd_comm_span *spans = c->spans;
    uint64_t step = c->step;
    if (c->stage == COMM_ST_SWAP)
        return comm_progress_swap(c, wait);
    while (c->stage != COMM_ST_DONE) {
        size_t s = comm_seg(c, c->stage, c->k);
        if (c->next == c->seg_first[s + 1]) {
            comm_enter(c, c->stage, c->k + 1);
            continue;
        }
        size_t i = c->next;
        const comm_chunk *ch = &c->chunks[i];
        if (c->stage != COMM_ST_AG && c->ready[i] < ch->len)
            return wait ? KD_EINVAL : KD_OK;
        if (c->stage == COMM_ST_SEND) {
            uint32_t aux = comm_aux(COMM_PHASE_RS, 0);
            rc = c->packed ? comm_send_packed(c, aux, step, ch, comm_area(c, 0), 0)
                           : comm_send_view(c, aux, step, ch, spans);
            if (rc != KD_OK)
                return rc;
            c->next++;
            continue;
        }
        int k = c->k;
        int rs = c->stage == COMM_ST_RS;
        zmq_msg_t in;
        rc = comm_recv(c, comm_aux(rs ? COMM_PHASE_RS : COMM_PHASE_AG, k), step, ch, &in, wait);
        if (rc == COMM_PENDING)
            return KD_OK;
        if (rc != KD_OK)
            return rc;
        float *dst = spans[ch->span].data + ch->span_off;
        const float *src = zmq_msg_data(&in);
        if (c->packed) {
            comm_unpack(&c->layout, (size_t)ch->off, ch->len, comm_payload(c, &in), rs);
        } else if (rs) {
            /* ZeroMQ packs small messages into shared buffers without alignment; read
             * those through an aligned copy rather than as misaligned floats. */
            if (((uintptr_t)src & (sizeof(float) - 1)) != 0) {
                memcpy(c->scratch, src, ch->len * sizeof(float));
                src = c->scratch;
            }
            for (size_t j = 0; j < ch->len; j++)
                dst[j] += src[j];
        } else {
            memcpy(dst, src, ch->len * sizeof(float));
        }
        zmq_msg_close(&in);
        c->next++;
        /* Forward from our own copy, zero-copy as well, so that every payload still
         * queued is counted in inflight and waited for before returning. */
        uint32_t aux;
        if (rs)
            aux = k < w - 2 ? comm_aux(COMM_PHASE_RS, k + 1) : comm_aux(COMM_PHASE_AG, 0);
        else if (k < w - 2)
            aux = comm_aux(COMM_PHASE_AG, k + 1);
        else
            continue;
        /* A final value (all-gather phase) is rounded where it is kept, as it is sent. */
        int ag = (aux >> 16) == COMM_PHASE_AG;
        rc = c->packed ? comm_send_packed(c, aux, step, ch, comm_area(c, ag), ag)
                       : comm_send_view(c, aux, step, ch, spans);
        if (rc != KD_OK)
            return rc;
    }
    return wait ? comm_wait_released(c, c->timeout_ms) : KD_OK;
}

int kd_comm_begin(kd_comm *c, const kd_comm_span *spans, int nspans, uint64_t step,
                  char *err, size_t errlen)
{
    c->active = 0;
    if (c->world < 1)
        return kd_errf(err, errlen, KD_EINVAL, "comm: allreduce before a world was set");
    if (nspans < 1 || nspans > COMM_MAX_SPANS)
        return kd_errf(err, errlen, KD_EINVAL, "comm: %d spans", nspans);
    c->t0 = now_s();
    c->step = step;
    c->op_rc = KD_OK;
    c->nspans = nspans;
    memcpy(c->spans, spans, (size_t)nspans * sizeof *spans);
    c->span_start[0] = 0;
    for (int i = 0; i < nspans; i++)
        c->span_start[i + 1] = c->span_start[i] + spans[i].n;
    c->layout = (comm_layout){c->spans, c->span_start, nspans};
    c->packed = comm_pack_any(&c->layout);
    c->active = 1;
    if (c->world == 1) {
        c->stage = COMM_ST_DONE;
        return KD_OK;
    }
    if (comm_plan(c, spans, nspans) != KD_OK ||
        (c->packed && !c->plan_swap &&
         comm_reserve_pack(c, 2 * c->span_start[nspans] * sizeof(float)) != KD_OK)) {
        c->active = 0;
        return kd_errf(err, errlen, KD_ENOMEM, "comm: out of memory for the chunk plan");
    }
    memset(c->ready, 0, c->nchunks * sizeof *c->ready);
    if (c->plan_swap) {
        c->stage = COMM_ST_SWAP;
        c->next = c->rnext = 0;
    } else {
        comm_enter(c, COMM_ST_SEND, 0);
    }
    return KD_OK;
}

static int comm_fail_op(kd_comm *c, const char *op, uint64_t step, int rc, char *err,
                        size_t errlen)
{
    return kd_errf(err, errlen, rc, "comm: %s gen=%u step=%llu rank=%d world=%d: %s", op,
                   c->generation, (unsigned long long)step, c->rank, c->world,
                   rc == KD_ETIMEOUT ? "a peer stayed silent" : kd_strerror(rc));
}

/* The allreduce in progress failed with rc. */
static int comm_fail(kd_comm *c, int rc, char *err, size_t errlen)
{
    return comm_fail_op(c, "allreduce", c->step, rc, err, errlen);
}

int kd_comm_ready(kd_comm *c, int span, size_t off, size_t n, char *err, size_t errlen)
{
    if (!c->active || span < 0 || span >= c->nspans || off > c->spans[span].n ||
        n > c->spans[span].n - off)
        return kd_errf(err, errlen, KD_EINVAL, "comm: ready range outside the allreduce");
    if (c->world == 1 || c->op_rc != KD_OK)
        return c->op_rc == KD_OK ? KD_OK : comm_fail(c, c->op_rc, err, errlen);
    /* In logical offsets: a swap chunk may cover several spans. */
    uint64_t a = c->span_start[span] + off, b = a + n;
    for (size_t i = 0; i < c->nchunks; i++) {
        const comm_chunk *ch = &c->chunks[i];
        uint64_t lo = ch->off > a ? ch->off : a;
        uint64_t hi = ch->off + ch->len < b ? ch->off + ch->len : b;
        if (hi > lo)
            c->ready[i] += (size_t)(hi - lo);
    }
    c->op_rc = comm_progress(c, 0);
    return c->op_rc == KD_OK ? KD_OK : comm_fail(c, c->op_rc, err, errlen);
}

int kd_comm_finish(kd_comm *c, char *err, size_t errlen)
{
    if (!c->active)
        return kd_errf(err, errlen, KD_EINVAL, "comm: finish without begin");
    c->active = 0;
    int rc = c->op_rc;
    if (rc == KD_OK && c->world > 1)
        rc = comm_progress(c, 1);
    if (rc == KD_OK) {
        c->stats.allreduces++;
        if (c->world > 1)
            c->stats.seconds += now_s() - c->t0;
        return KD_OK;
    }
    if (rc == KD_ETIMEOUT)
        c->stats.timeouts++;
    if (rc == KD_EINVAL)
        return kd_errf(err, errlen, rc, "comm: finish before every element was marked ready");
    return comm_fail(c, rc, err, errlen);
}

int kd_comm_allreducev(kd_comm *c, const kd_comm_span *spans, int nspans, uint64_t step,
                       char *err, size_t errlen)
{
    int rc = kd_comm_begin(c, spans, nspans, step, err, errlen);
    if (rc != KD_OK)
        return rc;
    /* An error here is sticky: finish reports it. */
    for (int i = 0; i < nspans; i++)
        if (kd_comm_ready(c, i, 0, spans[i].n, err, errlen) != KD_OK)
            break;
    return kd_comm_finish(c, err, errlen);
}

int kd_comm_allreduce(kd_comm *c, float *buf, size_t n, uint64_t step, char *err,
                      size_t errlen)
{
    kd_comm_span s = {buf, n, 0};
    return kd_comm_allreducev(c, &s, 1, step, err, errlen);
}

/* Ring step k of the all-gather: send block (r-k) chunk by chunk (zero-copy; ZeroMQ's
 * I/O thread streams it while we receive), then receive block (r-k-1) into place. */
int kd_comm_allgatherv(kd_comm *c, float *buf, const size_t *bounds, int bf16,
                       uint64_t step, char *err, size_t errlen)
{
    if (c->world < 1)
        return kd_errf(err, errlen, KD_EINVAL, "comm: all-gather before a world was set");
    if (c->active)
        return kd_errf(err, errlen, KD_EINVAL, "comm: all-gather inside an allreduce");
    int w = c->world, r = c->rank;
    for (int i = 0; i < w; i++)
        if (bounds[i] > bounds[i + 1])
            return kd_errf(err, errlen, KD_EINVAL, "comm: all-gather bounds decrease at %d", i);
    if (w == 1)
        return KD_OK;
    double t0 = now_s();
    kd_comm_span whole = {buf, bounds[w], bf16 ? bounds[w] : 0};
    size_t start[2] = {0, bounds[w]};
    /* The packing layout outlives no call: no allreduce is in progress (checked above). */
    c->layout = (comm_layout){&whole, start, 1};
    c->packed = bf16 && bounds[w] > 0;
    if (c->packed && comm_reserve_pack(c, bounds[w] * sizeof(float)) != KD_OK) {
        c->packed = 0;
        return kd_errf(err, errlen, KD_ENOMEM, "comm: out of memory for the all-gather");
    }
    int rc = KD_OK;
    for (int k = 0; k < w - 1 && rc == KD_OK; k++) {
        uint32_t aux = comm_aux(COMM_PHASE_GATHER, k);
        int sb = (r - k + w) % w, rb = (r - k - 1 + w) % w;
        for (size_t off = bounds[sb]; off < bounds[sb + 1] && rc == KD_OK;) {
            size_t len = bounds[sb + 1] - off;
            len = len < c->chunk_elems ? len : c->chunk_elems;
            comm_chunk ch = {0, off, len, off};
            /* Our own block is rounded where we keep it, as it is sent; a forwarded one
             * already holds bfloat16 values. */
            rc = c->packed ? comm_send_packed(c, aux, step, &ch, c->packbuf, 1)
                           : comm_send_view(c, aux, step, &ch, &whole);
            off += len;
        }
        for (size_t off = bounds[rb]; off < bounds[rb + 1] && rc == KD_OK;) {
            size_t len = bounds[rb + 1] - off;
            len = len < c->chunk_elems ? len : c->chunk_elems;
            comm_chunk ch = {0, off, len, off};
            zmq_msg_t in;
            rc = comm_recv(c, aux, step, &ch, &in, 1);
            if (rc == KD_OK) {
                comm_unpack(&c->layout, off, len, comm_payload(c, &in), 0);
                zmq_msg_close(&in);
            }
            off += len;
        }
    }
    /* Our sends must be released before the caller reuses the buffer, even on error. */
    int rel = comm_wait_released(c, c->timeout_ms);
    c->packed = 0;
    if (rc == KD_OK)
        rc = rel;
    if (rc != KD_OK) {
        if (rc == KD_ETIMEOUT)
            c->stats.timeouts++;
        return comm_fail_op(c, "all-gather", step, rc, err, errlen);
    }
    c->stats.seconds += now_s() - t0;
    return KD_OK;
}

void kd_comm_get_stats(const kd_comm *c, kd_comm_stats *out) { *out = c->stats; }

size_t kd_comm_first_offset(const kd_comm *c, size_t total)
{
    if (c->world <= 1)
        return 0;
    /* Same split as comm_plan: segment s starts at total * s / W. */
    return (size_t)((uint64_t)total * (uint64_t)c->rank / (uint64_t)c->world);
}
