/*
 * kd_attack: plays the network attacks of issue 17 against a running job, for
 * tests/integration/dist_attacks.py. It speaks the wire format of common/kd_wire.h, as a
 * stranger (a CURVE keypair of its own, or a guessed PLAIN password, or no security at
 * all) or as an insider holding the job key, and prints what it sent and what came back:
 *
 *   kd_attack control EP WHO PUBFILE SECONDS NPARAMS NSTATE NTRAIN
 *       JOIN, READY claiming step 1000000, a STATE of NaNs, METRICS with epoch_done 1000
 *       and accuracy 0.999, a BATCH (only the operator may send it), repeated every
 *       0.3 s; counts the messages received
 *   kd_attack flood EP WHO PUBFILE SECONDS N
 *       N identities JOIN (again every 1.2 s), and one identity JOINs every 0.1 s
 *   kd_attack data EP WHO PUBFILE SECONDS NFLOATS
 *       DATA chunks with plausible headers (generations 0-3, every step, both ranks) whose
 *       control floats vote "finished", and chunks of NaNs
 *   kd_attack sub EP WHO PUBFILE SECONDS
 *       subscribes to the metrics and counts what arrives
 *
 * WHO: "stranger" (own CURVE keypair; PUBFILE is the job's public key, which is not
 * secret), "plain" (PLAIN with a guessed password), "none" (no security mechanism), or a
 * keys directory (the job key: an insider). Output: one line "sent=N received=M".
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "kd_curve.h"
#include "kd_error.h"
#include "kd_wire.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char job_pub[KD_CURVE_KEY_LEN + 1];
static kd_curve_keys insider;
static const char *who;

static long num(const char *text)
{
    char *end;
    long v = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0') {
        fprintf(stderr, "kd_attack: not a number: %s\n", text);
        exit(2);
    }
    return v;
}

static void secure(void *s)
{
    if (strcmp(who, "stranger") == 0) {
        char pub[41], sec[41];
        zmq_curve_keypair(pub, sec);
        kd_curve_client(s, job_pub, pub, sec);
    } else if (strcmp(who, "plain") == 0) {
        zmq_setsockopt(s, ZMQ_PLAIN_USERNAME, "kadet", 5);
        zmq_setsockopt(s, ZMQ_PLAIN_PASSWORD, "0123456789abcdef", 16);
    } else if (strcmp(who, "none") != 0) {
        kd_curve_job_client(s, &insider, 0);
    }
}

static void *sock(void *ctx, int type, const char *ident)
{
    void *s = zmq_socket(ctx, type);
    int linger = 0, tmo = 100;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &tmo, sizeof tmo);
    if (ident != NULL)
        zmq_setsockopt(s, ZMQ_ROUTING_ID, ident, strlen(ident));
    secure(s);
    return s;
}

static long sent, received;

static void send_msg(void *s, uint16_t type, kd_wire_hdr h, const void *p, size_t n)
{
    unsigned char hdr[KD_WIRE_HDR_SIZE];
    h.type = type;
    h.payload_len = (uint32_t)n;
    kd_wire_encode(&h, hdr);
    if (zmq_send(s, hdr, sizeof hdr, n > 0 ? ZMQ_SNDMORE : 0) < 0)
        return;
    if (n > 0 && zmq_send(s, p, n, 0) < 0)
        return;
    sent++;
}

static void send_json(void *s, uint16_t type, kd_wire_hdr h, const char *json)
{
    send_msg(s, type, h, json, strlen(json));
}

static void drain(void *s)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    while (zmq_msg_recv(&m, s, ZMQ_DONTWAIT) >= 0)
        if (!zmq_msg_more(&m))
            received++;
    zmq_msg_close(&m);
}

static int attack_control(void *ctx, const char *ep, double secs, long np, long ns, long nt)
{
    void *s = sock(ctx, ZMQ_DEALER, "attacker-0");
    zmq_connect(s, ep);
    size_t n = (size_t)(np + ns);
    float *nan_state = malloc(n * sizeof(float));
    if (nan_state == NULL)
        return 1;
    for (size_t i = 0; i < n; i++)
        nan_state[i] = NAN;
    char body[256];
    double end = now_s() + secs;
    while (now_s() < end) {
        kd_wire_hdr h = {.sender = KD_WIRE_NO_RANK};
        send_json(s, KD_WIRE_JOIN, h,
                  "{\"name\": \"attacker-0\", \"endpoint\": \"tcp://127.0.0.1:9\", \"pid\": 1}");
        usleep(50 * 1000);
        snprintf(body, sizeof body,
                 "{\"n_params\": %ld, \"n_state\": %ld, \"n_train\": %ld, \"fresh\": false}", np,
                 ns, nt);
        h = (kd_wire_hdr){.sender = 0, .generation = 1, .step = 1000000, .epoch = 1};
        send_json(s, KD_WIRE_READY, h, body);
        for (uint32_t g = 0; g < 4; g++) {
            h = (kd_wire_hdr){.sender = 0, .generation = g, .step = 1000000, .epoch = 1};
            send_msg(s, KD_WIRE_STATE, h, nan_state, n * sizeof(float));
            send_json(s, KD_WIRE_METRICS, h,
                      "{\"epoch_done\": 1000, \"accuracy\": 0.999, \"test_loss\": 0.01, "
                      "\"train_loss\": 0.01, \"epoch_seconds\": 1.0, \"agents\": 2}");
            /* Finished at an implausible position: must not end the job. */
            send_json(s, KD_WIRE_FINISHED, h, "{\"ok\": true}");
            /* The scheduler's batch: the operator's message, refused from the job key. */
            send_json(s, KD_WIRE_BATCH, h, "{\"batch\": 1}");
        }
        for (int i = 0; i < 6; i++) {
            usleep(50 * 1000);
            drain(s);
        }
    }
    free(nan_state);
    zmq_close(s);
    return 0;
}

static int attack_flood(void *ctx, const char *ep, double secs, long nid)
{
    void *one = sock(ctx, ZMQ_DEALER, "flooder");
    zmq_connect(one, ep);
    void **many = calloc((size_t)nid, sizeof *many);
    if (many == NULL)
        return 1;
    kd_wire_hdr h = {.sender = KD_WIRE_NO_RANK};
    char id[64], body[160];
    for (long i = 0; i < nid; i++) {
        snprintf(id, sizeof id, "flood-%ld", i);
        many[i] = sock(ctx, ZMQ_DEALER, id);
        zmq_connect(many[i], ep);
        snprintf(body, sizeof body,
                 "{\"name\": \"%s\", \"endpoint\": \"tcp://127.0.0.1:9\", \"pid\": 1}", id);
        send_json(many[i], KD_WIRE_JOIN, h, body);
    }
    double end = now_s() + secs, again = now_s() + 1.2;
    while (now_s() < end) {
        send_json(one, KD_WIRE_JOIN, h,
                  "{\"name\": \"flooder\", \"endpoint\": \"tcp://127.0.0.1:9\", \"pid\": 1}");
        usleep(100 * 1000);
        /* The identities JOIN again every 1.2 s: the ones that found no slot ask again. */
        for (long i = 0; now_s() > again && i < nid; i++) {
            snprintf(id, sizeof id, "flood-%ld", i);
            snprintf(body, sizeof body,
                     "{\"name\": \"%s\", \"endpoint\": \"tcp://127.0.0.1:9\", \"pid\": 1}",
                     id);
            send_json(many[i], KD_WIRE_JOIN, h, body);
        }
        if (now_s() > again)
            again = now_s() + 1.2;
        drain(one);
        for (long i = 0; i < nid; i++)
            drain(many[i]);
    }
    for (long i = 0; i < nid; i++)
        zmq_close(many[i]);
    free(many);
    zmq_close(one);
    return 0;
}

static int attack_data(void *ctx, const char *ep, double secs, long nfloats)
{
    void *s = sock(ctx, ZMQ_PUSH, NULL);
    zmq_connect(s, ep);
    float *chunk = calloc((size_t)nfloats + 8, sizeof(float));
    float *nans = malloc(((size_t)nfloats + 8) * sizeof(float));
    if (chunk == NULL || nans == NULL)
        return 1;
    for (long i = 0; i < nfloats + 8; i++)
        nans[i] = NAN;
    /* The last floats of a gradient message carry the control values: pause, finish. */
    chunk[nfloats + 0] = 0.0f;
    chunk[nfloats + 1] = 2.0f;
    double end = now_s() + secs;
    uint64_t step = 0;
    while (now_s() < end) {
        for (uint32_t g = 0; g < 4; g++)
            for (uint32_t r = 0; r < 2; r++) {
                kd_wire_hdr h = {.generation = g, .sender = r, .step = step, .aux = 3u << 16};
                send_msg(s, KD_WIRE_DATA, h, (step & 1) ? nans : chunk,
                         ((size_t)nfloats + 5) * sizeof(float));
            }
        step++;
        usleep(2000);
    }
    free(chunk);
    free(nans);
    zmq_close(s);
    return 0;
}

static int attack_sub(void *ctx, const char *ep, double secs)
{
    void *s = sock(ctx, ZMQ_SUB, NULL);
    zmq_setsockopt(s, ZMQ_SUBSCRIBE, "", 0);
    zmq_connect(s, ep);
    double end = now_s() + secs;
    char buf[4096];
    while (now_s() < end) {
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        zmq_poll(&it, 1, 100);
        while (zmq_recv(s, buf, sizeof buf, ZMQ_DONTWAIT) >= 0)
            received++;
    }
    zmq_close(s);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: kd_attack control|flood|data|sub EP WHO PUBFILE SECONDS ...\n");
        return 2;
    }
    const char *mode = argv[1], *ep = argv[2];
    who = argv[3];
    double secs = (double)num(argv[5]);
    FILE *f = fopen(argv[4], "r");
    if (f == NULL || fread(job_pub, 1, KD_CURVE_KEY_LEN, f) != KD_CURVE_KEY_LEN) {
        fprintf(stderr, "kd_attack: cannot read %s\n", argv[4]);
        return 2;
    }
    fclose(f);
    char err[600];
    if (strcmp(who, "stranger") != 0 && strcmp(who, "plain") != 0 && strcmp(who, "none") != 0 &&
        kd_curve_load(who, &insider, err, sizeof err) != KD_OK) {
        fprintf(stderr, "kd_attack: %s\n", err);
        return 2;
    }
    void *ctx = zmq_ctx_new();
    int rc = 2;
    if (strcmp(mode, "control") == 0 && argc == 9)
        rc = attack_control(ctx, ep, secs, num(argv[6]), num(argv[7]), num(argv[8]));
    else if (strcmp(mode, "flood") == 0 && argc == 7)
        rc = attack_flood(ctx, ep, secs, num(argv[6]));
    else if (strcmp(mode, "data") == 0 && argc == 7)
        rc = attack_data(ctx, ep, secs, num(argv[6]));
    else if (strcmp(mode, "sub") == 0 && argc == 6)
        rc = attack_sub(ctx, ep, secs);
    else
        fprintf(stderr, "kd_attack: bad arguments for %s\n", mode);
    zmq_ctx_term(ctx);
    printf("sent=%ld received=%ld\n", sent, received);
    return rc;
}
