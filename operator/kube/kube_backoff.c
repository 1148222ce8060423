/*
 * kube_backoff: the delay arithmetic and a small xorshift64* generator, so that the
 * jitter needs no global state (rand() is neither thread-safe nor per-client).
 */
#include "kube_backoff.h"

#include <time.h>

double kube_rand01(uint64_t *state)
{
    uint64_t x = *state != 0 ? *state : 0x9E3779B97F4A7C15ULL;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return (double)((x * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

double kube_backoff_delay(double base_ms, double cap_ms, double factor, int attempt)
{
    double d = base_ms;
    for (int i = 0; i < attempt && d < cap_ms; i++) {
        d *= factor;
    }
    return d < cap_ms ? d : cap_ms;
}

void kube_backoff_init(kube_backoff *b, double base_ms, double cap_ms, double factor,
                       double jitter, uint64_t seed)
{
    b->base_ms = base_ms > 0 ? base_ms : 0;
    b->cap_ms = cap_ms >= b->base_ms ? cap_ms : b->base_ms;
    b->factor = factor >= 1.0 ? factor : 2.0;
    b->jitter = jitter < 0 ? 0 : (jitter > 1 ? 1 : jitter);
    b->attempt = 0;
    if (seed == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        seed = (uint64_t)ts.tv_nsec * 6364136223846793005ULL ^ (uint64_t)ts.tv_sec ^
               (uint64_t)(uintptr_t)b;
    }
    b->rng = seed != 0 ? seed : 1;
}

double kube_backoff_next(kube_backoff *b)
{
    double d = kube_backoff_delay(b->base_ms, b->cap_ms, b->factor, b->attempt);
    if (b->attempt < 1000) {
        b->attempt++;
    }
    return d * (1.0 - b->jitter * kube_rand01(&b->rng));
}

void kube_backoff_reset(kube_backoff *b)
{
    b->attempt = 0;
}
