/*
 * kd_metrics: the codec of the metrics message a job's coordinator publishes on its PUB
 * socket (one JSON object, at most ~1 Hz and at every evaluated epoch; docs/runtime.md).
 * The coordinator encodes it (runtime/coordinator_io.c); `kadet run` (runtime/launcher.c)
 * and the operator (operator/progress.c) decode it. The keys live here only.
 *
 * A message is a struct kd_metrics whose `has` bits say which fields are present: the
 * encoder writes only those, the decoder sets only those (every other field is zero), so
 * a reader can tell "absent" from 0. The decoder is strict: every present field must have
 * its type and lie in its range (below), strings must fit their buffers, the throughput
 * table holds at most KD_METRICS_MAX_CONFIGS entries; anything else is refused with a
 * line of detail and nothing of the message is used. Unknown keys are ignored, so that a
 * newer coordinator's extra fields do not break an older reader.
 *
 * Nothing here allocates except kd_metrics_encode (its text) and the json_t helpers for
 * one epoch record; no function keeps a pointer to its arguments.
 */
#ifndef KD_METRICS_CODEC_H
#define KD_METRICS_CODEC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define KD_METRICS_JOB_MAX 300     /* bytes of the job's name (namespace/name), NUL included */
#define KD_METRICS_STATE_MAX 16    /* bytes of a state or checkpoint word, NUL included */
#define KD_METRICS_ERROR_MAX 256   /* bytes of checkpoint_error, NUL included */
#define KD_METRICS_MAX_CONFIGS 16  /* throughput entries per message */
#define KD_METRICS_TEXT_MAX 65536  /* longest message a reader accepts */

/* Presence bits of struct kd_metrics (field `has`). */
enum {
    KD_MET_JOB = 1u << 0,              /* job */
    KD_MET_STATE = 1u << 1,            /* state */
    KD_MET_GENERATION = 1u << 2,       /* generation */
    KD_MET_AGENTS = 1u << 3,           /* agents */
    KD_MET_EPOCH = 1u << 4,            /* epoch */
    KD_MET_STEP = 1u << 5,             /* step */
    KD_MET_SAMPLES_PER_S = 1u << 6,    /* samples_per_s */
    KD_MET_COMPUTE_MS = 1u << 7,       /* compute_ms */
    KD_MET_COMM_MS = 1u << 8,          /* comm_ms */
    KD_MET_LOSS = 1u << 9,             /* loss */
    KD_MET_ACCURACY = 1u << 10,        /* accuracy */
    KD_MET_WALL_SECONDS = 1u << 11,    /* wall_seconds */
    KD_MET_EPOCHS = 1u << 12,          /* epochs */
    KD_MET_BATCH = 1u << 13,           /* batch */
    KD_MET_CHECKPOINT = 1u << 14,      /* checkpoint */
    KD_MET_CHECKPOINT_ERROR = 1u << 15, /* checkpoint_error */
    KD_MET_LR = 1u << 16,              /* lr */
    KD_MET_EPOCHS_DONE = 1u << 17,     /* epochs_done */
    KD_MET_LAST_EPOCH = 1u << 18,      /* last_epoch */
    KD_MET_SAMPLES = 1u << 19,         /* samples */
    KD_MET_NOISE = 1u << 20,           /* noise_scale, noise_g2, noise_s (all three) */
    KD_MET_CONFIGS = 1u << 21,         /* configs (n_configs entries, may be 0) */
};

/* Presence bits of struct kd_metrics_epoch (field `has`). */
enum {
    KD_MET_EPOCH_LR = 1u << 0,            /* lr */
    KD_MET_EPOCH_SAMPLES_PER_S = 1u << 1, /* samples_per_s */
};

/* The record of one evaluated epoch (the summary's epoch_log entries and the message's
 * last_epoch). Every field but the two optional ones is required. */
typedef struct kd_metrics_epoch {
    unsigned has;          /* KD_MET_EPOCH_* bits of the optional fields */
    int epoch;             /* 1-based epoch number, 1..1e9 */
    double accuracy;       /* test accuracy after it, 0..1 */
    double train_loss;     /* mean training loss, 0..1e30 */
    double wall_seconds;   /* since the coordinator started, 0..1e12 */
    double train_seconds;  /* since the first world formed (may be negative before), */
    double epoch_seconds;  /* the epoch's training time, 0..1e9 */
    int agents;            /* agents when it ended, 0..1e6 */
    int batch;             /* per-agent batch when it ended, 0..2^20 */
    double lr;             /* learning rate, 0..1e9 (optional) */
    double samples_per_s;  /* the epoch's training samples per second, 0..1e12 (optional) */
} kd_metrics_epoch;

/* Throughput measured at one (agents, batch) configuration of the job. */
typedef struct kd_metrics_config {
    int agents;            /* agents of the world, 1..1e6 */
    int batch;             /* per-agent batch, 1..2^20 */
    double samples_per_s;  /* training samples per second (smoothed), 0..1e12 */
    double step_ms;        /* wall time of one step (smoothed), 0..1e9 */
    double compute_ms;     /* the part of it that grows with the batch (forward and
                              backward; smoothed), 0..1e9 */
} kd_metrics_config;

/* One metrics message. Ranges are the decoder's checks. */
typedef struct kd_metrics {
    unsigned has;                     /* KD_MET_* bits of the fields present */
    char job[KD_METRICS_JOB_MAX];     /* namespace/name of the job */
    char state[KD_METRICS_STATE_MAX]; /* waiting, running, rescaling, succeeded, failed */
    long long generation;             /* world generation, 0..2^32-1 */
    int agents;                       /* agents in the running world, 0..1e6 */
    long long epoch;                  /* 1-based epoch being trained, 0..1e9 */
    long long step;                   /* global step, 0..9e15 */
    long long samples;                /* samples trained, 0..9e15 */
    double samples_per_s;             /* 0..1e12 */
    double compute_ms, comm_ms;       /* per step, 0..1e15 */
    double loss;                      /* training loss, 0..1e30 */
    double accuracy;                  /* last test accuracy, 0..1 */
    double wall_seconds;              /* since the coordinator started, 0..1e12 */
    int epochs;                       /* the job's epochs, 0..1e9 */
    int batch;                        /* per-agent batch, 0..2^20 */
    char checkpoint[KD_METRICS_STATE_MAX];       /* none, ok, failing (other words kept) */
    char checkpoint_error[KD_METRICS_ERROR_MAX]; /* why the last write failed */
    double lr;                        /* learning rate, 0..1e9 */
    int epochs_done;                  /* epochs evaluated, 0..1e9 */
    kd_metrics_epoch last_epoch;      /* the last evaluated epoch */
    double noise_scale;               /* gradient noise scale S/|G|^2, 0..1e30 */
    double noise_g2;                  /* smoothed |G|^2 estimate, -1e30..1e30 */
    double noise_s;                   /* smoothed S (noise trace) estimate, -1e30..1e30 */
    int n_configs;                    /* entries in configs, 0..KD_METRICS_MAX_CONFIGS */
    kd_metrics_config configs[KD_METRICS_MAX_CONFIGS]; /* measured throughput, any order */
} kd_metrics;

/* The message as compact JSON text (new, free() it; *len its length when len != NULL),
 * or NULL when out of memory. Writes the fields in m->has only. */
char *kd_metrics_encode(const kd_metrics *m, size_t *len);

/* Decodes one message of len bytes (not NUL-terminated). Returns KD_OK and fills *m
 * (fields not present are 0 and their bits clear), or KD_EINVAL with one line of detail
 * in err (a message that is not a JSON object, a field of the wrong type or out of its
 * range, a string too long, too many configs); *m is then zeroed. */
int kd_metrics_decode(const char *text, size_t len, kd_metrics *m, char *err, size_t errlen);

/* The same from a parsed object (borrowed). */
int kd_metrics_decode_obj(const json_t *o, kd_metrics *m, char *err, size_t errlen);

/* One epoch record as a JSON object (new reference; NULL when out of memory). */
json_t *kd_metrics_epoch_to_json(const kd_metrics_epoch *e);

/* Decodes one epoch record (borrowed object); KD_OK or KD_EINVAL with detail. */
int kd_metrics_epoch_decode(const json_t *o, kd_metrics_epoch *e, char *err, size_t errlen);

#endif
