/*
 * metrics: a small thread-safe registry of counters and gauges with labels, rendered in
 * the Prometheus text exposition format (version 0.0.4) for the operator's /metrics.
 *
 * A family is a metric name with a help text, a type and fixed label names; each set of
 * label values is one series. Families are registered once at start (registration is not
 * meant to race with updates of the same registry from other threads, but it is safe);
 * updates and rendering take the registry's lock, so any thread may update while the
 * HTTP thread renders. A family holds at most OPM_MAX_SERIES series, so a label fed from
 * user data (job names) cannot grow memory without bound; series of deleted jobs are
 * removed with opm_remove.
 *
 * The operator's own families (reconciles, errors, queue depth, watch restarts, scheduling
 * decisions and rewards, jobs by phase, leadership) are created by op_metrics_init, so
 * every component updates the same names and docs/operator.md lists them in one place.
 */
#ifndef KD_METRICS_H
#define KD_METRICS_H

#include <stddef.h>

#define OPM_MAX_LABELS 4
#define OPM_MAX_SERIES 10000
#define OPM_MAX_VALUE_LEN 1024 /* bytes of one label value */

typedef enum opm_type { OPM_COUNTER = 0, OPM_GAUGE = 1, OPM_HISTOGRAM = 2 } opm_type;
#define OPM_MAX_BUCKETS 16

typedef struct opm_registry opm_registry;
typedef struct opm_family opm_family;

/* A new empty registry in *out; free with opm_registry_free. */
int opm_registry_new(opm_registry **out);
/* Frees the registry and its families; sets *reg to NULL; accepts NULL and *reg NULL. */
void opm_registry_free(opm_registry **reg);

/* Registers a family. name matches [a-zA-Z_:][a-zA-Z0-9_:]*, label names
 * [a-zA-Z_][a-zA-Z0-9_]* not starting with "__", at most OPM_MAX_LABELS; the strings are
 * copied. A family without labels starts with its one series at 0. *out is owned by the
 * registry. Errors: KD_EINVAL (bad name, help or labels), KD_EEXISTS (name taken). */
int opm_family_add(opm_registry *reg, opm_type type, const char *name, const char *help,
                   size_t nlabels, const char *const *label_names, opm_family **out,
                   char *err, size_t errlen);

/* Registers a histogram family (opm_family_add's rules) with upper bounds bounds[0] <
 * ... < bounds[nbounds-1] (finite, at most OPM_MAX_BUCKETS; +Inf is implied). Its series
 * are rendered as name_bucket{...,le="b"} (cumulative), name_sum and name_count. */
int opm_histogram_add(opm_registry *reg, const char *name, const char *help, size_t nlabels,
                      const char *const *label_names, const double *bounds, size_t nbounds,
                      opm_family **out, char *err, size_t errlen);
/* Records one observation v in a histogram's series (KD_EINVAL on other families or NaN).
 * opm_get on a histogram series reads its count. */
int opm_observe(opm_family *fam, const char *const *values, double v);

/* Adds delta to the series with these label values (one per label name, in order; NULL
 * when the family has none), creating it at 0 first. Counters refuse negative or NaN
 * deltas (KD_EINVAL). KD_ETOOBIG when the family is full or a value too long. */
int opm_add(opm_family *fam, const char *const *values, double delta);
/* Sets a gauge's series (KD_EINVAL on a counter). */
int opm_set(opm_family *fam, const char *const *values, double value);
/* Reads a series; KD_ENOTFOUND when it does not exist. */
int opm_get(opm_family *fam, const char *const *values, double *value);
/* Removes a series; KD_ENOTFOUND when it does not exist. */
int opm_remove(opm_family *fam, const char *const *values);

/* Renders every family in registration order, series sorted by label values, into a new
 * NUL-terminated buffer (*text, caller frees) of *len bytes. */
int opm_render(opm_registry *reg, char **text, size_t *len);

/* The operator's metric families (see docs/operator.md for their meaning). */
typedef struct op_metrics {
    opm_registry *reg;
    opm_family *reconciles;       /* kadet_reconciles_total{result=success|error|requeue} */
    opm_family *errors;           /* kadet_errors_total{component} */
    opm_family *queue_depth;      /* kadet_workqueue_depth */
    opm_family *watch_restarts;   /* kadet_watch_restarts_total{resource} */
    opm_family *sched_decisions;  /* kadet_scheduling_decisions_total{policy,action} */
    opm_family *sched_reward_sum; /* kadet_scheduling_reward_sum{policy} */
    opm_family *sched_reward;     /* kadet_scheduling_last_reward{namespace,job} */
    opm_family *jobs;             /* kadet_jobs{phase} */
    opm_family *leader;           /* kadet_leader */
    opm_family *build_info;       /* kadet_build_info{version} */
    opm_family *start_time;       /* process_start_time_seconds */
    opm_family *reconcile_seconds; /* kadet_reconcile_duration_seconds (histogram) */
    opm_family *sched_reasons;    /* kadet_scheduling_decisions_by_reason_total{policy,reason} */
    /* Per job, labels namespace and name (series removed with the job): */
    opm_family *job_agents;       /* kadet_job_agents (ready) */
    opm_family *job_desired;      /* kadet_job_desired_agents */
    opm_family *job_batch;        /* kadet_job_batch_size (per agent) */
    opm_family *job_speed;        /* kadet_job_samples_per_second */
    opm_family *job_loss;         /* kadet_job_loss */
    opm_family *job_accuracy;     /* kadet_job_accuracy (only once evaluated) */
    opm_family *job_epoch;        /* kadet_job_epoch */
} op_metrics;

/* Creates the registry and the families in *m (every phase of kadet_jobs at 0,
 * build_info at 1, start time set). Free with op_metrics_free (accepts a zeroed struct). */
int op_metrics_init(op_metrics *m, char *err, size_t errlen);
/* Sets the per-job gauges of ns/name from the AgentJob's status (borrowed JSON; absent
 * fields leave their series out: no accuracy before the first evaluation). */
struct json_t;
void op_metrics_set_job(op_metrics *m, const char *ns, const char *name,
                        const struct json_t *status);
/* Removes every per-job series of ns/name (the job is gone). */
void op_metrics_remove_job(op_metrics *m, const char *ns, const char *name);
void op_metrics_free(op_metrics *m);

#endif
