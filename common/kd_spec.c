/*
 * kd_spec: the AgentJob decoder. Walks the document once, field by field, with the path
 * of each field in hand so that every error and warning names it; fills defaults for
 * what is absent (JSON null counts as absent, as `key:` with no value in YAML); and
 * checks the cross-field rules the CRD schema cannot express (max >= min, replicas in
 * range). The first error stops the decode: a user fixes one thing at a time anyway and
 * the message stays precise.
 */
#include "kd_spec.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_cli.h"
#include "kd_error.h"

#define PATH_MAX_LEN 160

typedef struct dec {
    kd_agentjob *job; /* being filled */
    char *err;        /* caller's buffer */
    size_t errlen;
    int nomem;        /* a warning could not be stored */
} dec;

/* ---- messages ------------------------------------------------------------------------ */

void kd_spec_show(const json_t *v, char *out, size_t len)
{
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!s) {
        snprintf(out, len, "an unprintable value");
        return;
    }
    if (strlen(s) > 48)
        snprintf(out, len, "%.45s...", s);
    else
        snprintf(out, len, "%s", s);
    free(s);
}

static int fail(dec *d, const char *path, const char *expect, const json_t *got)
{
    char g[64];
    kd_spec_show(got, g, sizeof g);
    return kd_errf(d->err, d->errlen, KD_EINVALID_OBJECT, "%s: expected %s, got %s", path,
                   expect, g);
}

static int failf(dec *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int failf(dec *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (d->errlen > 0)
        vsnprintf(d->err, d->errlen, fmt, ap);
    va_end(ap);
    return KD_EINVALID_OBJECT;
}

/* out = base + "." + key, truncated to PATH_MAX_LEN (paths are short in practice). */
static void join(char *out, const char *base, const char *key)
{
    size_t bl = strlen(base), kl = strlen(key), n = 0;
    if (bl > PATH_MAX_LEN - 2)
        bl = PATH_MAX_LEN - 2;
    memcpy(out, base, bl);
    n = bl;
    if (bl > 0)
        out[n++] = '.';
    if (kl > PATH_MAX_LEN - 1 - n)
        kl = PATH_MAX_LEN - 1 - n;
    memcpy(out + n, key, kl);
    out[n + kl] = '\0';
}

/* Records the warning "base.key: what" on the job. */
static void warn(dec *d, const char *base, const char *key, const char *what)
{
    char path[PATH_MAX_LEN];
    join(path, base, key);
    kd_agentjob *j = d->job;
    char **w = realloc(j->warnings, (j->n_warnings + 1) * sizeof *w);
    if (!w) {
        d->nomem = 1;
        return;
    }
    j->warnings = w;
    size_t len = strlen(path) + strlen(what) + 3;
    char *s = malloc(len);
    if (!s) {
        d->nomem = 1;
        return;
    }
    snprintf(s, len, "%s: %s", path, what);
    j->warnings[j->n_warnings++] = s;
}

/* ---- typed getters: each returns KD_OK leaving *out untouched when the field is absent */

static const json_t *get(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

/* Warns about every key of obj not in known (NULL-terminated). */
static void unknown_fields(dec *d, const json_t *obj, const char *path,
                           const char *const *known)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val) {
        int found = 0;
        for (const char *const *k = known; *k; k++)
            if (strcmp(*k, key) == 0)
                found = 1;
        if (!found) {
            /* The nearest known name, for a misspelling ("trainig" -> "training"). */
            size_t n = 0;
            while (known[n] != NULL)
                n++;
            const char *near = kd_cli_nearest(key, (const char *const *)known, n);
            char what[160];
            if (near != NULL)
                snprintf(what, sizeof what, "unknown field (ignored; did you mean \"%s\"?)",
                         near);
            else
                snprintf(what, sizeof what, "unknown field (ignored)");
            warn(d, path, key, what);
            if (strcmp(path, "spec") == 0 || strncmp(path, "spec.", 5) == 0)
                d->job->n_unknown_spec++;
        }
    }
}

static int get_object(dec *d, const json_t *obj, const char *key, const char *base,
                      const json_t **out, char *path)
{
    join(path, base, key);
    *out = get(obj, key);
    if (*out && !json_is_object(*out))
        return fail(d, path, "an object", *out);
    return KD_OK;
}

/* Integers, also from reals with an integral value (JSON writers differ). */
static int as_int64(const json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    if (json_is_real(v)) {
        double r = json_real_value(v);
        if (r == floor(r) && fabs(r) < 9.0e15) {
            *out = (int64_t)r;
            return 0;
        }
    }
    return -1;
}

static int get_int(dec *d, const json_t *obj, const char *key, const char *base,
                   int64_t lo, int64_t hi, int64_t *out)
{
    const json_t *v = get(obj, key);
    if (!v)
        return KD_OK;
    char path[PATH_MAX_LEN];
    join(path, base, key);
    int64_t x;
    int is_int = as_int64(v, &x) == 0;
    if (!is_int || x < lo || x > hi) {
        /* Wrong type or sign: say what kind of number; too large: say the range. */
        char expect[96];
        if (is_int && x > hi)
            snprintf(expect, sizeof expect, "an integer in [%lld, %lld]", (long long)lo,
                     (long long)hi);
        else if (lo == 1)
            snprintf(expect, sizeof expect, "a positive integer");
        else if (lo == 0)
            snprintf(expect, sizeof expect, "a non-negative integer");
        else
            snprintf(expect, sizeof expect, "an integer in [%lld, %lld]", (long long)lo,
                     (long long)hi);
        return fail(d, path, expect, v);
    }
    *out = x;
    return KD_OK;
}

static int get_intv(dec *d, const json_t *obj, const char *key, const char *base, int64_t lo,
                    int64_t hi, int *out)
{
    int64_t x = *out;
    int rc = get_int(d, obj, key, base, lo, hi, &x);
    *out = (int)x;
    return rc;
}

/* A number with lo <= x <= hi (lo_open: lo < x). */
static int get_num(dec *d, const json_t *obj, const char *key, const char *base, double lo,
                   int lo_open, double hi, const char *expect, double *out)
{
    const json_t *v = get(obj, key);
    if (!v)
        return KD_OK;
    char path[PATH_MAX_LEN];
    join(path, base, key);
    if (!json_is_number(v))
        return fail(d, path, expect, v);
    double x = json_number_value(v);
    if (!isfinite(x) || (lo_open ? x <= lo : x < lo) || x > hi)
        return fail(d, path, expect, v);
    *out = x;
    return KD_OK;
}

static int get_bool(dec *d, const json_t *obj, const char *key, const char *base, int *out)
{
    const json_t *v = get(obj, key);
    if (!v)
        return KD_OK;
    char path[PATH_MAX_LEN];
    join(path, base, key);
    if (!json_is_boolean(v))
        return fail(d, path, "true or false", v);
    *out = json_is_true(v);
    return KD_OK;
}

/* A non-empty string copied into *out (replacing the default). */
static int get_str(dec *d, const json_t *obj, const char *key, const char *base, char **out)
{
    const json_t *v = get(obj, key);
    if (!v)
        return KD_OK;
    char path[PATH_MAX_LEN];
    join(path, base, key);
    if (!json_is_string(v) || json_string_length(v) == 0)
        return fail(d, path, "a non-empty string", v);
    char *s = strdup(json_string_value(v));
    if (!s)
        return kd_errf(d->err, d->errlen, KD_ENOMEM, "%s: out of memory", path);
    free(*out);
    *out = s;
    return KD_OK;
}

/* One of names[0..n) (exact, case-sensitive, as Kubernetes enums are). */
static int get_enum(dec *d, const json_t *v, const char *path, const char *const *names,
                    int n, int *out)
{
    char expect[128] = "one of ";
    for (int i = 0; i < n; i++) {
        strncat(expect, names[i], sizeof expect - strlen(expect) - 1);
        if (i + 1 < n)
            strncat(expect, ", ", sizeof expect - strlen(expect) - 1);
    }
    if (!json_is_string(v))
        return fail(d, path, expect, v);
    for (int i = 0; i < n; i++) {
        if (strcmp(json_string_value(v), names[i]) == 0) {
            *out = i;
            return KD_OK;
        }
    }
    return fail(d, path, expect, v);
}

static int get_enum_field(dec *d, const json_t *obj, const char *key, const char *base,
                          const char *const *names, int n, int *out)
{
    const json_t *v = get(obj, key);
    if (!v)
        return KD_OK;
    char path[PATH_MAX_LEN];
    join(path, base, key);
    return get_enum(d, v, path, names, n, out);
}

#define TRY(expr)                                                                          \
    do {                                                                                   \
        int rc_ = (expr);                                                                  \
        if (rc_ != KD_OK)                                                                  \
            return rc_;                                                                    \
    } while (0)

static const char *const optimizer_names[] = {"sgd", "adam"};
static const char *const schedule_names[] = {"constant", "cosine", "step"};
static const char *const sync_names[] = {"allreduce", "local-sgd"};
static const char *const exchange_names[] = {"auto", "gradients", "factors"};
static const char *const compression_names[] = {"none", "bf16"};
static const char *const data_plane_names[] = {"authenticated", "curve"};
static const char *const policy_names[] = {"static", "fair", "greedy", "rl"};
static const char *const clean_names[] = {"Running", "All", "None"};

/* ---- quantities ---------------------------------------------------------------------- */

/* Parses "<decimal number><suffix>" with suffix one of the given pairs into units. */
static int quantity(const char *text, int64_t unit_scale, int64_t *out)
{
    if (!text || !*text)
        return KD_EINVAL;
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || errno == ERANGE || !isfinite(v) || v < 0)
        return KD_EINVAL;
    static const struct {
        const char *suffix;
        double mult;
    } suffixes[] = {
        {"", 1.0},        {"m", 1e-3},           {"k", 1e3},           {"M", 1e6},
        {"G", 1e9},       {"T", 1e12},           {"P", 1e15},          {"Ki", 1024.0},
        {"Mi", 1048576.0}, {"Gi", 1073741824.0}, {"Ti", 1099511627776.0},
        {"Pi", 1125899906842624.0},
    };
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        if (strcmp(end, suffixes[i].suffix) == 0) {
            double r = v * suffixes[i].mult * (double)unit_scale;
            if (r > 9.0e18)
                return KD_EINVAL;
            *out = (int64_t)ceil(r - 1e-9);
            return KD_OK;
        }
    }
    return KD_EINVAL;
}

int kd_quantity_cpu_millis(const char *text, int64_t *millis)
{
    return quantity(text, 1000, millis);
}

int kd_quantity_bytes(const char *text, int64_t *bytes)
{
    return quantity(text, 1, bytes);
}

/* A quantity given as a string or a plain YAML number. */
static int get_quantity(dec *d, const json_t *obj, const char *key, const char *base, int cpu,
                        int64_t *out)
{
    const json_t *v = get(obj, key);
    if (!v)
        return KD_OK;
    char path[PATH_MAX_LEN];
    join(path, base, key);
    char buf[64];
    const char *text = NULL;
    if (json_is_string(v)) {
        text = json_string_value(v);
    } else if (json_is_integer(v)) {
        snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
        text = buf;
    } else if (json_is_real(v)) {
        snprintf(buf, sizeof buf, "%.17g", json_real_value(v));
        text = buf;
    }
    int rc = text ? (cpu ? kd_quantity_cpu_millis(text, out) : kd_quantity_bytes(text, out))
                  : KD_EINVAL;
    if (rc != KD_OK)
        return fail(d, path,
                    cpu ? "a CPU quantity such as 1, 0.5 or 500m"
                        : "a memory quantity such as 512Mi or 1G",
                    v);
    return KD_OK;
}

/* ---- sections ------------------------------------------------------------------------ */

static int decode_template(dec *d, const json_t *tpl)
{
    kd_agentjob *j = d->job;
    j->template_ = json_incref((json_t *)tpl);
    const json_t *pod = get(tpl, "spec");
    if (!pod)
        return KD_OK;
    if (!json_is_object(pod))
        return fail(d, "spec.template.spec", "an object", pod);
    const json_t *cs = get(pod, "containers");
    if (!cs)
        return KD_OK;
    if (!json_is_array(cs))
        return fail(d, "spec.template.spec.containers", "a list", cs);
    const json_t *c0 = json_array_get(cs, 0);
    if (!c0)
        return KD_OK;
    if (!json_is_object(c0))
        return fail(d, "spec.template.spec.containers[0]", "an object", c0);
    const json_t *res = get(c0, "resources");
    if (!res)
        return KD_OK;
    if (!json_is_object(res))
        return fail(d, "spec.template.spec.containers[0].resources", "an object", res);
    const json_t *req = get(res, "requests");
    if (!req)
        return KD_OK;
    const char *base = "spec.template.spec.containers[0].resources.requests";
    if (!json_is_object(req))
        return fail(d, base, "an object", req);
    TRY(get_quantity(d, req, "cpu", base, 1, &j->agent_cpu_millis));
    TRY(get_quantity(d, req, "memory", base, 0, &j->agent_memory_bytes));
    return KD_OK;
}

static int decode_schedule(dec *d, const json_t *opt, const char *base)
{
    kd_agentjob *j = d->job;
    char path[PATH_MAX_LEN];
    join(path, base, "schedule");
    const json_t *s = get(opt, "schedule");
    if (!s)
        return KD_OK;
    int v = 0;
    if (json_is_string(s)) {
        TRY(get_enum(d, s, path, schedule_names, 3, &v));
        j->schedule = (kd_spec_schedule)v;
        return KD_OK;
    }
    if (!json_is_object(s))
        return fail(d, path, "a schedule name or an object", s);
    static const char *const known[] = {"type", "warmupEpochs", "minLearningRate",
                                        "stepEpochs", "gamma", NULL};
    unknown_fields(d, s, path, known);
    v = (int)j->schedule;
    TRY(get_enum_field(d, s, "type", path, schedule_names, 3, &v));
    j->schedule = (kd_spec_schedule)v;
    TRY(get_num(d, s, "warmupEpochs", path, 0, 0, 1e6, "a non-negative number",
                &j->warmup_epochs));
    TRY(get_num(d, s, "minLearningRate", path, 0, 0, 1e6, "a non-negative number",
                &j->min_learning_rate));
    TRY(get_num(d, s, "stepEpochs", path, 0, 1, 1e6, "a positive number", &j->step_epochs));
    TRY(get_num(d, s, "gamma", path, 0, 1, 1, "a number in (0, 1]", &j->gamma));
    if (j->min_learning_rate > j->learning_rate) {
        char p[PATH_MAX_LEN];
        join(p, path, "minLearningRate");
        return failf(d, "%s: %g is above the learning rate %g", p, j->min_learning_rate,
                     j->learning_rate);
    }
    return KD_OK;
}

/* model.inputShape and model.layers (type sequential; kd_spec_model.c). The input shape
 * defaults to the dataset format's: idx images [1, 28, 28], csv flat vectors. */
static int decode_model_layers(dec *d, const json_t *o, const char *path, int sequential)
{
    kd_agentjob *j = d->job;
    int csv = strcmp(j->dataset_format, "csv") == 0;
    j->input_shape = csv ? (kd_spec_shape){0, 1, 1} : (kd_spec_shape){1, 28, 28};
    char p[PATH_MAX_LEN];
    join(p, path, "inputShape");
    const json_t *is = get(o, "inputShape");
    if (is) {
        size_t n = json_is_array(is) ? json_array_size(is) : 0;
        int64_t v[3] = {0, 1, 1};
        int ok = n == 1 || n == 3;
        for (size_t i = 0; ok && i < n; i++)
            ok = as_int64(json_array_get(is, i), &v[i]) == 0 && v[i] >= 1 && v[i] <= 65536;
        if (!ok || v[0] * v[1] * v[2] > 65536)
            return fail(d, p, "[channels, height, width] or [features], at most 65536 "
                        "values in all", is);
        j->input_shape = (kd_spec_shape){(int)v[0], (int)v[1], (int)v[2]};
    }
    const json_t *layers = get(o, "layers");
    join(p, path, "layers");
    if (!sequential) {
        if (layers)
            return failf(d, "%s: type mlp takes hidden, not layers (drop type, or use "
                         "type: sequential)", p);
        return KD_OK;
    }
    if (get(o, "hidden")) {
        join(p, path, "hidden");
        return failf(d, "%s: a sequential model takes layers, not hidden", p);
    }
    if (!layers)
        return failf(d, "%s: required with type sequential", p);
    int rc = kd_spec_decode_layers(layers, p, j, d->err, d->errlen);
    if (rc == KD_OK) {
        free(j->model_type);
        j->model_type = strdup("sequential");
        if (!j->model_type)
            return kd_errf(d->err, d->errlen, KD_ENOMEM, "%s: out of memory", path);
    }
    return rc;
}

static int decode_optimizer(dec *d, const json_t *opt, const char *path)
{
    kd_agentjob *j = d->job;
    static const char *const known[] = {"type", "learningRate", "momentum", "weightDecay",
                                        "beta1", "beta2", "epsilon", "schedule", NULL};
    unknown_fields(d, opt, path, known);
    int v = 0;
    TRY(get_enum_field(d, opt, "type", path, optimizer_names, 2, &v));
    j->optimizer = (kd_spec_optimizer)v;
    if (j->optimizer == KD_SPEC_OPT_ADAM)
        j->learning_rate = 0.001;
    TRY(get_num(d, opt, "learningRate", path, 0, 1, 1e3, "a positive number",
                &j->learning_rate));
    TRY(get_num(d, opt, "momentum", path, 0, 0, 0.999999, "a number in [0, 1)",
                &j->momentum));
    TRY(get_num(d, opt, "weightDecay", path, 0, 0, 1e3, "a non-negative number",
                &j->weight_decay));
    TRY(get_num(d, opt, "beta1", path, 0, 0, 0.999999, "a number in [0, 1)", &j->beta1));
    TRY(get_num(d, opt, "beta2", path, 0, 0, 0.999999999, "a number in [0, 1)", &j->beta2));
    TRY(get_num(d, opt, "epsilon", path, 0, 1, 1, "a positive number", &j->epsilon));
    if (j->optimizer == KD_SPEC_OPT_ADAM && get(opt, "momentum")) {
        warn(d, path, "momentum", "ignored by the adam optimizer (use beta1)");
    }
    return decode_schedule(d, opt, path);
}

static int decode_training(dec *d, const json_t *tr)
{
    kd_agentjob *j = d->job;
    const char *base = "spec.training";
    static const char *const known[] = {"dataset", "model", "epochs", "batchSize",
                                        "optimizer", "sync", "adaptive", "targetAccuracy",
                                        NULL};
    unknown_fields(d, tr, base, known);
    char path[PATH_MAX_LEN];
    const json_t *o;

    TRY(get_object(d, tr, "dataset", base, &o, path));
    if (o) {
        static const char *const k[] = {"format", "path", "labelColumn", NULL};
        unknown_fields(d, o, path, k);
        const json_t *f = get(o, "format");
        if (f) {
            char fp[PATH_MAX_LEN];
            join(fp, path, "format");
            static const char *const formats[] = {"idx", "csv"};
            int v = 0;
            TRY(get_enum(d, f, fp, formats, 2, &v));
            TRY(get_str(d, o, "format", path, &j->dataset_format));
        }
        TRY(get_str(d, o, "path", path, &j->dataset_path));
        TRY(get_intv(d, o, "labelColumn", path, -1, 65535, &j->dataset_label_column));
    }

    TRY(get_object(d, tr, "model", base, &o, path));
    if (o) {
        static const char *const k[] = {"type", "hidden", "layers", "inputShape", NULL};
        unknown_fields(d, o, path, k);
        const json_t *t = get(o, "type");
        int v = get(o, "layers") ? 1 : 0;
        if (t) {
            char tp[PATH_MAX_LEN];
            join(tp, path, "type");
            static const char *const types[] = {"mlp", "sequential"};
            TRY(get_enum(d, t, tp, types, 2, &v));
        }
        TRY(decode_model_layers(d, o, path, v));
        const json_t *h = v == 0 ? get(o, "hidden") : NULL;
        if (h) {
            char hp[PATH_MAX_LEN];
            join(hp, path, "hidden");
            if (!json_is_array(h) || json_array_size(h) > KD_SPEC_MAX_HIDDEN) {
                char expect[64];
                snprintf(expect, sizeof expect, "a list of at most %d layer widths",
                         KD_SPEC_MAX_HIDDEN);
                return fail(d, hp, expect, h);
            }
            j->n_hidden = (int)json_array_size(h);
            for (int i = 0; i < j->n_hidden; i++) {
                const json_t *w = json_array_get(h, (size_t)i);
                int64_t x;
                if (as_int64(w, &x) != 0 || x < 1 || x > 65536) {
                    char ip[PATH_MAX_LEN + 16];
                    snprintf(ip, sizeof ip, "%s[%d]", hp, i);
                    return fail(d, ip, "an integer in [1, 65536]", w);
                }
                j->hidden[i] = (int)x;
            }
        }
    }

    TRY(get_intv(d, tr, "epochs", base, 1, 100000, &j->epochs));
    TRY(get_intv(d, tr, "batchSize", base, 1, 65536, &j->batch_size));

    TRY(get_object(d, tr, "optimizer", base, &o, path));
    if (o)
        TRY(decode_optimizer(d, o, path));

    TRY(get_object(d, tr, "sync", base, &o, path));
    if (o) {
        static const char *const k[] = {"mode", "period", "exchange", "compression", NULL};
        unknown_fields(d, o, path, k);
        int v = 0;
        TRY(get_enum_field(d, o, "mode", path, sync_names, 2, &v));
        j->sync_mode = (kd_spec_sync)v;
        int ex = KD_SPEC_EXCHANGE_AUTO;
        TRY(get_enum_field(d, o, "exchange", path, exchange_names, 3, &ex));
        j->sync_exchange = (kd_spec_exchange)ex;
        int cm = KD_SPEC_COMPRESSION_NONE;
        TRY(get_enum_field(d, o, "compression", path, compression_names, 2, &cm));
        j->sync_compression = (kd_spec_compression)cm;
        if (ex == KD_SPEC_EXCHANGE_FACTORS && j->sync_mode == KD_SPEC_SYNC_ALLREDUCE &&
            j->n_layers > 0 &&
            !kd_spec_layers_as_mlp(j, NULL, NULL)) {
            char p[PATH_MAX_LEN];
            join(p, path, "exchange");
            return failf(d, "%s: factors applies to a model of dense layers only (layers[0] "
                         "is %s); use gradients or auto", p,
                         kd_spec_layer_name(j->layers[0].type));
        }
        /* What allreduce mode sends means nothing when parameters are averaged instead. */
        if (j->sync_mode == KD_SPEC_SYNC_LOCAL_SGD) {
            static const char *const why = "ignored with mode local-sgd (parameters are averaged)";
            if (ex != KD_SPEC_EXCHANGE_AUTO)
                warn(d, path, "exchange", why);
            if (cm != KD_SPEC_COMPRESSION_NONE)
                warn(d, path, "compression", why);
        }
        j->sync_period = j->sync_mode == KD_SPEC_SYNC_LOCAL_SGD ? 8 : 1;
        int period = j->sync_period;
        TRY(get_intv(d, o, "period", path, 1, 1000000, &period));
        if (j->sync_mode == KD_SPEC_SYNC_ALLREDUCE && period != 1) {
            warn(d, path, "period", "ignored with mode allreduce (every step is averaged)");
        } else {
            j->sync_period = period;
        }
    }

    /* training.batchSize is decoded above, so the ceiling can be checked against it. */
    TRY(get_object(d, tr, "adaptive", base, &o, path));
    j->max_batch_size = j->batch_size;
    if (o) {
        static const char *const k[] = {"learningRate", "batchSize", "maxBatchSize", NULL};
        unknown_fields(d, o, path, k);
        TRY(get_bool(d, o, "learningRate", path, &j->adaptive_lr));
        TRY(get_bool(d, o, "batchSize", path, &j->adaptive_batch));
        char p[PATH_MAX_LEN];
        join(p, path, "maxBatchSize");
        int max = 0; /* stays 0 when absent: a given value is >= 1 */
        TRY(get_intv(d, o, "maxBatchSize", path, 1, 65536, &max));
        if (!j->adaptive_batch) {
            /* The batch never moves, so a ceiling means nothing; say so rather than
             * letting the user believe it applies. */
            if (max > 0)
                warn(d, path, "maxBatchSize", "ignored unless adaptive.batchSize is true");
        } else if (max == 0) {
            /* Default: room to grow 4x, capped at the same bound as batchSize. */
            j->max_batch_size = j->batch_size > 65536 / 4 ? 65536 : 4 * j->batch_size;
        } else if (max < j->batch_size) {
            return failf(d, "%s: must be >= training.batchSize (%d), got %d", p,
                         j->batch_size, max);
        } else {
            j->max_batch_size = max;
        }
        if (j->adaptive_batch && j->sync_mode == KD_SPEC_SYNC_LOCAL_SGD) {
            /* The noise is measured on gradients every step exchanges. */
            warn(d, path, "batchSize", "needs sync.mode allreduce: with local-sgd every agent "
                                       "keeps training.batchSize");
        }
    }

    TRY(get_num(d, tr, "targetAccuracy", base, 0, 1, 1, "a number in (0, 1]",
                &j->target_accuracy));
    return KD_OK;
}

static int decode_spec(dec *d, const json_t *spec)
{
    kd_agentjob *j = d->job;
    const char *base = "spec";
    static const char *const known[] = {"agents", "replicas", "template", "training",
                                        "checkpoint", "scheduling", "runPolicy", "security",
                                        NULL};
    unknown_fields(d, spec, base, known);
    char path[PATH_MAX_LEN];
    const json_t *o;

    TRY(get_object(d, spec, "agents", base, &o, path));
    if (o) {
        static const char *const k[] = {"min", "max", NULL};
        unknown_fields(d, o, path, k);
        TRY(get_intv(d, o, "min", path, 1, 100000, &j->agents_min));
        j->agents_max = j->agents_min;
        TRY(get_intv(d, o, "max", path, 1, 100000, &j->agents_max));
        if (j->agents_max < j->agents_min)
            return failf(d, "spec.agents.max: %d is below spec.agents.min %d", j->agents_max,
                         j->agents_min);
    }
    TRY(get_intv(d, spec, "replicas", base, 0, 100000, &j->replicas));
    if (j->replicas >= 0 && (j->replicas < j->agents_min || j->replicas > j->agents_max))
        return failf(d, "spec.replicas: %d is outside spec.agents [%d, %d]", j->replicas,
                     j->agents_min, j->agents_max);

    TRY(get_object(d, spec, "template", base, &o, path));
    if (o)
        TRY(decode_template(d, o));

    TRY(get_object(d, spec, "training", base, &o, path));
    if (o)
        TRY(decode_training(d, o));

    TRY(get_object(d, spec, "checkpoint", base, &o, path));
    if (o) {
        static const char *const k[] = {"path", "intervalSeconds", NULL};
        unknown_fields(d, o, path, k);
        TRY(get_str(d, o, "path", path, &j->checkpoint_path));
        TRY(get_intv(d, o, "intervalSeconds", path, 1, 86400 * 365, &j->checkpoint_interval));
    }

    TRY(get_object(d, spec, "security", base, &o, path));
    if (o) {
        static const char *const k[] = {"dataPlane", NULL};
        unknown_fields(d, o, path, k);
        int v = (int)j->data_plane;
        TRY(get_enum_field(d, o, "dataPlane", path, data_plane_names, 2, &v));
        j->data_plane = (kd_spec_data_plane)v;
    }

    TRY(get_object(d, spec, "scheduling", base, &o, path));
    if (o) {
        static const char *const k[] = {"policy", "weights", "priority", NULL};
        unknown_fields(d, o, path, k);
        int v = (int)j->policy;
        TRY(get_enum_field(d, o, "policy", path, policy_names, 4, &v));
        j->policy = (kd_spec_policy)v;
        char wp[PATH_MAX_LEN];
        const json_t *w;
        TRY(get_object(d, o, "weights", path, &w, wp));
        if (w) {
            static const char *const kw[] = {"time", "cost", NULL};
            unknown_fields(d, w, wp, kw);
            TRY(get_num(d, w, "time", wp, 0, 0, 1e6, "a non-negative number",
                        &j->weight_time));
            TRY(get_num(d, w, "cost", wp, 0, 0, 1e6, "a non-negative number",
                        &j->weight_cost));
        }
        TRY(get_intv(d, o, "priority", path, -1000000, 1000000, &j->priority));
    }

    TRY(get_object(d, spec, "runPolicy", base, &o, path));
    if (o) {
        static const char *const k[] = {"backoffLimit", "activeDeadlineSeconds",
                                        "ttlSecondsAfterFinished", "cleanPodPolicy",
                                        "suspend", NULL};
        unknown_fields(d, o, path, k);
        TRY(get_intv(d, o, "backoffLimit", path, 0, 1000000, &j->backoff_limit));
        TRY(get_int(d, o, "activeDeadlineSeconds", path, 0, INT64_MAX / 2,
                    &j->active_deadline));
        TRY(get_int(d, o, "ttlSecondsAfterFinished", path, 0, INT64_MAX / 2,
                    &j->ttl_after_finished));
        int v = (int)j->clean_pod_policy;
        TRY(get_enum_field(d, o, "cleanPodPolicy", path, clean_names, 3, &v));
        j->clean_pod_policy = (kd_spec_clean_pod)v;
        TRY(get_bool(d, o, "suspend", path, &j->suspend));
    }
    return KD_OK;
}

/* RFC 1123 label: the operator derives pod and Service names from the job name. */
static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && i > 0 &&
                                                                        i + 1 < n);
        if (!ok)
            return 0;
    }
    return 1;
}

static int set_defaults(kd_agentjob *j)
{
    j->namespace_ = strdup("default");
    j->agents_min = 1;
    j->agents_max = 1;
    j->replicas = -1;
    j->dataset_format = strdup("idx");
    j->dataset_path = strdup(KD_SPEC_DEFAULT_DATA);
    j->model_type = strdup("mlp");
    j->n_hidden = 2;
    j->hidden[0] = 256;
    j->hidden[1] = 128;
    j->input_shape = (kd_spec_shape){1, 28, 28};
    j->epochs = 10;
    j->batch_size = 64;
    j->max_batch_size = 64; /* = batch_size; decode_training resets it with the batch */
    j->optimizer = KD_SPEC_OPT_SGD;
    j->learning_rate = 0.05;
    j->beta1 = 0.9;
    j->beta2 = 0.999;
    j->epsilon = 1e-8;
    j->schedule = KD_SPEC_SCHED_CONSTANT;
    j->step_epochs = 1.0;
    j->gamma = 0.1;
    j->sync_mode = KD_SPEC_SYNC_ALLREDUCE;
    j->sync_period = 1;
    j->adaptive_lr = 1;
    j->checkpoint_interval = 60;
    j->policy = KD_SPEC_POLICY_RL;
    j->weight_time = 1.0;
    j->weight_cost = 0.1;
    j->backoff_limit = 3;
    j->ttl_after_finished = -1;
    j->clean_pod_policy = KD_SPEC_CLEAN_RUNNING;
    return j->namespace_ && j->dataset_format && j->dataset_path && j->model_type ? KD_OK
                                                                                  : KD_ENOMEM;
}

static int decode_doc(dec *d, const json_t *doc)
{
    kd_agentjob *j = d->job;
    if (!json_is_object(doc))
        return fail(d, "document", "an AgentJob object", doc);
    static const char *const known[] = {"apiVersion", "kind", "metadata", "spec", "status",
                                        NULL};
    unknown_fields(d, doc, "", known);
    const json_t *v = get(doc, "apiVersion");
    if (!v || !json_is_string(v) || strcmp(json_string_value(v), KD_SPEC_API_VERSION) != 0)
        return v ? fail(d, "apiVersion", "\"" KD_SPEC_API_VERSION "\"", v)
                 : failf(d, "apiVersion: required (\"" KD_SPEC_API_VERSION "\")");
    v = get(doc, "kind");
    if (!v || !json_is_string(v) || strcmp(json_string_value(v), KD_SPEC_KIND) != 0)
        return v ? fail(d, "kind", "\"" KD_SPEC_KIND "\"", v)
                 : failf(d, "kind: required (\"" KD_SPEC_KIND "\")");
    const json_t *md = get(doc, "metadata");
    if (!md)
        return failf(d, "metadata: required (an object with a name)");
    if (!json_is_object(md))
        return fail(d, "metadata", "an object", md);
    v = get(md, "name");
    if (!v)
        return failf(d, "metadata.name: required");
    if (!json_is_string(v) || !valid_name(json_string_value(v)))
        return fail(d, "metadata.name",
                    "a name of at most 63 lowercase letters, digits and '-'", v);
    TRY(get_str(d, md, "name", "metadata", &j->name));
    TRY(get_str(d, md, "namespace", "metadata", &j->namespace_));
    const json_t *spec = get(doc, "spec");
    if (!spec)
        return failf(d, "spec: required");
    if (!json_is_object(spec))
        return fail(d, "spec", "an object", spec);
    return decode_spec(d, spec);
}

int kd_agentjob_decode(const json_t *doc, kd_agentjob *job, char *err, size_t errlen)
{
    memset(job, 0, sizeof *job);
    if (set_defaults(job) != KD_OK) {
        kd_agentjob_free(job);
        return kd_errf(err, errlen, KD_ENOMEM, "out of memory");
    }
    dec d = {.job = job, .err = err, .errlen = errlen};
    int rc = decode_doc(&d, doc);
    if (rc == KD_OK && d.nomem)
        rc = kd_errf(err, errlen, KD_ENOMEM, "out of memory");
    if (rc != KD_OK)
        kd_agentjob_free(job);
    return rc;
}

void kd_agentjob_free(kd_agentjob *job)
{
    if (!job)
        return;
    free(job->name);
    free(job->namespace_);
    json_decref(job->template_);
    free(job->dataset_format);
    free(job->dataset_path);
    free(job->model_type);
    free(job->checkpoint_path);
    for (size_t i = 0; i < job->n_warnings; i++)
        free(job->warnings[i]);
    free(job->warnings);
    memset(job, 0, sizeof *job);
}

const char *kd_spec_optimizer_name(kd_spec_optimizer v)
{
    return (unsigned)v < 2 ? optimizer_names[v] : "unknown";
}

const char *kd_spec_schedule_name(kd_spec_schedule v)
{
    return (unsigned)v < 3 ? schedule_names[v] : "unknown";
}

const char *kd_spec_sync_name(kd_spec_sync v)
{
    return (unsigned)v < 2 ? sync_names[v] : "unknown";
}

int kd_spec_batch_ceiling(const kd_agentjob *j, int batch)
{
    return j->adaptive_batch && j->max_batch_size > batch ? j->max_batch_size : batch;
}

const char *kd_spec_exchange_name(kd_spec_exchange v)
{
    return (unsigned)v < 3 ? exchange_names[v] : "unknown";
}

const char *kd_spec_data_plane_name(kd_spec_data_plane v)
{
    return (unsigned)v < 2 ? data_plane_names[v] : "unknown";
}

int kd_spec_data_plane_parse(const char *text, kd_spec_data_plane *out)
{
    for (int i = 0; i < 2; i++)
        if (strcmp(text, data_plane_names[i]) == 0) {
            *out = (kd_spec_data_plane)i;
            return 0;
        }
    return -1;
}

const char *kd_spec_compression_name(kd_spec_compression v)
{
    return (unsigned)v < 2 ? compression_names[v] : "unknown";
}

const char *kd_spec_policy_name(kd_spec_policy v)
{
    return (unsigned)v < 4 ? policy_names[v] : "unknown";
}

const char *kd_spec_clean_pod_name(kd_spec_clean_pod v)
{
    return (unsigned)v < 3 ? clean_names[v] : "unknown";
}
