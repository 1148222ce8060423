/*
 * progress: follows the metrics every running job's coordinator publishes (ZeroMQ PUB,
 * JSON at most ~1 Hz, docs/training.md) with one SUB socket per job, on one thread.
 *
 * For each job it keeps the latest values (epoch, step, loss, accuracy, samples/s,
 * agents) for status.progress, and the measured throughput per agent count (an
 * exponential average per count) for the scheduler's speed model. The reconciler says
 * where each job's coordinator publishes (progress_watch, its pod IP); the thread
 * (re)connects on the next poll. A message that is not a JSON object with the expected
 * types is counted and dropped. New values call the `notify` callback for the job, at
 * most once per notify_interval_s, so the reconciler writes status at a bounded rate.
 *
 * Only the followed job's metrics count (docs/security.md): a message must name the job
 * (its "job" field equals the key, namespace/name) and a generation no older than the last
 * one taken from the same endpoint; anything else is dropped and counted. With the
 * operator's CURVE keypair in the options and the job's public key (progress_set_job_key,
 * from the job's Secret), the subscription is a CURVE client that the coordinator's ZAP
 * handler admits by the operator key (operator.pub in the job's keys); without them it
 * subscribes unauthenticated (coordinators without keys).
 *
 * Threads: every function may be called from any thread.
 */
#ifndef KD_PROGRESS_H
#define KD_PROGRESS_H

#include <stddef.h>

#include "reconcile.h"
#include "kd_sched.h"

#define PROGRESS_MAX_TP 16 /* agent counts remembered per job */

typedef struct progress progress;

typedef struct progress_options {
    double notify_interval_s;                 /* default 3 */
    void (*notify)(void *ud, const char *key); /* new metrics for key (may be NULL) */
    void *ud;
    const char *curve_public;  /* the operator's CURVE keypair (Z85, copied at progress_new), */
    const char *curve_secret;  /* or NULL: subscribe without CURVE */
} progress_options;

int progress_new(const progress_options *o, progress **out);
int progress_start(progress *p);
/* endpoint NULL: stop following key (its last values are kept until progress_forget). */
void progress_watch(progress *p, const char *key, const char *endpoint);
void progress_forget(progress *p, const char *key);
/* The job's public key (Z85, 40 characters; agent.pub of its Secret), or NULL to forget
 * it: the next connection subscribes with CURVE to a server holding that key. */
void progress_set_job_key(progress *p, const char *key, const char *job_public);
/* The operator's CURVE keypair (Z85), when it is known only after progress_new (loaded
 * from its Secret): every subscription connects again with it. NULL/NULL forgets it. */
void progress_set_operator_key(progress *p, const char *public_key, const char *secret_key);
/* 1 and *out when metrics were received for key. */
int progress_get(progress *p, const char *key, rc_progress_info *out);
/* Measured throughput points of key into tp (at most max); returns how many. */
int progress_throughput(progress *p, const char *key, sched_tp *tp, int max);
/* The coordinator's measured configurations of key (agents, batch, step and compute
 * time; its metrics' "configs", the latest table) into cfg (at most max); returns how
 * many. The noise scale is in rc_progress_info.noise_scale. */
int progress_configs(progress *p, const char *key, sched_cfg *cfg, int max);
/* Sends the scheduler's per-agent batch to the job's coordinator (control endpoint, e.g.
 * tcp://IP:7070): a BATCH message over CURVE with the operator's keypair, which the
 * coordinator alone accepts it from (docs/security.md). KD_OK once queued; KD_EINVAL
 * without the operator's and the job's keys (nothing is sent), KD_ENETWORK. */
int progress_send_batch(progress *p, const char *key, const char *endpoint, int batch,
                        char *err, size_t errlen);
/* Malformed messages dropped since start. */
long progress_dropped(progress *p);
/* Decodes one metrics message (pure, for tests): 0 and *out on success, -1 otherwise. */
int progress_decode(const char *text, size_t len, rc_progress_info *out);
/* progress_decode that also requires the message to be about job `key` (namespace/name)
 * and returns its generation: 0 accepted, -1 malformed, -2 another job's. */
int progress_decode_job(const char *text, size_t len, const char *key, rc_progress_info *out,
                        long *generation);
/* Messages dropped because they named another job or an older generation. */
long progress_foreign(progress *p);
void progress_stop(progress *p);
void progress_free(progress **p);

/* Adapters with the reconcile.h callback signatures (ud = the progress handle). */
int progress_lookup_cb(void *ud, const char *key, rc_progress_info *out);
void progress_watch_cb(void *ud, const char *key, const char *endpoint);
void progress_job_key_cb(void *ud, const char *key, const char *job_public);
void progress_operator_key_cb(void *ud, const char *public_key, const char *secret_key);
int progress_send_batch_cb(void *ud, const char *key, const char *endpoint, int batch);

#endif
