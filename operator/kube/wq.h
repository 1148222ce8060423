/*
 * wq: the controller work queue, with client-go's guarantees.
 *
 *  - De-duplicating: a key added several times before a worker takes it is handed out
 *    once.
 *  - One key, one worker: a key being processed (between wq_get and wq_done) is never
 *    handed to a second worker; adds that arrive meanwhile mark it dirty and it is
 *    queued again when wq_done is called.
 *  - Rate limited: wq_add_rate_limited waits base * 2^failures (capped) for that key;
 *    wq_forget resets the key's failure count (call it after a successful sync).
 *  - Delayed adds: wq_add_after(key, ms); a key waiting twice keeps the earlier time.
 *  - Shutdown: wq_shutdown wakes every waiter; keys already queued are still handed out,
 *    then wq_get returns KD_ESHUTDOWN. Later adds are refused with KD_ESHUTDOWN.
 *
 * Pure apart from one mutex and condition variable: no network, no threads of its own
 * (delayed keys become ready inside wq_get). Every function is thread-safe.
 *
 * Worker loop:   while (wq_get(q, &key) == KD_OK) { if (sync(key) == 0) wq_forget(q, key);
 *                else wq_add_rate_limited(q, key); wq_done(q, key); free(key); }
 */
#ifndef WQ_H
#define WQ_H

#include <stddef.h>

typedef struct wq wq;

typedef struct wq_options {
    double base_delay_ms; /* first rate-limited delay; <= 0 means 5 ms */
    double max_delay_ms;  /* cap of rate-limited delays; <= 0 means 300 s */
} wq_options;

/* opts may be NULL for the defaults. Returns KD_OK or KD_ENOMEM. */
int wq_new(const wq_options *opts, wq **out);
/* Frees the queue; no thread may be inside a wq_ call. Accepts NULL, sets *q to NULL. */
void wq_free(wq **q);

/* Queues key (copied) unless it is already queued. KD_OK, KD_ESHUTDOWN or KD_ENOMEM. */
int wq_add(wq *q, const char *key);
/* Queues key after delay_ms (<= 0: now). */
int wq_add_after(wq *q, const char *key, double delay_ms);
/* Queues key after its per-key backoff and counts one more failure for it. */
int wq_add_rate_limited(wq *q, const char *key);
/* Clears key's failure count. */
void wq_forget(wq *q, const char *key);
/* How many times key has been rate-limited since the last wq_forget. */
int wq_num_requeues(wq *q, const char *key);
/* The delay wq_add_rate_limited would use for a key that failed `failures` times. */
double wq_rate_delay_ms(const wq *q, int failures);

/* Blocks until a key is ready; *key receives a new string (caller frees) that the caller
 * must hand back with wq_done. Returns KD_OK or KD_ESHUTDOWN (then *key is NULL). */
int wq_get(wq *q, char **key);
/* Like wq_get but gives up after timeout_ms with KD_ETIMEOUT. */
int wq_get_timed(wq *q, char **key, long timeout_ms);
/* Marks key as processed; if it was added meanwhile it is queued again. */
void wq_done(wq *q, const char *key);

void wq_shutdown(wq *q);
int wq_shutting_down(wq *q);
/* Keys ready to be handed out (not counting delayed or in-process keys). */
size_t wq_len(wq *q);
/* Keys waiting for their delay to pass. */
size_t wq_delayed_len(wq *q);

#endif
