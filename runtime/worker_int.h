/* worker_int: the worker's state, shared by worker.c (lifecycle and control plane: JOIN,
 * WELCOME, WORLD, READY, STATE, metrics and epoch reports) and worker_step.c (the training
 * step in its modes). Not a public API. */
#ifndef KD_WORKER_INT_H
#define KD_WORKER_INT_H

#include <stdint.h>
#include <stdio.h>

#include "comm.h"
#include "kd_curve.h"
#include "kd_spec.h"
#include "kd_train.h"
#include "worker.h"

#define TAIL_PAUSE 0  /* control floats riding on the allreduce: pause votes */
#define TAIL_FINISH 1 /* finish votes (target accuracy reached) */
#define TAIL_LOSS 2   /* sum of loss * samples */
#define TAIL_COUNT 3  /* samples in the step */
#define TAIL_GSQ 4    /* adaptive batch: |mean gradient over our samples|^2 (upper layers) */
#define TAIL_N 5
#define MAX_PEERS 1024
/* Floats of a peer's gradient checked for non-finite values and then applied together:
 * 16 KiB stays in the L1 cache between the two. */
#define FINITE_BLOCK 4096

typedef enum step_result { STEP_OK, STEP_PAUSED, STEP_FINISHED, STEP_FAILED } step_result;

typedef struct worker {
    const kd_worker_config *cfg;  /* borrowed settings */
    char name[128];               /* routing id and log name */
    void *zctx;                   /* ZeroMQ context */
    void *ctl;                    /* DEALER to the coordinator */
    kd_comm *comm;                /* data plane */
    kd_zap *zap;                  /* ZAP handler of the data endpoint, NULL without keys */
    int data_curve;               /* the data endpoint's mode: CURVE or authenticated */
    char data_ep[256];            /* our data endpoint as announced */
    char coord_ep[512];           /* the coordinator endpoint connected (name resolved) */
    double last_coord;            /* when the coordinator was last heard */
    double last_sent;             /* when we last sent anything to it */
    double last_join;             /* when JOIN was last sent */
    /* The job, known after WELCOME. */
    int have_job;                 /* data and model are loaded */
    kd_agentjob job;              /* decoded spec */
    int epochs;                   /* epochs to train */
    uint64_t seed;                /* shuffle and initialisation seed */
    kd_dataset train, test;       /* the data */
    kd_model m;                   /* the model (params, grads) */
    kd_optim o;                   /* the optimizer state */
    kd_lr_schedule sched;         /* base learning-rate schedule */
    uint32_t *perm;               /* permutation of the current epoch */
    int64_t perm_epoch;           /* epoch perm belongs to, -1 = none */
    float *xb;                    /* batch features */
    int32_t *yb;                  /* batch labels */
    float *xn;                    /* the next step's batch, gathered while the exchange */
    int32_t *yn;                  /* of this one is on the wire (prefetch_next) */
    int64_t pre_epoch;            /* what xn/yn hold: perm[pre_start, +pre_n) of pre_epoch */
    uint64_t pre_start, pre_n;    /* (pre_n = 0: nothing) */
    float *avg;                   /* local-sgd: parameters being averaged */
    float tail[TAIL_N];           /* control floats of the current step */
    int grad_blocks;              /* row blocks of the first layer's gradient */
    size_t noise_from;            /* adaptive batch: gradient offset from which the noise
                                   * is measured (noise_base), n_params = not measured */
    /* The "factors" exchange (docs/runtime.md): layer 0's gradient is rebuilt from the
     * global batch's inputs and all-gathered output gradients. */
    int factors;                  /* this world exchanges factors */
    int bf16;                     /* sync.compression bf16 in allreduce mode: gradients and
                                   * factors travel as bfloat16 */
    size_t ready_base;            /* grads offset where the allreduced vector starts */
    float *xall;                  /* global batch features [world*batch x dim] */
    int32_t *yall;                /* global batch labels */
    float *dyall;                 /* dL/d(layer 0 output) of the global batch
                                   * [world*batch x width], summed with zeros elsewhere */
    size_t *gbounds;              /* world+1 bounds of the ranks' rows of dW0, in floats */
    int fworld;                   /* world the factor buffers are sized for */
    size_t frows;                 /* global-batch rows the factor buffers hold */
    int bmax;                     /* per-agent batch ceiling the buffers are sized for */
    /* Adaptive batch size: the gradient noise measured on the layers above the first. */
    double gsq_local;             /* this step: sum of squares of our scaled gradient */
    double g_small, g_big;        /* window sums of the ranks' mean |g_local|^2 and of
                                   * |g_global|^2 */
    uint64_t g_n;                 /* steps in them */
    /* The world, known after WORLD. */
    uint32_t gen;                 /* generation */
    int rank, world;              /* our rank and the world size */
    uint64_t step;                /* next global step */
    uint32_t epoch;               /* epoch of the next step */
    uint64_t cursor;              /* samples of that epoch already trained */
    double scale_from, scale_to;  /* learning-rate scale ramp over the warm-up */
    uint64_t scale_step, warmup;  /* ramp start step and length in steps */
    int finish_vote;              /* target accuracy reached: vote to finish */
    int pause_vote;               /* coordinator asked to pause, or we are leaving */
    int leave_sent;               /* LEAVE already sent */
    int fatal;                    /* unrecoverable (diverged): exit with failure */
    int trained;                  /* params moved away from the seeded initialisation */
    /* Samples of a step that failed after our contribution may have been applied by a
     * peer; logged once the next world shows whether the step counted. */
    uint64_t pend_step;           /* that step, UINT64_MAX = none */
    uint32_t pend_epoch;          /* its epoch */
    uint64_t pend_start, pend_n;  /* its slice of the permutation */
    FILE *sample_log;             /* debug sample-id log or NULL */
    /* Metrics accumulated since the last report. */
    double m_compute, m_comm, m_loss, m_t0; /* seconds, summed loss*n, window start */
    double m_update;              /* seconds of it in the optimizer step (per step, not
                                   * per sample: the adaptive batch's step-time model) */
    double step_sends;            /* this step: seconds in the exchange's sends and
                                   * progress during the backward pass (comm, not compute) */
    uint64_t m_samples, m_steps;  /* global samples and steps in the window */
    double epoch_loss;            /* loss*n summed over the epoch (global) */
    uint64_t epoch_n;             /* samples in it */
    double epoch_t0;              /* wall clock at the epoch's first step */
    int64_t epoch_t0_of;          /* the epoch epoch_t0 and epoch_loss belong to, -1 none */
    double last_train_loss;       /* mean training loss of the last finished epoch */
    double last_lr;               /* learning rate of the last step (progress lines) */
    json_t *last_eval;            /* rank 0's latest epoch report: re-sent with READY, so a
                                   * coordinator restarted while we trained on still learns
                                   * the accuracy of the epochs it missed */
} worker;

/* worker_step.c */
/* Writes the samples perm[start, +n) of epoch to the debug sample log, if any. */
void worker_log_samples(worker *w, uint32_t epoch, uint64_t start, uint64_t n);
/* Sets up the step modes of a world just announced (factors and their buffers, the noise
 * measurement, bf16); -1 when this rank cannot take part (no memory: w->fatal is set). */
int worker_step_world(worker *w);
/* Trains one global step of the current world. */
step_result worker_train_step(worker *w);

/* worker.c */
/* After an epoch: evaluation (shared = every rank of the world calls it at the same step),
 * rank 0's report and finish vote. */
void worker_epoch_end(worker *w, uint32_t done_epoch, int shared);

#endif
