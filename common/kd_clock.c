/* kd_clock: the monotonic clock helpers (kd_clock.h). */
#include "kd_clock.h"

double kd_mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double kd_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

uint64_t kd_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void kd_mono_after(double seconds, struct timespec *out)
{
    clock_gettime(CLOCK_MONOTONIC, out);
    if (!(seconds > 0)) /* also NaN */
        return;
    long long ns = (long long)out->tv_nsec + (long long)(seconds * 1e9);
    out->tv_sec += (time_t)(ns / 1000000000LL);
    out->tv_nsec = (long)(ns % 1000000000LL);
}
