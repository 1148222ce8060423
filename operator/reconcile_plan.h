/*
 * reconcile_plan: the AgentJob reconciler's decisions as a pure function.
 *
 * rc_plan_compute() takes what one sync observed (the decoded spec, the job's status as
 * last written, the scheduler's decision, the owned Service and pods from the caches,
 * the time) and returns what to do: which pods to create and delete (and why), the new
 * phase, agent counts, failure count, conditions, a transition event, whether to delete
 * the job (TTL) and when to look again. No I/O, no clock, no allocation beyond the plan's
 * own arrays, so every rule of docs/operator.md section 3 is unit-tested exhaustively
 * (tests/unit/test_reconcile_plan.c); reconcile.c only gathers the input and executes.
 *
 * Ownership: rc_input's pointers are borrowed; rc_plan owns its arrays (rc_plan_free).
 */
#ifndef KD_RECONCILE_PLAN_H
#define KD_RECONCILE_PLAN_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef enum rc_phase {
    RC_PENDING = 0,
    RC_RUNNING = 1,
    RC_SUCCEEDED = 2,
    RC_FAILED = 3,
    RC_SUSPENDED = 4
} rc_phase;

typedef enum rc_pod_state {
    RC_POD_PENDING = 0,
    RC_POD_RUNNING = 1,
    RC_POD_SUCCEEDED = 2,
    RC_POD_FAILED = 3
} rc_pod_state;

typedef enum rc_clean { RC_CLEAN_RUNNING = 0, RC_CLEAN_ALL = 1, RC_CLEAN_NONE = 2 } rc_clean;

/* One pod the job owns, as the plan sees it. */
#define RC_TERM_MSG_MAX 384 /* the part of a termination message kept (one line) */
#define RC_BACKOFF_BASE_S 10.0 /* replacements wait 10 s after the first failure ... */
#define RC_BACKOFF_MAX_S 360.0 /* ... doubling with each, at most 6 min (the Job controller's) */

typedef struct rc_pod {
    char name[254];
    char uid[64];
    int coordinator;    /* 1: the coordinator pod; 0: a worker */
    long index;         /* worker number (name suffix); -1 for the coordinator */
    rc_pod_state state;
    int deleting;       /* deletionTimestamp set, or deleted by us and not yet gone */
    int ready;          /* Running and not marked unready */
    int exit_code;      /* of a terminated container, else 0 */
    char message[RC_TERM_MSG_MAX]; /* its termination message (the runtime's fatal error,
                                      or the end of its log), "" = none */
    char ip[64];        /* status.podIP or "" */
    int counted;        /* a failed pod already counted in status.failures (its uid is in
                           status.failedPods, or this operator counted it): failed pods
                           stay until the job ends, so each is counted once */
    int node_lost;      /* bound to a node that is gone or not Ready (rc_node_lost): deleted
                           at once and replaced, never counted as a failure */
} rc_pod;

/* 1 when a pod bound to this node (NULL = not in the cache) has lost it: the node is
 * gone, or its Ready condition is not True (NotReady, Unknown, missing). A cordoned node
 * (spec.unschedulable) is not lost: its pods keep running. Pure. */
int rc_node_lost(const json_t *node);

/* Decodes a pod object of job `job` into *out. Returns 1 when the pod belongs to the job
 * (label kadet.io/job-name and a known kadet.io/role), 0 otherwise. Pure. */
int rc_pod_from_json(const json_t *pod, const char *job, rc_pod *out);
/* The last non-empty line of a termination message, tabs made spaces, cut to n - 1
 * bytes, into out; "" for NULL. */
void rc_message_line(const char *text, char *out, size_t n);
/* Seconds a replacement waits after the failures-th failure: 10, 20, 40, ... at most 360. */
double rc_backoff_delay(int failures);

const char *rc_phase_name(rc_phase p);
/* "Running" -> RC_RUNNING ...; -1 for NULL or an unknown name. */
int rc_phase_parse(const char *name);

typedef struct rc_input {
    /* spec */
    int valid;                 /* 1 when kd_agentjob_decode accepted the spec */
    const char *invalid_msg;   /* the decoder's message when !valid */
    const char *unknown_fields; /* "spec.x (did you mean \"y\"?), ..." or NULL */
    int min, max;              /* spec.agents */
    int pin;                   /* spec.replicas, -1 = none */
    int backoff_limit;
    int64_t active_deadline_s; /* 0 = none */
    int64_t ttl_s;             /* ttlSecondsAfterFinished, -1 = never */
    rc_clean clean;
    int suspend;
    /* status as last written */
    int has_phase;             /* status.phase present */
    rc_phase phase;
    int failed_invalid;        /* the job is Failed because its spec was invalid */
    int failures;              /* status.failures */
    double last_failure_time;  /* status.lastFailure.time (epoch s), 0 = none */
    const char *last_failure;  /* status.lastFailure.message, NULL = none */
    double start_time;         /* status.startTime (epoch s), 0 = unset */
    double completion_time;    /* status.completionTime, 0 = unset */
    int status_desired;        /* status.agents.desired, -1 = unset */
    /* scheduler */
    int sched_desired;         /* the scheduler host's last decision, -1 = none yet */
    const char *spec_policy;   /* spec.scheduling.policy, NULL when invalid */
    const char *sched_policy;  /* the policy that made that decision, NULL = none yet */
    int sched_batch;           /* the per-agent batch it chose with the count, 0 = none */
    int await_sched;           /* a scheduler host decides counts: a job never decided
                                  creates no pod before its first decision (at most
                                  RC_SCHED_WAIT_S after its creation) */
    double created_time;       /* metadata.creationTimestamp (epoch s), 0 = unknown */
    /* cluster */
    int have_service;          /* the coordinator Service exists */
    const rc_pod *pods;
    size_t n_pods;
    double now;                /* epoch seconds */
} rc_input;

typedef enum rc_delete_why {
    RC_DEL_SCALE_DOWN = 0, /* more workers than desired: the newest go */
    RC_DEL_FAILED = 1,     /* a failed coordinator, counted, makes room for its
                              replacement (the same name) once the backoff is over */
    RC_DEL_SUSPEND = 2,    /* runPolicy.suspend */
    RC_DEL_CLEANUP = 3,    /* cleanPodPolicy after the job finished */
    RC_DEL_NODE_LOST = 4   /* its node is gone or NotReady: deleted at once, replaced */
} rc_delete_why;

#define RC_COND_MAX 6
#define RC_SCHED_WAIT_S 30.0 /* a new job waits this long at most for its first decision */
#define RC_MSG_MAX 512

typedef struct rc_condition {
    const char *type;   /* Valid, PolicyHonored, Running, Suspended, Succeeded, Failed
                           (static strings) */
    int status;         /* 1 = "True", 0 = "False" */
    const char *reason; /* static string */
    char message[RC_MSG_MAX];
} rc_condition;

typedef struct rc_plan {
    rc_phase phase;            /* phase to write */
    int desired;               /* status.agents.desired to write */
    int awaiting;              /* 1: no scheduling decision yet; status.agents is not
                                  written, nothing is created */
    int ready;                 /* status.agents.ready to write */
    int failures;              /* status.failures to write: in->failures + new_failures */
    int new_failures;          /* failed pods counted by this sync ... */
    size_t *counted;           /* ... indexes into rc_input.pods (not counted before) */
    int backoff;               /* 1: failed pods are not replaced yet (requeue_s says when) */
    int set_start;             /* write startTime = now */
    int set_completion;        /* write completionTime = now */
    int create_service;
    int create_coordinator;
    int n_create;              /* worker pods to create ... */
    long first_index;          /* ... numbered first_index, first_index + 1, ... */
    size_t n_delete;           /* pods to delete: indexes into rc_input.pods */
    size_t *del;
    rc_delete_why *why;
    int delete_job;            /* ttlSecondsAfterFinished has passed */
    int act;                   /* 0: report only (invalid spec of a job that ran) */
    double requeue_s;          /* > 0: sync again after this many seconds */
    rc_condition cond[RC_COND_MAX];
    int n_cond;
    /* A phase transition worth an Event ("" = none). */
    const char *event_reason;  /* Succeeded, Failed, Suspended, Resumed, InvalidSpec */
    int event_warning;
    char event_message[RC_MSG_MAX];
} rc_plan;

/* Computes the plan. Returns KD_OK or KD_ENOMEM. The plan must be freed even on error. */
int rc_plan_compute(const rc_input *in, rc_plan *plan);
void rc_plan_free(rc_plan *plan);

const char *rc_delete_why_name(rc_delete_why w);

/* What the coordinator's metrics say of its checkpoints. */
typedef enum rc_ckpt_state {
    RC_CKPT_UNKNOWN = 0, /* no metrics, or a coordinator too old to say */
    RC_CKPT_NONE = 1,    /* the job keeps no checkpoints */
    RC_CKPT_OK = 2,      /* writable: written, or the start probe passed */
    RC_CKPT_FAILING = 3  /* the last write failed */
} rc_ckpt_state;
/* "ok" -> RC_CKPT_OK ...; RC_CKPT_UNKNOWN for NULL or anything else. */
rc_ckpt_state rc_ckpt_parse(const char *text);

/* The CheckpointFailing condition for a job whose coordinator reports `st` (error: its
 * text when failing), given whether the condition is True now. Returns 1 and fills *out
 * when the condition is to be written (failing: True; writable: False), 0 when the
 * metrics say nothing about checkpoints. *warn is set when it turns True: the caller
 * records a Warning Event once. Pure. */
int rc_plan_checkpoint(rc_ckpt_state st, const char *error, int was_failing, rc_condition *out,
                       int *warn);

#endif
