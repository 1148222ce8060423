/* syscost: what this machine charges for the operations a ZeroMQ message costs, so that
 * the data plane's measurements can be read against it (docs/runtime.md, "Known limits").
 * Prints the cost of one system call (getpid, sched_yield, poll on an eventfd) and the
 * round trip of a one-byte pipe ping-pong between two processes pinned to the same CPU
 * and to two CPUs (two wake-ups per round trip). On bare metal a system call is ~0.1 us
 * and a cross-CPU round trip a few us; a paravirtualised VM can be ten times that.
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

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

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
    double t = now_s();
    for (int i = 0; i < n; i++)
        if (write(up[1], &c, 1) != 1 || read(down[0], &c, 1) != 1)
            break;
    t = now_s() - t;
    waitpid(pid, NULL, 0);
    close(up[0]);
    close(up[1]);
    close(down[0]);
    close(down[1]);
    return t / n * 1e6;
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
    double t = now_s();
    for (int i = 0; i < n; i++)
        syscall(SYS_getpid);
    printf("syscall getpid      %7.2f us\n", (now_s() - t) / n * 1e6);
    t = now_s();
    for (int i = 0; i < n; i++)
        sched_yield();
    printf("syscall sched_yield %7.2f us\n", (now_s() - t) / n * 1e6);
    int fd = eventfd(0, EFD_NONBLOCK);
    if (fd >= 0) {
        struct pollfd p = {fd, POLLIN, 0};
        t = now_s();
        for (int i = 0; i < n; i++)
            poll(&p, 1, 0);
        printf("syscall poll        %7.2f us\n", (now_s() - t) / n * 1e6);
        close(fd);
    }
    int rounds = n / 10 > 0 ? n / 10 : 1;
    printf("pipe round trip, same CPU   %7.2f us\n", ping_pong(0, 0, rounds));
    if (sysconf(_SC_NPROCESSORS_ONLN) > 1)
        printf("pipe round trip, two CPUs   %7.2f us\n", ping_pong(0, 1, rounds));
    return 0;
}
