/*
 * kd_clock: the monotonic clock, read one way everywhere (CLOCK_MONOTONIC: never jumps
 * with the wall clock, so intervals and deadlines stay right across NTP steps).
 *
 * Libc only (it lives in kd_base with kd_error), so that the scheduler's policy core can
 * use it without the rest of common/.
 */
#ifndef KD_CLOCK_H
#define KD_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Seconds since an arbitrary fixed point. */
double kd_mono_s(void);

/* Milliseconds since the same point. */
double kd_mono_ms(void);

/* Nanoseconds since the same point. */
uint64_t kd_mono_ns(void);

/* The CLOCK_MONOTONIC time `seconds` from now (negative counts as 0), for
 * pthread_cond_timedwait on a condition variable set to CLOCK_MONOTONIC. */
void kd_mono_after(double seconds, struct timespec *out);

#endif
