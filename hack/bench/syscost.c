/* syscost: what this machine charges for the operations a ZeroMQ message costs, so that
 * the data plane's measurements can be read against it (docs/runtime.md, "Known limits").
 * Prints the cost of one system call (getpid, sched_yield, poll on an eventfd), the
 * round trip of a one-byte pipe ping-pong between two processes pinned to the same CPU
 * and to two CPUs (two wake-ups per round trip), and the round trip of a ZeroMQ PUSH/PULL
 * ping-pong over ipc:// between two unpinned processes (each message also passes through
 * the sender's and the receiver's I/O threads) for 64 bytes and for 64, 256 KiB. On bare
 * metal a system call is ~0.1 us and a cross-CPU round trip a few us; a paravirtualised
 * VM can be ten times that.
 *
 * usage: syscost [--iters N] */
#define _GNU_SOURCE
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "kd_clock.h"

static void pin(int cpu)
{
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    sched_setaffinity(0, sizeof s, &s);
}

/* Round trip of one byte between this process on cpu a and a child on cpu b, in us;
 * < 0 when it cannot run. */
static double ping_pong(int a, int b, int n)
{
    int up[2], down[2];
    if (pipe(up) != 0 || pipe(down) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    char c = 0;
    if (pid == 0) {
        pin(b);
        for (int i = 0; i < n; i++)
            if (read(up[0], &c, 1) != 1 || write(down[1], &c, 1) != 1)
                _exit(1);
        _exit(0);
    }
    pin(a);
    double t = kd_mono_s();
    for (int i = 0; i < n; i++)
        if (write(up[1], &c, 1) != 1 || read(down[0], &c, 1) != 1)
            break;
    t = kd_mono_s() - t;
    waitpid(pid, NULL, 0);
    close(up[0]);
    close(up[1]);
    close(down[0]);
    close(down[1]);
    return t / n * 1e6;
}

/* One side of the ZeroMQ ping-pong: n times receive then send (or send then receive). */
static int zmq_side(const char *in_ep, const char *out_ep, int first, size_t size, int n,
                    double *secs)
{
    void *ctx = zmq_ctx_new();
    void *in = zmq_socket(ctx, ZMQ_PULL), *out = zmq_socket(ctx, ZMQ_PUSH);
    char *buf = calloc(1, size);
    int timeout = 5000, ok = buf != NULL && zmq_bind(in, in_ep) == 0 &&
                            zmq_connect(out, out_ep) == 0;
    zmq_setsockopt(in, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    /* Two unmeasured rounds connect both directions. */
    double t = 0;
    for (int i = 0; ok && i < n + 2; i++) {
        if (i == 2)
            t = kd_mono_s();
        if (first)
            ok = zmq_send(out, buf, size, 0) == (int)size &&
                 zmq_recv(in, buf, size, 0) == (int)size;
        else
            ok = zmq_recv(in, buf, size, 0) == (int)size &&
                 zmq_send(out, buf, size, 0) == (int)size;
    }
    *secs = kd_mono_s() - t;
    zmq_close(in);
    zmq_close(out); /* the default linger delivers the last message before the exit */
    zmq_ctx_term(ctx);
    free(buf);
    return ok;
}

/* Round trip of a size-byte ZeroMQ message between this process and a child, in us;
 * < 0 when it cannot run. */
static double zmq_ping_pong(size_t size, int n)
{
    char a[64], b[64];
    snprintf(a, sizeof a, "ipc:///tmp/kadet-syscost-%ld-a", (long)getpid());
    snprintf(b, sizeof b, "ipc:///tmp/kadet-syscost-%ld-b", (long)getpid());
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    double secs;
    if (pid == 0)
        _exit(zmq_side(b, a, 0, size, n, &secs) ? 0 : 1);
    int ok = zmq_side(a, b, 1, size, n, &secs);
    int status = 0;
    waitpid(pid, &status, 0);
    unlink(a + 6);
    unlink(b + 6);
    return ok && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? secs / n * 1e6 : -1;
}

int main(int argc, char **argv)
{
    int n = 200000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc && atoi(argv[i + 1]) > 0) {
            n = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: syscost [--iters N]\n");
            return 2;
        }
    }
    double t = kd_mono_s();
    for (int i = 0; i < n; i++)
        syscall(SYS_getpid);
    printf("syscall getpid      %7.2f us\n", (kd_mono_s() - t) / n * 1e6);
    t = kd_mono_s();
    for (int i = 0; i < n; i++)
        sched_yield();
    printf("syscall sched_yield %7.2f us\n", (kd_mono_s() - t) / n * 1e6);
    int fd = eventfd(0, EFD_NONBLOCK);
    if (fd >= 0) {
        struct pollfd p = {fd, POLLIN, 0};
        t = kd_mono_s();
        for (int i = 0; i < n; i++)
            poll(&p, 1, 0);
        printf("syscall poll        %7.2f us\n", (kd_mono_s() - t) / n * 1e6);
        close(fd);
    }
    int rounds = n / 10 > 0 ? n / 10 : 1;
    printf("pipe round trip, same CPU   %7.2f us\n", ping_pong(0, 0, rounds));
    if (sysconf(_SC_NPROCESSORS_ONLN) > 1)
        printf("pipe round trip, two CPUs   %7.2f us\n", ping_pong(0, 1, rounds));
    int zrounds = n / 100 > 0 ? n / 100 : 1;
    static const size_t sizes[] = {64, 64 * 1024, 256 * 1024};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        printf("zeromq round trip, %6zu B %7.2f us\n", sizes[i],
               zmq_ping_pong(sizes[i], zrounds));
    return 0;
}
