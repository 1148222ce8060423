/*
 * kube_client: requests with libcurl. Each call borrows an easy handle from a small
 * pool (so connections and TLS sessions are reused across calls and threads), sends the
 * request with bounded time and a bounded body, decodes JSON answers and Status errors,
 * and retries throttling, server errors and transport failures with jittered
 * exponential backoff that respects Retry-After.
 *
 * The bearer token is either static (kubeconfig `token`) or read from a file
 * (`tokenFile`, service account): the file is stat()ed before every request and
 * re-read when its inode, size or mtime change, at least once a minute, and right
 * after a 401, which is how projected service-account tokens rotate.
 */
#include "kube_internal.h"

#include "kd_error.h"
#include "kd_log.h"
#include "kd_yaml.h"
#include "kube_backoff.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#define KUBE_POOL_MAX 8
#define KUBE_TOKEN_RECHECK_S 60

struct kube_client {
    kube_config cfg;                 /* own copy */
    kube_client_options opt;         /* with defaults filled in */
    char user_agent[64];
    pthread_mutex_t pool_mu;
    CURL *pool[KUBE_POOL_MAX];       /* idle easy handles */
    int npool;
    pthread_mutex_t token_mu;        /* guards the token fields */
    char *token;                     /* current bearer token (file or static) */
    struct stat token_st;            /* stat of token_file when last read */
    time_t token_read_at;            /* when token_file was last read */
    int token_stale;                 /* set after a 401: re-read before next use */
    long requests;                   /* attempts sent, under pool_mu */
    long connections;                /* TCP connections opened, under pool_mu */
};

int kube__fail(kube_error *e, int code, const char *fmt, ...)
{
    if (e != NULL) {
        memset(e, 0, sizeof *e);
        e->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->message, sizeof e->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

static char *dup_or_null(const char *s, int *oom)
{
    if (s == NULL) {
        return NULL;
    }
    char *d = strdup(s);
    if (d == NULL) {
        *oom = 1;
    }
    return d;
}

static char *dup_blob(const char *s, size_t n, int *oom)
{
    if (s == NULL) {
        return NULL;
    }
    char *d = malloc(n + 1);
    if (d == NULL) {
        *oom = 1;
        return NULL;
    }
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

int kube_client_new(const kube_config *cfg, const kube_client_options *opts,
                    kube_client **out, char *err, size_t errlen)
{
    *out = NULL;
    if (cfg == NULL || cfg->server == NULL) {
        return kd_errf(err, errlen, KD_EINVAL, "kube client: no server configured");
    }
    for (const char *t = cfg->token; t != NULL && *t != '\0'; t++) {
        if ((unsigned char)*t < 0x20 || *t == 0x7f) {
            return kd_errf(err, errlen, KD_EINVAL, "kube client: control character in token");
        }
    }
    kube_client *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return kd_errf(err, errlen, KD_ENOMEM, "kube client: out of memory");
    }
    int oom = 0;
    c->cfg.server = dup_or_null(cfg->server, &oom);
    c->cfg.ca_file = dup_or_null(cfg->ca_file, &oom);
    c->cfg.ca_data = dup_blob(cfg->ca_data, cfg->ca_data_len, &oom);
    c->cfg.ca_data_len = cfg->ca_data_len;
    c->cfg.insecure = cfg->insecure;
    c->cfg.token = dup_or_null(cfg->token, &oom);
    c->cfg.token_file = dup_or_null(cfg->token_file, &oom);
    c->cfg.cert_file = dup_or_null(cfg->cert_file, &oom);
    c->cfg.cert_data = dup_blob(cfg->cert_data, cfg->cert_data_len, &oom);
    c->cfg.cert_data_len = cfg->cert_data_len;
    c->cfg.key_file = dup_or_null(cfg->key_file, &oom);
    c->cfg.key_data = dup_blob(cfg->key_data, cfg->key_data_len, &oom);
    c->cfg.key_data_len = cfg->key_data_len;
    c->cfg.namespace = dup_or_null(cfg->namespace != NULL ? cfg->namespace : "default", &oom);
    c->cfg.context = dup_or_null(cfg->context, &oom);
    if (c->cfg.token != NULL) {
        /* As in kubectl, a literal token wins over tokenFile. */
        c->token = dup_or_null(c->cfg.token, &oom);
        free(c->cfg.token_file);
        c->cfg.token_file = NULL;
    }
    if (oom) {
        kube_client_free(&c);
        return kd_errf(err, errlen, KD_ENOMEM, "kube client: out of memory");
    }
    kube_client_options o = {0};
    if (opts != NULL) {
        o = *opts;
    }
    c->opt.connect_timeout_ms = o.connect_timeout_ms > 0 ? o.connect_timeout_ms : 5000;
    c->opt.request_timeout_ms = o.request_timeout_ms > 0 ? o.request_timeout_ms : 30000;
    c->opt.max_response_bytes = o.max_response_bytes > 0 ? o.max_response_bytes : (64u << 20);
    c->opt.max_attempts = o.max_attempts > 0 ? o.max_attempts : 5;
    c->opt.backoff_base_ms = o.backoff_base_ms > 0 ? o.backoff_base_ms : 100;
    c->opt.backoff_max_ms = o.backoff_max_ms > 0 ? o.backoff_max_ms : 5000;
    c->opt.max_retry_after_s = o.max_retry_after_s > 0 ? o.max_retry_after_s : 30;
    c->opt.max_line_bytes = o.max_line_bytes > 0 ? o.max_line_bytes : (16u << 20);
    snprintf(c->user_agent, sizeof c->user_agent, "%s",
             o.user_agent != NULL ? o.user_agent : "kadet-operator/" KADET_VERSION);
    c->opt.user_agent = c->user_agent;
    pthread_mutex_init(&c->pool_mu, NULL);
    pthread_mutex_init(&c->token_mu, NULL);
    c->token_stale = 1;
    *out = c;
    return KD_OK;
}

int kube_client_clone(const kube_client *c, const kube_client_options *opts,
                      kube_client **out, char *err, size_t errlen)
{
    return kube_client_new(&c->cfg, opts, out, err, errlen);
}

void kube_client_free(kube_client **cp)
{
    if (cp == NULL || *cp == NULL) {
        return;
    }
    kube_client *c = *cp;
    for (int i = 0; i < c->npool; i++) {
        curl_easy_cleanup(c->pool[i]);
    }
    kube_config_clear(&c->cfg);
    free(c->token);
    pthread_mutex_destroy(&c->pool_mu);
    pthread_mutex_destroy(&c->token_mu);
    free(c);
    *cp = NULL;
}

const char *kube_client_namespace(const kube_client *c)
{
    return c->cfg.namespace;
}

const kube_client_options *kube__options(const kube_client *c)
{
    return &c->opt;
}

void kube__count_request(kube_client *c)
{
    pthread_mutex_lock(&c->pool_mu);
    c->requests++;
    pthread_mutex_unlock(&c->pool_mu);
}

void kube__count_connection(kube_client *c)
{
    pthread_mutex_lock(&c->pool_mu);
    c->connections++;
    pthread_mutex_unlock(&c->pool_mu);
}

long kube_client_connections(kube_client *c)
{
    pthread_mutex_lock(&c->pool_mu);
    long n = c->connections;
    pthread_mutex_unlock(&c->pool_mu);
    return n;
}

/* Counts connections for the pooled handles (a watch installs its own callback). */
static curl_socket_t on_open_counted(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    (void)purpose;
    kube__count_connection(ud);
    return socket(a->family, a->socktype, a->protocol);
}

long kube_client_requests(kube_client *c)
{
    pthread_mutex_lock(&c->pool_mu);
    long n = c->requests;
    pthread_mutex_unlock(&c->pool_mu);
    return n;
}

void kube__token_invalidate(kube_client *c)
{
    pthread_mutex_lock(&c->token_mu);
    c->token_stale = 1;
    pthread_mutex_unlock(&c->token_mu);
}

/* Returns a new copy of the current token (NULL when there is none), re-reading the
 * token file when it changed. A token file that cannot be read keeps the last token:
 * during an atomic symlink swap the file can briefly be missing. */
static int current_token(kube_client *c, char **out, kube_error *e)
{
    *out = NULL;
    pthread_mutex_lock(&c->token_mu);
    if (c->cfg.token_file != NULL) {
        struct stat st;
        time_t now = time(NULL);
        int have = stat(c->cfg.token_file, &st) == 0;
        int changed = have && (st.st_ino != c->token_st.st_ino ||
                               st.st_size != c->token_st.st_size ||
                               st.st_mtim.tv_sec != c->token_st.st_mtim.tv_sec ||
                               st.st_mtim.tv_nsec != c->token_st.st_mtim.tv_nsec);
        if (c->token == NULL || c->token_stale || changed ||
            now - c->token_read_at >= KUBE_TOKEN_RECHECK_S) {
            char *data = NULL;
            size_t len = 0;
            char msg[256];
            int rc = kd_read_file(c->cfg.token_file, 1 << 20, &data, &len, msg, sizeof msg);
            if (rc == KD_OK) {
                while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r' ||
                                   data[len - 1] == ' ')) {
                    data[--len] = '\0';
                }
                for (size_t i = 0; i < len; i++) {
                    /* A control character would let the file inject HTTP headers. */
                    if ((unsigned char)data[i] < 0x20 || data[i] == 0x7f) {
                        snprintf(msg, sizeof msg, "%s: control character in token",
                                 c->cfg.token_file);
                        rc = KD_EFORMAT;
                        break;
                    }
                }
                if (rc != KD_OK) {
                    free(data);
                }
            }
            if (rc == KD_OK) {
                free(c->token);
                c->token = data;
                if (have) {
                    c->token_st = st;
                }
                c->token_read_at = now;
                c->token_stale = 0;
            } else if (c->token == NULL || rc == KD_EFORMAT) {
                pthread_mutex_unlock(&c->token_mu);
                return kube__fail(e, KD_EUNAUTHORIZED, "token: %s", msg);
            }
        }
    }
    if (c->token != NULL) {
        *out = strdup(c->token);
        if (*out == NULL) {
            pthread_mutex_unlock(&c->token_mu);
            return kube__fail(e, KD_ENOMEM, "out of memory");
        }
    }
    pthread_mutex_unlock(&c->token_mu);
    return KD_OK;
}

const char *kube__ns(const kube_client *c, const kube_resource *r, const char *ns,
                     int all_if_null)
{
    if (!r->namespaced) {
        return NULL;
    }
    if (ns == NULL || *ns == '\0') {
        return all_if_null ? NULL : c->cfg.namespace;
    }
    return ns;
}

/* --- transfers ------------------------------------------------------------------- */

int kube__prepare(kube_client *c, CURL *h, const char *path, const char *query,
                  const char *method, const char *content_type, long request_timeout_ms,
                  struct curl_slist **headers, kube_error *e)
{
    *headers = NULL;
    size_t ulen = strlen(c->cfg.server) + strlen(path) + (query ? strlen(query) : 0) + 2;
    char *url = malloc(ulen);
    if (url == NULL) {
        return kube__fail(e, KD_ENOMEM, "out of memory");
    }
    snprintf(url, ulen, "%s%s%s%s", c->cfg.server, path, query && *query ? "?" : "",
             query && *query ? query : "");
    char *token = NULL;
    int rc = current_token(c, &token, e);
    if (rc != KD_OK) {
        free(url);
        return rc;
    }
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    free(url); /* libcurl copies string options */
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->opt.connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, request_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    /* A peer that vanished without a FIN (node crash, NAT drop) is noticed within about
     * a minute instead of the kernel's default of two hours. */
    curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 30L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 10L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, c->opt.user_agent);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, on_open_counted);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, c);
    if (c->cfg.insecure) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    } else if (c->cfg.ca_data != NULL) {
        struct curl_blob b = {c->cfg.ca_data, c->cfg.ca_data_len, CURL_BLOB_COPY};
        curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &b);
    } else if (c->cfg.ca_file != NULL) {
        curl_easy_setopt(h, CURLOPT_CAINFO, c->cfg.ca_file);
    }
    if (c->cfg.cert_data != NULL) {
        struct curl_blob b = {c->cfg.cert_data, c->cfg.cert_data_len, CURL_BLOB_COPY};
        curl_easy_setopt(h, CURLOPT_SSLCERT_BLOB, &b);
        curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM");
    } else if (c->cfg.cert_file != NULL) {
        curl_easy_setopt(h, CURLOPT_SSLCERT, c->cfg.cert_file);
    }
    if (c->cfg.key_data != NULL) {
        struct curl_blob b = {c->cfg.key_data, c->cfg.key_data_len, CURL_BLOB_COPY};
        curl_easy_setopt(h, CURLOPT_SSLKEY_BLOB, &b);
        curl_easy_setopt(h, CURLOPT_SSLKEYTYPE, "PEM");
    } else if (c->cfg.key_file != NULL) {
        curl_easy_setopt(h, CURLOPT_SSLKEY, c->cfg.key_file);
    }
    /* "Expect:" stops curl from waiting for a 100 Continue before larger bodies. */
    char ctype[256] = "";
    if (content_type != NULL) {
        snprintf(ctype, sizeof ctype, "Content-Type: %s", content_type);
    }
    char *auth = NULL;
    size_t authlen = 0;
    if (token != NULL) {
        authlen = strlen(token) + 32;
        auth = malloc(authlen);
        if (auth != NULL) {
            snprintf(auth, authlen, "Authorization: Bearer %s", token);
        }
        memset(token, 0, strlen(token));
        free(token);
    }
    const char *lines[] = {"Accept: application/json", "Expect:", ctype, auth};
    struct curl_slist *hl = NULL;
    int oom = token != NULL && auth == NULL;
    for (size_t i = 0; i < sizeof lines / sizeof lines[0] && !oom; i++) {
        if (lines[i] == NULL || lines[i][0] == '\0') {
            continue;
        }
        struct curl_slist *next = curl_slist_append(hl, lines[i]);
        if (next == NULL) {
            oom = 1;
        } else {
            hl = next;
        }
    }
    if (auth != NULL) {
        /* Wipe the copy: tokens should not linger in freed memory. */
        memset(auth, 0, authlen);
        free(auth);
    }
    if (oom || hl == NULL) {
        curl_slist_free_all(hl);
        return kube__fail(e, KD_ENOMEM, "out of memory");
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    *headers = hl;
    return KD_OK;
}

int kube__curl_error(CURLcode rc, const char *detail, int toobig, kube_error *e)
{
    int code;
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        code = KD_ETIMEOUT;
        break;
    case CURLE_PARTIAL_FILE:
        code = KD_ETRUNCATED;
        break;
    case CURLE_WRITE_ERROR:
        code = toobig ? KD_ETOOBIG : KD_EIO;
        break;
    case CURLE_OUT_OF_MEMORY:
        code = KD_ENOMEM;
        break;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CLIENTCERT:
        code = KD_ETLS;
        break;
    case CURLE_ABORTED_BY_CALLBACK:
        code = KD_ESHUTDOWN;
        break;
    default:
        code = KD_ENETWORK;
        break;
    }
    return kube__fail(e, code, "%s%s%s", curl_easy_strerror(rc),
                      detail && *detail ? ": " : "", detail ? detail : "");
}

static CURL *pool_get(kube_client *c)
{
    pthread_mutex_lock(&c->pool_mu);
    CURL *h = c->npool > 0 ? c->pool[--c->npool] : NULL;
    pthread_mutex_unlock(&c->pool_mu);
    return h != NULL ? h : curl_easy_init();
}

static void pool_put(kube_client *c, CURL *h)
{
    pthread_mutex_lock(&c->pool_mu);
    if (c->npool < KUBE_POOL_MAX) {
        c->pool[c->npool++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&c->pool_mu);
    if (h != NULL) {
        curl_easy_cleanup(h);
    }
}

struct body {
    char *data;   /* received bytes, NUL-terminated */
    size_t len;
    size_t cap;
    size_t max;   /* refuse bodies larger than this */
    int toobig;   /* set when max was exceeded */
    char retry_after[32]; /* Retry-After header value, or "" */
};

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct body *b = ud;
    size_t n = size * nmemb;
    if (b->len + n > b->max) {
        b->toobig = 1;
        return 0;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 16384;
        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        char *p = realloc(b->data, cap);
        if (p == NULL) {
            return 0;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct body *b = ud;
    size_t n = size * nmemb;
    static const char name[] = "retry-after:";
    if (n > sizeof name - 1 && strncasecmp(ptr, name, sizeof name - 1) == 0) {
        size_t i = sizeof name - 1;
        while (i < n && (ptr[i] == ' ' || ptr[i] == '\t')) {
            i++;
        }
        size_t o = 0;
        while (i < n && o + 1 < sizeof b->retry_after && ptr[i] != '\r' && ptr[i] != '\n') {
            b->retry_after[o++] = ptr[i++];
        }
        b->retry_after[o] = '\0';
    }
    return n;
}

static int on_cancel_check(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut,
                           curl_off_t un)
{
    (void)dt;
    (void)dn;
    (void)ut;
    (void)un;
    return atomic_load((const atomic_int *)ud) ? 1 : 0;
}

/* One attempt. On success *out gets the decoded JSON (NULL when out is NULL). */
static int attempt(kube_client *c, const char *method, const char *path, const char *query,
                   const char *payload, const char *content_type, json_t **out, kube_error *e,
                   const atomic_int *cancel)
{
    CURL *h = pool_get(c);
    if (h == NULL) {
        return kube__fail(e, KD_ENOMEM, "curl_easy_init failed");
    }
    struct curl_slist *headers = NULL;
    int rc = kube__prepare(c, h, path, query, method, content_type, c->opt.request_timeout_ms,
                           &headers, e);
    if (rc != KD_OK) {
        pool_put(c, h);
        return rc;
    }
    struct body b = {.max = c->opt.max_response_bytes};
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &b);
    if (payload != NULL) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    }
    if (cancel != NULL) {
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_cancel_check);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)cancel);
    }
    kube__count_request(c);
    CURLcode cc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (kd_log_get_level() <= KD_LOG_DEBUG) {
        double total = 0;
        curl_easy_getinfo(h, CURLINFO_TOTAL_TIME, &total);
        KD_DEBUG("kube request method=%s path=%s status=%ld bytes=%zu ms=%.1f curl=%d",
                 method, path, status, b.len, total * 1000.0, (int)cc);
    }
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(headers);
    if (cc != CURLE_OK) {
        /* Discard a handle whose connection state is unknown. */
        curl_easy_cleanup(h);
        rc = kube__curl_error(cc, b.toobig ? "response body over the size limit" : errbuf,
                              b.toobig, e);
        if (e != NULL) {
            e->http_status = status;
        }
        free(b.data);
        return rc;
    }
    pool_put(c, h);
    if (status < 200 || status > 299) {
        rc = kube_status_decode(status, b.data, b.len, b.retry_after[0] ? b.retry_after : NULL,
                                e);
        free(b.data);
        return rc;
    }
    if (out != NULL) {
        json_error_t je;
        json_t *v = b.len > 0 ? json_loadb(b.data, b.len, 0, &je) : NULL;
        if (v == NULL) {
            rc = kube__fail(e, KD_EPARSE, "%s %s: response is not JSON: %s", method, path,
                            b.len > 0 ? je.text : "empty body");
        } else if (!json_is_object(v)) {
            json_decref(v);
            rc = kube__fail(e, KD_EFORMAT, "%s %s: response is not a JSON object", method,
                            path);
        } else {
            *out = v;
        }
        if (e != NULL) {
            e->http_status = status;
        }
    }
    free(b.data);
    return rc;
}

/* Sleeps ms, in slices when there is a cancel flag to watch; 1 if cancelled. */
static int sleep_ms(double ms, const atomic_int *cancel)
{
    while (ms > 0) {
        if (cancel != NULL && atomic_load(cancel)) {
            return 1;
        }
        double slice = cancel != NULL && ms > 20 ? 20 : ms;
        long whole = (long)slice;
        struct timespec ts = {(time_t)(whole / 1000), (whole % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0) {
        }
        ms -= slice;
    }
    return cancel != NULL && atomic_load(cancel);
}

int kube_request(kube_client *c, const char *method, const char *path, const char *query,
                 json_t *body, const char *content_type, json_t **out, kube_error *e)
{
    return kube__request(c, method, path, query, body, content_type, out, e, NULL);
}

int kube__request(kube_client *c, const char *method, const char *path, const char *query,
                  json_t *body, const char *content_type, json_t **out, kube_error *e,
                  const atomic_int *cancel)
{
    if (out != NULL) {
        *out = NULL;
    }
    kube_error local;
    if (e == NULL) {
        e = &local;
    }
    char *payload = NULL;
    if (body != NULL) {
        payload = json_dumps(body, JSON_COMPACT);
        if (payload == NULL) {
            return kube__fail(e, KD_ENOMEM, "cannot serialise request body");
        }
        if (content_type == NULL) {
            content_type = "application/json";
        }
    }
    kube_backoff bo;
    kube_backoff_init(&bo, c->opt.backoff_base_ms, c->opt.backoff_max_ms, 2.0, 0.5, 0);
    int rc = KD_OK;
    int refreshed = 0;
    int n;
    for (n = 1;; n++) {
        if (cancel != NULL && atomic_load(cancel)) {
            rc = kube__fail(e, KD_ESHUTDOWN, "request cancelled");
            break;
        }
        rc = attempt(c, method, path, query, payload, content_type, out, e, cancel);
        if (rc == KD_EUNAUTHORIZED && c->cfg.token_file != NULL && !refreshed) {
            /* The token may have been rotated since it was read: read it again and
             * retry once. */
            kube__token_invalidate(c);
            refreshed = 1;
            continue;
        }
        if (!kube_error_retryable(rc) || n >= c->opt.max_attempts) {
            break;
        }
        double wait = kube_backoff_next(&bo);
        double ra = e->retry_after_s * 1000.0;
        if (ra > c->opt.max_retry_after_s * 1000.0) {
            ra = c->opt.max_retry_after_s * 1000.0;
        }
        if (sleep_ms(ra > wait ? ra : wait, cancel)) {
            rc = kube__fail(e, KD_ESHUTDOWN, "request cancelled");
            break;
        }
    }
    e->attempts = n;
    free(payload);
    return rc;
}
