/*
 * httpd: /healthz, /readyz and /metrics over libmicrohttpd (httpd.h).
 *
 * Responses are built in memory per request (the metrics text is rendered on each scrape,
 * so it is never stale) and handed to libmicrohttpd, which frees them. The server runs in
 * libmicrohttpd's internal polling thread with a small connection limit and timeout: the
 * port is scraped by Prometheus and probed by the kubelet, nothing else.
 */
#include "httpd.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "kd_error.h"
#include "kd_log.h"

typedef struct op_httpd_check_entry {
    char name[64];      /* shown in the /readyz body */
    op_httpd_check fn;  /* the check */
    void *arg;          /* borrowed */
} op_httpd_check_entry;

struct op_httpd {
    struct MHD_Daemon *daemon;                    /* libmicrohttpd server */
    opm_registry *reg;                            /* borrowed metrics registry */
    int port;                                     /* bound port */
    pthread_mutex_t lock;                         /* guards checks and shutting_down */
    op_httpd_check_entry checks[OP_HTTPD_MAX_CHECKS];
    size_t nchecks;
    int started;                                  /* startup complete (set_started) */
    int shutting_down;                            /* /readyz answers 503 when set */
};

static void mhd_log(void *arg, const char *fmt, va_list ap)
{
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && line[n - 1] == '\n')
        line[--n] = '\0';
    KD_WARN("httpd: %s", line);
}

/* Queues a response that libmicrohttpd copies or frees; text is always consumed. */
static enum MHD_Result reply(struct MHD_Connection *conn, unsigned int status, char *text,
                             size_t len, const char *content_type)
{
    if (text == NULL)
        return MHD_NO;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (resp == NULL) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned int status,
                                  const char *text)
{
    return reply(conn, status, strdup(text), strlen(text), "text/plain; charset=utf-8");
}

static enum MHD_Result serve_readyz(op_httpd *h, struct MHD_Connection *conn)
{
    size_t cap = 64 + OP_HTTPD_MAX_CHECKS * 384;
    char *body = malloc(cap);
    if (body == NULL)
        return MHD_NO;
    size_t off = 0;
    int ready = 1;
    pthread_mutex_lock(&h->lock);
    if (!h->started) {
        ready = 0;
        off += (size_t)snprintf(body + off, cap - off, "[-]startup failed: starting\n");
    }
    if (h->shutting_down) {
        ready = 0;
        off += (size_t)snprintf(body + off, cap - off, "[-]shutdown failed: shutting down\n");
    }
    /* After shutdown starts, the checks' components are being torn down: never call them
     * again (set_shutting_down takes this lock, so no check is running once it returns). */
    for (size_t i = 0; !h->shutting_down && i < h->nchecks; i++) {
        char detail[256] = "";
        int ok = h->checks[i].fn(h->checks[i].arg, detail, sizeof detail);
        ready &= ok != 0;
        int w = ok ? snprintf(body + off, cap - off, "[+]%s ok\n", h->checks[i].name)
                   : snprintf(body + off, cap - off, "[-]%s failed: %s\n", h->checks[i].name,
                              detail[0] ? detail : "not ready");
        if (w > 0)
            off += (size_t)w < cap - off ? (size_t)w : cap - off - 1;
    }
    pthread_mutex_unlock(&h->lock);
    int w = snprintf(body + off, cap - off, "%s\n", ready ? "ok" : "not ready");
    if (w > 0)
        off += (size_t)w < cap - off ? (size_t)w : cap - off - 1;
    return reply(conn, ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, body, off,
                 "text/plain; charset=utf-8");
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
    op_httpd *h = cls;
    /* Requests to these endpoints carry no body; anything uploaded is ignored. */
    if (*upload_size != 0) {
        *upload_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
    if (strcmp(url, "/healthz") == 0 || strcmp(url, "/livez") == 0)
        return reply_text(conn, MHD_HTTP_OK, "ok\n");
    if (strcmp(url, "/readyz") == 0)
        return serve_readyz(h, conn);
    if (strcmp(url, "/metrics") == 0) {
        char *text = NULL;
        size_t len = 0;
        int rc = opm_render(h->reg, &text, &len);
        if (rc != KD_OK)
            return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "metrics unavailable\n");
        return reply(conn, MHD_HTTP_OK, text, len, "text/plain; version=0.0.4; charset=utf-8");
    }
    return reply_text(conn, MHD_HTTP_NOT_FOUND, "not found\n");
}

int op_httpd_start(op_httpd **out, const char *host, int port, opm_registry *reg, char *err,
                   size_t errlen)
{
    if (out == NULL || host == NULL || reg == NULL || port < 0 || port > 65535)
        return kd_errf(err, errlen, KD_EINVAL, "httpd: bad arguments");
    struct sockaddr_storage addr;
    memset(&addr, 0, sizeof addr);
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    int have_addr = 0;
    if (host[0] != '\0') {
        struct sockaddr_in *v4 = (struct sockaddr_in *)&addr;
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&addr;
        if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
            v4->sin_family = AF_INET;
            v4->sin_port = htons((uint16_t)port);
        } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
            v6->sin6_family = AF_INET6;
            v6->sin6_port = htons((uint16_t)port);
            flags |= MHD_USE_IPv6;
        } else {
            return kd_errf(err, errlen, KD_EINVAL,
                           "httpd: '%s' is not a numeric IPv4 or IPv6 address", host);
        }
        have_addr = 1;
    }

    op_httpd *h = calloc(1, sizeof *h);
    if (h == NULL)
        return kd_errf(err, errlen, KD_ENOMEM, "httpd: out of memory");
    if (pthread_mutex_init(&h->lock, NULL) != 0) {
        free(h);
        return kd_errf(err, errlen, KD_ENOMEM, "httpd: mutex");
    }
    h->reg = reg;
    h->daemon = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, handle, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_CONNECTION_LIMIT, 32u, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
        have_addr ? MHD_OPTION_SOCK_ADDR : MHD_OPTION_END, (struct sockaddr *)&addr,
        MHD_OPTION_END);
    if (h->daemon == NULL) {
        pthread_mutex_destroy(&h->lock);
        free(h);
        return kd_errf(err, errlen, KD_EIO, "httpd: cannot listen on %s%s%s:%d",
                       strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info != NULL && info->port != 0 ? (int)info->port : port;
    *out = h;
    return KD_OK;
}

int op_httpd_port(const op_httpd *h) { return h != NULL ? h->port : -1; }

int op_httpd_add_check(op_httpd *h, const char *name, op_httpd_check fn, void *arg)
{
    if (h == NULL || name == NULL || fn == NULL || strlen(name) >= sizeof h->checks[0].name)
        return KD_EINVAL;
    pthread_mutex_lock(&h->lock);
    int rc = KD_ETOOBIG;
    if (h->nchecks < OP_HTTPD_MAX_CHECKS) {
        op_httpd_check_entry *e = &h->checks[h->nchecks++];
        snprintf(e->name, sizeof e->name, "%s", name);
        e->fn = fn;
        e->arg = arg;
        rc = KD_OK;
    }
    pthread_mutex_unlock(&h->lock);
    return rc;
}

void op_httpd_set_started(op_httpd *h)
{
    if (h == NULL)
        return;
    pthread_mutex_lock(&h->lock);
    h->started = 1;
    pthread_mutex_unlock(&h->lock);
}

void op_httpd_set_shutting_down(op_httpd *h)
{
    if (h == NULL)
        return;
    pthread_mutex_lock(&h->lock);
    h->shutting_down = 1;
    pthread_mutex_unlock(&h->lock);
}

void op_httpd_stop(op_httpd **h)
{
    if (h == NULL || *h == NULL)
        return;
    MHD_stop_daemon((*h)->daemon);
    pthread_mutex_destroy(&(*h)->lock);
    free(*h);
    *h = NULL;
}
