/*
 * reconcile_int: what reconcile.c (queue, workers, handlers) and reconcile_sync.c (one
 * sync: gather, plan, execute, status) share. Not for other modules.
 */
#ifndef KD_RECONCILE_INT_H
#define KD_RECONCILE_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "kube_map.h"
#include "reconcile.h"
#include "wq.h"

#define RC_MAX_WORKERS 64
#define RC_DELETED_MAX 16      /* pod uids remembered per job after we deleted them */
#define RC_DELETED_TTL_S 120.0 /* ... for this long (the cache catches up well before) */
#define RC_COUNTED_MAX 32      /* uids of failed pods counted lately (a ring) */
#define RC_CREATED_MAX 16      /* worker pods created and not yet seen in the cache ... */
#define RC_CREATED_TTL_S 30.0  /* ... expected for this long */

extern const kube_resource RC_AGENTJOBS;

/* What the controller remembers about a job between syncs (guarded by rc_controller.mu). */
typedef struct rc_jobstate {
    char deleted[RC_DELETED_MAX][64];  /* uids of pods we deleted */
    double deleted_at[RC_DELETED_MAX]; /* when (0 = free slot) */
    long next_index;                   /* worker numbers are never reused in a job */
    double last_progress_write;        /* time of the last status.progress change */
    double last_batch_sent;            /* when the scheduler's batch was last sent */
    long last_invalid_gen;             /* generation whose InvalidSpec event was sent */
    int failures;                      /* failures this operator counted (status.failures
                                          as written; the cache may lag behind it) */
    double last_failure_at;            /* when it counted the last one, 0 = never */
    char counted[RC_COUNTED_MAX][64];  /* uids of the failed pods it counted (written to
                                          status.failedPods; the cache may lag) */
    int counted_next;                  /* the ring's next slot */
    char created[RC_CREATED_MAX][254]; /* worker pods we created that the pod cache has
                                          not shown yet (a sync on that cache would
                                          create another under the next number) */
    long created_index[RC_CREATED_MAX];
    double created_at[RC_CREATED_MAX]; /* when (0 = free slot) */
} rc_jobstate;

struct rc_controller {
    rc_options opt;
    rc_caches caches;
    wq *q;
    pthread_t threads[RC_MAX_WORKERS];
    int n_threads;
    atomic_int acting;
    atomic_long syncs;
    pthread_mutex_t mu;  /* guards jobs */
    kube_map *jobs;      /* "ns/name" -> rc_jobstate */
};

double rc_now(void);
/* One sync of key; *requeue_s > 0 asks for another after that long. */
int rc_sync(rc_controller *c, const char *key, double *requeue_s);
/* The job's record, created on first use; c->mu must be held. NULL when out of memory. */
rc_jobstate *rc_jobstate_get(rc_controller *c, const char *key);
int rc_was_deleted(rc_controller *c, const char *key, const char *uid, double now);
void rc_mark_deleted(rc_controller *c, const char *key, const char *uid, double now);

#endif
