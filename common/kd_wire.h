/*
 * kd_wire: the one wire format of kadet's control plane (worker DEALER <-> coordinator
 * ROUTER) and data plane (worker -> worker ring).
 *
 * A message is one header frame of exactly KD_WIRE_HDR_SIZE bytes, optionally followed by
 * one payload frame whose length the header announces. All header integers are
 * little-endian on the wire whatever the host order. Payloads are either raw
 * little-endian float32 arrays (gradients, parameters, optimizer state), float32 and
 * bfloat16 elements packed together (compressed gradient chunks) or a small JSON object
 * (control messages such as join and world), as the type table says.
 *
 * Nothing received is trusted: kd_wire_decode checks the magic, the version, the type,
 * the reserved bytes, the frame count, the announced length against the real frame, the
 * per-type length bounds and the float alignment. Callers that drop a message record it
 * with kd_wire_drop(), which counts drops per reason and logs only the first of each
 * reason, so that a flood of garbage on a port cannot flood the logs.
 */
#ifndef KD_WIRE_H
#define KD_WIRE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define KD_WIRE_MAGIC 0x3154444bu /* "KDT1" as little-endian bytes */
#define KD_WIRE_VERSION 1u
#define KD_WIRE_HDR_SIZE 48u
/* The sender field when the coordinator (not a ranked worker) sent the message. */
#define KD_WIRE_NO_RANK 0xffffffffu
/* Largest float payload: 256 Mi floats (1 GiB) is far above any model kadet trains and
 * far below what would overflow size arithmetic. */
#define KD_WIRE_MAX_FLOAT_BYTES (1024ull * 1024 * 1024)
/* Largest JSON control body; a world announcement with 1024 peers fits easily. */
#define KD_WIRE_MAX_JSON_BYTES (256u * 1024)
/* Ranks and world sizes are bounded so that peer tables stay small. */
#define KD_WIRE_MAX_WORLD 1024u

/* Message types. Numbers are part of the protocol: never reuse or renumber. */
#define KD_WIRE_TYPES(X)                                                        \
    X(JOIN, 1, KD_WIRE_BODY_JSON)      /* w->c: {name, endpoint, pid} */            \
    X(WORLD, 2, KD_WIRE_BODY_JSON)     /* c->w: generation, rank, peers, cursor... */ \
    X(HEARTBEAT, 3, KD_WIRE_BODY_NONE) /* w->c and c->w: liveness */              \
    X(METRICS, 4, KD_WIRE_BODY_JSON)   /* w->c: per-step timings, loss, accuracy */ \
    X(LEAVE, 5, KD_WIRE_BODY_NONE)     /* w->c: leaving after this step (SIGTERM) */ \
    X(PAUSE, 6, KD_WIRE_BODY_NONE)     /* c->w: stop at the next agreed boundary */  \
    X(PAUSED, 7, KD_WIRE_BODY_JSON)    /* w->c: stopped; {step, epoch, cursor, ok} */ \
    X(STATE_REQ, 8, KD_WIRE_BODY_NONE) /* c->w: send me your parameters and state */ \
    X(STATE, 9, KD_WIRE_BODY_FLOAT)    /* both: parameters then optimizer state */   \
    X(DONE, 10, KD_WIRE_BODY_NONE)     /* c->w: training finished, exit */           \
    X(DATA, 11, KD_WIRE_BODY_FLOAT)    /* w->w: one ring allreduce chunk */          \
    X(FINISHED, 12, KD_WIRE_BODY_JSON) /* w->c: reached the last epoch or the target */ \
    X(WELCOME, 13, KD_WIRE_BODY_JSON)  /* c->w: the job to train, answer to JOIN */    \
    X(READY, 14, KD_WIRE_BODY_JSON)    /* w->c: data loaded; {n_params, n_state, n_train} */ \
    X(DATA_BF16, 15, KD_WIRE_BODY_PACKED) /* w->w: a chunk, some elements as bfloat16 */ \
    X(BATCH, 16, KD_WIRE_BODY_JSON)    /* operator->c: {batch} the scheduler's per-agent batch */

typedef enum kd_wire_body {
    KD_WIRE_BODY_NONE = 0,  /* no payload frame allowed */
    KD_WIRE_BODY_JSON = 1,  /* one payload frame holding a JSON object */
    KD_WIRE_BODY_FLOAT = 2, /* one payload frame of little-endian float32 */
    /* One payload frame of little-endian bfloat16 and float32 elements, in an order both
     * ends know from the operation (sync.compression: bf16; runtime/comm.h): its length
     * is only checked to be even and bounded here, and exactly by the receiver. */
    KD_WIRE_BODY_PACKED = 3,
} kd_wire_body;

typedef enum kd_wire_type {
#define KD_WIRE_TYPE_ENUM(name, num, body) KD_WIRE_##name = (num),
    KD_WIRE_TYPES(KD_WIRE_TYPE_ENUM)
#undef KD_WIRE_TYPE_ENUM
    KD_WIRE_TYPE_MAX = 16
} kd_wire_type;

/* Decoded header, in host order. */
typedef struct kd_wire_hdr {
    uint16_t type;        /* a kd_wire_type */
    uint32_t generation;  /* membership generation the sender belongs to */
    uint32_t sender;      /* sender's rank in that generation, or KD_WIRE_NO_RANK */
    uint64_t step;        /* global step number the message belongs to */
    uint32_t epoch;       /* epoch of that step */
    uint32_t aux;         /* type-specific: ring phase/segment for DATA */
    uint64_t offset;      /* type-specific: element offset for DATA, cursor for STATE */
    uint32_t payload_len; /* bytes in the payload frame; 0 when there is none */
} kd_wire_hdr;

/* Why a message was dropped; counted separately and logged once each. */
#define KD_WIRE_DROPS(X)                                                       \
    X(SHORT, "header frame has the wrong size")                                \
    X(MAGIC, "bad magic (foreign message)")                                    \
    X(VERSION, "unsupported protocol version")                                 \
    X(TYPE, "unknown message type")                                            \
    X(RESERVED, "reserved header bytes not zero")                              \
    X(FRAMES, "wrong number of frames")                                        \
    X(LENGTH, "payload length disagrees with header or type")                  \
    X(JSON, "control body is not a valid JSON object")                         \
    X(STALE, "stale generation or step")                                       \
    X(UNEXPECTED, "valid message not expected in this state")                  \
    X(FIELD, "control body field missing or out of range")                    \
    X(SENDER, "not accepted from this sender now (docs/security.md)")          \
    X(NONFINITE, "non-finite value in a state or gradient")                   \
    X(RATE, "over the rate limit")

typedef enum kd_wire_drop_reason {
#define KD_WIRE_DROP_ENUM(name, text) KD_WIRE_DROP_##name,
    KD_WIRE_DROPS(KD_WIRE_DROP_ENUM)
#undef KD_WIRE_DROP_ENUM
    KD_WIRE_DROP_COUNT
} kd_wire_drop_reason;

/* Name of a message type ("join", "data", ...); "unknown" for other numbers. */
const char *kd_wire_type_name(unsigned type);
/* Which body a type carries; -1 for unknown types. */
int kd_wire_body_of(unsigned type);

/* Writes the KD_WIRE_HDR_SIZE bytes of h into out. Can't fail. */
void kd_wire_encode(const kd_wire_hdr *h, unsigned char out[KD_WIRE_HDR_SIZE]);

/* The BATCH message (the operator's scheduler to a coordinator): writes its header into
 * hdr and its JSON body {"batch": N} into body, and returns the body's length. Can't
 * fail for a batch in the coordinator's range (1..2^20). */
#define KD_WIRE_BATCH_BODY_MAX 32
size_t kd_wire_batch_encode(int batch, unsigned char hdr[KD_WIRE_HDR_SIZE],
                            char body[KD_WIRE_BATCH_BODY_MAX]);

/* Validates a received message given as its frames (frame 0 is the header) and fills
 * *h. Returns KD_OK, or KD_EPROTO with *reason set to why it must be dropped. The
 * payload (frame 1) of a JSON type is only checked for size here; parse it with
 * kd_wire_json. nframes may be anything; frames beyond 2 are an error. */
int kd_wire_decode(const void *const *frames, const size_t *lens, size_t nframes,
                   kd_wire_hdr *h, kd_wire_drop_reason *reason);

/* Parses a JSON control body: returns a new reference to an object, or NULL (and
 * *reason = KD_WIRE_DROP_JSON) when the bytes are not one JSON object. */
json_t *kd_wire_json(const void *data, size_t len, kd_wire_drop_reason *reason);

/* Field helpers for JSON bodies: return 0 and store the value when key holds an
 * integer in [lo, hi] (a number in [lo, hi] for kd_wire_get_num, a string no longer
 * than max_len for kd_wire_get_str: the string is borrowed from obj), -1 otherwise. */
int kd_wire_get_int(const json_t *obj, const char *key, long long lo, long long hi,
                    long long *out);
int kd_wire_get_num(const json_t *obj, const char *key, double lo, double hi, double *out);
int kd_wire_get_str(const json_t *obj, const char *key, size_t max_len, const char **out);

/* Records a dropped message: bumps the per-reason counter and logs the first drop of
 * each reason (with the source name, e.g. "data" or "control"). Thread-safe. */
void kd_wire_drop(kd_wire_drop_reason reason, const char *source);
/* Drops counted for one reason, or for all reasons with KD_WIRE_DROP_COUNT. */
uint64_t kd_wire_drops(kd_wire_drop_reason reason);
const char *kd_wire_drop_name(kd_wire_drop_reason reason);

/* Host <-> little-endian float32 copies; plain memcpy on little-endian hosts. */
void kd_wire_floats_to_le(void *dst, const float *src, size_t n);
void kd_wire_floats_from_le(float *dst, const void *src, size_t n);

#endif
