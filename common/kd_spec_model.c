/*
 * kd_spec_model: spec.training.model.layers, the declared network, decoded and its
 * shapes checked.
 *
 * kd_spec.c decodes the rest of the AgentJob and calls kd_spec_decode_layers for the
 * list. Every layer is an object with a `type` and the fields of that type; a field of
 * another type, an unknown field or a value out of range fails the decode with the path
 * of the field (layers are few and a misplaced `kernel` silently ignored would train a
 * different network). Shapes are inferred from the input shape layer by layer with the
 * same function the runtime uses to lay out the model (kd_spec_layer_shapes), so that a
 * manifest that decodes builds.
 */
#include "kd_spec.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_error.h"

#define LAYER_PATH_LEN 192
#define MAX_MODEL_FLOATS (1L << 28) /* parameters, or activations of one sample */

static const char *const layer_names[] = {"dense",   "conv2d", "maxpool2d", "avgpool2d",
                                          "flatten", "relu",   "dropout",   "batchnorm"};
#define N_LAYER_TYPES ((int)(sizeof layer_names / sizeof layer_names[0]))

const char *kd_spec_layer_name(kd_spec_layer_type t)
{
    return (int)t >= 0 && (int)t < N_LAYER_TYPES ? layer_names[t] : "unknown";
}

/* The fields each type accepts besides "type" (NULL-terminated). */
static const char *const *fields_of(kd_spec_layer_type t)
{
    static const char *const dense[] = {"units", NULL};
    static const char *const conv[] = {"filters", "kernel", "stride", "padding", NULL};
    static const char *const pool[] = {"size", "stride", NULL};
    static const char *const none[] = {NULL};
    static const char *const dropout[] = {"rate", NULL};
    switch (t) {
    case KD_LAYER_DENSE:
        return dense;
    case KD_LAYER_CONV2D:
        return conv;
    case KD_LAYER_MAXPOOL2D:
    case KD_LAYER_AVGPOOL2D:
        return pool;
    case KD_LAYER_DROPOUT:
        return dropout;
    default:
        return none;
    }
}

/* An integer field in [lo, hi]; absent leaves *out as it is. */
static int layer_int(const json_t *o, const char *key, const char *lp, long lo, long hi,
                     int *out, char *err, size_t errlen)
{
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return KD_OK;
    double x = json_is_number(v) ? json_number_value(v) : NAN;
    if (!isfinite(x) || x != floor(x) || x < (double)lo || x > (double)hi) {
        char g[64];
        kd_spec_show(v, g, sizeof g);
        return kd_errf(err, errlen, KD_EINVALID_OBJECT,
                       "%s.%s: expected an integer in [%ld, %ld], got %s", lp, key, lo, hi, g);
    }
    *out = (int)x;
    return KD_OK;
}

static int decode_layer(const json_t *o, const char *lp, kd_spec_layer *l, char *err,
                        size_t errlen)
{
    memset(l, 0, sizeof *l);
    if (!json_is_object(o)) {
        char g[64];
        kd_spec_show(o, g, sizeof g);
        return kd_errf(err, errlen, KD_EINVALID_OBJECT,
                       "%s: expected a layer object such as {type: dense, units: 10}, got %s",
                       lp, g);
    }
    const json_t *t = json_object_get(o, "type");
    int type = -1;
    for (int i = 0; t && json_is_string(t) && i < N_LAYER_TYPES; i++)
        if (strcmp(json_string_value(t), layer_names[i]) == 0)
            type = i;
    if (type < 0) {
        char g[64];
        if (t)
            kd_spec_show(t, g, sizeof g);
        return kd_errf(err, errlen, KD_EINVALID_OBJECT,
                       "%s.type: expected one of dense, conv2d, maxpool2d, avgpool2d, "
                       "flatten, relu, dropout, batchnorm, got %s", lp, t ? g : "nothing");
    }
    if (type == KD_LAYER_BATCHNORM)
        return kd_errf(err, errlen, KD_EINVALID_OBJECT,
                       "%s.type: batchnorm is not supported yet (its batch statistics would "
                       "differ between agent counts; docs/training.md)", lp);
    l->type = (kd_spec_layer_type)type;
    const char *const *ok = fields_of(l->type);
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)o, key, val) {
        int known = strcmp(key, "type") == 0;
        for (const char *const *k = ok; *k && !known; k++)
            known = strcmp(*k, key) == 0;
        if (!known)
            return kd_errf(err, errlen, KD_EINVALID_OBJECT, "%s.%s: not a field of a %s layer",
                           lp, key, layer_names[type]);
    }
    int rc = KD_OK;
    switch (l->type) {
    case KD_LAYER_DENSE:
        if (!json_object_get(o, "units"))
            return kd_errf(err, errlen, KD_EINVALID_OBJECT, "%s.units: required", lp);
        rc = layer_int(o, "units", lp, 1, 65536, &l->units, err, errlen);
        break;
    case KD_LAYER_CONV2D:
        if (!json_object_get(o, "filters") || !json_object_get(o, "kernel"))
            return kd_errf(err, errlen, KD_EINVALID_OBJECT, "%s.%s: required", lp,
                           json_object_get(o, "filters") ? "kernel" : "filters");
        l->stride = 1;
        if ((rc = layer_int(o, "filters", lp, 1, 65536, &l->units, err, errlen)) != KD_OK ||
            (rc = layer_int(o, "kernel", lp, 1, 255, &l->kernel, err, errlen)) != KD_OK ||
            (rc = layer_int(o, "stride", lp, 1, 255, &l->stride, err, errlen)) != KD_OK ||
            (rc = layer_int(o, "padding", lp, 0, 255, &l->padding, err, errlen)) != KD_OK)
            return rc;
        if (l->padding >= l->kernel)
            return kd_errf(err, errlen, KD_EINVALID_OBJECT,
                           "%s.padding: %d is not smaller than the kernel (%d)", lp,
                           l->padding, l->kernel);
        break;
    case KD_LAYER_MAXPOOL2D:
    case KD_LAYER_AVGPOOL2D:
        if (!json_object_get(o, "size"))
            return kd_errf(err, errlen, KD_EINVALID_OBJECT, "%s.size: required", lp);
        if ((rc = layer_int(o, "size", lp, 1, 255, &l->kernel, err, errlen)) != KD_OK)
            return rc;
        l->stride = l->kernel;
        rc = layer_int(o, "stride", lp, 1, 255, &l->stride, err, errlen);
        break;
    case KD_LAYER_DROPOUT: {
        const json_t *r = json_object_get(o, "rate");
        if (!r)
            return kd_errf(err, errlen, KD_EINVALID_OBJECT, "%s.rate: required", lp);
        double x = json_is_number(r) ? json_number_value(r) : NAN;
        if (!isfinite(x) || x < 0.0 || x >= 1.0) {
            char g[64];
            kd_spec_show(r, g, sizeof g);
            return kd_errf(err, errlen, KD_EINVALID_OBJECT,
                           "%s.rate: expected a number in [0, 1), got %s", lp, g);
        }
        l->rate = x;
        break;
    }
    default:
        break;
    }
    return rc;
}

int kd_spec_layer_shapes(const kd_spec_layer *layers, int n, kd_spec_shape in,
                         kd_spec_shape *out, const char *path, char *err, size_t errlen)
{
    if (n < 1 || n > KD_SPEC_MAX_LAYERS)
        return kd_errf(err, errlen, KD_EINVALID_OBJECT,
                       "%s: expected 1 to %d layers, got %d", path, KD_SPEC_MAX_LAYERS, n);
    kd_spec_shape s = in;
    long params = 0;
    for (int i = 0; i < n; i++) {
        const kd_spec_layer *l = &layers[i];
        char lp[LAYER_PATH_LEN];
        snprintf(lp, sizeof lp, "%s[%d]", path, i);
        long flat = (long)s.c * s.h * s.w; /* 0 when not known yet */
        switch (l->type) {
        case KD_LAYER_CONV2D:
        case KD_LAYER_MAXPOOL2D:
        case KD_LAYER_AVGPOOL2D: {
            const char *field = l->type == KD_LAYER_CONV2D ? "kernel" : "size";
            if (s.c == 0)
                return kd_errf(err, errlen, KD_EINVALID_OBJECT,
                               "%s: %s needs an image input, but the dataset's samples are "
                               "flat vectors (set spec.training.model.inputShape)", lp,
                               layer_names[l->type]);
            int hp = s.h + 2 * l->padding, wp = s.w + 2 * l->padding;
            if (l->kernel > hp || l->kernel > wp) {
                if (l->padding > 0)
                    return kd_errf(err, errlen, KD_EINVALID_OBJECT,
                                   "%s.%s: %d is larger than its %dx%d input (%dx%d padded)",
                                   lp, field, l->kernel, s.h, s.w, hp, wp);
                return kd_errf(err, errlen, KD_EINVALID_OBJECT,
                               "%s.%s: %d is larger than its %dx%d input", lp, field,
                               l->kernel, s.h, s.w);
            }
            kd_spec_shape o = {l->type == KD_LAYER_CONV2D ? l->units : s.c,
                               (hp - l->kernel) / l->stride + 1,
                               (wp - l->kernel) / l->stride + 1};
            if (l->type == KD_LAYER_CONV2D)
                params += (long)l->kernel * l->kernel * s.c * l->units + l->units;
            s = o;
            break;
        }
        case KD_LAYER_DENSE:
            if (flat > 0)
                params += flat * l->units + l->units;
            else
                params += l->units; /* weights counted when the input is known */
            s = (kd_spec_shape){l->units, 1, 1};
            break;
        case KD_LAYER_FLATTEN:
            s = (kd_spec_shape){(int)flat, 1, 1};
            break;
        default: /* relu, dropout: same shape */
            break;
        }
        if ((long)s.c * s.h * s.w > MAX_MODEL_FLOATS || params > MAX_MODEL_FLOATS)
            return kd_errf(err, errlen, KD_EINVALID_OBJECT,
                           "%s: the model reaches %ld parameters and %ld activations per "
                           "sample here (at most %ld each)", lp, params,
                           (long)s.c * s.h * s.w, MAX_MODEL_FLOATS);
        out[i] = s;
    }
    const kd_spec_layer *last = &layers[n - 1];
    if (last->type != KD_LAYER_DENSE)
        return kd_errf(err, errlen, KD_EINVALID_OBJECT,
                       "%s[%d].type: the last layer must be dense (its units are the "
                       "classes), got %s", path, n - 1, layer_names[last->type]);
    if (last->units < 2)
        return kd_errf(err, errlen, KD_EINVALID_OBJECT,
                       "%s[%d].units: the last layer's units are the classes, at least 2, "
                       "got %d", path, n - 1, last->units);
    return KD_OK;
}

int kd_spec_decode_layers(const json_t *list, const char *path, kd_agentjob *j, char *err,
                          size_t errlen)
{
    if (!json_is_array(list) || json_array_size(list) < 1 ||
        json_array_size(list) > KD_SPEC_MAX_LAYERS) {
        char g[64];
        kd_spec_show(list, g, sizeof g);
        return kd_errf(err, errlen, KD_EINVALID_OBJECT,
                       "%s: expected a list of 1 to %d layers, got %s", path,
                       KD_SPEC_MAX_LAYERS, g);
    }
    int n = (int)json_array_size(list);
    for (int i = 0; i < n; i++) {
        char lp[LAYER_PATH_LEN];
        snprintf(lp, sizeof lp, "%s[%d]", path, i);
        int rc = decode_layer(json_array_get(list, (size_t)i), lp, &j->layers[i], err, errlen);
        if (rc != KD_OK)
            return rc;
    }
    kd_spec_shape shapes[KD_SPEC_MAX_LAYERS];
    int rc = kd_spec_layer_shapes(j->layers, n, j->input_shape, shapes, path, err, errlen);
    if (rc != KD_OK)
        return rc;
    j->n_layers = n;
    return KD_OK;
}

uint64_t kd_spec_model_hash(const kd_agentjob *j)
{
    uint64_t h = 1469598103934665603ull;
#define MIX(v) (h = (h ^ (uint64_t)(uint32_t)(v)) * 1099511628211ull)
    if (j->n_layers == 0) {
        MIX(0x6d6c70); /* "mlp" */
        for (int i = 0; i < j->n_hidden; i++)
            MIX(j->hidden[i]);
    } else {
        MIX(j->input_shape.c);
        MIX(j->input_shape.h);
        MIX(j->input_shape.w);
        for (int i = 0; i < j->n_layers; i++) {
            const kd_spec_layer *l = &j->layers[i];
            MIX(l->type);
            MIX(l->units);
            MIX(l->kernel);
            MIX(l->stride);
            MIX(l->padding);
            MIX((uint32_t)(l->rate * 1e6));
        }
    }
#undef MIX
    return h;
}

int kd_spec_layers_as_mlp(const kd_agentjob *j, int *hidden, int *n_hidden)
{
    if (j->n_layers == 0) {
        if (hidden)
            memcpy(hidden, j->hidden, sizeof j->hidden);
        if (n_hidden)
            *n_hidden = j->n_hidden;
        return 1;
    }
    int i = j->layers[0].type == KD_LAYER_FLATTEN ? 1 : 0, nh = 0;
    int h[KD_SPEC_MAX_HIDDEN];
    for (; i + 1 < j->n_layers; i += 2) {
        if (j->layers[i].type != KD_LAYER_DENSE || j->layers[i + 1].type != KD_LAYER_RELU ||
            nh == KD_SPEC_MAX_HIDDEN)
            return 0;
        h[nh++] = j->layers[i].units;
    }
    if (i != j->n_layers - 1 || j->layers[i].type != KD_LAYER_DENSE)
        return 0;
    if (hidden)
        memcpy(hidden, h, (size_t)nh * sizeof *h);
    if (n_hidden)
        *n_hidden = nh;
    return 1;
}
