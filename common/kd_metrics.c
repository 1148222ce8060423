/* kd_metrics: encoder and strict decoder of the coordinator's metrics message (see
 * kd_metrics.h). The scalar fields are one table (key, presence bit, kind, offset,
 * range), read by both directions, so a key is spelled once. */
#include "kd_metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_error.h"

typedef enum field_kind { F_INT, F_LLONG, F_NUM, F_STR } field_kind;

typedef struct field {
    const char *key;   /* JSON key */
    unsigned bit;      /* presence bit */
    field_kind kind;
    size_t off;        /* offset in the struct */
    size_t size;       /* F_STR: buffer size */
    double lo, hi;     /* numbers: accepted range */
} field;

#define FI(k, b, f, lo, hi) {k, b, F_INT, offsetof(kd_metrics, f), 0, lo, hi}
#define FL(k, b, f, lo, hi) {k, b, F_LLONG, offsetof(kd_metrics, f), 0, lo, hi}
#define FN(k, b, f, lo, hi) {k, b, F_NUM, offsetof(kd_metrics, f), 0, lo, hi}
#define FS(k, b, f) {k, b, F_STR, offsetof(kd_metrics, f), sizeof(((kd_metrics *)0)->f), 0, 0}

static const field msg_fields[] = {
    FS("job", KD_MET_JOB, job),
    FS("state", KD_MET_STATE, state),
    FL("generation", KD_MET_GENERATION, generation, 0, 4294967295.0),
    FI("agents", KD_MET_AGENTS, agents, 0, 1e6),
    FL("epoch", KD_MET_EPOCH, epoch, 0, 1e9),
    FL("step", KD_MET_STEP, step, 0, 9e15),
    FL("samples", KD_MET_SAMPLES, samples, 0, 9e15),
    FN("samples_per_s", KD_MET_SAMPLES_PER_S, samples_per_s, 0, 1e12),
    FN("compute_ms", KD_MET_COMPUTE_MS, compute_ms, 0, 1e15),
    FN("comm_ms", KD_MET_COMM_MS, comm_ms, 0, 1e15),
    FN("loss", KD_MET_LOSS, loss, 0, 1e30),
    FN("accuracy", KD_MET_ACCURACY, accuracy, 0, 1),
    FN("wall_seconds", KD_MET_WALL_SECONDS, wall_seconds, 0, 1e12),
    FI("epochs", KD_MET_EPOCHS, epochs, 0, 1e9),
    FI("batch", KD_MET_BATCH, batch, 0, 1 << 20),
    FS("checkpoint", KD_MET_CHECKPOINT, checkpoint),
    FS("checkpoint_error", KD_MET_CHECKPOINT_ERROR, checkpoint_error),
    FN("lr", KD_MET_LR, lr, 0, 1e9),
    FI("epochs_done", KD_MET_EPOCHS_DONE, epochs_done, 0, 1e9),
    FN("noise_scale", KD_MET_NOISE, noise_scale, 0, 1e30),
    FN("noise_g2", KD_MET_NOISE, noise_g2, -1e30, 1e30),
    FN("noise_s", KD_MET_NOISE, noise_s, -1e30, 1e30),
};

#define EI(k, b, f, lo, hi) {k, b, F_INT, offsetof(kd_metrics_epoch, f), 0, lo, hi}
#define EN(k, b, f, lo, hi) {k, b, F_NUM, offsetof(kd_metrics_epoch, f), 0, lo, hi}

/* Epoch record: bit 0 = required. */
static const field epoch_fields[] = {
    EI("epoch", 0, epoch, 1, 1e9),
    EN("accuracy", 0, accuracy, 0, 1),
    EN("train_loss", 0, train_loss, 0, 1e30),
    EN("wall_seconds", 0, wall_seconds, 0, 1e12),
    EN("train_seconds", 0, train_seconds, -1e12, 1e12),
    EN("epoch_seconds", 0, epoch_seconds, 0, 1e9),
    EI("agents", 0, agents, 0, 1e6),
    EI("batch", 0, batch, 0, 1 << 20),
    EN("lr", KD_MET_EPOCH_LR, lr, 0, 1e9),
    EN("samples_per_s", KD_MET_EPOCH_SAMPLES_PER_S, samples_per_s, 0, 1e12),
};

#define CI(k, f, lo, hi) {k, 0, F_INT, offsetof(kd_metrics_config, f), 0, lo, hi}
#define CN(k, f, lo, hi) {k, 0, F_NUM, offsetof(kd_metrics_config, f), 0, lo, hi}

static const field config_fields[] = {
    CI("agents", agents, 1, 1e6),
    CI("batch", batch, 1, 1 << 20),
    CN("samples_per_s", samples_per_s, 0, 1e12),
    CN("step_ms", step_ms, 0, 1e9),
    CN("compute_ms", compute_ms, 0, 1e9),
};

#define NFIELDS(t) (sizeof(t) / sizeof((t)[0]))

/* Sets one field of obj from base; 0, or -1 when out of memory. */
static int put_field(json_t *obj, const field *f, const void *base)
{
    const char *p = (const char *)base + f->off;
    json_t *v = NULL;
    switch (f->kind) {
    case F_INT:
        v = json_integer(*(const int *)p);
        break;
    case F_LLONG:
        v = json_integer(*(const long long *)p);
        break;
    case F_NUM:
        v = json_real(*(const double *)p);
        break;
    case F_STR:
        v = json_stringn(p, strnlen(p, f->size - 1));
        break;
    }
    return v != NULL ? json_object_set_new(obj, f->key, v) : -1;
}

/* Reads one field of obj into base: 1 set, 0 absent, -1 wrong (detail in err). */
static int get_field(const json_t *obj, const field *f, void *base, const char *where,
                     char *err, size_t errlen)
{
    const json_t *v = json_object_get(obj, f->key);
    char *p = (char *)base + f->off;
    if (v == NULL)
        return 0;
    if (f->kind == F_STR) {
        if (!json_is_string(v)) {
            kd_errf(err, errlen, KD_EINVAL, "%s%s: not a string", where, f->key);
            return -1;
        }
        size_t n = json_string_length(v);
        if (n >= f->size || memchr(json_string_value(v), '\0', n) != NULL) {
            kd_errf(err, errlen, KD_EINVAL, "%s%s: string of %zu bytes (at most %zu)", where,
                    f->key, n, f->size - 1);
            return -1;
        }
        memcpy(p, json_string_value(v), n + 1);
        return 1;
    }
    if (!json_is_number(v)) {
        kd_errf(err, errlen, KD_EINVAL, "%s%s: not a number", where, f->key);
        return -1;
    }
    double d = json_number_value(v);
    if (!(d >= f->lo && d <= f->hi)) {
        kd_errf(err, errlen, KD_EINVAL, "%s%s: %g outside [%g, %g]", where, f->key, d, f->lo,
                f->hi);
        return -1;
    }
    if (f->kind == F_INT)
        *(int *)p = json_is_integer(v) ? (int)json_integer_value(v) : (int)d;
    else if (f->kind == F_LLONG)
        *(long long *)p = json_is_integer(v) ? (long long)json_integer_value(v) : (long long)d;
    else
        *(double *)p = d;
    return 1;
}

json_t *kd_metrics_epoch_to_json(const kd_metrics_epoch *e)
{
    json_t *o = json_object();
    for (size_t i = 0; o != NULL && i < NFIELDS(epoch_fields); i++) {
        const field *f = &epoch_fields[i];
        if ((f->bit == 0 || (e->has & f->bit)) && put_field(o, f, e) != 0) {
            json_decref(o);
            o = NULL;
        }
    }
    return o;
}

int kd_metrics_epoch_decode(const json_t *o, kd_metrics_epoch *e, char *err, size_t errlen)
{
    memset(e, 0, sizeof *e);
    if (!json_is_object(o))
        return kd_errf(err, errlen, KD_EINVAL, "last_epoch: not an object");
    for (size_t i = 0; i < NFIELDS(epoch_fields); i++) {
        const field *f = &epoch_fields[i];
        int r = get_field(o, f, e, "last_epoch.", err, errlen);
        if (r < 0 || (r == 0 && f->bit == 0)) {
            if (r == 0)
                kd_errf(err, errlen, KD_EINVAL, "last_epoch.%s: missing", f->key);
            memset(e, 0, sizeof *e);
            return KD_EINVAL;
        }
        if (r > 0)
            e->has |= f->bit;
    }
    return KD_OK;
}

char *kd_metrics_encode(const kd_metrics *m, size_t *len)
{
    json_t *o = json_object();
    int bad = o == NULL;
    for (size_t i = 0; !bad && i < NFIELDS(msg_fields); i++)
        if ((m->has & msg_fields[i].bit) && put_field(o, &msg_fields[i], m) != 0)
            bad = 1;
    if (!bad && (m->has & KD_MET_LAST_EPOCH)) {
        json_t *e = kd_metrics_epoch_to_json(&m->last_epoch);
        bad = e == NULL || json_object_set_new(o, "last_epoch", e) != 0;
    }
    if (!bad && (m->has & KD_MET_CONFIGS)) {
        json_t *a = json_array();
        int n = m->n_configs < 0 ? 0
                : m->n_configs > KD_METRICS_MAX_CONFIGS ? KD_METRICS_MAX_CONFIGS
                                                        : m->n_configs;
        for (int i = 0; a != NULL && i < n; i++) {
            json_t *c = json_object();
            for (size_t k = 0; c != NULL && k < NFIELDS(config_fields); k++)
                if (put_field(c, &config_fields[k], &m->configs[i]) != 0) {
                    json_decref(c);
                    c = NULL;
                }
            if (c == NULL || json_array_append_new(a, c) != 0) {
                json_decref(a);
                a = NULL;
            }
        }
        bad = a == NULL || json_object_set_new(o, "configs", a) != 0;
    }
    char *text = bad ? NULL : json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6));
    json_decref(o);
    if (text != NULL && len != NULL)
        *len = strlen(text);
    return text;
}

static int decode_configs(const json_t *a, kd_metrics *m, char *err, size_t errlen)
{
    if (!json_is_array(a))
        return kd_errf(err, errlen, KD_EINVAL, "configs: not an array");
    if (json_array_size(a) > KD_METRICS_MAX_CONFIGS)
        return kd_errf(err, errlen, KD_EINVAL, "configs: %zu entries (at most %d)",
                       json_array_size(a), KD_METRICS_MAX_CONFIGS);
    for (size_t i = 0; i < json_array_size(a); i++) {
        const json_t *c = json_array_get(a, i);
        char where[32];
        snprintf(where, sizeof where, "configs[%zu].", i);
        if (!json_is_object(c))
            return kd_errf(err, errlen, KD_EINVAL, "configs[%zu]: not an object", i);
        for (size_t k = 0; k < NFIELDS(config_fields); k++) {
            int r = get_field(c, &config_fields[k], &m->configs[i], where, err, errlen);
            if (r == 0)
                return kd_errf(err, errlen, KD_EINVAL, "%s%s: missing", where,
                               config_fields[k].key);
            if (r < 0)
                return KD_EINVAL;
        }
        m->n_configs++;
    }
    return KD_OK;
}

int kd_metrics_decode_obj(const json_t *o, kd_metrics *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    if (!json_is_object(o))
        return kd_errf(err, errlen, KD_EINVAL, "metrics: not a JSON object");
    int rc = KD_OK;
    for (size_t i = 0; rc == KD_OK && i < NFIELDS(msg_fields); i++) {
        int r = get_field(o, &msg_fields[i], m, "", err, errlen);
        if (r < 0)
            rc = KD_EINVAL;
        else if (r > 0)
            m->has |= msg_fields[i].bit;
    }
    /* The noise is the three numbers together, or none of them. */
    if (rc == KD_OK && (m->has & KD_MET_NOISE) &&
        (json_object_get(o, "noise_scale") == NULL || json_object_get(o, "noise_g2") == NULL ||
         json_object_get(o, "noise_s") == NULL))
        rc = kd_errf(err, errlen, KD_EINVAL,
                     "noise_scale, noise_g2 and noise_s: all three or none");
    const json_t *le = json_object_get(o, "last_epoch");
    if (rc == KD_OK && le != NULL) {
        rc = kd_metrics_epoch_decode(le, &m->last_epoch, err, errlen);
        m->has |= KD_MET_LAST_EPOCH;
    }
    const json_t *cf = json_object_get(o, "configs");
    if (rc == KD_OK && cf != NULL) {
        rc = decode_configs(cf, m, err, errlen);
        m->has |= KD_MET_CONFIGS;
    }
    if (rc != KD_OK)
        memset(m, 0, sizeof *m);
    return rc;
}

int kd_metrics_decode(const char *text, size_t len, kd_metrics *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    if (text == NULL || len > KD_METRICS_TEXT_MAX)
        return kd_errf(err, errlen, KD_EINVAL, "metrics: message of %zu bytes (at most %d)",
                       text == NULL ? (size_t)0 : len, KD_METRICS_TEXT_MAX);
    json_error_t je;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (o == NULL)
        return kd_errf(err, errlen, KD_EINVAL, "metrics: not JSON: %s", je.text);
    int rc = kd_metrics_decode_obj(o, m, err, errlen);
    json_decref(o);
    return rc;
}
