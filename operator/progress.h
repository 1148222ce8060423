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
} progress_options;

int progress_new(const progress_options *o, progress **out);
int progress_start(progress *p);
/* endpoint NULL: stop following key (its last values are kept until progress_forget). */
void progress_watch(progress *p, const char *key, const char *endpoint);
void progress_forget(progress *p, const char *key);
/* 1 and *out when metrics were received for key. */
int progress_get(progress *p, const char *key, rc_progress_info *out);
/* Measured throughput points of key into tp (at most max); returns how many. */
int progress_throughput(progress *p, const char *key, sched_tp *tp, int max);
/* Malformed messages dropped since start. */
long progress_dropped(progress *p);
/* Decodes one metrics message (pure, for tests): 0 and *out on success, -1 otherwise. */
int progress_decode(const char *text, size_t len, rc_progress_info *out);
void progress_stop(progress *p);
void progress_free(progress **p);

/* Adapters with the reconcile.h callback signatures (ud = the progress handle). */
int progress_lookup_cb(void *ud, const char *key, rc_progress_info *out);
void progress_watch_cb(void *ud, const char *key, const char *endpoint);

#endif
