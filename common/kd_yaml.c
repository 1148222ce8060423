/*
 * kd_yaml: libyaml event stream -> jansson tree. A small explicit stack of open
 * containers replaces recursion so that deeply nested hostile input cannot exhaust the
 * C stack; nesting deeper than KD_YAML_MAX_DEPTH is an error.
 *
 * Hostile input is bounded before it costs memory: every anchor remembers how many
 * nodes and how many levels its value holds, so an alias that would push the document
 * past KD_YAML_MAX_NODES nodes (counting every expansion), past KD_YAML_MAX_DEPTH levels,
 * or a document using more than KD_YAML_MAX_ALIASES aliases is refused before it is
 * copied ("billion laughs" stops after a few kilobytes). A mapping key given twice is an
 * error naming the key, not a silent last-one-wins.
 */
#include "kd_yaml.h"

#include "kd_error.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#define KD_YAML_MAX_DEPTH 128
#define KD_YAML_MAX_ANCHORS 1024
/* Far above any manifest or kubeconfig (the CRD is a few thousand nodes), far below what
 * hurts: 200,000 jansson nodes are about 20 MB. */
#define KD_YAML_MAX_NODES 200000
#define KD_YAML_MAX_ALIASES 10000

struct frame {
    json_t *container; /* object or array being filled (borrowed from its parent) */
    char *key;         /* pending mapping key, or NULL when a key is expected next */
    char *anchor;      /* anchor of this container, registered when it closes */
    long first_node;   /* parser.nodes when it opened: its size is the difference */
    int height;        /* greatest height of its values so far (a scalar's is 0) */
};

struct anchor {
    char *name;
    json_t *value; /* one reference held */
    long nodes;    /* nodes in value (1 for a scalar) */
    int height;    /* container levels in value, itself included (0 for a scalar) */
};

struct parser {
    struct frame stack[KD_YAML_MAX_DEPTH];
    int depth;
    struct anchor anchors[KD_YAML_MAX_ANCHORS];
    int n_anchors;
    json_t *docs;
    json_t *doc;
    long nodes;   /* nodes of the current document, every alias expansion included */
    long aliases; /* aliases used in the current document */
};

static int is_plain_null(const char *s)
{
    return strcmp(s, "") == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
           strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

static json_t *plain_scalar(const char *s)
{
    if (is_plain_null(s))
        return json_null();
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
        return json_true();
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
        return json_false();
    char *end;
    errno = 0;
    const char *digits = (s[0] == '-' || s[0] == '+') ? s + 1 : s;
    if (digits[0] >= '0' && digits[0] <= '9') {
        int base = 10;
        if (digits[0] == '0' && digits[1] == 'x')
            base = 16;
        else if (digits[0] == '0' && digits[1] == 'o')
            base = 8;
        long long v = strtoll(base == 10 ? s : digits + 2, &end, base);
        if (*end == '\0' && errno == 0)
            return json_integer(s[0] == '-' && base != 10 ? -v : v);
    }
    errno = 0;
    double d = strtod(s, &end);
    if (*end == '\0' && end != s && errno == 0 && strspn(s, "+-0123456789.eE") == strlen(s))
        return json_real(d);
    if (!strcmp(s, ".inf") || !strcmp(s, "+.inf"))
        return json_real(INFINITY);
    if (!strcmp(s, "-.inf"))
        return json_real(-INFINITY);
    return json_string(s);
}

static int add_anchor(struct parser *p, const char *name, json_t *value, long nodes,
                      int height)
{
    if (p->n_anchors == KD_YAML_MAX_ANCHORS)
        return KD_ETOOBIG;
    struct anchor *a = &p->anchors[p->n_anchors];
    a->name = strdup(name);
    if (a->name == NULL)
        return KD_ENOMEM;
    a->value = json_incref(value);
    a->nodes = nodes;
    a->height = height;
    p->n_anchors++;
    return KD_OK;
}

static const struct anchor *find_anchor(struct parser *p, const char *name)
{
    for (int i = p->n_anchors - 1; i >= 0; i--)
        if (strcmp(p->anchors[i].name, name) == 0)
            return &p->anchors[i];
    return NULL;
}

/* Counts n more nodes of the document; KD_ETOOBIG past KD_YAML_MAX_NODES. */
static int count_nodes(struct parser *p, long n, char *err, size_t errlen,
                       const yaml_mark_t *mark)
{
    if (n > KD_YAML_MAX_NODES - p->nodes)
        return kd_errf(err, errlen, KD_ETOOBIG,
                       "line %zu column %zu: the document would hold more than %d nodes "
                       "(aliases included)",
                       mark->line + 1, mark->column + 1, KD_YAML_MAX_NODES);
    p->nodes += n;
    return KD_OK;
}

/* A value of `height` container levels was placed in the innermost open container. */
static void note_height(struct parser *p, int height)
{
    if (p->depth > 0 && p->stack[p->depth - 1].height < height)
        p->stack[p->depth - 1].height = height;
}

/* Places value (reference stolen) into the innermost open container, or makes it the
 * document root. is_key_candidate: a scalar string that may be a mapping key. */
static int place(struct parser *p, json_t *value, const char *scalar_text, char *err,
                 size_t errlen, const yaml_mark_t *mark)
{
    if (value == NULL)
        return KD_ENOMEM;
    if (p->depth == 0) {
        json_decref(p->doc);
        p->doc = value;
        return KD_OK;
    }
    struct frame *f = &p->stack[p->depth - 1];
    if (json_is_array(f->container))
        return json_array_append_new(f->container, value) == 0 ? KD_OK : KD_ENOMEM;
    if (f->key == NULL) {
        if (scalar_text == NULL) {
            json_decref(value);
            return kd_errf(err, errlen, KD_EPARSE,
                           "line %zu column %zu: mapping keys must be scalars",
                           mark->line + 1, mark->column + 1);
        }
        json_decref(value);
        if (json_object_get(f->container, scalar_text) != NULL)
            return kd_errf(err, errlen, KD_EPARSE,
                           "line %zu column %zu: duplicate mapping key \"%.100s\"",
                           mark->line + 1, mark->column + 1, scalar_text);
        f->key = strdup(scalar_text);
        return f->key != NULL ? KD_OK : KD_ENOMEM;
    }
    int rc = json_object_set_new(f->container, f->key, value) == 0 ? KD_OK : KD_ENOMEM;
    free(f->key);
    f->key = NULL;
    return rc;
}

static int open_container(struct parser *p, json_t *c, const yaml_char_t *anchor, char *err,
                          size_t errlen, const yaml_mark_t *mark)
{
    if (c == NULL)
        return KD_ENOMEM;
    int crc = count_nodes(p, 1, err, errlen, mark);
    if (crc != KD_OK) {
        json_decref(c);
        return crc;
    }
    if (p->depth == KD_YAML_MAX_DEPTH) {
        json_decref(c);
        return kd_errf(err, errlen, KD_ETOOBIG, "line %zu: nesting deeper than %d levels",
                       mark->line + 1, KD_YAML_MAX_DEPTH);
    }
    if (p->depth > 0 && json_is_object(p->stack[p->depth - 1].container) &&
        p->stack[p->depth - 1].key == NULL) {
        json_decref(c);
        return kd_errf(err, errlen, KD_EPARSE,
                       "line %zu column %zu: mapping keys must be scalars", mark->line + 1,
                       mark->column + 1);
    }
    int rc = place(p, json_incref(c), NULL, err, errlen, mark);
    if (rc != KD_OK) {
        json_decref(c);
        return rc;
    }
    struct frame *f = &p->stack[p->depth++];
    f->container = c;
    json_decref(c); /* the parent (or p->doc) holds it now */
    f->key = NULL;
    f->anchor = anchor != NULL ? strdup((const char *)anchor) : NULL;
    f->first_node = p->nodes - 1;
    f->height = 0;
    return KD_OK;
}

static int close_container(struct parser *p)
{
    struct frame *f = &p->stack[--p->depth];
    int rc = KD_OK;
    note_height(p, f->height + 1);
    if (f->anchor != NULL)
        rc = add_anchor(p, f->anchor, f->container, p->nodes - f->first_node, f->height + 1);
    free(f->anchor);
    free(f->key);
    f->anchor = f->key = NULL;
    return rc;
}

static void parser_release(struct parser *p)
{
    while (p->depth > 0)
        close_container(p);
    for (int i = 0; i < p->n_anchors; i++) {
        free(p->anchors[i].name);
        json_decref(p->anchors[i].value);
    }
    p->n_anchors = 0;
    json_decref(p->doc);
    p->doc = NULL;
}

int kd_yaml_parse(const char *text, size_t len, json_t **docs, char *err, size_t errlen)
{
    *docs = NULL;
    yaml_parser_t yp;
    if (!yaml_parser_initialize(&yp))
        return KD_ENOMEM;
    yaml_parser_set_input_string(&yp, (const unsigned char *)text, len);
    struct parser *p = calloc(1, sizeof *p);
    if (p == NULL) {
        yaml_parser_delete(&yp);
        return KD_ENOMEM;
    }
    p->docs = json_array();
    int rc = p->docs != NULL ? KD_OK : KD_ENOMEM;
    int done = 0;
    while (rc == KD_OK && !done) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&yp, &ev)) {
            rc = kd_errf(err, errlen, KD_EPARSE, "line %zu column %zu: %s",
                         yp.problem_mark.line + 1, yp.problem_mark.column + 1,
                         yp.problem != NULL ? yp.problem : "syntax error");
            break;
        }
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        case YAML_DOCUMENT_START_EVENT:
            json_decref(p->doc);
            p->doc = NULL;
            break;
        case YAML_DOCUMENT_END_EVENT:
            if (p->doc != NULL && !json_is_null(p->doc))
                rc = json_array_append(p->docs, p->doc) == 0 ? KD_OK : KD_ENOMEM;
            for (int i = 0; i < p->n_anchors; i++) {
                free(p->anchors[i].name);
                json_decref(p->anchors[i].value);
            }
            p->n_anchors = 0;
            p->nodes = 0;
            p->aliases = 0;
            break;
        case YAML_MAPPING_START_EVENT:
            rc = open_container(p, json_object(), ev.data.mapping_start.anchor, err, errlen,
                                &ev.start_mark);
            break;
        case YAML_SEQUENCE_START_EVENT:
            rc = open_container(p, json_array(), ev.data.sequence_start.anchor, err, errlen,
                                &ev.start_mark);
            break;
        case YAML_MAPPING_END_EVENT:
        case YAML_SEQUENCE_END_EVENT:
            rc = close_container(p);
            break;
        case YAML_SCALAR_EVENT: {
            const char *s = (const char *)ev.data.scalar.value;
            int quoted = ev.data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
            json_t *v = quoted ? json_string(s) : plain_scalar(s);
            if (v == NULL) /* not valid UTF-8 */
                v = json_string_nocheck(s);
            rc = count_nodes(p, 1, err, errlen, &ev.start_mark);
            if (rc == KD_OK && ev.data.scalar.anchor != NULL && v != NULL)
                rc = add_anchor(p, (const char *)ev.data.scalar.anchor, v, 1, 0);
            if (rc == KD_OK)
                rc = place(p, v, s, err, errlen, &ev.start_mark);
            else
                json_decref(v);
            break;
        }
        case YAML_ALIAS_EVENT: {
            const struct anchor *a = find_anchor(p, (const char *)ev.data.alias.anchor);
            if (a == NULL) {
                rc = kd_errf(err, errlen, KD_EPARSE, "line %zu: unknown alias *%.100s",
                             ev.start_mark.line + 1, ev.data.alias.anchor);
                break;
            }
            if (++p->aliases > KD_YAML_MAX_ALIASES) {
                rc = kd_errf(err, errlen, KD_ETOOBIG,
                             "line %zu: more than %d aliases in one document",
                             ev.start_mark.line + 1, KD_YAML_MAX_ALIASES);
                break;
            }
            if (a->height > 0 && p->depth + a->height > KD_YAML_MAX_DEPTH) {
                rc = kd_errf(err, errlen, KD_ETOOBIG,
                             "line %zu: alias *%.100s nests deeper than %d levels",
                             ev.start_mark.line + 1, ev.data.alias.anchor, KD_YAML_MAX_DEPTH);
                break;
            }
            rc = count_nodes(p, a->nodes, err, errlen, &ev.start_mark);
            if (rc != KD_OK)
                break;
            json_t *v = a->value;
            note_height(p, a->height);
            rc = place(p, json_deep_copy(v), json_is_string(v) ? json_string_value(v) : NULL,
                       err, errlen, &ev.start_mark);
            break;
        }
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    if (rc == KD_OK) {
        *docs = p->docs;
        p->docs = NULL;
    } else if (rc == KD_ENOMEM && err != NULL && errlen > 0 && err[0] == '\0') {
        kd_errf(err, errlen, rc, "out of memory while reading YAML");
    }
    json_decref(p->docs);
    parser_release(p);
    free(p);
    yaml_parser_delete(&yp);
    return rc;
}

int kd_read_file(const char *path, size_t max_bytes, char **data, size_t *len, char *err,
                 size_t errlen)
{
    *data = NULL;
    *len = 0;
    if (max_bytes == 0)
        max_bytes = 16u << 20;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return kd_errf(err, errlen, errno == ENOENT ? KD_ENOTFOUND : KD_EIO, "%s: %s", path,
                       strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    int rc = buf != NULL ? KD_OK : KD_ENOMEM;
    while (rc == KD_OK) {
        if (n == cap) {
            if (cap >= max_bytes) {
                rc = kd_errf(err, errlen, KD_ETOOBIG, "%s: larger than %zu bytes", path,
                             max_bytes);
                break;
            }
            cap = cap * 2 > max_bytes ? max_bytes : cap * 2;
            char *nb = realloc(buf, cap + 1);
            if (nb == NULL) {
                rc = KD_ENOMEM;
                break;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f))
                rc = kd_errf(err, errlen, KD_EIO, "%s: read error", path);
            break;
        }
    }
    fclose(f);
    if (rc != KD_OK) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return KD_OK;
}

int kd_yaml_load_file(const char *path, size_t max_bytes, json_t **docs, char *err,
                      size_t errlen)
{
    char *text;
    size_t len;
    *docs = NULL;
    int rc = kd_read_file(path, max_bytes, &text, &len, err, errlen);
    if (rc != KD_OK)
        return rc;
    char inner[512] = "";
    rc = kd_yaml_parse(text, len, docs, inner, sizeof inner);
    free(text);
    if (rc != KD_OK)
        kd_errf(err, errlen, rc, "%s: %s", path, inner[0] ? inner : kd_strerror(rc));
    return rc;
}
