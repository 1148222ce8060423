/* comm_ctl: validated control-message I/O over ROUTER/DEALER (see comm_ctl.h). */
#include "comm_ctl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kd_curve.h"
#include "kd_error.h"

void kd_ctl_msg_close(kd_ctl_msg *m)
{
    if (m->json != NULL)
        json_decref(m->json);
    m->json = NULL;
    if (m->has_floats)
        zmq_msg_close(&m->payload);
    m->has_floats = 0;
}

int kd_ctl_recv(void *sock, int router, kd_ctl_msg *m, const char *source)
{
    for (;;) {
        memset(m, 0, sizeof *m);
        zmq_msg_t frames[4];
        size_t n = 0, total = 0;
        int more = 1;
        while (more) {
            zmq_msg_t f;
            zmq_msg_init(&f);
            if (zmq_msg_recv(&f, sock, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&f);
                break;
            }
            more = zmq_msg_more(&f);
            if (n < 4)
                frames[n++] = f;
            else
                zmq_msg_close(&f);
            total++;
        }
        if (total == 0)
            return KD_EAGAIN;
        size_t first = router ? 1 : 0;
        kd_wire_drop_reason why = KD_WIRE_DROP_FRAMES;
        int ok = total == n && n > first;
        if (ok) {
            /* The ZAP handler's user id (kd_curve.h): absent without a security
             * mechanism, so only an authenticated operator is ever "operator". */
            const char *uid = zmq_msg_gets(&frames[first], "User-Id");
            m->from_operator = uid != NULL && strcmp(uid, KD_ZAP_USER_OPERATOR) == 0;
        }
        if (ok && router) {
            size_t il = zmq_msg_size(&frames[0]);
            ok = il > 0 && il <= KD_CTL_IDENT_MAX;
            if (ok) {
                memcpy(m->ident, zmq_msg_data(&frames[0]), il);
                m->ident_len = il;
            }
        }
        if (ok) {
            const void *data[3];
            size_t lens[3];
            size_t k = n - first;
            for (size_t i = 0; i < k && i < 3; i++) {
                data[i] = zmq_msg_data(&frames[first + i]);
                lens[i] = zmq_msg_size(&frames[first + i]);
            }
            ok = k <= 3 && kd_wire_decode(data, lens, k, &m->h, &why) == KD_OK;
            if (ok) {
                int body = kd_wire_body_of(m->h.type);
                if (body == KD_WIRE_BODY_JSON) {
                    m->json = kd_wire_json(data[1], lens[1], &why);
                    ok = m->json != NULL;
                } else if (body == KD_WIRE_BODY_FLOAT) {
                    /* Keep ZeroMQ's buffer instead of copying up to a whole model. */
                    zmq_msg_init(&m->payload);
                    zmq_msg_move(&m->payload, &frames[first + 1]);
                    m->has_floats = 1;
                }
            }
        }
        for (size_t i = 0; i < n; i++)
            zmq_msg_close(&frames[i]);
        if (ok)
            return KD_OK;
        kd_ctl_msg_close(m);
        kd_wire_drop(why, source);
    }
}

static int send_frame(void *sock, const void *data, size_t len, int flags)
{
    while (zmq_send(sock, data, len, flags | ZMQ_DONTWAIT) < 0) {
        if (zmq_errno() == EINTR)
            continue;
        return zmq_errno() == EAGAIN || zmq_errno() == EHOSTUNREACH ? KD_EAGAIN
                                                                    : KD_ENETWORK;
    }
    return KD_OK;
}

int kd_ctl_send(void *sock, const void *ident, size_t ident_len, kd_wire_hdr h,
                const void *body, size_t len)
{
    unsigned char hdr[KD_WIRE_HDR_SIZE];
    h.payload_len = (uint32_t)len;
    kd_wire_encode(&h, hdr);
    int rc;
    if (ident != NULL && (rc = send_frame(sock, ident, ident_len, ZMQ_SNDMORE)) != KD_OK)
        return rc;
    if ((rc = send_frame(sock, hdr, sizeof hdr, len > 0 ? ZMQ_SNDMORE : 0)) != KD_OK)
        return rc;
    if (len > 0)
        rc = send_frame(sock, body, len, 0);
    return rc;
}

int kd_ctl_send_json(void *sock, const void *ident, size_t ident_len, kd_wire_hdr h,
                     const json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    if (text == NULL)
        return KD_ENOMEM;
    int rc = kd_ctl_send(sock, ident, ident_len, h, text, strlen(text));
    free(text);
    return rc;
}
