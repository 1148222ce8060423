/*
 * leader: leader election on a coordination.k8s.io/v1 Lease, as client-go's
 * leaderelection package does it, so that of several operator replicas only one acts.
 *
 *  - Acquire: create the Lease, or take it over when it is free (empty holder) or
 *    expired. Expiry is judged on the local monotonic clock: a record is expired when
 *    it has not changed for leaseDurationSeconds since this process first saw it, so
 *    clock skew between replicas does not matter.
 *  - Renew every retry period; if no renewal succeeds for the renew deadline, step down
 *    (on_stopped) and become a candidate again.
 *  - Release on leader_stop (unless disabled): holderIdentity "" and
 *    leaseDurationSeconds 1, so that another replica takes over at its next try
 *    instead of waiting out the lease.
 * Updates are conditional on the Lease's resourceVersion, so two candidates racing for
 * the same expired Lease cannot both win.
 *
 * Callbacks run on the elector's thread and must return quickly (start workers in
 * on_started, signal them in on_stopped). Requests go through a private clone of the
 * client with timeouts shorter than the renew deadline and no retries of its own.
 */
#ifndef LEADER_H
#define LEADER_H

#include "kube_client.h"

typedef struct leader_options {
    const char *namespace;     /* Lease namespace; NULL = the client's */
    const char *name;          /* Lease name (required) */
    const char *identity;      /* this candidate (required), e.g. the pod name */
    double lease_duration_s;   /* default 15 */
    double renew_deadline_s;   /* default 10; must be < lease_duration_s */
    double retry_period_s;     /* default 2; must be < renew_deadline_s / 1.2 */
    int no_release;            /* 1: keep the Lease on stop (others wait for expiry) */
    void (*on_started)(void *ud);
    void (*on_stopped)(void *ud);
    /* Called when the observed holder changes (also to ourselves); identity may be "". */
    void (*on_new_leader)(void *ud, const char *identity);
    void *ud;
} leader_options;

typedef struct leader_elector leader_elector;

/* Copies the options. KD_EINVAL (message in err) for missing names or durations that
 * are not lease > renew deadline > 1.2 * retry period. */
int leader_new(kube_client *c, const leader_options *opts, leader_elector **out, char *err,
               size_t errlen);
/* Starts the elector's thread. */
int leader_start(leader_elector *le);
/* 1 while this candidate holds the Lease (between on_started and on_stopped). */
int leader_is_leader(leader_elector *le);
/* The holder this candidate last observed, copied into buf ("" when none). */
void leader_current(leader_elector *le, char *buf, size_t len);
/* Stops the thread; if leading, releases the Lease (unless no_release) and calls
 * on_stopped. Idempotent. */
void leader_stop(leader_elector *le);
/* Stops if needed and frees. Accepts NULL, sets *le to NULL. */
void leader_free(leader_elector **le);

/* One acquire-or-renew attempt at wall time now (seconds since the epoch) and
 * monotonic time mono (seconds): KD_OK when we hold the Lease afterwards,
 * KD_ECONFLICT when another holder's lease is still valid or we lost a race, other
 * codes for request failures. Exposed for tests; the thread calls it. */
int leader_try_acquire_or_renew(leader_elector *le, double now, double mono);

#endif
