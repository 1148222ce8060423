/*
 * sim: kadet-sim's trace-driven cluster simulator. sim_model.c turns the Pollux traces
 * into a job model (step time by agent count, node count and batch size; iterations to
 * the last epoch) and reads workloads; sim_run.c replays a workload against a policy from
 * the scheduler core; sim_main.c is the command line.
 *
 * Model (docs/scheduler.md): a job keeps its global batch size B whatever its agent count
 * n, so its length in iterations is fixed (the validation trace's last epoch at B) and
 * only the time per iteration changes with n: step(n, k) = a * compute(B / (n a)) +
 * sync(n, k), where k is the number of nodes its agents sit on and a the gradient
 * accumulation steps needed when B / n exceeds the largest local batch ever measured.
 *
 * Goodput model (--batch-model goodput, sim_goodput.c): the Pollux artifact's job model.
 * Step time from the measured row of each placement and local batch, progress integrated
 * epoch by epoch at gain / step time with the gain from each epoch's gradient statistics,
 * the artifact's accumulation rules, and a batch re-chosen by the job for elastic policies.
 */
#ifndef KD_SIM_H
#define KD_SIM_H

#include <stddef.h>

#include "kd_sched.h"

#define SIM_MAX_LB 64     /* distinct local batch sizes kept per app */
#define SIM_MAX_N 64      /* largest agent count with measured sync time */
#define SIM_MAX_K 16      /* largest node count with measured sync time */
#define SIM_MAX_BSZ 16    /* validation traces (batch sizes) kept per app */
#define SIM_PLACE_MAX 16  /* nodes of a placement the goodput model keys rows by */

/* One measured row of placements.csv: placement digits normalised to their smallest
 * rotation (the artifact's key), local batch, step and sync seconds. */
typedef struct sim_prow {
    char id[SIM_PLACE_MAX + 1];
    double lb, step, sync;
} sim_prow;

/* One (nodes, replicas, local batch) point: the mean of placements.csv rows with that
 * shape, or a scalability.csv row. */
typedef struct sim_grow {
    int k, n;
    double lb, step, sync;
} sim_grow;

/* The goodput model's data of one application (NULL in sim_app when it could not load). */
typedef struct sim_gp {
    sim_prow *prow;      /* sorted by id, then lb */
    int n_prow;
    sim_grow *grow;      /* sorted by k, n, lb */
    int n_grow;
    int n_val;           /* validation traces, ascending batch size */
    int vbsz[SIM_MAX_BSZ];
    int n_ep;            /* epochs every trace has (the shortest trace) */
    double *sqr, *var;   /* n_val x n_ep gradient statistics (grad_sqr, grad_var) */
    double *prog;        /* n_ep + 1: progress at the end of epoch e (min over traces) */
    int init_bsz;        /* smallest traced batch: the reference of the gain */
    int max_bsz;         /* largest traced batch: the largest total batch */
    double min_lb;       /* smallest measured local batch */
    double max_lb;       /* largest local batch one step takes (yolov3: 8) */
    int max_epochs;      /* epochs to train (the shortest trace's length) */
} sim_gp;

/* One application's measured behaviour. */
typedef struct sim_app {
    char name[32];                /* application name (trace directory) */
    int n_lb;                     /* local batch sizes measured */
    double lb[SIM_MAX_LB];        /* ascending local batch sizes */
    double comp[SIM_MAX_LB];      /* compute seconds per step at lb[i] (step - sync) */
    double sync[SIM_MAX_N + 1][SIM_MAX_K + 1]; /* mean sync s by agents, nodes; <0 = none */
    double sync_multi[SIM_MAX_N + 1]; /* mean sync s over multi-node rows by agents; <0 none */
    int n_bsz;                    /* validation traces found */
    int bsz[SIM_MAX_BSZ];         /* their global batch sizes */
    double iters[SIM_MAX_BSZ];    /* iterations to the last epoch at bsz[i] */
    sim_gp *gp;                   /* goodput model; NULL when its data did not load */
    char gp_err[256];             /* why gp is NULL */
} sim_app;

/* Loads traces/<app>/{placements,scalability}.csv and validation-*.csv. The goodput
 * model's data is loaded too; when it cannot be, a->gp is NULL and a->gp_err says why
 * (only --batch-model goodput needs it). Free with sim_app_free(). */
int sim_app_load(sim_app *a, const char *traces_dir, const char *app, char *err, size_t errlen);
void sim_app_free(sim_app *a);

/* Goodput model (sim_goodput.c). */
int sim_gp_load(sim_app *a, const char *traces_dir, char *err, size_t errlen);
void sim_gp_free(sim_gp *g);
/* Step and sync seconds of one step at local batch lb on a placement (per-node agent
 * counts of the nodes used, k of them, in node order): the placement's own rows when it
 * was measured, else interpolated over (nodes, replicas, local batch). */
void sim_gp_step(const sim_gp *g, const int *place, int k, double lb, double *step,
                 double *sync);
/* The artifact's accumulation rules for a fixed global batch on n agents: atomic (per
 * step) local batch and accumulation steps. */
void sim_gp_fixed(const sim_gp *g, int n, int batch, int *atomic, int *accum);
/* Statistical efficiency gain of global batch `batch` in epoch `epoch` (progress made
 * per step, in steps at init_bsz): (var + sqr) / (var / scale + sqr), scale = batch /
 * init_bsz. grad statistics are interpolated between the traced batch sizes. */
double sim_gp_gain(const sim_gp *g, double batch, int epoch);
/* Progress per second of a configuration: gain / (step + accum * (step - sync)). */
double sim_gp_rate(const sim_gp *g, const int *place, int k, int atomic, int accum, int epoch);
/* The configuration of best goodput on a placement in epoch `epoch` (the runtime's
 * adaptive batch): 50 global batches spaced geometrically between max(init_bsz, min_lb
 * n) and max_bsz, each split by the accumulation rules. Returns its progress rate. */
double sim_gp_best(const sim_gp *g, const int *place, int k, int epoch, int *atomic,
                   int *accum);
/* Shared CSV helpers of sim_model.c. */
int sim_csv_split(char *line, char **f, int max);
int sim_csv_num(const char *s, double *out);
/* Seconds per iteration of a job with global batch bsz on n agents over k nodes. */
double sim_step_time(const sim_app *a, double bsz, int n, int k);
/* Iterations to the app's last epoch at global batch bsz (nearest trace, rescaled by
 * samples when bsz has no trace of its own). */
double sim_iterations(const sim_app *a, int bsz);

/* One job of a workload. */
typedef struct sim_wjob {
    char name[48];   /* job name from the workload */
    double arrival;  /* seconds from the start */
    int app;         /* index into the model's apps */
    int request;     /* num_replicas: the agent count the job asks for */
    int bsz;         /* global batch size */
} sim_wjob;

typedef struct sim_model {
    sim_app *apps;   /* loaded applications */
    int n_apps;
    char traces_dir[1024];
} sim_model;

typedef struct sim_workload {
    sim_wjob *jobs;  /* sorted by arrival */
    int n_jobs;
} sim_workload;

/* Reads a workload CSV (name,time,application,num_replicas,batch_size), loading each
 * application's traces into m on first use. */
int sim_workload_load(sim_workload *w, sim_model *m, const char *path, char *err, size_t errlen);
void sim_workload_free(sim_workload *w);
void sim_model_init(sim_model *m, const char *traces_dir);
void sim_model_free(sim_model *m);

/* Cluster and run settings. */
typedef struct sim_config {
    int nodes;           /* nodes in the cluster */
    int slots;           /* agent slots per node */
    double interval_s;   /* scheduling interval */
    double restart_s;    /* stall of a job on every change of its count (and its start) */
    double max_factor;   /* a job's max = ceil(max_factor * request), capped by the cluster */
    double alpha, beta;  /* reward weights of every job (1, 0: the benchmark optimises JCT) */
    double horizon_s;    /* give up after this much simulated time (0 = 30 days) */
    const char *trace_job; /* print this job's decisions to stderr; NULL = none (borrowed) */
    int batch_model;     /* SIM_BATCH_FIXED (default) or SIM_BATCH_GOODPUT */
    int adaptive;        /* goodput model: -1 = by policy (elastic policies adapt the batch,
                            static and tiresias keep the workload's), 0 = never, 1 = always */
    double *jobs_out;    /* if set: jobs in the system at each decision, by interval index
                            (t / interval_s), -1 where none was taken; jobs_cap entries */
    int jobs_cap;
    const double *baseline; /* if set: a baseline run's jobs_out, given to rl before each
                               decision (sched_rl_set_baseline; difference reward) */
    int n_baseline;
} sim_config;

#define SIM_BATCH_FIXED 0
#define SIM_BATCH_GOODPUT 1

void sim_config_default(sim_config *c);

/* What one run measured. */
typedef struct sim_result {
    int jobs;            /* jobs in the workload */
    int finished;        /* jobs that finished before the horizon */
    double avg_jct, p50_jct, p99_jct; /* seconds */
    double makespan;     /* seconds from 0 to the last completion */
    double utilization;  /* agent-seconds held / (slots * makespan) */
    double rescales;     /* changes of count per job (starts excluded) */
    double ideal_avg;    /* mean of each job's ideal JCT: alone, at max agents, no delays */
    long decisions;      /* scheduling rounds */
    double work_done_iters; /* total iterations executed (accounting checks) */
    double work_total_iters; /* total iterations the workload needs */
    double min_slack;    /* min over jobs of JCT - ideal JCT (>= 0 when accounting holds) */
} sim_result;

/* Replays w on the cluster under policy p (learning if p was created with learn = 1).
 * jct_out (w->n_jobs entries, may be NULL) receives each job's JCT (-1 = unfinished). */
int sim_run(const sim_model *m, const sim_workload *w, const sim_config *c, sched_policy *p,
            sim_result *r, double *jct_out, char *err, size_t errlen);

#endif
