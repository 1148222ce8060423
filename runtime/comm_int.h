/*
 * comm_int: what comm.c and comm_ring.c share (internal to the comm module): the comm
 * object, the chunk plan and the checked chunk I/O the schedules are built from.
 */
#ifndef KD_COMM_INT_H
#define KD_COMM_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "comm.h"
#include "comm_pack.h"
#include "kd_curve.h"

#define COMM_PHASE_RS 1u /* reduce-scatter */
#define COMM_PHASE_AG 2u /* all-gather */
#define COMM_PHASE_SWAP 3u /* two ranks: each sends its whole vector to the other */
#define COMM_PHASE_GATHER 4u /* kd_comm_allgatherv */
#define COMM_MAX_SPANS 8
/* Send buffer of ipc:// data connections (KADET_COMM_SOCKBUF). With the default (~208
 * KiB) a 512 KiB chunk crosses a Unix socket in several writes, each waking both I/O
 * threads; a buffer larger than a chunk lets it go in one (the kernel caps it at
 * net.core.wmem_max). TCP keeps the system default: an explicit size turns off its
 * buffer autotuning, which measured slower for 16 MiB allreduces. */
#define COMM_SOCKBUF (4 * 1024 * 1024)

typedef struct comm_chunk {
    int span;        /* index of the span holding the chunk */
    size_t span_off; /* first element inside that span */
    size_t len;      /* elements */
    uint64_t off;    /* first element in the logical vector (sent on the wire) */
} comm_chunk;

struct kd_comm {
    void *zctx;              /* borrowed ZeroMQ context */
    const kd_curve_keys *keys; /* borrowed job keys, NULL = unauthenticated data plane */
    int curve;               /* with keys: CURVE (1) or the PLAIN credential (0) */
    void *pull;              /* bound data socket, receives from the previous rank */
    void *push;              /* connected to the next rank; NULL until a world is set */
    void *mon;               /* monitor of push until its connection's buffer is set */
    int sockbuf;             /* send buffer for push's ipc:// connection, bytes */
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
    int defer;               /* a float32 swap that leaves the sum to the caller */
    int peer_ok;             /* the deferred swap finished: held[] is the peer's vector */
    zmq_msg_t *held;         /* deferred swap: the peer's payloads, one per chunk */
    kd_comm_piece *peer;     /* their ranges */
    size_t nheld;            /* entries of held in use */
    size_t heldcap;          /* entries allocated in held and peer */
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
/* Up to this size two ranks swap (two processes on loopback over ipc://: 256 KiB in
 * 0.17-0.27 ms against the ring's 0.29-0.30 ms; 1 MiB and 2 MiB level, 0.39-0.60 and
 * 0.87-0.92 ms against 0.48-0.51 and 0.89-1.04): the same bytes as the ring in half the
 * dependent hops and, with chunks as large as the vector, one message each way, which
 * is what a training step on busy cores pays for. Above it the ring's pipelined halves
 * win a little (16 MiB: 4.7-5.4 ms on the ring, 5.3-6.5 swapped). allreduce_bench
 * measures both (KADET_COMM_ALGO). */
#define COMM_SWAP_MAX (2u * 1024 * 1024)
#define COMM_PENDING 1 /* non-blocking progress: waiting for data or a message */

/* Monotonic seconds. */
double comm_now(void);
/* Waits until ZeroMQ has let go of every zero-copy payload, at most timeout_ms. */
int comm_wait_released(kd_comm *c, int timeout_ms);
/* Builds (or keeps) the chunk plan for this shape (the swap or the ring: its limit
 * counts wire bytes, so c->packed must be set first); KD_ENOMEM. */
int comm_plan(kd_comm *c, const kd_comm_span *spans, int nspans);
/* Zero-copy sends of a chunk: bytes of a buffer that stays untouched until
 * comm_wait_released; a float32 view of the caller's spans; packed into area at the
 * chunk's float offset (keep: see comm_pack). */
int comm_send_bytes(kd_comm *c, uint16_t type, uint32_t aux, uint64_t step, uint64_t off,
                    const void *data, size_t bytes);
int comm_send_view(kd_comm *c, uint32_t aux, uint64_t step, const comm_chunk *ch,
                   const kd_comm_span *spans);
int comm_send_packed(kd_comm *c, uint32_t aux, uint64_t step, const comm_chunk *ch,
                     unsigned char *area, int keep);
/* Receives the chunk the schedule expects next from the previous rank (dropping stale and
 * unexpected messages); wait = 0 returns COMM_PENDING instead of blocking. */
int comm_recv(kd_comm *c, uint32_t aux, uint64_t step, const comm_chunk *ch,
              zmq_msg_t *payload, int wait);
/* A received payload, 2-byte aligned (copied to scratch when ZeroMQ's is not). */
const unsigned char *comm_payload(kd_comm *c, zmq_msg_t *m);
/* Closes the payloads a deferred swap kept. */
void comm_release_peer(kd_comm *c);
/* Grows packbuf to at least bytes; KD_ENOMEM leaves it as it was. */
int comm_reserve_pack(kd_comm *c, size_t bytes);
/* Formats a failed operation's error into err and returns rc. */
int comm_fail_op(kd_comm *c, const char *op, uint64_t step, int rc, char *err,
                 size_t errlen);

#endif
