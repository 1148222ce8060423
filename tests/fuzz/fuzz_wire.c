/* libFuzzer target for the wire decoder: the input is split into up to three frames
 * (the first two bytes choose the split points), decoded, and JSON bodies are parsed
 * and probed with the field helpers the coordinator and workers use and with the metrics
 * codec (common/kd_metrics.h). Any crash,
 * sanitizer report or accepted message violating the decoder's promises is a bug. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kd_error.h"
#include "kd_metrics.h"
#include "kd_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t rest = size - 2;
    size_t cut1 = data[0] == 0 ? KD_WIRE_HDR_SIZE : data[0];
    if (cut1 > rest)
        cut1 = rest;
    size_t nframes = 1 + (data[1] % 3);
    const void *frames[3] = {data + 2, data + 2 + cut1, data + 2 + cut1};
    size_t lens[3] = {cut1, rest - cut1, 0};
    if (nframes == 1)
        lens[0] = rest;
    kd_wire_hdr h;
    kd_wire_drop_reason why;
    if (kd_wire_decode(frames, lens, nframes, &h, &why) != 0)
        return 0;
    /* Promises of an accepted message. */
    int body = kd_wire_body_of(h.type);
    if (body < 0 || (body == KD_WIRE_BODY_NONE && (nframes != 1 || h.payload_len != 0)))
        abort();
    if (body != KD_WIRE_BODY_NONE && (nframes != 2 || lens[1] != h.payload_len))
        abort();
    if (body == KD_WIRE_BODY_FLOAT && h.payload_len % 4 != 0)
        abort();
    if (body == KD_WIRE_BODY_PACKED && (h.payload_len == 0 || h.payload_len % 2 != 0))
        abort();
    if (body == KD_WIRE_BODY_JSON) {
        json_t *o = kd_wire_json(frames[1], lens[1], &why);
        if (o != NULL) {
            long long v;
            double d;
            const char *s;
            (void)kd_wire_get_int(o, "rank", 0, KD_WIRE_MAX_WORLD, &v);
            (void)kd_wire_get_num(o, "lr_scale", 0, 1e6, &d);
            (void)kd_wire_get_str(o, "endpoint", 256, &s);
            /* The metrics codec on the same object: whatever it accepts must survive a
             * round trip unchanged in its presence bits. */
            kd_metrics *m = malloc(sizeof *m), *m2 = malloc(sizeof *m2);
            char err[256];
            if (m != NULL && m2 != NULL &&
                kd_metrics_decode_obj(o, m, err, sizeof err) == KD_OK) {
                size_t len = 0;
                char *text = kd_metrics_encode(m, &len);
                if (text != NULL && (kd_metrics_decode(text, len, m2, err, sizeof err) != KD_OK ||
                                     m2->has != m->has || m2->n_configs != m->n_configs))
                    abort();
                free(text);
            }
            free(m);
            free(m2);
            json_decref(o);
        }
    }
    if (body == KD_WIRE_BODY_FLOAT) {
        size_t n = h.payload_len / 4;
        float *f = malloc(n * sizeof *f);
        if (f != NULL) {
            kd_wire_floats_from_le(f, frames[1], n);
            free(f);
        }
    }
    return 0;
}
