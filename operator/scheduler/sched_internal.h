/*
 * sched_internal: what the policy core's files share and nothing outside
 * operator/scheduler may use: the policy handle's layout, the packing of agents onto
 * nodes (the capacity safety limit), the speed model, the reward model, and the rl table.
 */
#ifndef KD_SCHED_INTERNAL_H
#define KD_SCHED_INTERNAL_H

#include "kd_sched.h"

enum sched_kind { SCHED_STATIC, SCHED_TIRESIAS, SCHED_FAIR, SCHED_GREEDY, SCHED_RL, SCHED_POLLUX };

/* rl state features; each is discretised into the number of buckets below. */
#define SCHED_F_COUNT 6 /* agents held: 1, 2, 3-4, 5-8, 9-16, 17+ */
#define SCHED_F_EFF 4   /* scaling efficiency at the count: <0.5, <0.7, <0.85, >=0.85 */
#define SCHED_F_FREE 4  /* free cluster fraction: 0, <0.1, <0.3, >=0.3 */
#define SCHED_F_QUEUE 4 /* queued demand / capacity: 0, <0.1, <0.5, >=0.5 */
#define SCHED_F_PROG 3  /* progress: <1/3, <2/3, >=2/3 */
#define SCHED_F_TIME 4  /* estimated time left: <15 min, <1 h, <4 h, >=4 h */
#define SCHED_N_STATES                                                         \
    (SCHED_F_COUNT * SCHED_F_EFF * SCHED_F_FREE * SCHED_F_QUEUE * SCHED_F_PROG * SCHED_F_TIME)
#define SCHED_N_ACTIONS 5 /* change of the count: -2, -1, 0, +1, +2 (index = change + 2) */

/* A pending rl transition: the job's state and action at its last decision. */
typedef struct sched_pending {
    char id[SCHED_ID_MAX]; /* job id; "" = free slot */
    int state;             /* state index at the decision */
    int action;            /* action index actually applied (after the safety limits) */
    double reward;         /* reward supplied through sched_observe() so far */
    int has_reward;        /* 1 once sched_observe() supplied a reward */
    int seen;              /* scratch: job present in the current snapshot */
} sched_pending;

/* rl's cluster layer (sched_rlc.c): one decision for the whole cluster every
 * SCHED_C_HOLD decisions, choosing the allocation rule. State features: */
#define SCHED_C_JOBS 5   /* active jobs: <=4, <=8, <=16, <=32, more */
#define SCHED_C_QUEUE 4  /* share of jobs without agents: 0, <0.2, <0.5, >=0.5 */
#define SCHED_C_GP 2     /* jobs carry goodput tables (half or more): no, yes */
#define SCHED_C_SPREAD 3 /* longest / median estimated time left: <10, <100, >=100 */
#define SCHED_C_STATES (SCHED_C_JOBS * SCHED_C_QUEUE * SCHED_C_GP * SCHED_C_SPREAD)
#define SCHED_C_ACTIONS 7 /* 0 = greedy with the per-job table; 1..4 = goodput allocation
                             (pollux's search) with job weights (time left)^-k, k below;
                             5..6 = greedy with its time term to a power and preemption
                             (sched_c_pow, sched_c_pre), offered without goodput tables */
#define SCHED_C_ACTIONS_V2 5 /* actions of a version 2 table (0..4 above) */
#define SCHED_C_HOLD 10   /* decisions one cluster action is kept */
extern const double sched_c_k[SCHED_C_ACTIONS];
extern const double sched_c_pow[SCHED_C_ACTIONS]; /* greedy's rule per action (1 = greedy) */
extern const double sched_c_pre[SCHED_C_ACTIONS]; /* its preemption price (0 = never) */

typedef struct sched_rlc {
    double q1[SCHED_C_STATES * SCHED_C_ACTIONS];
    double q2[SCHED_C_STATES * SCHED_C_ACTIONS];
    unsigned visits[SCHED_C_STATES * SCHED_C_ACTIONS];
    long updates;          /* cluster Q updates applied */
    int pending;           /* 1 = a cluster action is running and owes an update */
    int state, action;     /* its state and action */
    int held;              /* decisions it has been applied */
    double reward;         /* reward collected since it was chosen */
    int prev_jobs;         /* jobs in the previous snapshot; -1 = none */
    double prev_interval;  /* that snapshot's interval */
    double base;           /* baseline's jobs at this decision (sched_rl_set_baseline); -1 = none */
    double prev_base;      /* the same at the previous decision */
} sched_rlc;

/* The rl policy's learned state; the table is dense (SCHED_N_STATES x SCHED_N_ACTIONS). */
typedef struct sched_rl {
    double *q1;            /* Q values; the only table unless double_q */
    double *q2;            /* second table for Double Q-learning; NULL otherwise */
    unsigned *visits;      /* updates applied per state (0 = unvisited: greedy fallback) */
    long updates;          /* Q updates applied */
    long fallbacks;        /* decisions taken by the greedy fallback */
    double epsilon;        /* current exploration probability */
    sched_pending *pend;   /* pending transitions, one per job with a decision */
    int n_pend;            /* slots in use at the front of pend (some may be free) */
    int cap_pend;          /* allocated slots */
    sched_rlc c;           /* the cluster layer */
} sched_rl;

struct sched_policy {
    enum sched_kind kind;  /* which policy */
    char name[16];         /* name given at creation */
    sched_options o;       /* validated options */
    uint64_t rng;          /* xorshift state for exploration */
    sched_rl *rl;          /* learned state (rl only) */
    /* scratch buffers grown on demand so that decide() allocates rarely */
    int *want;             /* per job: count proposed by the policy */
    int *order;            /* per job: packing order */
    double *score;         /* per job: sort key */
    int *placed;           /* per job: agents placed by the safety stage */
    int *spare;            /* per job: greedy's copy of want while it tries a transfer */
    double *aux;           /* 2 x cap_jobs: pollux's restart penalties, then job weights */
    double *pxg;           /* pollux: goodput cache, sum over jobs of (hi + 1) entries */
    size_t cap_pxg;        /* allocated entries of pxg */
    double px_k;           /* pollux's search: weight job terms by (time left)^-px_k (0 =
                              Pollux's objective; rl's cluster layer sets it) */
    double gr_pow;         /* greedy: power of its time term (1 = greedy; rl's cluster
                              layer sets other values) */
    double gr_pre;         /* greedy: a running job at min 1 may be preempted for a job
                              gaining more than gr_pre times its utility (0 = never) */
    double *ncpu, *nmem;   /* per node: capacity left while packing */
    int *nslots;           /* per node: slots left while packing */
    int cap_jobs, cap_nodes; /* allocated sizes of the scratch buffers */
};

/* Packing state: capacity left on each node while agents are being placed. */
typedef struct sched_pack {
    const sched_snapshot *s;
    double *cpu, *mem;     /* per node, left */
    int *slots;            /* per node, left; INT_MAX-like when not limiting */
    int lo;                /* nodes before this one have no slot left */
} sched_pack;

/* Resets the packing state to the snapshot's full capacity. */
void sched_pack_init(sched_pack *pk, const sched_snapshot *s, double *cpu, double *mem,
                     int *slots);
/* Places up to n agents of job j (first fit over nodes); returns how many were placed. */
int sched_pack_place(sched_pack *pk, const sched_job *j, int n);
/* Capacity left summed over nodes (huge where a resource does not limit a node). */
void sched_pack_totals(const sched_pack *pk, double *slots, double *cpu, double *mem);
/* How many more agents of job j fit, capped at limit (nothing is placed). */
int sched_pack_fits(const sched_pack *pk, const sched_job *j, int limit);
/* Total agent slots of the snapshot measured in agents of job j (capacity for it). */
int sched_capacity_for(const sched_snapshot *s, const sched_job *j);

/* The count a non-elastic policy gives the job: request (0 = max) clamped to [min, max],
 * or the pin. */
int sched_requested(const sched_job *j);

/* Estimated seconds to finish job j at n agents (INFINITY when n <= 0 or unknown speed). */
double sched_time_left(const sched_job *j, int n, double prior_k);

/* Reward-model scales of one snapshot, so that rewards are comparable across jobs. */
typedef struct sched_scale {
    double inv_t_mean;     /* mean of 1/T over running jobs (all jobs at min if none) */
    double inv_c_mean;     /* mean of 1/agents over the same jobs */
    double interval_s;     /* the snapshot's decision interval */
    double pow;            /* power of the time term (1 = greedy's utility) */
} sched_scale;

void sched_scale_init(sched_scale *sc, const sched_snapshot *s, const sched_options *o);
/* Greedy's objective for job j at n agents (0 for n = 0), T lengthened by extra_s. */
double sched_utility(const sched_scale *sc, const sched_job *j, int n, const sched_options *o,
                     double extra_s);
/* The rl reward of one interval at n agents, alpha * speed-up over min + beta * min / n,
 * when extra_s seconds of it are lost to a restart. */
double sched_reward(double interval_s, const sched_job *j, int n, const sched_options *o,
                    double extra_s);

/* Final stage of every policy: applies pins, the cool-down, [min, max] and capacity to
 * p->want (proposed counts) packing jobs in p->order, and fills out (desired, predictions;
 * the reason is set only where still empty). all_or_nothing: a job gets its whole want or
 * nothing (static, tiresias); otherwise at least min. keep_running: running jobs keep at
 * least min agents (no preemption by the capacity stage). */
void sched_finish(sched_policy *p, const sched_snapshot *s, sched_decision *out,
                  int all_or_nothing, int keep_running);

/* Policies: fill p->want, p->order and reasons; sched_finish() is applied by the caller. */
void sched_policy_static(sched_policy *p, const sched_snapshot *s, sched_decision *out);
void sched_policy_tiresias(sched_policy *p, const sched_snapshot *s, sched_decision *out);
void sched_policy_fair(sched_policy *p, const sched_snapshot *s, sched_decision *out);
void sched_policy_greedy(sched_policy *p, const sched_snapshot *s, sched_decision *out);
/* The greedy allocation into p->want and p->order (no reasons); jobs with fixed[i] >= 0
 * (fixed may be NULL) keep that count and are neither grown nor used as donors. rl uses
 * it as its fallback and to hand out what its own decisions leave. Clobbers p->score,
 * p->placed and p->spare. */
void sched_greedy_alloc(sched_policy *p, const sched_snapshot *s, const int *fixed);
int sched_policy_rl(sched_policy *p, const sched_snapshot *s, sched_decision *out);
/* pollux (sched_pollux.c): fills p->want and p->order; scratch from p->score, p->spare. */
void sched_policy_pollux(sched_policy *p, const sched_snapshot *s, sched_decision *out);

/* rl table lifecycle (sched_rl.c). */
int sched_rl_create(sched_policy *p);
void sched_rl_free(sched_rl *rl);
void sched_rl_clear(sched_rl *rl);
int sched_rl_observe(sched_policy *p, const char *job_id, double reward, int done);
/* The cluster layer: collects the reward of the running cluster action (minus the jobs
 * in the system over the interval, in job-hours), updates its Q value when its hold
 * ends, and returns the action to apply now. */
int sched_rlc_step(sched_policy *p, const sched_snapshot *s);
/* Closes the running cluster action as terminal (end of an episode). */
void sched_rlc_end(sched_policy *p);
void sched_rlc_clear(sched_rlc *c);
/* Cluster states with at least one update. */
long sched_rlc_states(const sched_rlc *c);
void sched_rl_episode_end(sched_policy *p);

/* Sorts idx[0..n) by key descending, ties by index ascending (stable, deterministic). */
void sched_sort_desc(int *idx, int n, const double *key);

/* True when the job's count is frozen by the cool-down. */
int sched_cooling(const sched_policy *p, const sched_job *j);

/* Deterministic RNG in [0, 1). */
double sched_rand(sched_policy *p);

#endif
