/*
 * kube_config: kubeconfig files (through kd_yaml, so YAML becomes json_t) and the
 * in-cluster service-account layout turned into one kube_config.
 *
 * Merging keeps, for every cluster/user/context name, the entry of the first file that
 * defines it together with that file's path and the entry's position, so that relative
 * paths resolve against the right directory and errors name the right file and field.
 */
#include "kube_config.h"

#include "kd_error.h"
#include "kd_yaml.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define KUBE_SA_ROOT "/var/run/secrets/kubernetes.io/serviceaccount"
#define KUBE_CONFIG_MAX_BYTES (4u << 20)

void kube_config_clear(kube_config *cfg)
{
    if (cfg == NULL) {
        return;
    }
    free(cfg->server);
    free(cfg->ca_file);
    free(cfg->ca_data);
    free(cfg->token);
    free(cfg->token_file);
    free(cfg->cert_file);
    free(cfg->cert_data);
    free(cfg->key_file);
    free(cfg->key_data);
    free(cfg->namespace);
    free(cfg->context);
    memset(cfg, 0, sizeof *cfg);
}

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+') {
        return 62;
    }
    if (c == '/') {
        return 63;
    }
    return -1;
}

int kube_base64_decode(const char *in, char **out, size_t *outlen)
{
    size_t n = strlen(in);
    char *buf = malloc(n / 4 * 3 + 4);
    if (buf == NULL) {
        return KD_ENOMEM;
    }
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    int pad = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t') {
            continue;
        }
        if (c == '=') {
            pad++;
            continue;
        }
        int v = b64val(c);
        if (v < 0 || pad > 0) {
            free(buf);
            return KD_EPARSE;
        }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    if (pad > 2 || bits >= 6) {
        free(buf);
        return KD_EPARSE;
    }
    buf[o] = '\0';
    *out = buf;
    *outlen = o;
    return KD_OK;
}

/* --- kubeconfig ------------------------------------------------------------------ */

/* One merged named entry: the inner object, the file it came from and its field path. */
struct named {
    json_t *obj;      /* borrowed from the file's document (docs kept alive) */
    const char *file; /* borrowed from the files list */
    char where[64];   /* e.g. "clusters[2].cluster" */
};

struct merged {
    json_t *docs;          /* array of every loaded document, keeps objects alive */
    json_t *index;         /* "clusters"/"users"/"contexts" -> name -> integer slot */
    struct named *items;   /* slots */
    size_t nitems, capitems;
    const char *current;   /* first non-empty current-context (borrowed) */
    char *files;           /* copy of the list, split in place */
    char *names;           /* the existing files, for messages */
};

static int add_named(struct merged *m, const char *section, const char *inner_key,
                     json_t *arr, const char *file, char *err, size_t errlen)
{
    if (arr == NULL || json_is_null(arr)) {
        return KD_OK;
    }
    if (!json_is_array(arr)) {
        return kd_errf(err, errlen, KD_EFORMAT, "%s: %s: expected a list", file, section);
    }
    json_t *sec = json_object_get(m->index, section);
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        json_t *name = json_object_get(e, "name");
        if (!json_is_object(e) || !json_is_string(name)) {
            return kd_errf(err, errlen, KD_EFORMAT, "%s: %s[%zu].name: expected a string",
                           file, section, i);
        }
        json_t *inner = json_object_get(e, inner_key);
        if (!json_is_object(inner)) {
            return kd_errf(err, errlen, KD_EFORMAT, "%s: %s[%zu].%s: expected a mapping",
                           file, section, i, inner_key);
        }
        if (json_object_get(sec, json_string_value(name)) != NULL) {
            continue; /* first file wins */
        }
        if (m->nitems == m->capitems) {
            size_t cap = m->capitems ? m->capitems * 2 : 16;
            struct named *p = realloc(m->items, cap * sizeof *p);
            if (p == NULL) {
                return KD_ENOMEM;
            }
            m->items = p;
            m->capitems = cap;
        }
        struct named *slot = &m->items[m->nitems];
        slot->obj = inner;
        slot->file = file;
        snprintf(slot->where, sizeof slot->where, "%s[%zu].%s", section, i, inner_key);
        json_object_set_new(sec, json_string_value(name), json_integer((json_int_t)m->nitems));
        m->nitems++;
    }
    return KD_OK;
}

static struct named *lookup(struct merged *m, const char *section, const char *name)
{
    json_t *slot = json_object_get(json_object_get(m->index, section), name);
    return slot != NULL ? &m->items[json_integer_value(slot)] : NULL;
}

static int load_files(struct merged *m, const char *paths, char *err, size_t errlen)
{
    m->files = strdup(paths);
    m->names = calloc(1, strlen(paths) + 1);
    m->docs = json_array();
    m->index = json_pack("{s{}s{}s{}}", "clusters", "users", "contexts");
    if (m->files == NULL || m->names == NULL || m->docs == NULL || m->index == NULL) {
        return KD_ENOMEM;
    }
    int found = 0;
    char *p = m->files;
    while (p != NULL) {
        char *file = p;
        char *colon = strchr(p, ':');
        if (colon != NULL) {
            *colon = '\0';
            p = colon + 1;
        } else {
            p = NULL;
        }
        struct stat st;
        if (*file == '\0' || (stat(file, &st) != 0 && errno == ENOENT)) {
            continue;
        }
        /* names is as long as paths and holds a subset of it: always fits. */
        size_t used = strlen(m->names);
        size_t flen = strlen(file);
        if (found++) {
            m->names[used++] = ':';
        }
        memcpy(m->names + used, file, flen + 1);
        json_t *docs = NULL;
        int rc = kd_yaml_load_file(file, KUBE_CONFIG_MAX_BYTES, &docs, err, errlen);
        if (rc != KD_OK) {
            return rc;
        }
        json_array_append_new(m->docs, docs);
        if (json_array_size(docs) == 0) {
            continue;
        }
        json_t *doc = json_array_get(docs, 0);
        if (!json_is_object(doc)) {
            return kd_errf(err, errlen, KD_EFORMAT, "%s: top level: expected a mapping",
                           file);
        }
        json_t *cur = json_object_get(doc, "current-context");
        if (cur != NULL && !json_is_null(cur) && !json_is_string(cur)) {
            return kd_errf(err, errlen, KD_EFORMAT, "%s: current-context: expected a string",
                           file);
        }
        if (m->current == NULL && json_is_string(cur) && json_string_length(cur) > 0) {
            m->current = json_string_value(cur);
        }
        rc = add_named(m, "clusters", "cluster", json_object_get(doc, "clusters"), file, err,
                       errlen);
        if (rc == KD_OK) {
            rc = add_named(m, "users", "user", json_object_get(doc, "users"), file, err,
                           errlen);
        }
        if (rc == KD_OK) {
            rc = add_named(m, "contexts", "context", json_object_get(doc, "contexts"), file,
                           err, errlen);
        }
        if (rc != KD_OK) {
            return rc;
        }
    }
    if (!found) {
        return kd_errf(err, errlen, KD_ENOTFOUND, "kubeconfig: none of \"%s\" exists", paths);
    }
    return KD_OK;
}

/* Optional string field: absent/null -> *out NULL; wrong type -> error naming it. */
static int opt_string(const struct named *n, const char *field, const char **out, char *err,
                      size_t errlen)
{
    json_t *v = json_object_get(n->obj, field);
    *out = NULL;
    if (v == NULL || json_is_null(v)) {
        return KD_OK;
    }
    if (!json_is_string(v)) {
        return kd_errf(err, errlen, KD_EFORMAT, "%s: %s.%s: expected a string", n->file,
                       n->where, field);
    }
    *out = json_string_value(v);
    return KD_OK;
}

/* A path from the kubeconfig, made absolute against the defining file's directory. */
static int resolve_path(const struct named *n, const char *path, char **out)
{
    if (path[0] == '/') {
        *out = strdup(path);
        return *out != NULL ? KD_OK : KD_ENOMEM;
    }
    const char *slash = strrchr(n->file, '/');
    size_t dirlen = slash != NULL ? (size_t)(slash - n->file) : 1;
    const char *dir = slash != NULL ? n->file : ".";
    size_t len = dirlen + 1 + strlen(path) + 1;
    *out = malloc(len);
    if (*out == NULL) {
        return KD_ENOMEM;
    }
    snprintf(*out, len, "%.*s/%s", (int)dirlen, dir, path);
    return KD_OK;
}

static int path_field(const struct named *n, const char *field, char **out, char *err,
                      size_t errlen)
{
    const char *s;
    int rc = opt_string(n, field, &s, err, errlen);
    if (rc != KD_OK || s == NULL || *s == '\0') {
        return rc;
    }
    return resolve_path(n, s, out);
}

static int data_field(const struct named *n, const char *field, char **out, size_t *len,
                      char *err, size_t errlen)
{
    const char *s;
    int rc = opt_string(n, field, &s, err, errlen);
    if (rc != KD_OK || s == NULL || *s == '\0') {
        return rc;
    }
    rc = kube_base64_decode(s, out, len);
    if (rc == KD_EPARSE) {
        return kd_errf(err, errlen, KD_EPARSE, "%s: %s.%s: invalid base64", n->file,
                       n->where, field);
    }
    return rc;
}

static int dup_field(const struct named *n, const char *field, char **out, char *err,
                     size_t errlen)
{
    const char *s;
    int rc = opt_string(n, field, &s, err, errlen);
    if (rc != KD_OK || s == NULL) {
        return rc;
    }
    *out = strdup(s);
    return *out != NULL ? KD_OK : KD_ENOMEM;
}

static int fill_from(struct merged *m, const char *ctxname, kube_config *cfg, char *err,
                     size_t errlen)
{
    struct named *ctx = lookup(m, "contexts", ctxname);
    if (ctx == NULL) {
        return kd_errf(err, errlen, KD_ENOTFOUND, "%s: context \"%s\" not found", m->names,
                       ctxname);
    }
    const char *cluster_name, *user_name, *ns;
    int rc = opt_string(ctx, "cluster", &cluster_name, err, errlen);
    if (rc == KD_OK) {
        rc = opt_string(ctx, "user", &user_name, err, errlen);
    }
    if (rc == KD_OK) {
        rc = opt_string(ctx, "namespace", &ns, err, errlen);
    }
    if (rc != KD_OK) {
        return rc;
    }
    if (cluster_name == NULL) {
        return kd_errf(err, errlen, KD_EFORMAT, "%s: %s.cluster: missing", ctx->file,
                       ctx->where);
    }
    struct named *cl = lookup(m, "clusters", cluster_name);
    if (cl == NULL) {
        return kd_errf(err, errlen, KD_ENOTFOUND, "%s: %s.cluster: cluster \"%s\" not found",
                       ctx->file, ctx->where, cluster_name);
    }
    const char *server;
    rc = opt_string(cl, "server", &server, err, errlen);
    if (rc != KD_OK) {
        return rc;
    }
    if (server == NULL || *server == '\0') {
        return kd_errf(err, errlen, KD_EFORMAT, "%s: %s.server: missing", cl->file,
                       cl->where);
    }
    if (strncmp(server, "https://", 8) != 0 && strncmp(server, "http://", 7) != 0) {
        return kd_errf(err, errlen, KD_EFORMAT,
                       "%s: %s.server: \"%s\" is not an http(s) URL", cl->file, cl->where,
                       server);
    }
    json_t *insecure = json_object_get(cl->obj, "insecure-skip-tls-verify");
    if (insecure != NULL && !json_is_null(insecure) && !json_is_boolean(insecure)) {
        return kd_errf(err, errlen, KD_EFORMAT,
                       "%s: %s.insecure-skip-tls-verify: expected true or false", cl->file,
                       cl->where);
    }
    cfg->insecure = json_is_true(insecure);
    cfg->server = strdup(server);
    if (cfg->server == NULL) {
        return KD_ENOMEM;
    }
    size_t sl = strlen(cfg->server);
    while (sl > 0 && cfg->server[sl - 1] == '/') {
        cfg->server[--sl] = '\0';
    }
    rc = path_field(cl, "certificate-authority", &cfg->ca_file, err, errlen);
    if (rc == KD_OK) {
        rc = data_field(cl, "certificate-authority-data", &cfg->ca_data, &cfg->ca_data_len, err,
                        errlen);
    }
    if (rc != KD_OK) {
        return rc;
    }
    if (user_name != NULL && *user_name != '\0') {
        struct named *u = lookup(m, "users", user_name);
        if (u == NULL) {
            return kd_errf(err, errlen, KD_ENOTFOUND, "%s: %s.user: user \"%s\" not found",
                           ctx->file, ctx->where, user_name);
        }
        rc = dup_field(u, "token", &cfg->token, err, errlen);
        if (rc == KD_OK) {
            rc = path_field(u, "tokenFile", &cfg->token_file, err, errlen);
        }
        if (rc == KD_OK) {
            rc = path_field(u, "client-certificate", &cfg->cert_file, err, errlen);
        }
        if (rc == KD_OK) {
            rc = data_field(u, "client-certificate-data", &cfg->cert_data, &cfg->cert_data_len,
                            err, errlen);
        }
        if (rc == KD_OK) {
            rc = path_field(u, "client-key", &cfg->key_file, err, errlen);
        }
        if (rc == KD_OK) {
            rc = data_field(u, "client-key-data", &cfg->key_data, &cfg->key_data_len, err,
                            errlen);
        }
        if (rc != KD_OK) {
            return rc;
        }
        int has_cred = cfg->token != NULL || cfg->token_file != NULL ||
                       cfg->cert_file != NULL || cfg->cert_data != NULL;
        if (!has_cred && (json_object_get(u->obj, "exec") != NULL ||
                          json_object_get(u->obj, "auth-provider") != NULL)) {
            return kd_errf(err, errlen, KD_EUNSUPPORTED,
                           "%s: %s: exec and auth-provider credentials are not supported; "
                           "use a token or a client certificate",
                           u->file, u->where);
        }
        if ((cfg->cert_file != NULL || cfg->cert_data != NULL) !=
            (cfg->key_file != NULL || cfg->key_data != NULL)) {
            return kd_errf(err, errlen, KD_EFORMAT,
                           "%s: %s: client-certificate and client-key must be given together",
                           u->file, u->where);
        }
    }
    cfg->namespace = strdup(ns != NULL && *ns != '\0' ? ns : "default");
    cfg->context = strdup(ctxname);
    return cfg->namespace != NULL && cfg->context != NULL ? KD_OK : KD_ENOMEM;
}

int kube_config_load(const char *paths, const char *context, kube_config *cfg, char *err,
                     size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    char fallback[4096];
    if (paths == NULL || *paths == '\0') {
        paths = getenv("KUBECONFIG");
    }
    if (paths == NULL || *paths == '\0') {
        const char *home = getenv("HOME");
        snprintf(fallback, sizeof fallback, "%s/.kube/config", home != NULL ? home : "");
        paths = fallback;
    }
    struct merged m;
    memset(&m, 0, sizeof m);
    int rc = load_files(&m, paths, err, errlen);
    if (rc == KD_OK) {
        const char *name = context != NULL && *context != '\0' ? context : m.current;
        if (name == NULL) {
            rc = kd_errf(err, errlen, KD_ENOTFOUND,
                         "%s: current-context: not set and no context given", m.names);
        } else {
            rc = fill_from(&m, name, cfg, err, errlen);
        }
    }
    if (rc == KD_ENOMEM) {
        kd_errf(err, errlen, rc, "kubeconfig: out of memory");
    }
    if (rc != KD_OK) {
        kube_config_clear(cfg);
    }
    json_decref(m.docs);
    json_decref(m.index);
    free(m.items);
    free(m.files);
    free(m.names);
    return rc;
}

/* --- in-cluster ------------------------------------------------------------------ */

int kube_config_in_cluster(const char *root, const char *host, const char *port,
                           kube_config *cfg, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    if (root == NULL) {
        root = KUBE_SA_ROOT;
    }
    if (host == NULL) {
        host = getenv("KUBERNETES_SERVICE_HOST");
    }
    if (port == NULL) {
        port = getenv("KUBERNETES_SERVICE_PORT");
    }
    if (host == NULL || *host == '\0') {
        return kd_errf(err, errlen, KD_ENOTFOUND,
                       "in-cluster: KUBERNETES_SERVICE_HOST is not set");
    }
    if (port == NULL || *port == '\0') {
        port = "443";
    }
    for (const char *c = port; *c != '\0'; c++) {
        if (*c < '0' || *c > '9') {
            return kd_errf(err, errlen, KD_EFORMAT,
                           "in-cluster: KUBERNETES_SERVICE_PORT: \"%s\" is not a port", port);
        }
    }
    char buf[4096];
    int v6 = strchr(host, ':') != NULL && host[0] != '[';
    snprintf(buf, sizeof buf, "https://%s%s%s:%s", v6 ? "[" : "", host, v6 ? "]" : "", port);
    cfg->server = strdup(buf);
    snprintf(buf, sizeof buf, "%s/token", root);
    cfg->token_file = strdup(buf);
    snprintf(buf, sizeof buf, "%s/ca.crt", root);
    cfg->ca_file = strdup(buf);
    cfg->context = strdup("in-cluster");
    if (cfg->server == NULL || cfg->token_file == NULL || cfg->ca_file == NULL ||
        cfg->context == NULL) {
        kube_config_clear(cfg);
        return kd_errf(err, errlen, KD_ENOMEM, "in-cluster: out of memory");
    }
    char *data = NULL;
    size_t len = 0;
    int rc = kd_read_file(cfg->token_file, 1 << 20, &data, &len, err, errlen);
    if (rc == KD_OK && len == 0) {
        rc = kd_errf(err, errlen, KD_EFORMAT, "%s: token: empty", cfg->token_file);
    }
    free(data);
    struct stat st;
    if (rc == KD_OK && stat(cfg->ca_file, &st) != 0) {
        rc = kd_errf(err, errlen, KD_ENOTFOUND, "%s: ca.crt: %s", cfg->ca_file,
                     strerror(errno));
    }
    if (rc != KD_OK) {
        kube_config_clear(cfg);
        return rc;
    }
    snprintf(buf, sizeof buf, "%s/namespace", root);
    char nerr[16];
    if (kd_read_file(buf, 4096, &data, &len, nerr, sizeof nerr) == KD_OK) {
        while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == ' ' ||
                           data[len - 1] == '\r')) {
            data[--len] = '\0';
        }
        if (len > 0) {
            cfg->namespace = data;
        } else {
            free(data);
        }
    }
    if (cfg->namespace == NULL) {
        cfg->namespace = strdup("default");
        if (cfg->namespace == NULL) {
            kube_config_clear(cfg);
            return KD_ENOMEM;
        }
    }
    return KD_OK;
}

int kube_config_auto(const char *context, kube_config *cfg, char *err, size_t errlen)
{
    const char *host = getenv("KUBERNETES_SERVICE_HOST");
    struct stat st;
    if (host != NULL && *host != '\0' && stat(KUBE_SA_ROOT "/token", &st) == 0) {
        return kube_config_in_cluster(NULL, NULL, NULL, cfg, err, errlen);
    }
    return kube_config_load(NULL, context, cfg, err, errlen);
}
