/* allreduce_bench: algorithm bandwidth of kadet's ring allreduce (runtime/comm.c) among
 * N local processes, next to this machine's memcpy bandwidth.
 *
 *   allreduce_bench [--procs N] [--mib M]... [--iters K] [--chunk-kib C]
 *
 * Endpoints are TCP on loopback, or Unix domain sockets (ipc://, what `kadet run` uses for
 * local workers) when KADET_BENCH_IPC is set; lines then start with "kadet-ipc".
 * Forks N processes that rendezvous through shared memory, runs K timed allreduces of
 * an M MiB float32 buffer after warm-up, and prints one line per size:
 *   kadet procs=N bytes=B median_ms=T algbw_gbs=G
 * where algorithm bandwidth = bytes / time (the nccl-tests convention), and
 *   memcpy bytes=B gbs=G
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "kd_clock.h"
#include "comm.h"
#include "kd_error.h"

#define MAX_PROCS 16
#define MAX_ITERS 1000

typedef struct shared {
    volatile int ready;
    char ep[MAX_PROCS][128];
    double t[MAX_ITERS]; /* rank 0's per-iteration seconds */
} shared;

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int child(shared *sh, int rank, int procs, size_t n, int iters, size_t chunk)
{
    void *ctx = zmq_ctx_new();
    kd_comm *c = NULL;
    char ep[128], err[256];
    char bind[128] = "tcp://127.0.0.1:*";
    if (getenv("KADET_BENCH_IPC") != NULL)
        snprintf(bind, sizeof bind, "ipc:///tmp/kd-bench-%ld-%d", (long)getppid(), rank);
    if (kd_comm_open(&c, ctx, bind, ep, sizeof ep, err, sizeof err) != KD_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    kd_comm_set_chunk_bytes(c, chunk);
    kd_comm_set_timeout(c, 30000);
    snprintf(sh->ep[rank], sizeof sh->ep[rank], "%s", ep);
    __sync_fetch_and_add(&sh->ready, 1);
    while (sh->ready < procs)
        usleep(1000);
    const char *peers[MAX_PROCS];
    for (int i = 0; i < procs; i++)
        peers[i] = sh->ep[i];
    if (kd_comm_set_world(c, 1, rank, procs, peers, err, sizeof err) != KD_OK)
        return 1;
    float *buf = malloc(n * sizeof *buf);
    for (size_t i = 0; i < n; i++)
        buf[i] = (float)(i % 97) * 0.01f;
    int warm = 3;
    for (int it = 0; it < warm + iters; it++) {
        double t0 = kd_mono_s();
        if (kd_comm_allreduce(c, buf, n, (uint64_t)it, err, sizeof err) != KD_OK) {
            fprintf(stderr, "rank %d: %s\n", rank, err);
            return 1;
        }
        if (rank == 0 && it >= warm)
            sh->t[it - warm] = kd_mono_s() - t0;
    }
    free(buf);
    kd_comm_close(&c);
    zmq_ctx_term(ctx);
    return 0;
}

static double memcpy_gbs(size_t bytes)
{
    char *a = malloc(bytes), *b = malloc(bytes);
    memset(a, 1, bytes);
    memset(b, 2, bytes);
    double best = 1e9;
    for (int i = 0; i < 20; i++) {
        double t0 = kd_mono_s();
        memcpy(b, a, bytes);
        double dt = kd_mono_s() - t0;
        if (dt < best)
            best = dt;
        a[i] = b[bytes - 1 - i]; /* keep the copies observable */
    }
    free(a);
    free(b);
    return (double)bytes / best / 1e9;
}

int main(int argc, char **argv)
{
    int procs = 2, iters = 20, nsizes = 0;
    size_t chunk = 1024 * 1024; /* the worker's default */
    double mib[8];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--procs") == 0 && i + 1 < argc)
            procs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--mib") == 0 && i + 1 < argc && nsizes < 8)
            mib[nsizes++] = strtod(argv[++i], NULL);
        else if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc)
            iters = atoi(argv[++i]);
        else if (strcmp(argv[i], "--chunk-kib") == 0 && i + 1 < argc)
            chunk = (size_t)atoi(argv[++i]) * 1024;
        else {
            fprintf(stderr, "usage: allreduce_bench [--procs N] [--mib M]... [--iters K] "
                            "[--chunk-kib C]\n");
            return 2;
        }
    }
    if (procs < 1 || procs > MAX_PROCS || iters < 1 || iters > MAX_ITERS) {
        fprintf(stderr, "allreduce_bench: procs 1..%d, iters 1..%d\n", MAX_PROCS, MAX_ITERS);
        return 2;
    }
    if (nsizes == 0) {
        mib[nsizes++] = 1;
        mib[nsizes++] = 16;
    }
    shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                      -1, 0);
    if (sh == MAP_FAILED)
        return 1;
    for (int s = 0; s < nsizes; s++) {
        size_t bytes = (size_t)(mib[s] * 1024 * 1024);
        size_t n = bytes / sizeof(float);
        memset(sh, 0, sizeof *sh);
        pid_t pids[MAX_PROCS];
        for (int r = 0; r < procs; r++) {
            pids[r] = fork();
            if (pids[r] == 0)
                _exit(child(sh, r, procs, n, iters, chunk));
        }
        int bad = 0;
        for (int r = 0; r < procs; r++) {
            int st;
            waitpid(pids[r], &st, 0);
            bad |= !WIFEXITED(st) || WEXITSTATUS(st) != 0;
        }
        if (bad) {
            fprintf(stderr, "allreduce_bench: a process failed\n");
            return 1;
        }
        qsort(sh->t, (size_t)iters, sizeof sh->t[0], cmp);
        double med = sh->t[iters / 2];
        printf("%s procs=%d bytes=%zu median_ms=%.3f algbw_gbs=%.3f\n",
               getenv("KADET_BENCH_IPC") != NULL ? "kadet-ipc" : "kadet", procs, bytes,
               med * 1e3, (double)bytes / med / 1e9);
        printf("memcpy bytes=%zu gbs=%.2f\n", bytes, memcpy_gbs(bytes));
        fflush(stdout);
    }
    return 0;
}
