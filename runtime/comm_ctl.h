/*
 * comm_ctl: sending and receiving kd_wire control messages on the coordinator's ROUTER
 * and the workers' DEALER sockets.
 *
 * A ROUTER message is [identity][header][payload?]; a DEALER message is
 * [header][payload?]. kd_ctl_recv reads one whole multipart message without blocking,
 * validates it with kd_wire_decode, parses JSON bodies, and drops (counted, logged once
 * per reason) anything malformed or foreign, so that callers only ever see well-formed
 * messages of a known type. Range checks of body fields are the caller's (it knows what
 * it expects in its state).
 */
#ifndef KD_COMM_CTL_H
#define KD_COMM_CTL_H

#include <jansson.h>
#include <stddef.h>
#include <zmq.h>

#include "kd_wire.h"

#define KD_CTL_IDENT_MAX 255

typedef struct kd_ctl_msg {
    kd_wire_hdr h;                          /* decoded header */
    unsigned char ident[KD_CTL_IDENT_MAX];  /* ROUTER: the sender's routing id */
    size_t ident_len;                       /* bytes in ident (0 on a DEALER) */
    json_t *json;                           /* JSON body (new reference) or NULL */
    zmq_msg_t payload;                      /* float body when has_floats */
    int has_floats;                         /* payload holds a float frame */
    int from_operator;                      /* admitted by ZAP with the operator's key */
} kd_ctl_msg;

/* Receives one valid message if there is one: KD_OK, or KD_EAGAIN when nothing valid is
 * queued (invalid ones are dropped on the way). router says whether the socket is a
 * ROUTER (identity frame first). source names the socket in drop logs. */
int kd_ctl_recv(void *sock, int router, kd_ctl_msg *m, const char *source);
/* Releases the message's body; accepts a closed message. */
void kd_ctl_msg_close(kd_ctl_msg *m);

/* Sends a header with an optional body of len bytes (copied); h->payload_len is set
 * here. ident/ident_len address a ROUTER peer (NULL/0 on a DEALER). Never blocks:
 * KD_EAGAIN when the peer's queue is full or it is gone, KD_ENETWORK otherwise. */
int kd_ctl_send(void *sock, const void *ident, size_t ident_len, kd_wire_hdr h,
                const void *body, size_t len);
/* The same with a JSON body (borrowed, serialised compactly). */
int kd_ctl_send_json(void *sock, const void *ident, size_t ident_len, kd_wire_hdr h,
                     const json_t *body);

#endif
