/* leader election against the API emulator, with contenders in separate processes: one
 * leads; after the leader is killed (SIGKILL) the other takes over once the lease has
 * expired; after a graceful stop the lease is released and taken over at once; a
 * leader whose renewals fail steps down within the renew deadline and comes back when
 * the API recovers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kd_error.h"
#include "kd_log.h"
#include "kube_harness.h"
#include "leader.h"

#define LEASE_S 4.0
#define RENEW_S 3.0
#define RETRY_S 0.5

static kh_emulator emu;
static kube_client *cli;

static int setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (kh_start(&emu, NULL) != 0) {
        return -1;
    }
    cli = kh_client(&emu, NULL);
    return cli != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    kube_client_free(&cli);
    kh_stop(&emu);
    curl_global_cleanup();
    return 0;
}

/* --- contender process ----------------------------------------------------------- */

static volatile sig_atomic_t child_stop;
static int child_fd;
static char child_id[32];

static void on_term(int sig)
{
    (void)sig;
    child_stop = 1;
}

static void tell(char what)
{
    char line[64];
    int n = snprintf(line, sizeof line, "%c %s\n", what, child_id);
    if (write(child_fd, line, (size_t)n) != n) {
        _exit(3);
    }
}

static void child_started(void *ud)
{
    (void)ud;
    tell('S');
}

static void child_stopped(void *ud)
{
    (void)ud;
    tell('E');
}

static void contender(const char *lease, const char *id, int fd)
{
    child_fd = fd;
    snprintf(child_id, sizeof child_id, "%s", id);
    signal(SIGTERM, on_term);
    kd_log_set_level(KD_LOG_ERROR);
    kube_client *c = kh_client(&emu, NULL);
    leader_options o = {.name = lease, .identity = id, .lease_duration_s = LEASE_S,
                        .renew_deadline_s = RENEW_S, .retry_period_s = RETRY_S,
                        .on_started = child_started, .on_stopped = child_stopped};
    leader_elector *le = NULL;
    char err[256];
    if (c == NULL || leader_new(c, &o, &le, err, sizeof err) != KD_OK ||
        leader_start(le) != KD_OK) {
        _exit(2);
    }
    while (!child_stop) {
        kh_sleep_ms(20);
    }
    leader_free(&le); /* releases the lease */
    kube_client_free(&c);
    _exit(0);
}

static pid_t spawn(const char *lease, const char *id, int fd)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        contender(lease, id, fd);
    }
    return pid;
}

/* Waits for the line "<what> <id>" on fd; returns ms waited or -1 on timeout. */
static double wait_line(int fd, const char *want, double timeout_ms)
{
    static char buf[4096];
    static size_t len;
    double t0 = kh_now_ms();
    for (;;) {
        for (char *nl = memchr(buf, '\n', len); nl != NULL; nl = memchr(buf, '\n', len)) {
            *nl = '\0';
            int match = strcmp(buf, want) == 0;
            size_t used = (size_t)(nl - buf) + 1;
            memmove(buf, nl + 1, len - used);
            len -= used;
            if (match) {
                return kh_now_ms() - t0;
            }
        }
        double left = timeout_ms - (kh_now_ms() - t0);
        if (left <= 0) {
            return -1;
        }
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, (int)left) > 0) {
            ssize_t n = read(fd, buf + len, sizeof buf - len - 1);
            if (n > 0) {
                len += (size_t)n;
            }
        }
    }
}

static void holder(const char *lease, char *buf, size_t len)
{
    json_t *l = NULL;
    kube_error e;
    assert_int_equal(kube_get(cli, &KUBE_LEASES, "default", lease, &l, &e), KD_OK);
    const char *h = json_string_value(json_object_get(json_object_get(l, "spec"),
                                                      "holderIdentity"));
    snprintf(buf, len, "%s", h != NULL ? h : "");
    json_decref(l);
}

static void reap(pid_t pid)
{
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
}

static void test_other_contender_takes_over_after_the_leader_is_killed(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t a = spawn("kill-lease", "alpha", p[1]);
    assert_true(wait_line(p[0], "S alpha", 10000) >= 0);
    pid_t b = spawn("kill-lease", "beta", p[1]);
    /* Beta keeps trying but must not lead while alpha renews. */
    assert_true(wait_line(p[0], "S beta", 2000) < 0);
    char h[64];
    holder("kill-lease", h, sizeof h);
    assert_string_equal(h, "alpha");
    kill(a, SIGKILL);
    reap(a);
    double took = wait_line(p[0], "S beta", 10000);
    fprintf(stderr, "takeover after SIGKILL of the leader: %.0f ms (lease %.0f ms)\n", took,
            LEASE_S * 1000);
    assert_true(took >= 0);
    /* Expiry is judged from beta's own observation of alpha's last renewal, which is
     * at most one retry period (+20% jitter) old. */
    assert_true(took <= (LEASE_S + 1.2 * RETRY_S) * 1000 + 1000);
    assert_true(took >= (LEASE_S - 1.2 * RETRY_S) * 1000 - 500);
    holder("kill-lease", h, sizeof h);
    assert_string_equal(h, "beta");
    kill(b, SIGTERM);
    assert_true(wait_line(p[0], "E beta", 5000) >= 0);
    reap(b);
    holder("kill-lease", h, sizeof h);
    assert_string_equal(h, ""); /* released on the way out */
    close(p[0]);
    close(p[1]);
}

static void test_graceful_stop_releases_for_an_immediate_takeover(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t a = spawn("term-lease", "alpha", p[1]);
    assert_true(wait_line(p[0], "S alpha", 10000) >= 0);
    pid_t b = spawn("term-lease", "beta", p[1]);
    assert_true(wait_line(p[0], "S beta", 1000) < 0);
    kill(a, SIGTERM);
    assert_true(wait_line(p[0], "E alpha", 5000) >= 0);
    double took = wait_line(p[0], "S beta", 5000);
    fprintf(stderr, "takeover after a graceful stop: %.0f ms\n", took);
    assert_true(took >= 0);
    assert_true(took <= 2000); /* about one retry period, not a lease duration */
    reap(a);
    kill(b, SIGTERM);
    reap(b);
    close(p[0]);
    close(p[1]);
}

struct flags {
    atomic_int started;
    atomic_int stopped;
    atomic_int new_leader;
};

static void f_started(void *ud)
{
    atomic_fetch_add(&((struct flags *)ud)->started, 1);
}

static void f_stopped(void *ud)
{
    atomic_fetch_add(&((struct flags *)ud)->stopped, 1);
}

static void f_new(void *ud, const char *id)
{
    (void)id;
    atomic_fetch_add(&((struct flags *)ud)->new_leader, 1);
}

static int wait_flag(atomic_int *f, int want, double timeout_ms)
{
    double t0 = kh_now_ms();
    while (atomic_load(f) < want) {
        if (kh_now_ms() - t0 > timeout_ms) {
            return 0;
        }
        kh_sleep_ms(10);
    }
    return 1;
}

static void test_leader_steps_down_when_renewals_fail_and_returns(void **state)
{
    (void)state;
    struct flags f;
    atomic_init(&f.started, 0);
    atomic_init(&f.stopped, 0);
    atomic_init(&f.new_leader, 0);
    leader_options o = {.name = "fail-lease", .identity = "solo", .lease_duration_s = LEASE_S,
                        .renew_deadline_s = RENEW_S, .retry_period_s = RETRY_S,
                        .on_started = f_started, .on_stopped = f_stopped,
                        .on_new_leader = f_new, .ud = &f};
    leader_elector *le = NULL;
    char err[256];
    kd_log_set_level(KD_LOG_ERROR);
    assert_int_equal(leader_new(cli, &o, &le, err, sizeof err), KD_OK);
    assert_int_equal(leader_start(le), KD_OK);
    assert_true(wait_flag(&f.started, 1, 10000));
    assert_true(leader_is_leader(le));
    char cur[64];
    leader_current(le, cur, sizeof cur);
    assert_string_equal(cur, "solo");
    assert_true(atomic_load(&f.new_leader) >= 1);
    assert_int_equal(kh_fault(cli, "{\"failNext\": 100000, \"code\": 500}"), 0);
    double t0 = kh_now_ms();
    assert_true(wait_flag(&f.stopped, 1, (RENEW_S + 2 * RETRY_S) * 1000 + 1000));
    double took = kh_now_ms() - t0;
    fprintf(stderr, "step-down after renewals started failing: %.0f ms (deadline %.0f s)\n",
            took, RENEW_S);
    assert_false(leader_is_leader(le));
    assert_true(took >= (RENEW_S - RETRY_S) * 1000 - 300);
    assert_int_equal(kh_fault(cli, "{\"failNext\": 0}"), 0);
    assert_true(wait_flag(&f.started, 2, 5000));
    assert_true(leader_is_leader(le));
    leader_free(&le);
    assert_int_equal(atomic_load(&f.stopped), 2);
    leader_free(&le);
}

static void test_bad_durations_are_rejected(void **state)
{
    (void)state;
    leader_elector *le = NULL;
    char err[256];
    leader_options o = {.name = "x", .identity = "y", .lease_duration_s = 5,
                        .renew_deadline_s = 6};
    assert_int_equal(leader_new(cli, &o, &le, err, sizeof err), KD_EINVAL);
    assert_non_null(strstr(err, "renew deadline"));
    o.renew_deadline_s = 2;
    o.retry_period_s = 2;
    assert_int_equal(leader_new(cli, &o, &le, err, sizeof err), KD_EINVAL);
    o.identity = NULL;
    assert_int_equal(leader_new(cli, &o, &le, err, sizeof err), KD_EINVAL);
    assert_null(le);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_other_contender_takes_over_after_the_leader_is_killed),
        cmocka_unit_test(test_graceful_stop_releases_for_an_immediate_takeover),
        cmocka_unit_test(test_leader_steps_down_when_renewals_fail_and_returns),
        cmocka_unit_test(test_bad_durations_are_rejected),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
