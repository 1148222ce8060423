/* comm: the ring allreduce (and the two-rank swap) among real processes on loopback gives
 * every rank the exact element-wise sum (bit-identical across ranks), for several world
 * sizes, shapes that do not divide evenly and multi-span vectors; stale and foreign messages on the data port
 * are dropped without disturbing it; a dead peer is reported as a timeout. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <zmq.h>

#include "comm.h"
#include "comm_pack.h"
#include "kd_error.h"
#include "kd_wire.h"

#define MAX_RANKS 4
#define EP_LEN 128

typedef struct shared {
    volatile int ready;                 /* ranks that published their endpoint */
    char endpoint[MAX_RANKS][EP_LEN];   /* each rank's data endpoint */
    uint32_t crc[MAX_RANKS][4];         /* per-rank digest of the reduced vector */
    uint64_t bytes[MAX_RANKS];          /* payload bytes each rank sent */
    int sndbuf[MAX_RANKS];              /* each rank's data connection send buffer */
} shared;

static shared *sh;

static float value_of(int rank, size_t i, int round)
{
    /* Values with fractional parts so that summation order would show in the bits. */
    return (float)((rank + 1) * 0.37 + (double)(i % 1013) * 0.001 + round * 0.5);
}

static uint32_t digest(const float *v, size_t n)
{
    uint32_t h = 2166136261u;
    const unsigned char *p = (const unsigned char *)v;
    for (size_t i = 0; i < n * sizeof(float); i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static void publish_and_wait(int rank, int world, const char *ep)
{
    snprintf(sh->endpoint[rank], EP_LEN, "%s", ep);
    __sync_fetch_and_add(&sh->ready, 1);
    while (sh->ready < world)
        usleep(1000);
}

/* How the children run each allreduce: in one call, or overlapped with a simulated
 * backward pass (begin, then values written and marked ready block by block, last block
 * first, then finish), or overlapped with a block never marked (finish must refuse). */
enum { MODE_ONE_CALL, MODE_OVERLAP, MODE_OVERLAP_INCOMPLETE, MODE_DEFERRED };
static int comm_mode = MODE_ONE_CALL;
/* MODE_DEFERRED: whether the operation must keep the peer's values for the caller (a
 * float32 swap) rather than sum in place. */
static int expect_peer = 0;

/* A deferred allreduce finished: our own values must be untouched and, when the peer's
 * were kept, their pieces must cover the vector in order; the child then adds them into
 * the vector itself (as the worker's optimizer step does) and has comm add them into the
 * tail (kd_comm_peer_add), so that the usual checks apply. */
static int take_peer(kd_comm *c, kd_comm_span *spans, int rank, size_t n, int round)
{
    const kd_comm_piece *pc;
    size_t np = kd_comm_peer(c, &pc);
    if ((np > 0) != expect_peer) {
        fprintf(stderr, "rank %d: %zu peer pieces, expected %s\n", rank, np,
                expect_peer ? "some" : "none");
        return -1;
    }
    if (np == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (spans[0].data[i] != value_of(rank, i, round)) {
            fprintf(stderr, "rank %d: own value %zu changed by a deferred swap\n", rank, i);
            return -1;
        }
    size_t next = 0;
    for (size_t k = 0; k < np; k++) {
        if (pc[k].off != next || pc[k].n == 0)
            return -1;
        for (size_t j = 0; j < pc[k].n; j++) {
            size_t e = pc[k].off + j;
            float v;
            memcpy(&v, pc[k].data + 4 * j, sizeof v);
            if (e < n)
                spans[0].data[e] += v;
            else if (e - n >= spans[1].n)
                return -1;
        }
        next += pc[k].n;
    }
    /* The tail (counts) summed in place by comm, as the worker has its votes summed. */
    kd_comm_peer_add(c, n, spans[1].n);
    return next == n + spans[1].n ? 0 : -1;
}
/* The vector (not the 3-float tail, which holds counts) travels as bfloat16. */
static int use_bf16 = 0;

static int overlapped(kd_comm *c, kd_comm_span *spans, int rank, size_t n, int round,
                      char *err, size_t errlen)
{
    int rc = comm_mode == MODE_DEFERRED
                 ? kd_comm_begin_deferred(c, spans, 2, (uint64_t)round, err, errlen)
                 : kd_comm_begin(c, spans, 2, (uint64_t)round, err, errlen);
    if (rc != KD_OK)
        return -1;
    /* The tail first, then the vector in 7 uneven blocks from the end, each written just
     * before it is marked, as backward produces the last layer's gradient first. */
    if (kd_comm_ready(c, 1, 0, 3, err, errlen) != KD_OK)
        return -1;
    size_t end = n, block = n / 7 + 1;
    int skipped = 0;
    while (end > 0) {
        size_t start = end > block ? end - block : 0;
        for (size_t i = start; i < end; i++)
            spans[0].data[i] = value_of(rank, i, round);
        if (comm_mode == MODE_OVERLAP_INCOMPLETE && start == 0) {
            skipped = 1; /* the first block is never declared final */
            break;
        }
        if (kd_comm_ready(c, 0, start, end - start, err, errlen) != KD_OK)
            return -1;
        end = start;
    }
    rc = kd_comm_finish(c, err, errlen);
    if (skipped)
        return rc == KD_EINVAL ? 1 : -1;
    if (rc != KD_OK)
        return -1;
    return comm_mode == MODE_DEFERRED ? take_peer(c, spans, rank, n, round) : 0;
}

/* Child body: allreduce rounds of a two-span vector (n + 3 floats) and check sums. */
/* A child's comm: bound, endpoint published, every rank's published, world set. NULL (and
 * a message) on failure. */
/* Ranks bind TCP on loopback, or Unix sockets (ipc://, as kadet run's local workers). */
static int use_ipc = 0;

static kd_comm *join_world(void *ctx, int rank, int world, size_t chunk_bytes)
{
    kd_comm *c = NULL;
    char ep[EP_LEN], err[256], bind[EP_LEN] = "tcp://127.0.0.1:*";
    if (use_ipc)
        snprintf(bind, sizeof bind, "ipc:///tmp/kadet-test-comm-%d-%d", (int)getpid(), rank);
    if (kd_comm_open(&c, ctx, bind, ep, sizeof ep, err, sizeof err) != KD_OK) {
        fprintf(stderr, "rank %d: %s\n", rank, err);
        return NULL;
    }
    kd_comm_set_chunk_bytes(c, chunk_bytes);
    publish_and_wait(rank, world, ep);
    const char *peers[MAX_RANKS];
    for (int i = 0; i < world; i++)
        peers[i] = sh->endpoint[i];
    if (kd_comm_set_world(c, 5, rank, world, peers, err, sizeof err) != KD_OK) {
        fprintf(stderr, "rank %d: %s\n", rank, err);
        kd_comm_close(&c);
    }
    return c;
}

/* Forks world children running body(rank, world, a, b) and checks that each exits 0. */
typedef int (*child_fn)(int rank, int world, size_t a, size_t b);
static void run_children(int world, child_fn body, size_t a, size_t b)
{
    memset(sh, 0, sizeof *sh);
    pid_t pids[MAX_RANKS];
    for (int r = 0; r < world; r++) {
        pids[r] = fork();
        assert_true(pids[r] >= 0);
        if (pids[r] == 0)
            _exit(body(r, world, a, b));
    }
    for (int r = 0; r < world; r++) {
        int status = 0;
        assert_int_equal(waitpid(pids[r], &status, 0), pids[r]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
}

static int child(int rank, int world, size_t n, size_t chunk_bytes)
{
    void *ctx = zmq_ctx_new();
    char err[256];
    kd_comm *c = join_world(ctx, rank, world, chunk_bytes);
    if (c == NULL)
        return 10;
    float *v = malloc(n * sizeof *v);
    float tail[3];
    int bad = 0;
    for (int round = 0; round < 3 && !bad; round++) {
        for (size_t i = 0; i < n; i++)
            v[i] = value_of(rank, i, round);
        for (int j = 0; j < 3; j++)
            tail[j] = (float)(rank + j);
        kd_comm_span spans[2] = {{v, n, use_bf16 ? n : 0}, {tail, 3, 0}};
        if (comm_mode != MODE_ONE_CALL) {
            int orc = overlapped(c, spans, rank, n, round, err, sizeof err);
            if (orc == 1) { /* refused as it should be: nothing more to check */
                sh->crc[rank][0] = sh->crc[rank][1] = sh->crc[rank][2] = 0;
                break;
            }
            if (orc != 0) {
                fprintf(stderr, "rank %d: overlapped allreduce: %s\n", rank, err);
                bad = 15;
                break;
            }
        } else if (kd_comm_allreducev(c, spans, 2, (uint64_t)round, err, sizeof err) != KD_OK) {
            fprintf(stderr, "rank %d: %s\n", rank, err);
            bad = 12;
            break;
        }
        for (size_t i = 0; i < n; i++) {
            double want = 0;
            for (int r = 0; r < world; r++)
                want += value_of(r, i, round);
            /* bfloat16: each addend and each partial sum within 2^-9 relative. */
            double tol = use_bf16 ? want * world * 0.004 : 1e-3 * world;
            if (v[i] < want - tol || v[i] > want + tol) {
                fprintf(stderr, "rank %d elem %zu: %f want %f\n", rank, i, v[i], want);
                bad = 13;
                break;
            }
        }
        for (int j = 0; j < 3; j++)
            if (tail[j] != (float)(world * (world - 1) / 2 + world * j))
                bad = 14;
        sh->crc[rank][round] = digest(v, n) ^ digest(tail, 3);
    }
    kd_comm_stats st;
    kd_comm_get_stats(c, &st);
    sh->bytes[rank] = st.bytes_sent;
    sh->sndbuf[rank] = st.sndbuf;
    free(v);
    kd_comm_close(&c);
    if (use_ipc) {
        char path[EP_LEN];
        snprintf(path, sizeof path, "/tmp/kadet-test-comm-%d-%d", (int)getpid(), rank);
        unlink(path);
    }
    zmq_ctx_term(ctx);
    return bad;
}

static void run_world(int world, size_t n, size_t chunk_bytes)
{
    run_children(world, child, n, chunk_bytes);
    /* Every rank holds bit-identical results. */
    for (int r = 1; r < world; r++)
        for (int round = 0; round < 3; round++)
            assert_int_equal(sh->crc[r][round], sh->crc[0][round]);
}

/* All-gather child: rank r owns [bounds[r], bounds[r+1]) of n floats, filled with its
 * values; afterwards every block must hold its owner's values, bit for bit. Block k has
 * k * unit floats (rank 0's block is empty), twice, with different values. */
static int gather_child(int rank, int world, size_t unit, size_t chunk_bytes)
{
    void *ctx = zmq_ctx_new();
    char err[256];
    kd_comm *c = join_world(ctx, rank, world, chunk_bytes);
    if (c == NULL)
        return 10;
    size_t bounds[MAX_RANKS + 1] = {0};
    for (int k = 0; k < world; k++)
        bounds[k + 1] = bounds[k] + (size_t)k * unit;
    size_t n = bounds[world];
    float *v = malloc((n + 1) * sizeof *v);
    int bad = 0;
    for (int round = 0; round < 2 && !bad; round++) {
        for (size_t i = 0; i < n; i++)
            v[i] = -1.0f; /* what the others' blocks hold before */
        for (size_t i = bounds[rank]; i < bounds[rank + 1]; i++)
            v[i] = value_of(rank, i, round);
        if (kd_comm_allgatherv(c, v, bounds, use_bf16, (uint64_t)round, err, sizeof err) !=
            KD_OK) {
            fprintf(stderr, "rank %d: %s\n", rank, err);
            bad = 12;
            break;
        }
        /* bfloat16: every rank, the owner too, holds the rounded values. */
        for (int k = 0; k < world && !bad; k++)
            for (size_t i = bounds[k]; i < bounds[k + 1]; i++) {
                float want = value_of(k, i, round);
                if (use_bf16)
                    want = comm_f32_of(comm_bf16_of(want));
                if (v[i] != want) {
                    fprintf(stderr, "rank %d elem %zu: %f want %f\n", rank, i, v[i], want);
                    bad = 13;
                    break;
                }
            }
    }
    free(v);
    kd_comm_close(&c);
    zmq_ctx_term(ctx);
    return bad;
}

/* kd_comm_allgatherv: every rank ends with every rank's block, exactly, with uneven and
 * empty blocks, several chunks per block, 2 to 4 ranks. */
static void test_allgather_gives_every_block(void **state)
{
    (void)state;
    run_children(2, gather_child, 100000, 64 * 1024);
    run_children(3, gather_child, 30001, 16 * 1024);
    run_children(4, gather_child, 777, 4096);
}

static void test_two_ranks_sum_exactly(void **state)
{
    (void)state;
    run_world(2, 250000, 256 * 1024);
}

/* Over ipc:// the data connection gets the send buffer asked for (libzmq sets ZMQ_SNDBUF
 * on TCP sockets only): Linux grants twice the request, capped at net.core.wmem_max, so
 * that a 512 KiB chunk leaves in one write. KADET_COMM_SOCKBUF=-1 keeps the default. */
static void test_ipc_connection_gets_its_send_buffer(void **state)
{
    (void)state;
    long cap = 0;
    FILE *f = fopen("/proc/sys/net/core/wmem_max", "r");
    if (f != NULL) {
        if (fscanf(f, "%ld", &cap) != 1)
            cap = 0;
        fclose(f);
    }
    long want = 2 * (cap > 0 && cap < 4L * 1024 * 1024 ? cap : 4L * 1024 * 1024);
    use_ipc = 1;
    run_world(2, 250000, 512 * 1024);
    for (int r = 0; r < 2; r++)
        assert_int_equal(sh->sndbuf[r], want);
    setenv("KADET_COMM_SOCKBUF", "-1", 1);
    run_world(2, 250000, 512 * 1024);
    unsetenv("KADET_COMM_SOCKBUF");
    for (int r = 0; r < 2; r++)
        assert_int_equal(sh->sndbuf[r], 0);
    use_ipc = 0;
}

static void test_three_and_four_ranks_with_uneven_segments(void **state)
{
    (void)state;
    run_world(3, 100003, 16 * 1024);
    run_world(4, 77777, 4096);
}

static void test_overlapped_allreduce_equals_one_call(void **state)
{
    (void)state;
    comm_mode = MODE_OVERLAP;
    run_world(2, 250000, 64 * 1024);
    run_world(3, 100003, 16 * 1024);
    comm_mode = MODE_ONE_CALL;
}

/* Two ranks exchange whole vectors (the swap) when the vector is small or when asked:
 * the sums must be exact and bit-identical as with the ring, in one call and overlapped,
 * with chunks that cut across the span boundary; a rank that closes its comm right after
 * its last allreduce must not lose its last chunk on the way to the peer. */
static void test_two_rank_swap_sums_exactly(void **state)
{
    (void)state;
    run_world(2, 60000, 512 * 1024); /* 240 KB: the swap by default */
    setenv("KADET_COMM_ALGO", "swap", 1);
    run_world(2, 250000, 64 * 1024);
    comm_mode = MODE_OVERLAP;
    run_world(2, 250000, 16 * 1024);
    run_world(2, 5, 4096);
    comm_mode = MODE_OVERLAP_INCOMPLETE;
    run_world(2, 10000, 16 * 1024);
    comm_mode = MODE_ONE_CALL;
    setenv("KADET_COMM_ALGO", "ring", 1);
    run_world(2, 60000, 16 * 1024); /* small, but the ring when asked */
    unsetenv("KADET_COMM_ALGO");
}

/* kd_comm_begin_deferred: a float32 swap sends straight from our buffer, leaves it alone
 * and hands the peer's values over in order (the child adds them and the usual checks of
 * exact, bit-identical sums follow), in one chunk, in chunks that cut across the span
 * boundary, and in the smallest vector; a ring, or bfloat16, sums in place instead. */
static void test_deferred_swap_leaves_the_sum_to_the_caller(void **state)
{
    (void)state;
    comm_mode = MODE_DEFERRED;
    expect_peer = 1;
    run_world(2, 235146, 1024 * 1024); /* the sample's gradient: one message each way */
    run_world(2, 250000, 16 * 1024);
    run_world(2, 5, 4096);
    expect_peer = 0;
    run_world(3, 100003, 16 * 1024);
    use_bf16 = 1;
    run_world(2, 60000, 512 * 1024);
    use_bf16 = 0;
    comm_mode = MODE_ONE_CALL;
}

/* sync.compression: bf16. The vector travels as bfloat16, in half the bytes, and every
 * rank still ends with bit-identical sums, each within bfloat16's rounding of the exact
 * one; the tail's counts stay exact (child checks both). In the swap (one call and
 * overlapped) and the ring, and in the all-gather, where the owner keeps the rounded
 * values it sent. */
static uint64_t sent_bytes(int world)
{
    uint64_t b = 0;
    for (int r = 0; r < world; r++)
        b += sh->bytes[r];
    return b;
}

static void test_bf16_halves_the_bytes_and_keeps_ranks_identical(void **state)
{
    (void)state;
    run_world(2, 60000, 512 * 1024); /* swap */
    uint64_t f32 = sent_bytes(2);
    use_bf16 = 1;
    run_world(2, 60000, 512 * 1024);
    uint64_t b16 = sent_bytes(2);
    assert_true(b16 < f32 * 55 / 100 && b16 > f32 * 45 / 100);
    comm_mode = MODE_OVERLAP;
    run_world(2, 250000, 16 * 1024);
    comm_mode = MODE_ONE_CALL;
    run_world(3, 100003, 16 * 1024); /* ring, partial sums rounded on every hop */
    comm_mode = MODE_OVERLAP;
    run_world(4, 77777, 4096);
    comm_mode = MODE_ONE_CALL;
    run_children(2, gather_child, 100000, 64 * 1024);
    run_children(3, gather_child, 30001, 16 * 1024);
    use_bf16 = 0;
}

/* The packing of a range that crosses spans and bfloat16 boundaries, and the rounding:
 * to nearest, ties to even, NaN kept. */
static void test_pack_layout_and_rounding(void **state)
{
    (void)state;
    assert_true(comm_f32_of(comm_bf16_of(1.0f)) == 1.0f);
    /* 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even mantissa, 1. */
    assert_true(comm_f32_of(comm_bf16_of(1.0f + 0x1p-8f)) == 1.0f);
    assert_true(comm_f32_of(comm_bf16_of(1.0f + 0x1p-8f + 0x1p-12f)) == 1.0f + 0x1p-7f);
    assert_true(comm_f32_of(comm_bf16_of(-3.0f)) == -3.0f);
    float nan = __builtin_nanf("");
    float back = comm_f32_of(comm_bf16_of(nan));
    assert_true(back != back);
    float a[5] = {1.5f, 2.0f + 0x1p-10f, 3.0f, 4.0f + 0x1p-10f, 5.0f};
    float b[2] = {6.0f + 0x1p-10f, 7.0f};
    kd_comm_span spans[2] = {{a, 5, 2}, {b, 2, 5}}; /* b: more bf16 than it holds */
    size_t start[3] = {0, 5, 7};
    comm_layout l = {spans, start, 2};
    assert_true(comm_pack_any(&l));
    assert_int_equal(comm_pack_bytes(&l, 0, 7), 2 * 2 + 3 * 4 + 2 * 2);
    assert_int_equal(comm_pack_bytes(&l, 1, 5), 2 + 3 * 4 + 2);
    unsigned char buf[64];
    comm_pack(&l, 1, 5, buf, 1); /* a[1] (bf16), a[2..4] (f32), b[0] (bf16) */
    assert_true(a[1] == 2.0f && b[0] == 6.0f && a[3] == 4.0f + 0x1p-10f);
    float c[5] = {0}, d[2] = {0};
    kd_comm_span out[2] = {{c, 5, 2}, {d, 2, 2}};
    comm_layout lo = {out, start, 2};
    comm_unpack(&lo, 1, 5, buf, 0);
    assert_true(c[0] == 0.0f && c[1] == 2.0f && c[2] == 3.0f && c[3] == 4.0f + 0x1p-10f &&
                c[4] == 5.0f && d[0] == 6.0f && d[1] == 0.0f);
    comm_unpack(&lo, 1, 5, buf, 1);
    assert_true(c[1] == 4.0f && c[3] == 8.0f + 0x1p-9f && d[0] == 12.0f);
    kd_comm_span none[1] = {{a, 5, 0}};
    comm_layout ln = {none, start, 1};
    assert_false(comm_pack_any(&ln));
    assert_int_equal(comm_pack_bytes(&ln, 0, 5), 20);
}

static void test_finish_refuses_unmarked_elements(void **state)
{
    (void)state;
    comm_mode = MODE_OVERLAP_INCOMPLETE;
    run_world(2, 10000, 16 * 1024);
    comm_mode = MODE_ONE_CALL;
}

static void test_vector_smaller_than_world(void **state)
{
    (void)state;
    run_world(4, 1, 4096); /* 4 floats in all: some segments are empty */
}

static void test_single_rank_is_identity(void **state)
{
    (void)state;
    void *ctx = zmq_ctx_new();
    kd_comm *c = NULL;
    char ep[EP_LEN], err[256];
    assert_int_equal(kd_comm_open(&c, ctx, "tcp://127.0.0.1:*", ep, sizeof ep, err,
                                  sizeof err), KD_OK);
    const char *peers[1] = {ep};
    assert_int_equal(kd_comm_set_world(c, 1, 0, 1, peers, err, sizeof err), KD_OK);
    float v[3] = {1, 2, 3};
    assert_int_equal(kd_comm_allreduce(c, v, 3, 0, err, sizeof err), KD_OK);
    assert_true(v[0] == 1 && v[1] == 2 && v[2] == 3);
    assert_int_equal(kd_comm_set_world(c, 1, 1, 1, peers, err, sizeof err), KD_EINVAL);
    kd_comm_close(&c);
    kd_comm_close(&c);
    zmq_ctx_term(ctx);
}

static void test_dead_peer_times_out(void **state)
{
    (void)state;
    void *ctx = zmq_ctx_new();
    kd_comm *c = NULL, *peer = NULL;
    char ep[EP_LEN], ep2[EP_LEN], err[256];
    assert_int_equal(kd_comm_open(&c, ctx, "tcp://127.0.0.1:*", ep, sizeof ep, err,
                                  sizeof err), KD_OK);
    /* The peer binds but never takes part, as a process frozen or killed mid-step. */
    assert_int_equal(kd_comm_open(&peer, ctx, "tcp://127.0.0.1:*", ep2, sizeof ep2, err,
                                  sizeof err), KD_OK);
    const char *peers[2] = {ep, ep2};
    kd_comm_set_timeout(c, 300);
    assert_int_equal(kd_comm_set_world(c, 2, 0, 2, peers, err, sizeof err), KD_OK);
    float v[1000] = {0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(kd_comm_allreduce(c, v, 1000, 1, err, sizeof err), KD_ETIMEOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double dt = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    /* Not before the timeout; the upper bound only says it does not hang (a loaded
     * machine can delay the wake-up by seconds: timings belong in benchmarks). */
    assert_true(dt >= 0.25 && dt < 30.0);
    assert_non_null(strstr(err, "silent"));
    kd_comm_stats st;
    kd_comm_get_stats(c, &st);
    assert_int_equal(st.timeouts, 1);
    kd_comm_close(&c);
    kd_comm_close(&peer);
    zmq_ctx_term(ctx);
}

/* Writes garbage, a foreign header and a stale-generation chunk into a data port. */
static void inject_noise(void *ctx, const char *ep)
{
    void *s = zmq_socket(ctx, ZMQ_PUSH);
    int linger = 1000;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_connect(s, ep), 0);
    zmq_send(s, "hello", 5, 0);
    unsigned char hdr[KD_WIRE_HDR_SIZE];
    kd_wire_hdr h = {.type = KD_WIRE_DATA, .generation = 4, .sender = 1, .step = 0,
                     .offset = 0, .payload_len = 8};
    kd_wire_encode(&h, hdr);
    float two[2] = {1e9f, 1e9f};
    zmq_send(s, hdr, sizeof hdr, ZMQ_SNDMORE);
    zmq_send(s, two, sizeof two, 0); /* stale: generation 4 */
    h.generation = 5;
    h.payload_len = 12;
    kd_wire_encode(&h, hdr);
    zmq_send(s, hdr, sizeof hdr, ZMQ_SNDMORE);
    zmq_send(s, two, sizeof two, 0); /* length lies */
    zmq_close(s);
}

static void test_noise_on_data_port_is_dropped(void **state)
{
    (void)state;
    memset(sh, 0, sizeof *sh);
    uint64_t before = kd_wire_drops(KD_WIRE_DROP_COUNT);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        while (sh->ready < 1)
            usleep(1000);
        _exit(child(1, 2, 5000, 4096));
    }
    /* Rank 0 runs here so that the drops are counted in this process. */
    void *ctx = zmq_ctx_new();
    kd_comm *c = NULL;
    char ep[EP_LEN], err[256];
    assert_int_equal(kd_comm_open(&c, ctx, "tcp://127.0.0.1:*", ep, sizeof ep, err,
                                  sizeof err), KD_OK);
    kd_comm_set_chunk_bytes(c, 4096);
    inject_noise(ctx, ep);
    usleep(100000);
    publish_and_wait(0, 2, ep);
    const char *peers[2] = {sh->endpoint[0], sh->endpoint[1]};
    assert_int_equal(kd_comm_set_world(c, 5, 0, 2, peers, err, sizeof err), KD_OK);
    float *v = malloc(5000 * sizeof *v);
    float tail[3];
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < 5000; i++)
            v[i] = value_of(0, i, round);
        for (int j = 0; j < 3; j++)
            tail[j] = (float)j;
        kd_comm_span spans[2] = {{v, 5000, 0}, {tail, 3, 0}};
        assert_int_equal(kd_comm_allreducev(c, spans, 2, (uint64_t)round, err, sizeof err),
                         KD_OK);
        assert_true(v[10] == value_of(0, 10, round) + value_of(1, 10, round));
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_true(kd_wire_drops(KD_WIRE_DROP_COUNT) - before >= 3);
    assert_true(kd_wire_drops(KD_WIRE_DROP_STALE) >= 1);
    free(v);
    kd_comm_close(&c);
    zmq_ctx_term(ctx);
}

/* The check every received state and gradient goes through (docs/security.md): any
 * infinity or NaN anywhere, at any alignment and length, and nothing else. */
static void test_all_finite_finds_every_nonfinite_value(void **state)
{
    (void)state;
    enum { N = 1000 };
    unsigned char buf[N * 4 + 3];
    const float bad[] = {NAN, -NAN, INFINITY, -INFINITY};
    const float fine[] = {0.0f, -0.0f, 1e-45f, 3.4e38f, -3.4e38f, 1.0f};
    for (size_t shift = 0; shift < 4; shift++) {
        unsigned char *p = buf + shift;
        for (size_t i = 0; i < N; i++)
            memcpy(p + 4 * i, &fine[i % 6], 4);
        assert_int_equal(kd_comm_all_finite(p, N), 1);
        assert_int_equal(kd_comm_all_finite(p, 0), 1);
        for (size_t k = 0; k < 4; k++)
            for (size_t at = 0; at < N; at += 97) {
                memcpy(p + 4 * at, &bad[k], 4);
                assert_int_equal(kd_comm_all_finite(p, N), 0);
                assert_int_equal(kd_comm_all_finite(p, at), 1); /* before it: fine */
                memcpy(p + 4 * at, &fine[at % 6], 4);
            }
    }
}

int main(void)
{
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_finite_finds_every_nonfinite_value),
        cmocka_unit_test(test_two_ranks_sum_exactly),
        cmocka_unit_test(test_three_and_four_ranks_with_uneven_segments),
        cmocka_unit_test(test_ipc_connection_gets_its_send_buffer),
        cmocka_unit_test(test_overlapped_allreduce_equals_one_call),
        cmocka_unit_test(test_two_rank_swap_sums_exactly),
        cmocka_unit_test(test_deferred_swap_leaves_the_sum_to_the_caller),
        cmocka_unit_test(test_allgather_gives_every_block),
        cmocka_unit_test(test_bf16_halves_the_bytes_and_keeps_ranks_identical),
        cmocka_unit_test(test_pack_layout_and_rounding),
        cmocka_unit_test(test_finish_refuses_unmarked_elements),
        cmocka_unit_test(test_vector_smaller_than_world),
        cmocka_unit_test(test_single_rank_is_identity),
        cmocka_unit_test(test_dead_peer_times_out),
        cmocka_unit_test(test_noise_on_data_port_is_dropped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
