/* kube client against a deliberately broken HTTP server (a socket thread in this
 * test): truncated and non-JSON bodies, wrong types, oversized bodies and watch lines,
 * slow answers, non-Status error pages and in-stream errors all give typed errors,
 * never a crash; a hanging watch is stopped promptly from another thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "informer.h"
#include "kd_clock.h"
#include "kd_error.h"
#include "kd_log.h"
#include "kube_client.h"

static int listen_fd = -1;
static int port;
static pthread_t accept_thread;
static atomic_int stopping;
static atomic_int active;
static kube_client *cli;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void put(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0) {
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

static void puts_fd(int fd, const char *s)
{
    put(fd, s, strlen(s));
}

static void answer(int fd, const char *status, const char *ctype, const char *body)
{
    char head[256];
    snprintf(head, sizeof head,
             "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close"
             "\r\n\r\n",
             status, ctype, strlen(body));
    puts_fd(fd, head);
    puts_fd(fd, body);
}

/* A body read until the connection closes (no length): how watch streams are sent. */
static void stream_head(int fd)
{
    puts_fd(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n");
}

static void serve(int fd, const char *req)
{
    const char *ev = "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\","
                     "\"namespace\":\"default\",\"resourceVersion\":\"5\"}}}\n";
    if (strstr(req, "/configmaps/trunc ") != NULL) {
        puts_fd(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    "Content-Length: 100\r\n\r\n{\"metadata\":{");
    } else if (strstr(req, "/configmaps/notjson ") != NULL) {
        answer(fd, "200 OK", "application/json", "{\"metadata\": {\"na");
    } else if (strstr(req, "/configmaps/array ") != NULL) {
        answer(fd, "200 OK", "application/json", "[1,2,3]");
    } else if (strstr(req, "/configmaps/empty ") != NULL) {
        answer(fd, "200 OK", "application/json", "");
    } else if (strstr(req, "/configmaps/huge ") != NULL) {
        puts_fd(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    "Content-Length: 3145728\r\n\r\n");
        static char chunk[65536];
        memset(chunk, ' ', sizeof chunk);
        for (int i = 0; i < 48; i++) {
            put(fd, chunk, sizeof chunk);
        }
    } else if (strstr(req, "/configmaps/slow ") != NULL) {
        sleep_ms(1500);
        answer(fd, "200 OK", "application/json", "{}");
    } else if (strstr(req, "/configmaps/html503 ") != NULL) {
        answer(fd, "503 Service Unavailable", "text/html",
               "<html><body>\x01 upstream down</body></html>");
    } else if (strstr(req, "/configmaps/badstatus ") != NULL) {
        answer(fd, "409 Conflict", "application/json",
               "{\"kind\":\"Status\",\"reason\":7,\"message\":{\"x\":1}}");
    } else if (strstr(req, "labelSelector=http410") != NULL) {
        answer(fd, "410 Gone", "application/json",
               "{\"kind\":\"Status\",\"code\":410,\"reason\":\"Expired\",\"message\":\"gone\"}");
    } else if (strstr(req, "watch=1") != NULL) {
        stream_head(fd);
        if (strstr(req, "labelSelector=garbage") != NULL) {
            puts_fd(fd, ev);
            puts_fd(fd, "hello there\n");
        } else if (strstr(req, "labelSelector=hugeline") != NULL) {
            static char chunk[65536];
            memset(chunk, 'x', sizeof chunk);
            puts_fd(fd, "{\"type\":\"ADDED\",\"object\":{\"pad\":\"");
            for (int i = 0; i < 4; i++) {
                put(fd, chunk, sizeof chunk);
            }
        } else if (strstr(req, "labelSelector=midevent") != NULL) {
            puts_fd(fd, ev);
            puts_fd(fd, "{\"type\":\"MODIFIED\",\"obj");
        } else if (strstr(req, "labelSelector=wrongtype") != NULL) {
            puts_fd(fd, "{\"type\":\"ADDED\",\"object\":\"str\"}\n");
        } else if (strstr(req, "labelSelector=gone") != NULL) {
            puts_fd(fd, "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":410,"
                        "\"reason\":\"Expired\",\"message\":\"too old resource version\"}}\n");
        } else if (strstr(req, "labelSelector=managed") != NULL) {
            puts_fd(fd, "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"m2\","
                        "\"namespace\":\"default\",\"resourceVersion\":\"8\",\"managedFields\":"
                        "[{\"manager\":\"kubectl\"}]}}}\n");
            while (!atomic_load(&stopping)) {
                struct pollfd p = {fd, POLLIN, 0};
                char b[64];
                if (poll(&p, 1, 50) > 0 && recv(fd, b, sizeof b, 0) <= 0) {
                    break;
                }
            }
        } else if (strstr(req, "labelSelector=hang") != NULL) {
            puts_fd(fd, ev);
            while (!atomic_load(&stopping)) {
                struct pollfd p = {fd, POLLIN, 0};
                char b[64];
                if (poll(&p, 1, 50) > 0 && recv(fd, b, sizeof b, 0) <= 0) {
                    break; /* the client went away */
                }
            }
        }
    } else if (strstr(req, "labelSelector=retrylater") != NULL) {
        puts_fd(fd, "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
                    "Retry-After: 10\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
    } else if (strstr(req, "labelSelector=managed") != NULL) {
        answer(fd, "200 OK", "application/json",
               "{\"metadata\":{\"resourceVersion\":\"7\"},\"items\":[{\"metadata\":"
               "{\"name\":\"m1\",\"namespace\":\"default\",\"resourceVersion\":\"7\","
               "\"managedFields\":[{\"manager\":\"kubectl\"}]}}]}");
    } else if (strstr(req, "labelSelector=wrongitems") != NULL) {
        answer(fd, "200 OK", "application/json",
               "{\"metadata\":{\"resourceVersion\":\"1\"},\"items\":\"nope\"}");
    } else if (strstr(req, "labelSelector=itemnoname") != NULL) {
        answer(fd, "200 OK", "application/json",
               "{\"metadata\":{\"resourceVersion\":\"1\"},\"items\":[{\"metadata\":{}}]}");
    } else if (strstr(req, "labelSelector=norv") != NULL) {
        answer(fd, "200 OK", "application/json", "{\"items\":[]}");
    } else {
        answer(fd, "404 Not Found", "application/json", "{\"kind\":\"Status\",\"code\":404}");
    }
}

static void *conn_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char req[8192];
    size_t len = 0;
    while (len < sizeof req - 1) {
        ssize_t n = recv(fd, req + len, sizeof req - 1 - len, 0);
        if (n <= 0) {
            break;
        }
        len += (size_t)n;
        req[len] = '\0';
        if (strstr(req, "\r\n\r\n") != NULL) {
            break;
        }
    }
    req[len] = '\0';
    char *eol = strstr(req, "\r\n");
    if (eol != NULL) {
        *eol = '\0';
        serve(fd, req);
    }
    shutdown(fd, SHUT_RDWR);
    close(fd);
    atomic_fetch_sub(&active, 1);
    return NULL;
}

static void *accept_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&stopping)) {
        int fd = accept(listen_fd, NULL, NULL);
        if (fd < 0) {
            continue;
        }
        if (atomic_load(&stopping)) {
            close(fd);
            break;
        }
        atomic_fetch_add(&active, 1);
        pthread_t th;
        if (pthread_create(&th, NULL, conn_main, (void *)(intptr_t)fd) == 0) {
            pthread_detach(th);
        } else {
            close(fd);
            atomic_fetch_sub(&active, 1);
        }
    }
    return NULL;
}

static int setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    kd_log_set_level(KD_LOG_ERROR);
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (bind(listen_fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(listen_fd, 16) != 0 ||
        getsockname(listen_fd, (struct sockaddr *)&a, &al) != 0) {
        return -1;
    }
    port = ntohs(a.sin_port);
    pthread_create(&accept_thread, NULL, accept_main, NULL);
    char server[64];
    snprintf(server, sizeof server, "http://127.0.0.1:%d", port);
    kube_config cfg = {.server = server, .token = "t", .namespace = "default"};
    kube_client_options o = {.request_timeout_ms = 400, .max_response_bytes = 1 << 20,
                             .max_line_bytes = 64 << 10, .max_attempts = 2,
                             .backoff_base_ms = 10};
    char err[256];
    return kube_client_new(&cfg, &o, &cli, err, sizeof err) == KD_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    kube_client_free(&cli);
    atomic_store(&stopping, 1);
    shutdown(listen_fd, SHUT_RDWR);
    close(listen_fd);
    pthread_join(accept_thread, NULL);
    for (int i = 0; i < 300 && atomic_load(&active) > 0; i++) {
        sleep_ms(10);
    }
    curl_global_cleanup();
    return 0;
}

static void expect_get(const char *name, int want)
{
    kube_error e;
    json_t *out = NULL;
    int rc = kube_get(cli, &KUBE_CONFIGMAPS, NULL, name, &out, &e);
    if (rc != want) {
        fail_msg("get %s: %s (%s), want %s", name, kd_strerror(rc), e.message,
                 kd_strerror(want));
    }
    assert_null(out);
    assert_true(strlen(e.message) > 0);
}

static void test_bad_bodies_give_typed_errors(void **state)
{
    (void)state;
    expect_get("trunc", KD_ETRUNCATED);
    expect_get("notjson", KD_EPARSE);
    expect_get("array", KD_EFORMAT);
    expect_get("empty", KD_EPARSE);
    expect_get("huge", KD_ETOOBIG);
    expect_get("badstatus", KD_ECONFLICT);
    kube_error e;
    assert_int_equal(kube_get(cli, &KUBE_CONFIGMAPS, NULL, "html503", NULL, &e),
                     KD_EUNAVAILABLE);
    assert_int_equal(e.attempts, 2);
    assert_int_equal(e.http_status, 503);
    assert_non_null(strstr(e.message, "upstream down"));
    assert_null(strchr(e.message, '\x01'));
    double t0 = kd_mono_ms();
    assert_int_equal(kube_get(cli, &KUBE_CONFIGMAPS, NULL, "slow", NULL, &e), KD_ETIMEOUT);
    assert_int_equal(e.attempts, 2);
    assert_true(kd_mono_ms() - t0 < 1500);
}

static void expect_list(const char *selector, int want)
{
    kube_list_opts lo = {.label_selector = selector};
    json_t *items = NULL;
    char *rv = NULL;
    kube_error e;
    int rc = kube_list_all(cli, &KUBE_CONFIGMAPS, "default", &lo, &items, &rv, &e);
    if (rc != want) {
        fail_msg("list %s: %s (%s), want %s", selector, kd_strerror(rc), e.message,
                 kd_strerror(want));
    }
    assert_null(items);
    assert_null(rv);
}

static void test_lists_with_wrong_types_are_rejected(void **state)
{
    (void)state;
    expect_list("wrongitems", KD_EFORMAT);
    expect_list("itemnoname", KD_EFORMAT);
    expect_list("norv", KD_EFORMAT);
}

static int count_events(void *ud, kube_event_type t, json_t *obj)
{
    (void)t;
    (void)obj;
    (*(int *)ud)++;
    return 0;
}

static int run_watch(const char *selector, int *events, kube_error *e)
{
    kube_watch *w = NULL;
    assert_int_equal(kube_watch_new(cli, &w), KD_OK);
    kube_list_opts lo = {.label_selector = selector, .resource_version = "1"};
    *events = 0;
    int rc = kube_watch_run(w, &KUBE_CONFIGMAPS, "default", &lo, count_events, events, e);
    kube_watch_free(&w);
    return rc;
}

static void test_bad_watch_streams_give_typed_errors(void **state)
{
    (void)state;
    int n;
    kube_error e;
    assert_int_equal(run_watch("garbage", &n, &e), KD_EPARSE);
    assert_int_equal(n, 1); /* the good event before the garbage was delivered */
    assert_int_equal(run_watch("hugeline", &n, &e), KD_ETOOBIG);
    assert_int_equal(n, 0);
    assert_int_equal(run_watch("midevent", &n, &e), KD_ETRUNCATED);
    assert_int_equal(n, 1);
    assert_int_equal(run_watch("wrongtype", &n, &e), KD_EFORMAT);
    assert_int_equal(run_watch("gone", &n, &e), KD_EGONE);
    assert_string_equal(e.reason, "Expired");
    assert_int_equal(run_watch("http410", &n, &e), KD_EGONE);
    assert_int_equal(e.http_status, 410);
}

struct stopper {
    kube_watch *w;
    long after_ms;
};

static void *stop_later(void *arg)
{
    struct stopper *s = arg;
    sleep_ms(s->after_ms);
    kube_watch_stop(s->w);
    return NULL;
}

static void test_hanging_watch_stops_promptly_from_another_thread(void **state)
{
    (void)state;
    kube_watch *w = NULL;
    assert_int_equal(kube_watch_new(cli, &w), KD_OK);
    struct stopper s = {w, 200};
    pthread_t th;
    pthread_create(&th, NULL, stop_later, &s);
    kube_list_opts lo = {.label_selector = "hang"};
    int n = 0;
    kube_error e;
    double t0 = kd_mono_ms();
    assert_int_equal(kube_watch_run(w, &KUBE_CONFIGMAPS, NULL, &lo, count_events, &n, &e),
                     KD_ESHUTDOWN);
    double took = kd_mono_ms() - t0;
    pthread_join(th, NULL);
    assert_int_equal(n, 1);
    assert_true(took < 700.0);
    /* Stopped stays stopped until reset. */
    assert_int_equal(kube_watch_run(w, &KUBE_CONFIGMAPS, NULL, &lo, count_events, &n, &e),
                     KD_ESHUTDOWN);
    kube_watch_reset(w);
    lo.label_selector = "gone";
    assert_int_equal(kube_watch_run(w, &KUBE_CONFIGMAPS, NULL, &lo, count_events, &n, &e),
                     KD_EGONE);
    kube_watch_free(&w);
}

static void test_informer_on_a_broken_server_never_syncs_and_stops_cleanly(void **state)
{
    (void)state;
    informer_options o = {.label_selector = "wrongitems", .backoff_base_ms = 10,
                          .backoff_max_ms = 50};
    informer *inf = NULL;
    assert_int_equal(informer_new(cli, &KUBE_CONFIGMAPS, &o, NULL, &inf), KD_OK);
    assert_int_equal(informer_start(inf), KD_OK);
    assert_int_equal(informer_wait_synced(inf, 500), KD_ETIMEOUT);
    assert_false(informer_has_synced(inf));
    assert_int_equal(informer_size(inf), 0);
    informer_free(&inf);
}

static void test_informer_stop_interrupts_a_throttled_list(void **state)
{
    (void)state;
    informer_options o = {.label_selector = "retrylater"};
    informer *inf = NULL;
    assert_int_equal(informer_new(cli, &KUBE_CONFIGMAPS, &o, NULL, &inf), KD_OK);
    assert_int_equal(informer_start(inf), KD_OK);
    sleep_ms(300); /* the list got 429 + Retry-After: 10 and is waiting to retry */
    double t0 = kd_mono_ms();
    informer_free(&inf);
    assert_true(kd_mono_ms() - t0 < 500.0);
}

static void test_informer_drops_managed_fields_unless_asked(void **state)
{
    (void)state;
    for (int keep = 0; keep <= 1; keep++) {
        informer_options o = {.label_selector = "managed", .keep_managed_fields = keep};
        informer *inf = NULL;
        assert_int_equal(informer_new(cli, &KUBE_CONFIGMAPS, &o, NULL, &inf), KD_OK);
        assert_int_equal(informer_start(inf), KD_OK);
        assert_int_equal(informer_wait_synced(inf, 5000), KD_OK);
        json_t *m2 = NULL;
        for (int i = 0; i < 200 && m2 == NULL; i++) {
            m2 = informer_get(inf, "default/m2");
            sleep_ms(10);
        }
        json_t *m1 = informer_get(inf, "default/m1");
        assert_non_null(m1);
        assert_non_null(m2);
        int has1 = json_object_get(json_object_get(m1, "metadata"), "managedFields") != NULL;
        int has2 = json_object_get(json_object_get(m2, "metadata"), "managedFields") != NULL;
        assert_int_equal(has1, keep);
        assert_int_equal(has2, keep);
        json_decref(m1);
        json_decref(m2);
        informer_free(&inf);
    }
}

static void test_tokens_with_control_characters_are_refused(void **state)
{
    (void)state;
    kube_config cfg = {.server = "http://127.0.0.1:1", .token = "abc\r\nX-Evil: 1"};
    kube_client *c = NULL;
    char err[256];
    assert_int_equal(kube_client_new(&cfg, NULL, &c, err, sizeof err), KD_EINVAL);
    assert_null(c);
    assert_non_null(strstr(err, "control character"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_bodies_give_typed_errors),
        cmocka_unit_test(test_lists_with_wrong_types_are_rejected),
        cmocka_unit_test(test_bad_watch_streams_give_typed_errors),
        cmocka_unit_test(test_hanging_watch_stops_promptly_from_another_thread),
        cmocka_unit_test(test_informer_on_a_broken_server_never_syncs_and_stops_cleanly),
        cmocka_unit_test(test_tokens_with_control_characters_are_refused),
        cmocka_unit_test(test_informer_stop_interrupts_a_throttled_list),
        cmocka_unit_test(test_informer_drops_managed_fields_unless_asked),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
