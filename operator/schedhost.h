/*
 * schedhost: the scheduler host. On an interval and soon after a change (job added or
 * finished, pod or node change), the acting replica builds a sched_snapshot from the
 * informer caches (nodes' allocatable CPU and memory minus the requests of the pods bound
 * to them that are not agents of the snapshot's jobs; each job's range, pin, per-agent
 * requests, current agents, age, attained service, measured throughput per agent count
 * and progress from the coordinators' metrics), asks the policy (kd_sched.h) for every job's
 * desired count, keeps the decisions for the reconciler (schedhost_lookup) and enqueues
 * the jobs whose count changed; the reconciler writes status.agents.desired and
 * lastScheduling and creates or deletes the pods.
 *
 * The rl policy's table is loaded when this replica starts acting: from the ConfigMap
 * state_name (key qtable.json) in state_namespace, else from default_qtable; it is written
 * back (created or updated) every persist_interval_s and when the replica stops acting,
 * so a restart or a new leader continues learning where the last one stopped.
 *
 * Threads: one thread of its own; every function may be called from any thread.
 */
#ifndef KD_SCHEDHOST_H
#define KD_SCHEDHOST_H

#include <stddef.h>

#include "kube_client.h"
#include "metrics.h"
#include "progress.h"
#include "reconcile.h"
#include "kd_sched.h"

typedef struct schedhost_options {
    kube_client *client;
    op_metrics *metrics;
    progress *progress;          /* measured throughput and progress (may be NULL) */
    const char *policy;          /* static | tiresias | fair | greedy | rl */
    double interval_s;           /* scheduling period */
    double debounce_s;           /* delay after a change before a round (default 0.1) */
    double weight_time;          /* default alpha for jobs without weights */
    double weight_cost;          /* default beta */
    const char *state_namespace; /* ConfigMap with the learned table */
    const char *state_name;
    const char *default_qtable;  /* file, "" or NULL = start from an empty table */
    double persist_interval_s;   /* default 60 */
    void (*enqueue)(void *ud, const char *key); /* a job's decision changed */
    void *ud;
} schedhost_options;

typedef struct schedhost schedhost;

/* Copies the options (strings included); caches is borrowed and must outlive the host. KD_EINVAL
 * (message in err) for an unknown policy. */
int schedhost_new(const schedhost_options *o, const rc_caches *caches, schedhost **out,
                  char *err, size_t errlen);
int schedhost_start(schedhost *h);
/* Something changed: run a round soon (debounced). */
void schedhost_poke(schedhost *h);
/* 1: act (load the table at the next round, decide); 0: stand by (decisions are no
 * longer handed out; the table is reloaded when acting again). */
void schedhost_set_acting(schedhost *h, int acting);
/* The reconcile.h lookup: 1 and *out when a decision for key exists. */
int schedhost_lookup(void *h, const char *key, rc_sched_info *out);
/* Rounds done since start. */
long schedhost_rounds(schedhost *h);
/* Stops the thread, saving the table when acting. Idempotent. */
void schedhost_stop(schedhost *h);
void schedhost_free(schedhost **h);

/* Pure helpers (tests): the CPU (millicores) and memory (bytes) a pod requests (limits
 * where requests are missing, as the scheduler does); 0 for unparseable quantities. */
void schedhost_pod_requests(const json_t *pod, double *cpu_millis, double *mem_bytes);
/* Builds the node table from nodes and pods: nodes that are Ready and schedulable, with
 * allocatable minus the requests of live pods bound to them, except pods for which
 * is_agent(ud, pod) returns 1. *out is malloc'ed (n entries, names in names[] if not
 * NULL, malloc'ed array of borrowed strings). */
int schedhost_build_nodes(const json_t *nodes, const json_t *pods,
                          int (*is_agent)(void *ud, const json_t *pod), void *ud,
                          sched_node **out, const char ***names, int *n);

/* The kind of a scheduling decision's reason, the label of
 * kadet_scheduling_decisions_by_reason_total: its leading words without the policy's
 * name, numbers or details, joined by '_' ("pinned to 3" -> "pinned_to"); "unspecified"
 * when nothing is left. Written to out (size n); can't fail. */
void schedhost_reason_kind(const char *policy, const char *reason, char *out, size_t n);

#endif
