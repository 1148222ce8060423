/*
 * kube_backoff: jittered exponential backoff, shared by request retries, watch
 * reconnects, leader election and the work queue's per-key rate limiter. Pure: no
 * clock, no sleeping; callers ask for the next delay and wait however suits them.
 *
 * The n-th delay (n = 0, 1, ...) before jitter is min(base * factor^n, cap). Jitter
 * draws the actual delay uniformly from [d * (1 - jitter), d], so the cap is never
 * exceeded and many clients that failed together spread their retries out.
 */
#ifndef KUBE_BACKOFF_H
#define KUBE_BACKOFF_H

#include <stdint.h>

typedef struct kube_backoff {
    double base_ms;  /* first delay before jitter */
    double cap_ms;   /* upper bound of any delay */
    double factor;   /* growth per attempt (>= 1) */
    double jitter;   /* fraction in [0, 1] removed at random from each delay */
    int attempt;     /* delays handed out since the last reset */
    uint64_t rng;    /* xorshift64* state, never 0 */
} kube_backoff;

/* Initialises b. factor < 1 is taken as 2, jitter is clamped to [0, 1], cap_ms below
 * base_ms is raised to base_ms. seed 0 picks a seed from the clock and the address of
 * b, so that processes started together do not draw the same sequence. */
void kube_backoff_init(kube_backoff *b, double base_ms, double cap_ms, double factor,
                       double jitter, uint64_t seed);

/* The next delay in milliseconds; advances the attempt counter. */
double kube_backoff_next(kube_backoff *b);

/* Back to the first delay (after a success). */
void kube_backoff_reset(kube_backoff *b);

/* The un-jittered delay of attempt n: min(base * factor^n, cap). Pure. */
double kube_backoff_delay(double base_ms, double cap_ms, double factor, int attempt);

/* A uniform double in [0, 1) from the generator state (advances *state; 0 state is
 * replaced by a fixed non-zero constant). */
double kube_rand01(uint64_t *state);

#endif
