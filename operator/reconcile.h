/*
 * reconcile: the AgentJob controller (client-go style). Informer handlers only enqueue
 * "namespace/name" keys (pods and Services by their controller owner reference); worker
 * threads take keys from a wq, sync them and then forget them or re-add them with
 * rate-limited backoff. A sync reads the job, its pods and its Service from the informer
 * caches (never modifying cached objects), asks reconcile_plan for the decisions, creates
 * and deletes objects (podspec), records Events, and writes the status through the
 * status subresource (docs/operator.md section 3).
 *
 * Only an acting replica (the leader, or every replica without election) writes
 * anything: a standby's workers drop keys, and rc_controller_set_acting(1) re-enqueues
 * every cached job.
 *
 * Lifecycle: rc_controller_new -> rc_controller_handlers (give them to the informers) ->
 * rc_controller_set_caches -> rc_controller_start -> ... -> rc_controller_stop ->
 * rc_controller_free. Handlers may run before start: keys wait in the queue.
 */
#ifndef KD_RECONCILE_H
#define KD_RECONCILE_H

#include <stddef.h>

#include "informer.h"
#include "jobkeys.h"
#include "kube_client.h"
#include "metrics.h"
#include "podspec.h"

#define RC_MAX_JOB_INFORMERS 64

/* The informer caches the controller and the scheduler host read (owned by main). */
typedef struct rc_caches {
    informer *jobs[RC_MAX_JOB_INFORMERS];     /* AgentJobs, one per watched namespace */
    size_t n_jobs;
    informer *services[RC_MAX_JOB_INFORMERS]; /* Services labelled kadet.io/job-name */
    size_t n_services;
    informer *pods;                           /* every pod (all namespaces) */
    informer *nodes;
} rc_caches;

/* New reference to the cached AgentJob under "ns/name", or NULL. */
json_t *rc_caches_get_job(const rc_caches *c, const char *key);
/* New array of every cached AgentJob. */
json_t *rc_caches_list_jobs(const rc_caches *c);
/* 1 once every informer applied its first list (acting on a partial cache could miss
 * pods that exist and create others in their place). */
int rc_caches_synced(const rc_caches *c);

/* What the scheduler host decided for a job (reconcile reads it on every sync). */
typedef struct rc_sched_info {
    int desired;            /* agents; 0 = queued */
    char policy[32];
    char reason[160];
    double pred_speed, pred_cost, pred_reward;
    int batch;              /* per-agent batch chosen with the count; 0 = not chosen */
} rc_sched_info;
/* Returns 1 and fills *out when a decision exists for key. */
typedef int (*rc_sched_lookup_fn)(void *ud, const char *key, rc_sched_info *out);

/* The latest metrics of a job's coordinator (progress.h fills it). */
typedef struct rc_progress_info {
    long epoch, step, samples; /* samples < 0: unknown */
    double loss, accuracy, samples_per_s;
    int agents;
    int batch; /* per-agent batch of the running world (adaptive batch size); 0: unknown */
    int checkpoint; /* an rc_ckpt_state (reconcile_plan.h): the metrics' "checkpoint" */
    char checkpoint_error[256]; /* the coordinator's error when it is failing */
    int evaluated; /* 1 once an epoch was evaluated; before, accuracy means nothing */
    double noise_scale; /* the coordinator's gradient noise scale; 0 = not measured */
} rc_progress_info;
typedef int (*rc_progress_lookup_fn)(void *ud, const char *key, rc_progress_info *out);
/* Tells the progress module where a job's coordinator publishes (NULL: stop). */
typedef void (*rc_progress_watch_fn)(void *ud, const char *key, const char *endpoint);

typedef struct rc_options {
    kube_client *client;
    op_metrics *metrics;
    podspec_options podspec;
    int workers;                 /* sync threads, >= 1 */
    double progress_interval_s;  /* least time between two progress status writes */
    rc_sched_lookup_fn sched_lookup;
    void *sched_ud;
    void (*on_change)(void *ud); /* a job, pod or node changed: the scheduler host runs */
    void *change_ud;
    rc_progress_lookup_fn progress_lookup;
    rc_progress_watch_fn progress_watch;
    void (*progress_forget)(void *ud, const char *key); /* the job is gone */
    void *progress_ud;
    jobkeys_cache *operator_keys; /* its public key goes into every job's key Secret and
                                     job keys are derived from it; NULL = none (random job
                                     keys, no operator.pub) */
    /* The job's public key for the metrics subscription (progress_set_job_key), given
     * while its coordinator runs; NULL = not needed. Uses progress_ud. */
    void (*progress_job_key)(void *ud, const char *key, const char *job_public);
    /* The operator's own keypair, the subscription's client key, given before the first
     * job key (progress_set_operator_key); NULL = not needed. Uses progress_ud. */
    void (*progress_operator_key)(void *ud, const char *pub, const char *sec);
    /* Sends the scheduler's batch to a job's coordinator (progress_send_batch): KD_OK
     * once sent; NULL = the operator never sets a batch. Uses progress_ud. */
    int (*progress_send_batch)(void *ud, const char *key, const char *endpoint, int batch);
} rc_options;

typedef struct rc_controller rc_controller;

int rc_controller_new(const rc_options *o, rc_controller **out, char *err, size_t errlen);
/* Handlers for the AgentJob, Service, pod and node informers. */
informer_handlers rc_controller_job_handlers(rc_controller *c);
informer_handlers rc_controller_owned_handlers(rc_controller *c);
informer_handlers rc_controller_node_handlers(rc_controller *c);
void rc_controller_set_caches(rc_controller *c, const rc_caches *caches);
int rc_controller_start(rc_controller *c);
/* 1: act (and re-sync every job); 0: stand by. Callable from any thread. */
void rc_controller_set_acting(rc_controller *c, int acting);
/* Queue a job key (the scheduler host uses it when a decision changes). */
void rc_controller_enqueue(rc_controller *c, const char *key);
/* Syncs done since start (the benchmark's reconciles per second). */
long rc_controller_syncs(rc_controller *c);
/* Shuts the queue down and joins the workers. Idempotent. */
void rc_controller_stop(rc_controller *c);
void rc_controller_free(rc_controller **c);

/* RFC 3339 UTC text of t (epoch seconds) and back (0 on a parse failure). */
void rc_format_time(double t, char *buf, size_t len);
double rc_parse_time(const char *text);

#endif
