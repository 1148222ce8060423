/*
 * worker: one agent of a distributed job (`kadet worker`).
 *
 * A worker connects a DEALER to the coordinator, says JOIN, receives the job (WELCOME),
 * loads the data and builds the model, says READY, and then trains in the worlds the
 * coordinator announces (WORLD: generation, rank, peers, position, learning-rate
 * scaling). Each step it takes its slice of the global batch at the epoch's shared
 * cursor, computes the gradient, and allreduces it with its peers (comm.h) together with
 * a few control floats: a pause vote (any rank that was asked to pause, or got SIGTERM,
 * or lost the coordinator), a finish vote (target accuracy reached), the loss and the
 * sample count. Because the votes travel inside the allreduce, every rank learns them at
 * the same step and all stop at the same boundary; then each reports PAUSED and waits
 * for the next WORLD. A peer that dies makes the allreduce time out: the survivors have
 * not applied the step, report PAUSED (failed) with the step they must redo, and the
 * coordinator re-forms the ring. With sync mode local-sgd, workers step on their own
 * gradient and average parameters every H steps (and at each epoch end).
 */
#ifndef KD_WORKER_H
#define KD_WORKER_H

#include <stddef.h>

typedef struct kd_worker_config {
    const char *coordinator;  /* coordinator control endpoint (tcp://host:port) */
    const char *bind;         /* data endpoint to bind, e.g. tcp://127.0.0.1:* */
    const char *advertise;    /* host to announce instead of the bound address, or NULL */
    const char *name;         /* unique worker name (routing id); NULL = host-pid-random */
    int threads;              /* math threads, >= 1 */
    int comm_timeout_ms;      /* silence after which a peer counts as dead */
    size_t chunk_bytes;       /* allreduce chunk size */
    int coord_timeout_ms;     /* silence after which the coordinator counts as lost */
    const char *sample_log;   /* debug: append "epoch sample" per trained sample, or NULL */
    const struct kd_curve_keys *keys; /* the job's keys (kd_curve.h); NULL or not enabled =
                                       * unauthenticated */
    int data_curve;           /* data endpoint's first mode: CURVE (1) or authenticated (0);
                               * the job's spec.security.dataPlane decides (rebind) */
} kd_worker_config;

void kd_worker_config_default(kd_worker_config *c);

/* Runs the worker until the coordinator says DONE (returns 0), the worker leaves after
 * SIGTERM/SIGINT (0), or a fatal error (1, message logged). Installs SIGTERM and SIGINT
 * handlers. */
int kd_worker_run(const kd_worker_config *cfg);

#endif
