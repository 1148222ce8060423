/* httpd: /healthz, /readyz and /metrics answer with the right status and body over real
 * loopback HTTP; readiness follows the registered checks and shutdown; other paths and
 * methods are refused; bad listen addresses are errors, not crashes. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <cmocka.h>

#include "httpd.h"
#include "kd_error.h"
#include "metrics.h"

/* Sends one HTTP/1.0 request and returns the status; the body (after the blank line) is
 * copied into body. */
static int request(int port, const char *method, const char *path, char *body, size_t len)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char req[256];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: localhost\r\n\r\n", method, path);
    assert_int_equal(write(fd, req, (size_t)n), n);
    char buf[65536];
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, buf + got, sizeof buf - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    int status = 0;
    assert_int_equal(sscanf(buf, "HTTP/1.%*d %d", &status), 1);
    const char *sep = strstr(buf, "\r\n\r\n");
    snprintf(body, len, "%s", sep != NULL ? sep + 4 : "");
    return status;
}

typedef struct fixture {
    op_metrics metrics;
    op_httpd *httpd;
    int port;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    char err[256] = "";
    if (f == NULL || op_metrics_init(&f->metrics, err, sizeof err) != KD_OK)
        return -1;
    if (op_httpd_start(&f->httpd, "127.0.0.1", 0, f->metrics.reg, err, sizeof err) != KD_OK) {
        fprintf(stderr, "httpd: %s\n", err);
        return -1;
    }
    f->port = op_httpd_port(f->httpd);
    op_httpd_set_started(f->httpd);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    op_httpd_stop(&f->httpd);
    assert_null(f->httpd);
    op_httpd_stop(&f->httpd);
    op_metrics_free(&f->metrics);
    free(f);
    return 0;
}

static void test_healthz_and_metrics(void **state)
{
    fixture *f = *state;
    char body[65536];
    assert_true(f->port > 0);
    assert_int_equal(request(f->port, "GET", "/healthz", body, sizeof body), 200);
    assert_string_equal(body, "ok\n");
    const char *v[] = {"success"};
    opm_add(f->metrics.reconciles, v, 5);
    assert_int_equal(request(f->port, "GET", "/metrics", body, sizeof body), 200);
    assert_non_null(strstr(body, "kadet_reconciles_total{result=\"success\"} 5\n"));
    assert_non_null(strstr(body, "# TYPE kadet_jobs gauge\n"));
    assert_int_equal(request(f->port, "HEAD", "/healthz", body, sizeof body), 200);
}

static int flag_check(void *arg, char *detail, size_t len)
{
    int ok = *(int *)arg;
    if (!ok)
        snprintf(detail, len, "caches not synced");
    return ok;
}

static void test_readyz_follows_checks_and_shutdown(void **state)
{
    fixture *f = *state;
    char body[4096];
    assert_int_equal(request(f->port, "GET", "/readyz", body, sizeof body), 200);
    assert_string_equal(body, "ok\n");
    int synced = 0, leader_free = 1;
    assert_int_equal(op_httpd_add_check(f->httpd, "informers", flag_check, &synced), KD_OK);
    assert_int_equal(op_httpd_add_check(f->httpd, "scheduler", flag_check, &leader_free), KD_OK);
    assert_int_equal(request(f->port, "GET", "/readyz", body, sizeof body), 503);
    assert_string_equal(body, "[-]informers failed: caches not synced\n[+]scheduler ok\n"
                              "not ready\n");
    synced = 1;
    assert_int_equal(request(f->port, "GET", "/readyz", body, sizeof body), 200);
    assert_string_equal(body, "[+]informers ok\n[+]scheduler ok\nok\n");
    /* Liveness does not depend on readiness. */
    synced = 0;
    assert_int_equal(request(f->port, "GET", "/healthz", body, sizeof body), 200);
    synced = 1;
    op_httpd_set_shutting_down(f->httpd);
    assert_int_equal(request(f->port, "GET", "/readyz", body, sizeof body), 503);
    /* The checks are not called any more: their components may be gone. */
    assert_string_equal(body, "[-]shutdown failed: shutting down\nnot ready\n");
    assert_int_equal(request(f->port, "GET", "/healthz", body, sizeof body), 200);
}

static void test_readyz_is_503_until_startup_completes(void **state)
{
    fixture *f = *state;
    op_httpd *h = NULL;
    char err[256] = "";
    assert_int_equal(op_httpd_start(&h, "127.0.0.1", 0, f->metrics.reg, err, sizeof err), KD_OK);
    int port = op_httpd_port(h);
    char body[4096];
    /* No check registered yet: still not ready, nor is liveness affected. */
    assert_int_equal(request(port, "GET", "/readyz", body, sizeof body), 503);
    assert_string_equal(body, "[-]startup failed: starting\nnot ready\n");
    assert_int_equal(request(port, "GET", "/healthz", body, sizeof body), 200);
    int ok = 1;
    assert_int_equal(op_httpd_add_check(h, "informers", flag_check, &ok), KD_OK);
    op_httpd_set_started(h);
    assert_int_equal(request(port, "GET", "/readyz", body, sizeof body), 200);
    assert_string_equal(body, "[+]informers ok\nok\n");
    op_httpd_stop(&h);
}

static void test_checks_are_bounded(void **state)
{
    fixture *f = *state;
    int ok = 1;
    for (int i = 0; i < OP_HTTPD_MAX_CHECKS; i++)
        assert_int_equal(op_httpd_add_check(f->httpd, "c", flag_check, &ok), KD_OK);
    assert_int_equal(op_httpd_add_check(f->httpd, "c", flag_check, &ok), KD_ETOOBIG);
    assert_int_equal(op_httpd_add_check(f->httpd, "c", NULL, &ok), KD_EINVAL);
}

static void test_unknown_paths_and_methods(void **state)
{
    fixture *f = *state;
    char body[4096];
    assert_int_equal(request(f->port, "GET", "/", body, sizeof body), 404);
    assert_int_equal(request(f->port, "GET", "/metrics/extra", body, sizeof body), 404);
    assert_int_equal(request(f->port, "POST", "/healthz", body, sizeof body), 405);
    assert_int_equal(request(f->port, "DELETE", "/metrics", body, sizeof body), 405);
}

static void test_bad_addresses_are_errors(void **state)
{
    fixture *f = *state;
    op_httpd *h = NULL;
    char err[256] = "";
    assert_int_equal(op_httpd_start(&h, "localhost", 0, f->metrics.reg, err, sizeof err),
                     KD_EINVAL);
    assert_non_null(strstr(err, "not a numeric IPv4 or IPv6 address"));
    assert_null(h);
    /* The fixture's port is taken. */
    assert_int_equal(op_httpd_start(&h, "127.0.0.1", f->port, f->metrics.reg, err, sizeof err),
                     KD_EIO);
    assert_non_null(strstr(err, "cannot listen on 127.0.0.1:"));
    assert_null(h);
    assert_int_equal(op_httpd_start(&h, "127.0.0.1", 70000, f->metrics.reg, err, sizeof err),
                     KD_EINVAL);
    assert_int_equal(op_httpd_start(&h, "127.0.0.1", 0, NULL, err, sizeof err), KD_EINVAL);
}

typedef struct scrape_arg {
    fixture *f;   /* server under test */
    int ok;       /* scrapes that returned 200 with a consistent counter line */
} scrape_arg;

static void *scraper(void *p)
{
    scrape_arg *a = p;
    char *body = malloc(65536);
    for (int i = 0; body != NULL && i < 50; i++) {
        int status = request(a->f->port, "GET", "/metrics", body, 65536);
        if (status == 200 && strstr(body, "kadet_reconciles_total{result=\"success\"} ") != NULL)
            a->ok++;
    }
    free(body);
    return NULL;
}

static void test_concurrent_scrapes_while_updating(void **state)
{
    fixture *f = *state;
    const char *v[] = {"success"};
    assert_int_equal(opm_add(f->metrics.reconciles, v, 1), KD_OK);
    pthread_t t[3];
    scrape_arg args[3];
    for (int i = 0; i < 3; i++) {
        args[i] = (scrape_arg){f, 0};
        assert_int_equal(pthread_create(&t[i], NULL, scraper, &args[i]), 0);
    }
    char job[32];
    const char *jv[] = {"default", job};
    for (int i = 0; i < 20000; i++) {
        opm_add(f->metrics.reconciles, v, 1);
        snprintf(job, sizeof job, "job-%d", i % 50);
        opm_set(f->metrics.sched_reward, jv, i);
        if (i % 7 == 0)
            opm_remove(f->metrics.sched_reward, jv);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(args[i].ok, 50);
    }
    double n = 0;
    assert_int_equal(opm_get(f->metrics.reconciles, v, &n), KD_OK);
    assert_true(n == 20001);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_healthz_and_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readyz_follows_checks_and_shutdown, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_readyz_is_503_until_startup_completes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_checks_are_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_paths_and_methods, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_addresses_are_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_scrapes_while_updating, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
