/*
 * coordinator: one per job (`kadet coordinator`): membership, the epoch's global sample
 * cursor, learning-rate rescaling, checkpoints and metrics.
 *
 * Workers talk to its ROUTER socket (protocol in worker.h and docs/runtime.md). The
 * coordinator admits workers that are READY, and changes the world only at step
 * boundaries: it asks the current world to PAUSE (the workers agree on the step through
 * their allreduce), collects every member's position (PAUSED), picks the most advanced
 * state among the members and its own (checkpoint or last transfer), has it sent to every
 * member that lacks it, bumps the generation and announces the new WORLD. Because every
 * world starts at exactly the position the previous one reached, no sample of an epoch is
 * skipped or trained twice across joins, leaves and failures. A member that fails
 * mid-step makes its peers time out and report a failed PAUSED; members that never
 * answer are dropped.
 *
 * Checkpoints (checkpoint.h) are written from rank 0's state every interval, whenever a
 * state transfer happens and at the end; at start the latest valid checkpoint is loaded.
 * Metrics are published as JSON on a PUB socket at most once a second.
 */
#ifndef KD_COORDINATOR_H
#define KD_COORDINATOR_H

#include <stdint.h>

#include <jansson.h>

typedef enum kd_lr_scaling {
    KD_LR_SCALE_LINEAR = 0, /* lr x agents (global batch grows linearly), with warm-up */
    KD_LR_SCALE_SQRT = 1,   /* lr x sqrt(agents), with warm-up */
    KD_LR_SCALE_NONE = 2    /* lr as in the spec whatever the agent count */
} kd_lr_scaling;

typedef struct kd_coord_config {
    const json_t *job_doc;      /* the AgentJob document (borrowed) */
    const char *bind;           /* control ROUTER endpoint, e.g. tcp://0.0.0.0:7070 */
    const char *metrics_bind;   /* metrics PUB endpoint, e.g. tcp://0.0.0.0:7071 */
    const char *endpoint_file;  /* write the bound endpoints here (launcher), or NULL */
    const char *data;           /* dataset directory override sent to workers, or NULL */
    int epochs;                 /* override spec epochs when > 0 */
    int batch;                  /* override per-agent batch when > 0 */
    uint64_t seed;              /* shuffle and initialisation seed */
    long max_samples;           /* train on the first N samples only, 0 = all */
    int initial_agents;         /* wait for this many before the first world, >= 1 */
    double initial_wait_s;      /* ... but at most this long once one is ready */
    int max_agents;             /* admit at most this many (0 = spec agents.max) */
    kd_lr_scaling lr_scaling;   /* how the learning rate follows the agent count */
    int lr_scaling_set;         /* 0: from the spec (adaptive.learningRate false = none) */
    int warmup_steps;           /* steps of the ramp after a change, 0 = jump */
    double start_warmup_epochs; /* ramp of the first world from one agent's rate, in
                                 * epochs (at most a fifth of the job's), 0 = jump */
    const char *checkpoint_dir; /* override spec.checkpoint.path, or NULL */
    int checkpoint_interval;    /* seconds, override when > 0 */
    int comm_timeout_ms;        /* workers' peer timeout (bounds the pause deadline) */
    const char *summary_json;   /* write the final summary here, or NULL */
    const char *range_log;      /* debug: log worlds and trained cursor ranges, or NULL */
    const struct kd_curve_keys *keys; /* the job's keys (kd_curve.h), NULL or not enabled =
                                       * unauthenticated control plane and metrics */
} kd_coord_config;

void kd_coord_config_default(kd_coord_config *c);
const char *kd_lr_scaling_name(kd_lr_scaling s);
int kd_lr_scaling_parse(const char *text, kd_lr_scaling *out);

/* Runs the coordinator until training is finished (0), or a fatal error (1). SIGTERM or
 * SIGINT before the end: writes a checkpoint if it can and returns 1 without telling the
 * workers (they pause and rejoin a restarted coordinator). */
int kd_coord_run(const kd_coord_config *cfg);

#endif
