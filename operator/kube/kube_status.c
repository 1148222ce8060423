/*
 * kube_status: the pure decoding half of the client: API Status answers into typed
 * errors, the watch stream's line decoder and event decoder, and object key helpers.
 * No I/O here, so all of it is unit-tested on crafted input.
 */
#include "kube_client.h"

#include "kd_error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const kube_resource KUBE_PODS = {"", "v1", "pods", 1};
const kube_resource KUBE_SERVICES = {"", "v1", "services", 1};
const kube_resource KUBE_CONFIGMAPS = {"", "v1", "configmaps", 1};
const kube_resource KUBE_EVENTS = {"", "v1", "events", 1};
const kube_resource KUBE_NODES = {"", "v1", "nodes", 0};
const kube_resource KUBE_NAMESPACES = {"", "v1", "namespaces", 0};
const kube_resource KUBE_LEASES = {"coordination.k8s.io", "v1", "leases", 1};
const kube_resource KUBE_SECRETS = {"", "v1", "secrets", 1};
const kube_resource KUBE_NETWORKPOLICIES = {"networking.k8s.io", "v1", "networkpolicies", 1};

static int code_for(long http, const char *reason)
{
    switch (http) {
    case 400:
        return KD_EINVAL;
    case 401:
        return KD_EUNAUTHORIZED;
    case 403:
        return KD_EFORBIDDEN;
    case 404:
        return KD_ENOTFOUND;
    case 409:
        return strcmp(reason, "AlreadyExists") == 0 ? KD_EEXISTS : KD_ECONFLICT;
    case 410:
        return KD_EGONE;
    case 422:
        return KD_EINVALID_OBJECT;
    case 429:
        return KD_ETHROTTLED;
    case 502:
    case 503:
    case 504:
        return KD_EUNAVAILABLE;
    default:
        break;
    }
    if (http >= 500) {
        return KD_EINTERNAL;
    }
    if (http >= 400) {
        return KD_EINVAL;
    }
    return KD_EPROTO;
}

/* Copies printable text only, so that binary garbage in a body cannot end up in logs. */
static void copy_printable(char *dst, size_t cap, const char *src, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[o++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    if (cap > 0) {
        dst[o] = '\0';
    }
}

int kube_status_decode(long http_status, const char *body, size_t len,
                       const char *retry_after, kube_error *e)
{
    kube_error local;
    if (e == NULL) {
        e = &local;
    }
    memset(e, 0, sizeof *e);
    e->http_status = http_status;
    json_t *st = NULL;
    if (body != NULL && len > 0) {
        st = json_loadb(body, len, 0, NULL);
    }
    json_t *reason = json_object_get(st, "reason");
    json_t *message = json_object_get(st, "message");
    if (json_is_string(reason)) {
        copy_printable(e->reason, sizeof e->reason, json_string_value(reason),
                       json_string_length(reason));
    }
    if (json_is_string(message)) {
        copy_printable(e->message, sizeof e->message, json_string_value(message),
                       json_string_length(message));
    } else if (st == NULL && body != NULL && len > 0) {
        copy_printable(e->message, sizeof e->message, body, len < 200 ? len : 200);
    } else {
        snprintf(e->message, sizeof e->message, "HTTP %ld", http_status);
    }
    json_t *ras = json_object_get(json_object_get(st, "details"), "retryAfterSeconds");
    if (json_is_integer(ras) && json_integer_value(ras) > 0) {
        e->retry_after_s = (double)json_integer_value(ras);
    }
    if (retry_after != NULL) {
        char *end = NULL;
        double v = strtod(retry_after, &end);
        /* Only the delta-seconds form: API servers never send an HTTP date here. */
        if (end != retry_after && v > 0 && v < 86400) {
            e->retry_after_s = v;
        }
    }
    json_decref(st);
    e->code = code_for(http_status, e->reason);
    return e->code;
}

int kube_error_retryable(int code)
{
    switch (code) {
    case KD_ETHROTTLED:
    case KD_EUNAVAILABLE:
    case KD_EINTERNAL:
    case KD_ENETWORK:
    case KD_ETIMEOUT:
        return 1;
    default:
        return 0;
    }
}

const char *kube_object_rv(json_t *obj)
{
    return json_string_value(json_object_get(json_object_get(obj, "metadata"),
                                             "resourceVersion"));
}

int kube_object_key(json_t *obj, char *buf, size_t len)
{
    json_t *md = json_object_get(obj, "metadata");
    const char *name = json_string_value(json_object_get(md, "name"));
    const char *ns = json_string_value(json_object_get(md, "namespace"));
    if (name == NULL || *name == '\0') {
        return KD_EFORMAT;
    }
    int n = (ns != NULL && *ns != '\0') ? snprintf(buf, len, "%s/%s", ns, name)
                                        : snprintf(buf, len, "%s", name);
    return n >= 0 && (size_t)n < len ? KD_OK : KD_ETOOBIG;
}

/* --- label selectors ------------------------------------------------------------ */

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    return p;
}

static int key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_' || c == '.' || c == '/';
}

/* Reads a key or value token into buf; returns the position after it, NULL if empty or
 * too long. */
static const char *token(const char *p, char *buf, size_t len)
{
    size_t n = 0;
    p = skip_ws(p);
    while (key_char(*p)) {
        if (n + 1 >= len) {
            return NULL;
        }
        buf[n++] = *p++;
    }
    buf[n] = '\0';
    return p;
}

/* One requirement starting at p; sets *ok to whether it holds; returns the position
 * after it or NULL on a syntax error. */
static const char *requirement(const char *p, json_t *labels, int *ok)
{
    char key[320], val[128];
    int negate = 0;
    p = skip_ws(p);
    if (*p == '!') {
        negate = 1;
        p++;
    }
    p = token(p, key, sizeof key);
    if (p == NULL || key[0] == '\0') {
        return NULL;
    }
    const char *have = json_string_value(json_object_get(labels, key));
    p = skip_ws(p);
    if (negate) {
        *ok = have == NULL;
        return p;
    }
    if (*p == ',' || *p == '\0') {
        *ok = have != NULL;
        return p;
    }
    int ne = 0;
    if (p[0] == '!' && p[1] == '=') {
        ne = 1;
        p += 2;
    } else if (p[0] == '=' && p[1] == '=') {
        p += 2;
    } else if (p[0] == '=') {
        p += 1;
    } else {
        int in = strncmp(p, "in", 2) == 0 && !key_char(p[2]);
        int notin = strncmp(p, "notin", 5) == 0 && !key_char(p[5]);
        if (!in && !notin) {
            return NULL;
        }
        p = skip_ws(p + (in ? 2 : 5));
        if (*p != '(') {
            return NULL;
        }
        int found = 0;
        p++;
        for (;;) {
            p = token(p, val, sizeof val);
            if (p == NULL) {
                return NULL;
            }
            found |= have != NULL && strcmp(have, val) == 0;
            p = skip_ws(p);
            if (*p == ')') {
                p++;
                break;
            }
            if (*p != ',') {
                return NULL;
            }
            p++;
        }
        *ok = in ? found : !found;
        return p;
    }
    p = token(p, val, sizeof val);
    if (p == NULL) {
        return NULL;
    }
    int eq = have != NULL && strcmp(have, val) == 0;
    *ok = ne ? !eq : eq;
    return p;
}

int kube_label_match(json_t *obj, const char *selector)
{
    json_t *labels = json_object_get(json_object_get(obj, "metadata"), "labels");
    const char *p = skip_ws(selector != NULL ? selector : "");
    int all = 1;
    while (*p != '\0') {
        int ok = 0;
        p = requirement(p, labels, &ok);
        if (p == NULL) {
            return KD_EPARSE;
        }
        all &= ok;
        p = skip_ws(p);
        if (*p == ',') {
            p++;
            if (*skip_ws(p) == '\0') {
                return KD_EPARSE;
            }
        } else if (*p != '\0') {
            return KD_EPARSE;
        }
    }
    return all;
}

/* --- line decoder ---------------------------------------------------------------- */

void kube_linebuf_init(kube_linebuf *lb, size_t max_line)
{
    memset(lb, 0, sizeof *lb);
    lb->max = max_line > 0 ? max_line : (16u << 20);
}

void kube_linebuf_free(kube_linebuf *lb)
{
    free(lb->buf);
    memset(lb, 0, sizeof *lb);
}

static int emit(kube_linebuf *lb, const char *line, size_t len, kube_line_fn fn, void *ud)
{
    (void)lb;
    if (len > 0 && line[len - 1] == '\r') {
        len--;
    }
    if (len == 0) {
        return KD_OK;
    }
    return fn(ud, line, len);
}

static int append(kube_linebuf *lb, const char *data, size_t n)
{
    if (lb->len + n > lb->max) {
        lb->len = 0;
        return KD_ETOOBIG;
    }
    if (lb->len + n + 1 > lb->cap) {
        size_t cap = lb->cap ? lb->cap : 4096;
        while (cap < lb->len + n + 1) {
            cap *= 2;
        }
        char *p = realloc(lb->buf, cap);
        if (p == NULL) {
            return KD_ENOMEM;
        }
        lb->buf = p;
        lb->cap = cap;
    }
    memcpy(lb->buf + lb->len, data, n);
    lb->len += n;
    lb->buf[lb->len] = '\0';
    return KD_OK;
}

int kube_linebuf_feed(kube_linebuf *lb, const char *data, size_t n, kube_line_fn fn,
                      void *ud)
{
    while (n > 0) {
        const char *nl = memchr(data, '\n', n);
        if (nl == NULL) {
            return append(lb, data, n);
        }
        size_t part = (size_t)(nl - data);
        int rc;
        if (lb->len == 0) {
            /* Whole line inside this chunk: no copy. */
            if (part > lb->max) {
                return KD_ETOOBIG;
            }
            rc = emit(lb, data, part, fn, ud);
        } else {
            rc = append(lb, data, part);
            if (rc == KD_OK) {
                rc = emit(lb, lb->buf, lb->len, fn, ud);
                lb->len = 0;
            }
        }
        if (rc != KD_OK) {
            return rc;
        }
        data = nl + 1;
        n -= part + 1;
    }
    return KD_OK;
}

int kube_watch_decode(const char *line, size_t len, kube_event_type *type, json_t **obj,
                      char *err, size_t errlen)
{
    *obj = NULL;
    json_error_t je;
    json_t *ev = json_loadb(line, len, 0, &je);
    if (ev == NULL) {
        return kd_errf(err, errlen, KD_EPARSE, "watch event: invalid JSON: %s (column %d)",
                       je.text, je.column);
    }
    const char *t = json_string_value(json_object_get(ev, "type"));
    json_t *o = json_object_get(ev, "object");
    int rc = KD_OK;
    if (t == NULL) {
        rc = kd_errf(err, errlen, KD_EFORMAT, "watch event: type: expected a string");
    } else if (!json_is_object(o)) {
        rc = kd_errf(err, errlen, KD_EFORMAT, "watch event: object: expected an object");
    } else if (strcmp(t, "ADDED") == 0) {
        *type = KUBE_ADDED;
    } else if (strcmp(t, "MODIFIED") == 0) {
        *type = KUBE_MODIFIED;
    } else if (strcmp(t, "DELETED") == 0) {
        *type = KUBE_DELETED;
    } else if (strcmp(t, "BOOKMARK") == 0) {
        *type = KUBE_BOOKMARK;
    } else if (strcmp(t, "ERROR") == 0) {
        *type = KUBE_ERROR;
    } else {
        rc = kd_errf(err, errlen, KD_EFORMAT, "watch event: unknown type \"%.32s\"", t);
    }
    if (rc == KD_OK && *type != KUBE_ERROR && kube_object_rv(o) == NULL) {
        rc = kd_errf(err, errlen, KD_EFORMAT,
                     "watch event: object.metadata.resourceVersion: expected a string");
    }
    if (rc == KD_OK) {
        *obj = json_incref(o);
    }
    json_decref(ev);
    return rc;
}
