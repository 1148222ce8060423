/* kd_wire: header codec, validation of received frames, JSON body helpers and the
 * per-reason drop counters (see kd_wire.h for the format). The codec writes and reads
 * bytes one by one so that it is independent of host byte order and alignment. */
#include "kd_wire.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "kd_error.h"
#include "kd_le.h"
#include "kd_log.h"

static const struct {
    const char *name;
    int body;
} wire_types[KD_WIRE_TYPE_MAX + 1] = {
#define KD_WIRE_TYPE_ROW(n, num, b) [num] = {#n, b},
    KD_WIRE_TYPES(KD_WIRE_TYPE_ROW)
#undef KD_WIRE_TYPE_ROW
};

static const char *const drop_names[KD_WIRE_DROP_COUNT] = {
#define KD_WIRE_DROP_ROW(n, text) text,
    KD_WIRE_DROPS(KD_WIRE_DROP_ROW)
#undef KD_WIRE_DROP_ROW
};

static atomic_uint_fast64_t drop_counts[KD_WIRE_DROP_COUNT];

const char *kd_wire_type_name(unsigned type)
{
    if (type == 0 || type > KD_WIRE_TYPE_MAX || wire_types[type].name == NULL)
        return "unknown";
    return wire_types[type].name;
}

int kd_wire_body_of(unsigned type)
{
    if (type == 0 || type > KD_WIRE_TYPE_MAX || wire_types[type].name == NULL)
        return -1;
    return wire_types[type].body;
}

/* Layout: magic(0) version(4) type(6) generation(8) sender(12) step(16) epoch(24)
 * aux(28) offset(32) payload_len(40) reserved(44..47, zero). */
void kd_wire_encode(const kd_wire_hdr *h, unsigned char out[KD_WIRE_HDR_SIZE])
{
    kd_le_put32(out + 0, KD_WIRE_MAGIC);
    kd_le_put16(out + 4, KD_WIRE_VERSION);
    kd_le_put16(out + 6, h->type);
    kd_le_put32(out + 8, h->generation);
    kd_le_put32(out + 12, h->sender);
    kd_le_put64(out + 16, h->step);
    kd_le_put32(out + 24, h->epoch);
    kd_le_put32(out + 28, h->aux);
    kd_le_put64(out + 32, h->offset);
    kd_le_put32(out + 40, h->payload_len);
    kd_le_put32(out + 44, 0);
}

size_t kd_wire_batch_encode(int batch, unsigned char hdr[KD_WIRE_HDR_SIZE],
                            char body[KD_WIRE_BATCH_BODY_MAX])
{
    int n = snprintf(body, KD_WIRE_BATCH_BODY_MAX, "{\"batch\":%d}", batch);
    size_t len = n > 0 && n < KD_WIRE_BATCH_BODY_MAX ? (size_t)n : 0;
    kd_wire_hdr h = {.type = KD_WIRE_BATCH, .sender = KD_WIRE_NO_RANK,
                     .payload_len = (uint32_t)len};
    kd_wire_encode(&h, hdr);
    return len;
}

static int reject(kd_wire_drop_reason *reason, kd_wire_drop_reason why)
{
    if (reason != NULL)
        *reason = why;
    return KD_EPROTO;
}

int kd_wire_decode(const void *const *frames, const size_t *lens, size_t nframes,
                   kd_wire_hdr *h, kd_wire_drop_reason *reason)
{
    if (nframes < 1 || frames == NULL || lens == NULL || frames[0] == NULL)
        return reject(reason, KD_WIRE_DROP_FRAMES);
    if (lens[0] != KD_WIRE_HDR_SIZE)
        return reject(reason, lens[0] >= 4 && kd_le_get32(frames[0]) != KD_WIRE_MAGIC
                                  ? KD_WIRE_DROP_MAGIC
                                  : KD_WIRE_DROP_SHORT);
    const unsigned char *p = frames[0];
    if (kd_le_get32(p) != KD_WIRE_MAGIC)
        return reject(reason, KD_WIRE_DROP_MAGIC);
    if (kd_le_get16(p + 4) != KD_WIRE_VERSION)
        return reject(reason, KD_WIRE_DROP_VERSION);
    kd_wire_hdr d = {
        .type = kd_le_get16(p + 6),
        .generation = kd_le_get32(p + 8),
        .sender = kd_le_get32(p + 12),
        .step = kd_le_get64(p + 16),
        .epoch = kd_le_get32(p + 24),
        .aux = kd_le_get32(p + 28),
        .offset = kd_le_get64(p + 32),
        .payload_len = kd_le_get32(p + 40),
    };
    int body = kd_wire_body_of(d.type);
    if (body < 0)
        return reject(reason, KD_WIRE_DROP_TYPE);
    if (kd_le_get32(p + 44) != 0)
        return reject(reason, KD_WIRE_DROP_RESERVED);
    if (d.sender != KD_WIRE_NO_RANK && d.sender >= KD_WIRE_MAX_WORLD)
        return reject(reason, KD_WIRE_DROP_FIELD);
    if (body == KD_WIRE_BODY_NONE) {
        if (nframes != 1)
            return reject(reason, KD_WIRE_DROP_FRAMES);
        if (d.payload_len != 0)
            return reject(reason, KD_WIRE_DROP_LENGTH);
    } else {
        if (nframes != 2 || frames[1] == NULL)
            return reject(reason, KD_WIRE_DROP_FRAMES);
        if (lens[1] != d.payload_len)
            return reject(reason, KD_WIRE_DROP_LENGTH);
        if (body == KD_WIRE_BODY_JSON &&
            (d.payload_len < 2 || d.payload_len > KD_WIRE_MAX_JSON_BYTES))
            return reject(reason, KD_WIRE_DROP_LENGTH);
        /* Number bodies: whole elements (float32, or at least bfloat16 when packed). */
        unsigned unit = body == KD_WIRE_BODY_FLOAT ? 4 : body == KD_WIRE_BODY_PACKED ? 2 : 0;
        if (unit != 0 && (d.payload_len == 0 || d.payload_len % unit != 0 ||
                          d.payload_len > KD_WIRE_MAX_FLOAT_BYTES))
            return reject(reason, KD_WIRE_DROP_LENGTH);
    }
    *h = d;
    return KD_OK;
}

json_t *kd_wire_json(const void *data, size_t len, kd_wire_drop_reason *reason)
{
    json_error_t jerr;
    json_t *obj = NULL;
    if (data != NULL && len > 0 && len <= KD_WIRE_MAX_JSON_BYTES)
        obj = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (obj != NULL && !json_is_object(obj)) {
        json_decref(obj);
        obj = NULL;
    }
    if (obj == NULL && reason != NULL)
        *reason = KD_WIRE_DROP_JSON;
    return obj;
}

int kd_wire_get_int(const json_t *obj, const char *key, long long lo, long long hi,
                    long long *out)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v))
        return -1;
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return -1;
    *out = x;
    return 0;
}

int kd_wire_get_num(const json_t *obj, const char *key, double lo, double hi, double *out)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_number(v))
        return -1;
    double x = json_number_value(v);
    if (!isfinite(x) || x < lo || x > hi)
        return -1;
    *out = x;
    return 0;
}

int kd_wire_get_str(const json_t *obj, const char *key, size_t max_len, const char **out)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v) || json_string_length(v) > max_len)
        return -1;
    const char *s = json_string_value(v);
    /* Embedded NULs would make C string handling disagree with the JSON length. */
    if (strlen(s) != json_string_length(v))
        return -1;
    *out = s;
    return 0;
}

void kd_wire_drop(kd_wire_drop_reason reason, const char *source)
{
    if ((unsigned)reason >= KD_WIRE_DROP_COUNT)
        reason = KD_WIRE_DROP_UNEXPECTED;
    uint_fast64_t before = atomic_fetch_add(&drop_counts[reason], 1);
    if (before == 0)
        KD_WARN("dropped message reason=\"%s\" source=%s (further drops of this kind are "
                "only counted)",
                drop_names[reason], source != NULL ? source : "?");
}

uint64_t kd_wire_drops(kd_wire_drop_reason reason)
{
    if ((unsigned)reason < KD_WIRE_DROP_COUNT)
        return atomic_load(&drop_counts[reason]);
    uint64_t total = 0;
    for (int i = 0; i < KD_WIRE_DROP_COUNT; i++)
        total += atomic_load(&drop_counts[i]);
    return total;
}

const char *kd_wire_drop_name(kd_wire_drop_reason reason)
{
    if ((unsigned)reason >= KD_WIRE_DROP_COUNT)
        return "unknown";
    return drop_names[reason];
}

void kd_wire_floats_to_le(void *dst, const float *src, size_t n)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(dst, src, n * sizeof(float));
#else
    unsigned char *d = dst;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        kd_le_put32(d + 4 * i, u);
    }
#endif
}

void kd_wire_floats_from_le(float *dst, const void *src, size_t n)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(dst, src, n * sizeof(float));
#else
    const unsigned char *s = src;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = kd_le_get32(s + 4 * i);
        memcpy(&dst[i], &u, 4);
    }
#endif
}
