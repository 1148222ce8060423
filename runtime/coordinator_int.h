/* coordinator_int: the coordinator's state, shared by coordinator.c (membership and
 * worlds) and coordinator_io.c (checkpoints, metrics, summary). Not a public API. */
#ifndef KD_COORDINATOR_INT_H
#define KD_COORDINATOR_INT_H

#include <stdio.h>

#include "comm_ctl.h"
#include "coordinator.h"
#include "kd_curve.h"
#include "kd_metrics.h"
#include "kd_spec.h"

#define MAX_MEMBERS 256

typedef enum cstate { C_WAITING, C_RUNNING, C_PAUSING, C_GATHER, C_DONE } cstate;

typedef struct pos {
    uint64_t step;   /* next global step */
    uint32_t epoch;  /* its epoch */
    uint64_t cursor; /* samples of that epoch already trained */
} pos;

typedef struct member {
    unsigned char ident[KD_CTL_IDENT_MAX]; /* routing id (the worker's name) */
    size_t ident_len;
    char endpoint[256];  /* data endpoint */
    int used;            /* slot in use */
    int ready;           /* job loaded (READY received) */
    int valid;           /* holds a usable state at p (fresh init or trained) */
    int rank;            /* rank in the current world, -1 = not in it */
    int leaving;         /* sent LEAVE */
    int replied;         /* answered the current pause (PAUSED/FINISHED) */
    int finished;        /* answered with FINISHED */
    pos p;               /* its last reported position */
    uint64_t world_end;  /* where the last world it trained in ended (the next world's
                          * start step), UINT64_MAX = not known here */
    double last_seen;    /* when it was last heard */
    double last_join;    /* when its last JOIN was taken (rate limit per identity) */
    double joined;       /* when it first joined (slot reclaim: oldest unready first) */
} member;

typedef struct coord {
    const kd_coord_config *cfg;
    kd_agentjob job;         /* decoded spec */
    char job_id[300];        /* namespace/name */
    void *zctx, *router, *pub;
    kd_zap *zap;             /* ZAP handler admitting the job's keys, NULL without keys */
    cstate st;
    member m[MAX_MEMBERS];
    int world;               /* members in the current world */
    uint32_t gen;            /* current generation */
    pos start;               /* where the current world started */
    double scale;            /* lr scale of the current world (target of its ramp) */
    double scale_from;       /* ramp start of the current world */
    uint64_t scale_step;     /* ramp start step */
    uint64_t scale_steps;    /* ramp length in steps, 0 = none */
    int max_agents;
    kd_lr_scaling scaling;   /* in effect: the flag's, or from the spec */
    int epochs;
    int batch;               /* per-agent batch of the current world */
    /* Adaptive batch size (coordinator_batch.c). */
    int adaptive_batch;      /* spec.training.adaptive.batchSize, in allreduce mode */
    int batch0, batch_max;   /* the spec's batch (the floor) and adaptive.maxBatchSize */
    double gns_g2, gns_s;    /* smoothed estimates of |G|^2 and of S (noise trace) */
    int gns_reports;         /* reports folded into them */
    double gns_last;         /* the last noise scale of two positive estimates, 0 = none */
    uint64_t gns_steps;      /* noise samples (steps) in the current world */
    double step_a, step_k;   /* step time model of the current world: a*batch + k */
    int step_reports;        /* reports folded into it */
    double batch_changed;    /* when the batch last changed */
    /* Throughput per (agents, batch) configuration run, for the operator's goodput model
     * (published in the metrics' configs): smoothed, the least recently updated entry
     * replaced when full. */
    kd_metrics_config cfgs[KD_METRICS_MAX_CONFIGS];
    double cfg_used[KD_METRICS_MAX_CONFIGS]; /* when each entry was last updated */
    int n_cfgs;
    int cfg_skip;            /* reports of the current world still to skip (warm-up) */
    int batch_decided;       /* the operator's scheduler's batch (BATCH), 0 = none: the
                              * coordinator's own choice then stays out */
    int batch_refused;       /* the last batch refused (logged once per value) */
    /* Sizes agreed by every READY worker. */
    size_t n_params, n_state, n_train;
    uint64_t fingerprint;
    /* The coordinator's own copy of the state (checkpoint or last transfer). */
    int have_state;
    pos sp;                  /* its position */
    float *state;            /* n_params + n_state floats, little-endian as received */
    int state_from;          /* member index asked for a state, -1 = none */
    int ckpt_from;           /* member index asked for a checkpoint state, -1 = none */
    uint32_t ckpt_gen;       /* ... in this generation */
    int wbatch;              /* per-agent batch of the current world (c->batch may already
                              * hold the next one while it pauses) */
    double join_tokens;      /* JOINs of new identities allowed now (token bucket) */
    double join_refill;      /* when the bucket was last refilled */
    double gather_deadline;  /* give up on that state request */
    int finishing;           /* training is over once the state is in */
    double pause_deadline;   /* drop members that have not answered by then */
    double first_ready;      /* when the first worker became ready, 0 = none */
    double last_hb, last_pub, last_ckpt, t_start;
    double t_first_world;    /* when the first world started training */
    int ckpt_requested;
    int formed;              /* a world has been formed at least once */
    int saved;               /* the checkpoint on disk was written or loaded by us */
    uint64_t saved_step;     /* ... and holds this step */
    int saved_eval;          /* ... and the evaluation of this epoch (epochs_done) */
    int ckpt_written;        /* a checkpoint was written by this coordinator */
    int ckpt_failing;        /* the last write (or the start probe) failed */
    char ckpt_error[256];    /* ... with this error (metrics, summary, one log line) */
    /* Metrics. */
    json_t *last_metrics;    /* rank 0's last step metrics (owned) */
    double accuracy, test_loss, train_loss; /* last epoch's evaluation */
    int epochs_done;
    double train_seconds;    /* sum of epoch times */
    uint64_t samples_trained;
    json_t *epoch_log;       /* [{epoch, accuracy, wall_seconds, agents}] (owned) */
    kd_metrics_epoch last_epoch; /* the last record of epoch_log (valid when have_last_epoch) */
    int have_last_epoch;
    FILE *range_log;
} coord;

/* coordinator_batch.c */
void coord_batch_init(coord *c);
/* Forgets the step-time model and counts: they belong to one world. */
void coord_batch_new_world(coord *c);
/* Folds rank 0's step metrics (with its gradient norms) into the estimates. */
void coord_batch_observe(coord *c, const json_t *metrics);
/* The smoothed gradient noise scale Bn, 0 while unknown. */
double coord_batch_noise(const coord *c);
/* A BATCH message (the operator's, checked by the caller): takes its batch when it lies
 * within the job's bounds, refuses it with a log line otherwise. */
void coord_on_batch(coord *c, const kd_ctl_msg *msg);
/* Folds rank 0's step report into the throughput table of the current configuration. */
void coord_configs_observe(coord *c, const json_t *metrics, double now);
/* Sets c->batch to a better per-agent batch and returns 1, or returns 0. */
int coord_batch_decide(coord *c, double now);
/* AdaScale's learning-rate gain for agents at the current batch against the base one. */
double coord_batch_lr_gain(const coord *c, int agents);
/* Continues from a checkpoint's batch state (batch 0: none recorded; a batch outside the
 * job's current bounds, or adaptation now off, is not taken). */
void coord_batch_restore(coord *c, int batch, double noise_g2, double noise_s);

/* coordinator_io.c */
void coord_save_checkpoint(coord *c);
/* Appends the cursor ranges trained from `from` to `to` to the range log (debug). */
void coord_log_ranges(coord *c, pos from, pos to);
/* Publishes the job's metrics (JSON) on the PUB socket. */
void coord_publish(coord *c, const char *state_name);
void coord_write_summary(coord *c);
void coord_on_metrics(coord *c, member *mb, const kd_ctl_msg *msg);
/* The checkpoint directory in effect (--checkpoint-dir, else spec.checkpoint.path), or
 * NULL when the job keeps no checkpoints. */
const char *coord_checkpoint_dir(const coord *c);
/* Writes and removes a probe file in the checkpoint directory at start, so that an
 * unwritable directory is reported at once (ckpt_failing) instead of at the first save. */
void coord_probe_checkpoint(coord *c);
/* Whether position p is one the current world can have reached from its start, with its
 * agent count and batch (a member's claimed position, docs/security.md). */
int coord_pos_reachable(const coord *c, pos p);
/* Counts and logs (first of each kind) a message of an admitted peer that the checks of
 * docs/security.md refused. */
void coord_reject(coord *c, const member *mb, const char *what, kd_wire_drop_reason why);
/* Loads the latest valid checkpoint, if any, as the coordinator's state. */
int coord_load_checkpoint(coord *c);
/* The fingerprint of this job with a model of np parameters and ns optimizer floats. */
uint64_t coord_fingerprint(const coord *c, uint64_t np, uint64_t ns);

#endif
