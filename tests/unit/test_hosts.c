/* kd_hosts: Service names in tcp:// endpoints resolve through the KADET_HOSTS file the
 * emulator's fake kubelet writes; anything the file does not know (IPs, wildcards, other
 * transports, unknown names, a missing or damaged file) passes through unchanged. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kd_error.h"
#include "kd_hosts.h"

static char path[64];

static int setup(void **state)
{
    (void)state;
    snprintf(path, sizeof path, "/tmp/kd-hosts-test-%d", (int)getpid());
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fputs("# written by the fake kubelet\n"
          "127.10.0.5 fm-coordinator fm-coordinator.default fm-coordinator.default.svc\n"
          "\n"
          "   127.10.0.9\tother   # trailing comment\n"
          "127.10.0.7 fm-coordinator\n", f);
    /* A line longer than the reader's buffer must be skipped whole. */
    for (int i = 0; i < 300; i++)
        fputs("127.0.0.66 ", f);
    fputs("\n127.10.0.3 last\n", f);
    fclose(f);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    return 0;
}

static void test_service_name_is_rewritten_to_its_pod_ip(void **state)
{
    (void)state;
    char out[128];
    assert_int_equal(kd_resolve_endpoint_file("tcp://fm-coordinator:7070", path, out, sizeof out),
                     KD_OK);
    assert_string_equal(out, "tcp://127.10.0.5:7070");
    assert_int_equal(kd_resolve_endpoint_file("tcp://FM-Coordinator.default.svc:7071", path,
                                              out, sizeof out), KD_OK);
    assert_string_equal(out, "tcp://127.10.0.5:7071");
    assert_int_equal(kd_resolve_endpoint_file("tcp://other:1", path, out, sizeof out), KD_OK);
    assert_string_equal(out, "tcp://127.10.0.9:1");
    assert_int_equal(kd_resolve_endpoint_file("tcp://last:2", path, out, sizeof out), KD_OK);
    assert_string_equal(out, "tcp://127.10.0.3:2");
}

static void test_unknown_names_and_other_endpoints_pass_through(void **state)
{
    (void)state;
    const char *same[] = {"tcp://unknown:7070", "tcp://127.0.0.1:7070", "tcp://*:7070",
                          "ipc:///tmp/x", "inproc://fm-coordinator", "tcp://[::1]:7070",
                          "tcp://:7070", "tcp://127.0.0.66:5"};
    char out[128];
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        assert_int_equal(kd_resolve_endpoint_file(same[i], path, out, sizeof out), KD_OK);
        assert_string_equal(out, same[i]);
    }
    assert_int_equal(kd_resolve_endpoint_file("tcp://fm-coordinator:7070", "/nonexistent/hosts",
                                              out, sizeof out), KD_OK);
    assert_string_equal(out, "tcp://fm-coordinator:7070");
    assert_int_equal(kd_resolve_endpoint_file("tcp://fm-coordinator:7070", NULL, out, sizeof out),
                     KD_OK);
    assert_string_equal(out, "tcp://fm-coordinator:7070");
}

static void test_environment_variable_names_the_file(void **state)
{
    (void)state;
    char out[128];
    setenv("KADET_HOSTS", path, 1);
    assert_int_equal(kd_resolve_endpoint("tcp://fm-coordinator:7070", out, sizeof out), KD_OK);
    assert_string_equal(out, "tcp://127.10.0.5:7070");
    unsetenv("KADET_HOSTS");
    assert_int_equal(kd_resolve_endpoint("tcp://fm-coordinator:7070", out, sizeof out), KD_OK);
    assert_string_equal(out, "tcp://fm-coordinator:7070");
}

static void test_wait_returns_when_the_name_appears_or_times_out(void **state)
{
    (void)state;
    char out[128];
    setenv("KADET_HOSTS", path, 1);
    assert_int_equal(kd_resolve_endpoint_wait("tcp://fm-coordinator:7070", out, sizeof out, 0),
                     KD_OK);
    assert_string_equal(out, "tcp://127.10.0.5:7070");
    /* IPs and wildcards never wait. */
    assert_int_equal(kd_resolve_endpoint_wait("tcp://127.0.0.1:7070", out, sizeof out, 5000),
                     KD_OK);
    assert_int_equal(kd_resolve_endpoint_wait("tcp://*:7070", out, sizeof out, 5000), KD_OK);
    /* A name that never appears: KD_ETIMEOUT after the bound, endpoint unchanged. */
    assert_int_equal(kd_resolve_endpoint_wait("tcp://late:1", out, sizeof out, 300),
                     KD_ETIMEOUT);
    assert_string_equal(out, "tcp://late:1");
    /* A name written by another process while we wait is picked up. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        usleep(200 * 1000);
        char tmp[80];
        snprintf(tmp, sizeof tmp, "%s.new", path);
        FILE *f = fopen(tmp, "w");
        fputs("127.10.0.5 fm-coordinator\n127.10.0.8 late\n", f);
        fclose(f);
        rename(tmp, path); /* atomically, as the fake kubelet does */
        _exit(0);
    }
    assert_int_equal(kd_resolve_endpoint_wait("tcp://late:1", out, sizeof out, 5000), KD_OK);
    assert_string_equal(out, "tcp://127.10.0.8:1");
    int st;
    waitpid(pid, &st, 0);
    unsetenv("KADET_HOSTS");
    assert_int_equal(kd_resolve_endpoint_wait("tcp://late:1", out, sizeof out, 5000), KD_OK);
    assert_string_equal(out, "tcp://late:1");
    setup(NULL); /* restore the fixture file for the other tests */
}

static void test_small_buffers_and_bad_arguments_are_refused(void **state)
{
    (void)state;
    char out[12];
    assert_int_equal(kd_resolve_endpoint_file("tcp://fm-coordinator:7070", path, out, sizeof out),
                     KD_ETOOBIG);
    assert_string_equal(out, "");
    assert_int_equal(kd_resolve_endpoint_file(NULL, path, out, sizeof out), KD_EINVAL);
    assert_int_equal(kd_resolve_endpoint_file("tcp://x:1", path, NULL, 4), KD_EINVAL);
    char ip[4];
    assert_int_equal(kd_hosts_lookup(path, "other", ip, sizeof ip), KD_ETOOBIG);
    assert_int_equal(kd_hosts_lookup(path, "nobody", ip, sizeof ip), KD_ENOTFOUND);
    assert_int_equal(kd_hosts_lookup("/nonexistent/hosts", "other", ip, sizeof ip), KD_EIO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_service_name_is_rewritten_to_its_pod_ip),
        cmocka_unit_test(test_unknown_names_and_other_endpoints_pass_through),
        cmocka_unit_test(test_environment_variable_names_the_file),
        cmocka_unit_test(test_wait_returns_when_the_name_appears_or_times_out),
        cmocka_unit_test(test_small_buffers_and_bad_arguments_are_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
