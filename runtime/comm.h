/*
 * comm: kadet's data plane, a bandwidth-optimal ring allreduce over ZeroMQ.
 *
 * Every worker binds one PULL socket (its data endpoint, announced to the coordinator
 * at join) and, for each generation of the world, connects one PUSH socket to the next
 * rank's endpoint. An allreduce of a float vector of n elements among W workers is a
 * reduce-scatter followed by an all-gather, each of W-1 ring steps, so that every worker
 * sends and receives 2(W-1)/W * n floats whatever W is. The vector is cut into W
 * segments and every segment into chunks of at most comm's chunk size; chunks are
 * reduced and forwarded as soon as they arrive, so the ring steps pipeline. Sends are
 * zero-copy (ZeroMQ reads the caller's buffer, and the call returns only once ZeroMQ has
 * let go of it); reductions are done in place from ZeroMQ's receive buffer.
 *
 * Every chunk carries the generation, the step, the phase/ring step and its element
 * offset; anything from another generation or step is stale and dropped, anything else
 * unexpected is counted and dropped (kd_wire_drop). A peer silent for longer than the
 * timeout makes the allreduce return KD_ETIMEOUT with the buffer in an unspecified
 * state: the caller must redo the step from its own saved inputs in a new generation.
 *
 * Compression (sync.compression: bf16): a span may send its first floats as bfloat16,
 * half the bytes. Sums are still taken in float32, of the rounded values: a sender rounds
 * in place whatever it sends as a final value (its own vector in the two-rank swap, a
 * finished segment in the all-gather phase), so every rank still ends with bit-identical
 * results, each within bfloat16's rounding (2^-9 relative) per addend of the exact sum.
 * Partial sums of the ring are rounded on every hop. Counts and votes belong in float32
 * spans (or the float32 rest of one).
 *
 * Lifecycle: kd_comm_open (binds), kd_comm_set_world per generation (connects to the
 * next rank), any number of kd_comm_allreduce, kd_comm_close. Not thread-safe: one
 * thread uses a comm. Requires a little-endian host (the float frames go out as is).
 */
#ifndef KD_COMM_H
#define KD_COMM_H

#include <stddef.h>
#include <stdint.h>

typedef struct kd_comm kd_comm;

/* A piece of the logical vector being reduced: the vector is the concatenation of the
 * spans, so that small extras (loss sums, a stop flag) ride along with the gradients
 * without copying them into one buffer. */
typedef struct kd_comm_span {
    float *data; /* caller's floats, reduced in place */
    size_t n;    /* number of floats */
    size_t bf16; /* the first bf16 of them travel as bfloat16 (0: all as float32) */
} kd_comm_span;

typedef struct kd_comm_stats {
    uint64_t allreduces;   /* completed allreduce calls */
    uint64_t bytes_sent;   /* payload bytes handed to ZeroMQ */
    uint64_t timeouts;     /* allreduce calls that gave up on a silent peer */
    double seconds;        /* wall time inside completed allreduce calls */
    int sndbuf;            /* send buffer the kernel granted the ipc:// data connection
                            * (bytes, as SO_SNDBUF reports it); 0 = system default */
} kd_comm_stats;

/* Creates a comm on the ZeroMQ context zctx (borrowed, must outlive the comm; glibc's
 * mmap and trim thresholds are raised process-wide, see comm.c) and binds
 * its PULL socket to bind_endpoint (for example "tcp://127.0.0.1:*"). The endpoint that
 * peers must connect to is written to endpoint (size endpoint_len). KD_ENETWORK with a
 * message in err when the bind fails. */
int kd_comm_open(kd_comm **out, void *zctx, const char *bind_endpoint, char *endpoint,
                 size_t endpoint_len, char *err, size_t errlen);

/* kd_comm_open with the job's keys (kd_curve.h; borrowed, must outlive the comm; NULL or
 * not enabled = unauthenticated): the data endpoint admits only peers holding the job key,
 * over CURVE (curve = 1: encrypted) or PLAIN with the key-derived credential (curve = 0:
 * authenticated connections, payloads in the clear), and the ring connections present
 * the same. A ZAP handler must run on zctx (kd_zap_start) for as long as the comm. */
struct kd_curve_keys;
int kd_comm_open_keyed(kd_comm **out, void *zctx, const char *bind_endpoint,
                       const struct kd_curve_keys *keys, int curve, char *endpoint,
                       size_t endpoint_len, char *err, size_t errlen);

/* Frees the comm (closing its sockets) and sets *c to NULL; accepts NULL. */
void kd_comm_close(kd_comm **c);

/* Per-receive timeout in milliseconds (default 2000) after which a peer counts as dead. */
void kd_comm_set_timeout(kd_comm *c, int timeout_ms);
/* Largest chunk in bytes (default 256 KiB; clamped to [4 KiB, 16 MiB]). */
void kd_comm_set_chunk_bytes(kd_comm *c, size_t bytes);

/* Enters generation `generation` as `rank` of `world` workers whose data endpoints are
 * peers[0..world-1]: drops the previous ring connection and connects to the next rank.
 * KD_EINVAL (message in err) for a bad rank, world or endpoint. */
int kd_comm_set_world(kd_comm *c, uint32_t generation, int rank, int world,
                      const char *const *peers, char *err, size_t errlen);

/* Sums the logical vector (the concatenation of spans[0..nspans-1]) element-wise over
 * all ranks of the current world, in place; every rank ends with bit-identical values
 * (exact float32 sums unless some of it travels as bfloat16: see above).
 * step tags the messages. KD_ETIMEOUT when a peer stays silent, KD_ENETWORK on a socket
 * error, KD_EINVAL when the world is not set; detail in err. No allocation once the
 * chunk plan for this shape has been built. */
int kd_comm_allreducev(kd_comm *c, const kd_comm_span *spans, int nspans, uint64_t step,
                       char *err, size_t errlen);

/* The same allreduce in three calls, so that it overlaps the computation of the vector:
 * kd_comm_begin(spans) starts it (the buffers must stay valid and untouched by the
 * caller, except for parts not yet marked ready, until finish returns);
 * kd_comm_ready(span, off, n) declares spans[span][off, off+n) final (ranges marked
 * must not overlap) and, without blocking, sends and reduces whatever the ring schedule
 * allows so far (ZeroMQ's I/O thread moves the bytes while the caller computes on);
 * kd_comm_finish completes it, blocking, once every element has been marked ready
 * (KD_EINVAL otherwise). An error met while progressing in kd_comm_ready is returned
 * there and again by kd_comm_finish; finish must be called after a successful begin. */
int kd_comm_begin(kd_comm *c, const kd_comm_span *spans, int nspans, uint64_t step,
                  char *err, size_t errlen);
int kd_comm_ready(kd_comm *c, int span, size_t off, size_t n, char *err, size_t errlen);
int kd_comm_finish(kd_comm *c, char *err, size_t errlen);
/* A range of the peer's values that a deferred swap kept (kd_comm_begin_deferred). */
typedef struct kd_comm_piece {
    size_t off;                /* first element in the logical vector */
    size_t n;                  /* elements */
    const unsigned char *data; /* n little-endian float32 values, at any alignment */
} kd_comm_piece;

/* kd_comm_begin for a caller that takes the sum itself, inside the pass that consumes it
 * (the optimizer step: kd_optim_step_range_sum), so that it is never written back. When
 * the operation is the two-rank swap in float32, our values are sent straight from the
 * spans (no copy) and the peer's are not added into them: after a successful finish
 * kd_comm_peer returns them, as pieces covering the whole logical vector in order, and
 * the spans still hold our own values; own + peer is bit for bit what the peer computes
 * as peer + own. Any other operation (a ring, bfloat16, one rank) reduces in place as
 * kd_comm_begin does, and kd_comm_peer returns 0. */
int kd_comm_begin_deferred(kd_comm *c, const kd_comm_span *spans, int nspans, uint64_t step,
                           char *err, size_t errlen);
/* The pieces a deferred swap kept (*pieces valid until the next begin, all-gather, world
 * change or close), or 0 when the sum is in the spans. */
size_t kd_comm_peer(const kd_comm *c, const kd_comm_piece **pieces);
/* Adds the kept peer values of logical elements [off, off + n) into the spans, as an
 * undeferred swap would have (for the parts the caller wants summed in place: counts,
 * votes); nothing when kd_comm_peer returns 0. */
void kd_comm_peer_add(kd_comm *c, size_t off, size_t n);

/* The element offset of the logical vector where this rank's own reduce-scatter segment
 * starts (the part it sends first); 0 without a world of more than one rank. */
size_t kd_comm_first_offset(const kd_comm *c, size_t total);

/* kd_comm_allreducev of one buffer. */
int kd_comm_allreduce(kd_comm *c, float *buf, size_t n, uint64_t step, char *err,
                      size_t errlen);

/* Ring all-gather: rank r owns buf[bounds[r], bounds[r+1]) (bounds has world+1
 * non-decreasing entries, the same on every rank; empty blocks are allowed) and every rank
 * ends with all the blocks, bit for bit. W-1 ring steps: send the block we got last (our
 * own first), receive the previous rank's: each rank sends and receives (W-1)/W of the
 * buffer when the blocks are equal; two ranks need one hop. Zero-copy sends, chunked at
 * the chunk size; generation, step and staleness rules as for the allreduce (its messages
 * carry their own phase tag). With bf16 the blocks travel as bfloat16 and every rank,
 * the owner included, ends with the rounded values. KD_ETIMEOUT / KD_ENETWORK /
 * KD_EINVAL as kd_comm_allreducev. Not between kd_comm_begin and kd_comm_finish. */
int kd_comm_allgatherv(kd_comm *c, float *buf, const size_t *bounds, int bf16,
                       uint64_t step, char *err, size_t errlen);

void kd_comm_get_stats(const kd_comm *c, kd_comm_stats *out);

/* 1 when none of the n little-endian float32 values at p (any alignment) is an infinity
 * or a NaN, 0 otherwise: received states and gradients are checked before they are
 * applied (docs/security.md). */
int kd_comm_all_finite(const void *p, size_t n);

#endif
