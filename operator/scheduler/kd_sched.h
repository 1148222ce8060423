/*
 * sched: the scheduling policy core shared by the operator, `kadet run` and kadet-sim.
 *
 * A caller describes the cluster as a snapshot (nodes with the capacity available to the
 * snapshot's jobs, and the jobs themselves with their elastic range, requests and measured
 * speed) and asks a policy for the desired agent count of every job. Everything here is a
 * pure function of its inputs and the policy's own state: no I/O, no clock, no globals,
 * only libc and libm, so that the same decisions come out of the operator, the local
 * launcher and the simulator. The rl policy's learned table is converted to and from JSON
 * by sched_qtable.h (a separate library, because that part needs jansson).
 *
 * Lifecycle: sched_options_default() -> adjust -> sched_policy_create() ->
 * sched_decide() every scheduling interval (and sched_observe() between decisions when the
 * caller measures rewards itself) -> sched_policy_free(). A policy handle is not
 * thread-safe; one caller drives it at a time.
 *
 * Errors are kd_err codes (kd_error.h) with detail text written into a caller buffer.
 */
#ifndef KD_SCHED_H
#define KD_SCHED_H

#include <stddef.h>
#include <stdint.h>

#define SCHED_REASON_MAX 160 /* bytes of a decision's reason, NUL included */
#define SCHED_ID_MAX 128     /* bytes of a job id the rl policy remembers, NUL included */
#define SCHED_LAS_MAX 8      /* tiresias: most queue thresholds */

/* One node as the snapshot's jobs can use it. Capacity is what is left on the node after
 * everything that is NOT an agent of a job in this snapshot (allocatable minus requests of
 * other pods): agents the snapshot's jobs already hold are counted through the jobs'
 * `current`, not subtracted here, so a caller never has to split a node's usage by job.
 * The launcher passes one node: the local machine with nproc CPUs. */
typedef struct sched_node {
    double cpu;  /* cores available to the snapshot's jobs; <= 0 = CPU not limiting */
    double mem;  /* bytes available to the snapshot's jobs; <= 0 = memory not limiting */
    int slots;   /* agent slots (e.g. accelerators); <= 0 = slots not limiting */
} sched_node;

/* A measured throughput point: the job ran with `agents` agents at this speed. */
typedef struct sched_tp {
    int agents;         /* agent count the measurement was taken at (>= 1) */
    double samples_per_s; /* measured training throughput at that count (> 0) */
} sched_tp;

/* One job as the policy sees it. All pointers are borrowed for the duration of the call. */
typedef struct sched_job {
    const char *id;       /* stable unique key (namespace/name or uid); required for rl */
    int min;              /* smallest useful agent count (>= 1) */
    int max;              /* largest agent count the job accepts (>= min) */
    int pin;              /* fixed count (kubectl scale / spec.replicas); 0 = none */
    int request;          /* count the job asks for, used by static and tiresias;
                             0 = max; clamped into [min, max] */
    double cpu_per_agent; /* CPU cores one agent requests; <= 0 = none */
    double mem_per_agent; /* memory bytes one agent requests; <= 0 = none */
    int current;          /* agents the job holds now (0 = queued or suspended) */
    double age_s;         /* seconds since the job was submitted: FIFO order, oldest first */
    double attained_s;    /* attained service in agent-seconds (tiresias' 2D-LAS key) */
    double since_change_s; /* seconds since the job's count last changed; < 0 = never */
    const sched_tp *tp;   /* measured throughput points, any order; may be NULL */
    int n_tp;             /* number of points in tp */
    double progress;      /* fraction of the job's work done, 0..1 */
    double remaining;     /* samples of work left; <= 0 = unknown (estimated from progress) */
    double alpha;         /* reward weight on time (scheduling.weights.time); < 0 = default */
    double beta;          /* reward weight on cost (scheduling.weights.cost); < 0 = default */
    int priority;         /* higher is served first among otherwise equal jobs */
    const double *goodput; /* pollux: predicted goodput (useful samples/s, batch chosen for
                             it) at 1..n_goodput agents on the fewest nodes; NULL = use
                             the speed model's throughput */
    int n_goodput;        /* entries in goodput */
    const int *goodput_batch; /* per-agent batch goodput[n - 1] assumes (n_goodput
                             entries), or NULL: a policy that chooses batch (pollux, rl)
                             then returns it with the count (sched_decision.batch) */
    int restarts;         /* pollux: changes of the job's allocation since it started */
} sched_job;

/* What the policy decides from. */
typedef struct sched_snapshot {
    const sched_node *nodes; /* n_nodes nodes */
    int n_nodes;
    const sched_job *jobs;   /* n_jobs jobs: running, queued or starting */
    int n_jobs;
    double interval_s;       /* seconds until the next decision (reward horizon); > 0 */
    double restart_s;        /* seconds a change of a job's count stalls that job; >= 0 */
} sched_snapshot;

/* The policy's answer for one job (same index as the job in the snapshot). */
typedef struct sched_decision {
    int desired;          /* agents the job should hold; 0 = queued (or preempted) */
    double pred_speed;    /* predicted samples/s at `desired` (0 when queued) */
    double pred_cost;     /* predicted cost: agents held over the next interval (agent-s) */
    double pred_reward;   /* predicted reward alpha/T + beta/C, normalised across jobs */
    char reason[SCHED_REASON_MAX]; /* one human line: why this count */
    int batch;            /* per-agent batch chosen with the count (pollux and rl, from
                             the job's goodput_batch); 0 = the policy does not choose */
} sched_decision;

/* Policy options. Fields that a policy does not use are ignored. */
typedef struct sched_options {
    uint64_t seed;        /* RNG seed for exploration and tie-breaks (rl) */
    double cooldown_s;    /* elastic policies leave a job's count alone this long after a
                             change (safety limit for every policy except preemption by
                             tiresias and admission by static); 0 = none */
    double alpha;         /* default reward weight on time for jobs with alpha < 0 */
    double beta;          /* default reward weight on cost for jobs with beta < 0 */
    int max_step;         /* rl: largest change of a job's count per decision (1 or 2) */
    int learn;            /* rl: 1 = explore and update the table, 0 = act greedily */
    int double_q;         /* rl: 1 = Double Q-learning (two tables), 0 = one table */
    double lr;            /* rl: learning rate of the Q update, (0, 1] */
    double gamma;         /* rl: discount per decision, [0, 1) */
    double epsilon;       /* rl: initial exploration probability */
    double epsilon_min;   /* rl: floor of the exploration probability */
    double epsilon_decay; /* rl: epsilon multiplied by this after every decide() */
    double prior_k;       /* speed model: contention k assumed when a job has one
                             measured point (speed(n) = n s1 / (1 + k (n - 1))) */
    int min_visits;       /* rl: updates an action needs in a state before its Q counts;
                             fewer and the state is treated as unvisited (greedy) */
    double margin;        /* rl: relative Q advantage an action needs over greedy's
                             choice before rl departs from greedy */
    int n_las;            /* tiresias: queue thresholds in use (n_las + 1 queues),
                             0..SCHED_LAS_MAX; default 2 */
    double las_s[SCHED_LAS_MAX]; /* tiresias: attained service (agent-seconds) where each
                             queue ends, ascending; default 1 and 10 agent-hours */
} sched_options;

typedef struct sched_policy sched_policy;

/* Fills o with the defaults documented in docs/scheduler.md. Can't fail. */
void sched_options_default(sched_options *o);

/* Creates a policy by name: "static", "tiresias", "fair", "greedy", "pollux" or "rl". opt may be
 * NULL for the defaults. Returns KD_OK and *out, KD_EINVAL (unknown name or option out of
 * range, detail in err) or KD_ENOMEM. */
int sched_policy_create(const char *name, const sched_options *opt, sched_policy **out,
                        char *err, size_t errlen);

/* Frees the policy and sets *p to NULL; accepts NULL and *p == NULL. */
void sched_policy_free(sched_policy **p);

/* The policy's name as given to sched_policy_create(). */
const char *sched_policy_name(const sched_policy *p);

/* Decides the desired agent count of every job in s; out has s->n_jobs entries. The
 * result always respects the safety limits: the sum over all jobs fits the nodes (agents
 * packed onto nodes by per-agent CPU, memory and slots), pinned jobs get their pin when it
 * fits (else keep what they hold), no job leaves [min, max] except to 0 (queued), and no
 * elastic change of a job happens within cooldown_s of its previous change. The rl policy
 * completes the Q update of every job's previous decision here (reward from the new
 * snapshot unless sched_observe() supplied one). Returns KD_OK, or KD_EINVAL for a
 * malformed snapshot (detail in err; out untouched). */
int sched_decide(sched_policy *p, const sched_snapshot *s, sched_decision *out,
                 char *err, size_t errlen);

/* Reward feedback for rl between decisions: adds `reward` to the job's pending transition
 * (the job's last decision). With done = 1 the transition is closed as terminal and the job
 * forgotten (call it when the job finishes or is deleted). Other policies ignore it.
 * Returns KD_OK, or KD_ENOTFOUND when the policy holds no pending decision for job_id. */
int sched_observe(sched_policy *p, const char *job_id, double reward, int done);

/* Forgets every pending transition (the end of a training episode in the simulator;
 * epsilon decays per decision, not here). Other policies ignore it. */
void sched_episode_end(sched_policy *p);

/* Predicted throughput (samples/s) of a job at n agents from its measured points (fitted
 * speed model; 0 when the job has no measurement, or n <= 0). */
double sched_predict_speed(const sched_job *j, int n, double prior_k);

/* One measured configuration of a live job (its coordinator's metrics, "configs"). */
typedef struct sched_cfg {
    int agents;           /* agents of the world (>= 1) */
    int batch;            /* per-agent batch (>= 1) */
    double step_s;        /* seconds per step */
    double compute_s;     /* of which grow with the batch (forward and backward) */
} sched_cfg;

#define SCHED_GP_MAX_CFG 16 /* configurations a goodput model reads */

/* What sched_goodput_table() builds a job's goodput model from. */
typedef struct sched_goodput_in {
    const sched_cfg *cfg; /* measured configurations, any order (at most 16 are read) */
    int n_cfg;
    double noise_scale;   /* gradient noise scale; <= 0 = unknown: the batch stays */
    int batch;            /* the job's current per-agent batch (>= 1): kept at a count
                             unless another promises 5% more goodput there */
    int batch_min;        /* smallest per-agent batch the job accepts (its spec's) */
    int batch_max;        /* largest (adaptive.maxBatchSize); == batch_min = fixed */
    double prior_k;       /* contention assumed when one agent count was measured */
} sched_goodput_in;

/* Goodput (useful samples/s) at 1..max_agents agents, each with the per-agent batch of
 * best goodput for that count (docs/scheduler.md, "Co-adaptation in the cluster"):
 * fills goodput[0..max_agents-1] and batch[0..max_agents-1] and returns max_agents, or
 * returns 0 (nothing written) when no configuration is usable. Pure; can't fail. */
int sched_goodput_table(const sched_goodput_in *in, int max_agents, double *goodput,
                        int *batch);

/* The same table given to a job (the operator's scheduler host and `kadet run` both):
 * builds it into goodput and batch (max_agents entries each) and, when it is usable,
 * points j->goodput at it, and j->goodput_batch too when the job's batch adapts
 * (choose_batch), so that pollux and rl choose the batch with the count. Returns the
 * entries (0: j is left as it was). */
int sched_job_set_goodput(sched_job *j, const sched_goodput_in *in, int max_agents,
                          int choose_batch, double *goodput, int *batch);

/* Statistics of the rl table, for logs, metrics and tests. */
typedef struct sched_rl_stats {
    long states_visited;  /* distinct states with at least one update (per-job and
                             cluster layers) */
    long updates;         /* Q updates applied since creation or load (both layers) */
    long fallbacks;       /* decisions that used the greedy fallback (unvisited state) */
    double epsilon;       /* current exploration probability */
} sched_rl_stats;

/* Fills st for an rl policy; returns KD_EINVAL for other policies. */
int sched_rl_get_stats(const sched_policy *p, sched_rl_stats *st);

/* Sets an rl policy's exploration probability (e.g. to explore again after loading a
 * trained table); returns KD_EINVAL for other policies or epsilon outside [0, 1]. */
int sched_rl_set_epsilon(sched_policy *p, double epsilon);

/* Training with a difference reward (the simulator): the jobs a baseline policy had in the
 * system at this decision on the same arrivals, given before sched_decide(). rl's cluster
 * layer then earns the baseline's jobs minus its own over each interval instead of minus
 * its own, which removes the arrivals' noise from the reward. Negative or NaN = none (the
 * default). Returns KD_EINVAL for other policies. */
int sched_rl_set_baseline(sched_policy *p, double jobs);

#endif
