/*
 * kube_watch: one watch stream. The response body is fed to the line decoder as curl
 * delivers it, so an event split across chunks, or many events in one chunk, decode
 * the same. The stream ends when the server closes it (timeoutSeconds), when the
 * callback asks, on a 410 (HTTP or ERROR event), or when another thread calls
 * kube_watch_stop.
 *
 * Prompt stop: the watch remembers the socket curl opened for it (open/close socket
 * callbacks, under a mutex) and kube_watch_stop shuts it down, which wakes curl at
 * once; the progress callback also checks the flag, as a second line of defence.
 * Each watch owns its easy handle, so shutting the socket never affects other requests.
 */
#include "kube_internal.h"

#include "kd_error.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct kube_watch {
    kube_client *client;    /* borrowed; outlives the watch */
    CURL *h;                /* this watch's own easy handle */
    pthread_mutex_t mu;     /* guards fd */
    curl_socket_t fd;       /* socket of the current connection, or CURL_SOCKET_BAD */
    atomic_int stop;        /* set by kube_watch_stop */
};

struct stream {
    kube_watch *w;
    kube_linebuf lb;
    kube_watch_fn fn;
    void *ud;
    long status;            /* HTTP status once headers arrived */
    char *errbody;          /* body of a non-2xx answer (bounded) */
    size_t errlen;
    int result;             /* first error or KD_OK */
    int done;               /* fn asked to stop */
    kube_error *e;
    char msg[256];
};

int kube_watch_new(kube_client *c, kube_watch **out)
{
    *out = NULL;
    kube_watch *w = calloc(1, sizeof *w);
    if (w == NULL) {
        return KD_ENOMEM;
    }
    w->h = curl_easy_init();
    if (w->h == NULL) {
        free(w);
        return KD_ENOMEM;
    }
    w->client = c;
    w->fd = CURL_SOCKET_BAD;
    pthread_mutex_init(&w->mu, NULL);
    atomic_init(&w->stop, 0);
    *out = w;
    return KD_OK;
}

void kube_watch_free(kube_watch **wp)
{
    if (wp == NULL || *wp == NULL) {
        return;
    }
    kube_watch *w = *wp;
    curl_easy_cleanup(w->h);
    pthread_mutex_destroy(&w->mu);
    free(w);
    *wp = NULL;
}

void kube_watch_stop(kube_watch *w)
{
    atomic_store(&w->stop, 1);
    pthread_mutex_lock(&w->mu);
    if (w->fd != CURL_SOCKET_BAD) {
        shutdown(w->fd, SHUT_RDWR);
    }
    pthread_mutex_unlock(&w->mu);
}

void kube_watch_reset(kube_watch *w)
{
    atomic_store(&w->stop, 0);
}

static curl_socket_t on_open(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    kube_watch *w = ud;
    (void)purpose;
    curl_socket_t fd = socket(a->family, a->socktype, a->protocol);
    kube__count_connection(w->client);
    pthread_mutex_lock(&w->mu);
    w->fd = fd;
    pthread_mutex_unlock(&w->mu);
    if (atomic_load(&w->stop) && fd != CURL_SOCKET_BAD) {
        shutdown(fd, SHUT_RDWR);
    }
    return fd;
}

static int on_close(void *ud, curl_socket_t fd)
{
    kube_watch *w = ud;
    pthread_mutex_lock(&w->mu);
    if (w->fd == fd) {
        w->fd = CURL_SOCKET_BAD;
    }
    pthread_mutex_unlock(&w->mu);
    return close(fd);
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    kube_watch *w = ud;
    (void)dt;
    (void)dn;
    (void)ut;
    (void)un;
    return atomic_load(&w->stop) ? 1 : 0;
}

static int on_line(void *ud, const char *line, size_t len)
{
    struct stream *s = ud;
    kube_event_type type;
    json_t *obj = NULL;
    int rc = kube_watch_decode(line, len, &type, &obj, s->msg, sizeof s->msg);
    if (rc != KD_OK) {
        kube__fail(s->e, rc, "%s", s->msg);
        return rc;
    }
    if (type == KUBE_ERROR) {
        /* An in-stream Status: 410 Expired most of the time. */
        json_t *code = json_object_get(obj, "code");
        char *text = json_dumps(obj, JSON_COMPACT);
        long http = json_is_integer(code) ? (long)json_integer_value(code) : 500;
        rc = kube_status_decode(http, text, text ? strlen(text) : 0, NULL, s->e);
        free(text);
        json_decref(obj);
        return rc != KD_OK ? rc : KD_EPROTO;
    }
    int stop = s->fn(s->ud, type, obj);
    json_decref(obj);
    if (stop) {
        s->done = 1;
        return 1;
    }
    return KD_OK;
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct stream *s = ud;
    size_t n = size * nmemb;
    if (s->status == 0) {
        curl_easy_getinfo(s->w->h, CURLINFO_RESPONSE_CODE, &s->status);
    }
    if (s->status < 200 || s->status > 299) {
        /* Keep the start of an error body for the Status decoder. */
        size_t room = 65536 - s->errlen;
        size_t take = n < room ? n : room;
        char *p = realloc(s->errbody, s->errlen + take + 1);
        if (p == NULL) {
            return 0;
        }
        s->errbody = p;
        memcpy(p + s->errlen, ptr, take);
        s->errlen += take;
        p[s->errlen] = '\0';
        return n;
    }
    int rc = kube_linebuf_feed(&s->lb, ptr, n, on_line, s);
    if (rc != KD_OK) {
        if (rc == KD_ETOOBIG) {
            kube__fail(s->e, rc, "watch event longer than %zu bytes", s->lb.max);
        } else if (rc == KD_ENOMEM) {
            kube__fail(s->e, rc, "out of memory");
        }
        s->result = s->done ? KD_OK : rc;
        return 0;
    }
    return n;
}

int kube_watch_run(kube_watch *w, const kube_resource *r, const char *ns,
                   const kube_list_opts *o, kube_watch_fn fn, void *ud, kube_error *e)
{
    kube_error local;
    if (e == NULL) {
        e = &local;
    }
    memset(e, 0, sizeof *e);
    if (atomic_load(&w->stop)) {
        return kube__fail(e, KD_ESHUTDOWN, "watch stopped");
    }
    kube_client *c = w->client;
    char path[1024], query[4096];
    int rc = kube__path(r, kube__ns(c, r, ns, 1), NULL, NULL, path, sizeof path, e);
    if (rc != KD_OK) {
        return rc;
    }
    if (kube__query(o, 1, query, sizeof query) != KD_OK) {
        return kube__fail(e, KD_ETOOBIG, "watch: query too long");
    }
    /* A hard bound a little past the server-side timeout catches a server that never
     * ends the stream; without timeoutSeconds the stream may last forever. */
    long total_ms = o != NULL && o->timeout_s > 0 ? (o->timeout_s + 30) * 1000 : 0;
    struct curl_slist *headers = NULL;
    rc = kube__prepare(c, w->h, path, query, "GET", NULL, total_ms, &headers, e);
    if (rc != KD_OK) {
        return rc;
    }
    struct stream s = {.w = w, .fn = fn, .ud = ud, .e = e};
    kube_linebuf_init(&s.lb, kube__options(c)->max_line_bytes);
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(w->h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(w->h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(w->h, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(w->h, CURLOPT_OPENSOCKETFUNCTION, on_open);
    curl_easy_setopt(w->h, CURLOPT_OPENSOCKETDATA, w);
    curl_easy_setopt(w->h, CURLOPT_CLOSESOCKETFUNCTION, on_close);
    curl_easy_setopt(w->h, CURLOPT_CLOSESOCKETDATA, w);
    curl_easy_setopt(w->h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(w->h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(w->h, CURLOPT_XFERINFODATA, w);
    kube__count_request(c);
    CURLcode cc = curl_easy_perform(w->h);
    if (s.status == 0) {
        curl_easy_getinfo(w->h, CURLINFO_RESPONSE_CODE, &s.status);
    }
    curl_easy_setopt(w->h, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(w->h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(headers);
    if (s.status != 0 && (s.status < 200 || s.status > 299)) {
        rc = kube_status_decode(s.status, s.errbody, s.errlen, NULL, e);
        if (rc == KD_EUNAUTHORIZED) {
            kube__token_invalidate(c);
        }
    } else if (s.done) {
        rc = KD_OK;
    } else if (s.result != KD_OK) {
        rc = s.result;
    } else if (atomic_load(&w->stop)) {
        rc = kube__fail(e, KD_ESHUTDOWN, "watch stopped");
    } else if (cc != CURLE_OK) {
        rc = kube__curl_error(cc, errbuf, 0, e);
    } else if (s.lb.len > 0) {
        rc = kube__fail(e, KD_ETRUNCATED, "watch stream ended inside an event");
    } else {
        rc = KD_OK;
    }
    if (e->http_status == 0) {
        e->http_status = s.status;
    }
    e->code = rc;
    kube_linebuf_free(&s.lb);
    free(s.errbody);
    return rc;
}
