/*
 * kube_verbs: the API verbs on top of kube_request: URL building (names are checked so
 * that none can change the path; query values are percent-encoded), list validation (a
 * list whose items are not objects with a name and a resourceVersion is an error, not
 * something to cache), pagination, and the DeleteOptions body.
 */
#include "kube_internal.h"

#include "kd_error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- URL building ---------------------------------------------------------------- */

static int name_ok(const char *s)
{
    /* "." and ".." would be resolved as path segments by the server or by curl. */
    if (*s == '\0' || strlen(s) > 253 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) {
        return 0;
    }
    for (; *s != '\0'; s++) {
        char ch = *s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' ||
              ch == ':')) {
            return 0;
        }
    }
    return 1;
}

/* Appends prefix and value at *n unless an earlier append did not fit; sets *over (and
 * leaves buf as it was, terminated) when this one does not fit. */
static void append(char *buf, size_t len, size_t *n, int *over, const char *prefix,
                   const char *value)
{
    size_t pl = strlen(prefix), vl = strlen(value);
    if (*over || *n + pl + vl + 1 > len) {
        *over = 1;
        return;
    }
    memcpy(buf + *n, prefix, pl);
    memcpy(buf + *n + pl, value, vl + 1);
    *n += pl + vl;
}

int kube__path(const kube_resource *r, const char *ns, const char *name, const char *sub,
               char *buf, size_t len, kube_error *e)
{
    const char *parts[] = {r->version, r->plural, ns, name, sub};
    const char *what[] = {"version", "resource", "namespace", "name", "subresource"};
    for (int i = 0; i < 5; i++) {
        if (parts[i] != NULL && (i < 2 || *parts[i] != '\0') && !name_ok(parts[i])) {
            return kube__fail(e, KD_EINVAL, "invalid %s \"%.64s\"", what[i], parts[i]);
        }
    }
    if (r->group != NULL && *r->group != '\0' && !name_ok(r->group)) {
        return kube__fail(e, KD_EINVAL, "invalid group \"%.64s\"", r->group);
    }
    size_t n = 0;
    int over = 0;
    buf[0] = '\0';
    if (r->group == NULL || *r->group == '\0') {
        append(buf, len, &n, &over, "/api/", r->version);
    } else {
        append(buf, len, &n, &over, "/apis/", r->group);
        append(buf, len, &n, &over, "/", r->version);
    }
    if (ns != NULL && *ns != '\0') {
        append(buf, len, &n, &over, "/namespaces/", ns);
    }
    append(buf, len, &n, &over, "/", r->plural);
    if (name != NULL && *name != '\0') {
        append(buf, len, &n, &over, "/", name);
        if (sub != NULL && *sub != '\0') {
            append(buf, len, &n, &over, "/", sub);
        }
    }
    if (over) {
        return kube__fail(e, KD_ETOOBIG, "request path too long");
    }
    return KD_OK;
}

/* Percent-encodes s (RFC 3986 unreserved characters pass) after "key=". */
static void add_param(char *buf, size_t len, size_t *n, const char *key, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = *n;
    if (o + 1 >= len) {
        return;
    }
    o += (size_t)snprintf(buf + o, len - o, "%s%s=", o > 0 ? "&" : "", key);
    for (; *s != '\0' && o + 4 < len; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            buf[o++] = (char)ch;
        } else {
            buf[o++] = '%';
            buf[o++] = hex[ch >> 4];
            buf[o++] = hex[ch & 15];
        }
    }
    buf[o < len ? o : len - 1] = '\0';
    *n = o;
}

int kube__query(const kube_list_opts *o, int watch, char *buf, size_t len)
{
    size_t n = 0;
    char num[32];
    buf[0] = '\0';
    if (watch) {
        add_param(buf, len, &n, "watch", "1");
        add_param(buf, len, &n, "allowWatchBookmarks", "true");
    }
    if (o != NULL) {
        if (o->label_selector != NULL && *o->label_selector != '\0') {
            add_param(buf, len, &n, "labelSelector", o->label_selector);
        }
        if (o->field_selector != NULL && *o->field_selector != '\0') {
            add_param(buf, len, &n, "fieldSelector", o->field_selector);
        }
        if (!watch && o->limit > 0) {
            snprintf(num, sizeof num, "%ld", o->limit);
            add_param(buf, len, &n, "limit", num);
        }
        if (!watch && o->continue_token != NULL && *o->continue_token != '\0') {
            add_param(buf, len, &n, "continue", o->continue_token);
        }
        if (o->resource_version != NULL && *o->resource_version != '\0') {
            add_param(buf, len, &n, "resourceVersion", o->resource_version);
        }
        if (watch && o->timeout_s > 0) {
            snprintf(num, sizeof num, "%ld", o->timeout_s);
            add_param(buf, len, &n, "timeoutSeconds", num);
        }
    }
    return n + 4 < len ? KD_OK : KD_ETOOBIG;
}

/* --- verbs ----------------------------------------------------------------------- */

int kube_get_sub(kube_client *c, const kube_resource *r, const char *ns, const char *name,
                 const char *subresource, json_t **out, kube_error *e)
{
    char path[1024];
    int rc = kube__path(r, kube__ns(c, r, ns, 0), name, subresource, path, sizeof path, e);
    if (rc != KD_OK) {
        return rc;
    }
    if (name == NULL || *name == '\0') {
        return kube__fail(e, KD_EINVAL, "get: empty name");
    }
    return kube_request(c, "GET", path, NULL, NULL, NULL, out, e);
}

int kube_get(kube_client *c, const kube_resource *r, const char *ns, const char *name,
             json_t **out, kube_error *e)
{
    return kube_get_sub(c, r, ns, name, NULL, out, e);
}

int kube_list(kube_client *c, const kube_resource *r, const char *ns,
              const kube_list_opts *o, json_t **out, kube_error *e)
{
    char path[1024], query[4096];
    int rc = kube__path(r, kube__ns(c, r, ns, 1), NULL, NULL, path, sizeof path, e);
    if (rc != KD_OK) {
        return rc;
    }
    if (kube__query(o, 0, query, sizeof query) != KD_OK) {
        return kube__fail(e, KD_ETOOBIG, "list: query too long");
    }
    json_t *list = NULL;
    rc = kube__request(c, "GET", path, query, NULL, NULL, &list, e,
                       o != NULL ? o->cancel : NULL);
    if (rc != KD_OK) {
        return rc;
    }
    json_t *items = json_object_get(list, "items");
    json_t *md = json_object_get(list, "metadata");
    json_t *cont = json_object_get(md, "continue");
    if (!json_is_array(items) && !json_is_null(items) && items != NULL) {
        rc = kube__fail(e, KD_EFORMAT, "list %s: items: expected an array", path);
    } else if (md != NULL && !json_is_object(md)) {
        rc = kube__fail(e, KD_EFORMAT, "list %s: metadata: expected an object", path);
    } else if (!json_is_string(json_object_get(md, "resourceVersion"))) {
        rc = kube__fail(e, KD_EFORMAT, "list %s: metadata.resourceVersion: expected a string",
                        path);
    } else if (cont != NULL && !json_is_string(cont) && !json_is_null(cont)) {
        rc = kube__fail(e, KD_EFORMAT, "list %s: metadata.continue: expected a string", path);
    } else {
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it)
        {
            if (!json_is_object(it) || kube_object_rv(it) == NULL ||
                !json_is_string(json_object_get(json_object_get(it, "metadata"), "name"))) {
                rc = kube__fail(e, KD_EFORMAT,
                                "list %s: items[%zu]: expected an object with "
                                "metadata.name and metadata.resourceVersion",
                                path, i);
                break;
            }
        }
    }
    if (rc != KD_OK) {
        json_decref(list);
        return rc;
    }
    if (out != NULL) {
        *out = list;
    } else {
        json_decref(list);
    }
    return KD_OK;
}

int kube_list_all(kube_client *c, const kube_resource *r, const char *ns,
                  const kube_list_opts *o, json_t **items_out, char **rv_out, kube_error *e)
{
    *items_out = NULL;
    *rv_out = NULL;
    kube_list_opts po = {0};
    if (o != NULL) {
        po = *o;
    }
    int restarted = 0;
    json_t *items = json_array();
    char *cont = NULL;
    char *rv = NULL;
    int rc = items != NULL ? KD_OK : KD_ENOMEM;
    while (rc == KD_OK) {
        po.continue_token = cont;
        json_t *page = NULL;
        rc = kube_list(c, r, ns, &po, &page, e);
        if (rc == KD_EGONE && cont != NULL && !restarted) {
            /* The continue token expired: start over once, from the latest state. */
            restarted = 1;
            json_array_clear(items);
            free(cont);
            cont = NULL;
            po.resource_version = NULL;
            rc = KD_OK;
            continue;
        }
        if (rc != KD_OK) {
            break;
        }
        json_t *md = json_object_get(page, "metadata");
        json_array_extend(items, json_object_get(page, "items"));
        free(rv);
        rv = strdup(json_string_value(json_object_get(md, "resourceVersion")));
        const char *next = json_string_value(json_object_get(md, "continue"));
        free(cont);
        cont = next != NULL && *next != '\0' ? strdup(next) : NULL;
        if (rv == NULL || (next != NULL && *next != '\0' && cont == NULL)) {
            rc = kube__fail(e, KD_ENOMEM, "out of memory");
        }
        json_decref(page);
        if (cont == NULL) {
            break;
        }
        /* Later pages must come from the snapshot of the first. */
        po.resource_version = NULL;
    }
    free(cont);
    if (rc != KD_OK) {
        json_decref(items);
        free(rv);
        return rc;
    }
    *items_out = items;
    *rv_out = rv;
    return KD_OK;
}

int kube_create(kube_client *c, const kube_resource *r, const char *ns, json_t *obj,
                json_t **out, kube_error *e)
{
    char path[1024];
    int rc = kube__path(r, kube__ns(c, r, ns, 0), NULL, NULL, path, sizeof path, e);
    if (rc != KD_OK) {
        return rc;
    }
    return kube_request(c, "POST", path, NULL, obj, NULL, out, e);
}

int kube_update(kube_client *c, const kube_resource *r, const char *ns, const char *name,
                const char *subresource, json_t *obj, json_t **out, kube_error *e)
{
    if (name == NULL) {
        name = json_string_value(json_object_get(json_object_get(obj, "metadata"), "name"));
    }
    if (name == NULL || *name == '\0') {
        return kube__fail(e, KD_EINVAL, "update: no name");
    }
    char path[1024];
    int rc = kube__path(r, kube__ns(c, r, ns, 0), name, subresource, path, sizeof path, e);
    if (rc != KD_OK) {
        return rc;
    }
    return kube_request(c, "PUT", path, NULL, obj, NULL, out, e);
}

int kube_patch(kube_client *c, const kube_resource *r, const char *ns, const char *name,
               const char *subresource, json_t *patch, json_t **out, kube_error *e)
{
    if (name == NULL || *name == '\0') {
        return kube__fail(e, KD_EINVAL, "patch: no name");
    }
    char path[1024];
    int rc = kube__path(r, kube__ns(c, r, ns, 0), name, subresource, path, sizeof path, e);
    if (rc != KD_OK) {
        return rc;
    }
    return kube_request(c, "PATCH", path, NULL, patch, "application/merge-patch+json", out, e);
}

int kube_delete(kube_client *c, const kube_resource *r, const char *ns, const char *name,
                const kube_delete_opts *o, json_t **out, kube_error *e)
{
    if (name == NULL || *name == '\0') {
        return kube__fail(e, KD_EINVAL, "delete: no name");
    }
    char path[1024];
    int rc = kube__path(r, kube__ns(c, r, ns, 0), name, NULL, path, sizeof path, e);
    if (rc != KD_OK) {
        return rc;
    }
    json_t *body = NULL;
    if (o != NULL) {
        body = json_pack("{s:s,s:s}", "apiVersion", "v1", "kind", "DeleteOptions");
        if (body == NULL) {
            return kube__fail(e, KD_ENOMEM, "out of memory");
        }
        if (o->propagation != NULL) {
            json_object_set_new(body, "propagationPolicy", json_string(o->propagation));
        }
        if (o->set_grace) {
            json_object_set_new(body, "gracePeriodSeconds", json_integer(o->grace_period_s));
        }
        if (o->precondition_uid != NULL || o->precondition_rv != NULL) {
            json_t *pre = json_object();
            if (o->precondition_uid != NULL) {
                json_object_set_new(pre, "uid", json_string(o->precondition_uid));
            }
            if (o->precondition_rv != NULL) {
                json_object_set_new(pre, "resourceVersion", json_string(o->precondition_rv));
            }
            json_object_set_new(body, "preconditions", pre);
        }
    }
    rc = kube_request(c, "DELETE", path, NULL, body, NULL, out, e);
    json_decref(body);
    return rc;
}
