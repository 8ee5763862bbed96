#include "rp/clock.h"

#include <errno.h>
#include <time.h>

static uint64_t ts_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t rp_now_ns(void)
{
    return ts_ns(CLOCK_MONOTONIC);
}

int64_t rp_wall_s(void)
{
    return (int64_t)time(NULL);
}

int64_t rp_wall_ns(void)
{
    return (int64_t)ts_ns(CLOCK_REALTIME);
}

uint64_t rp_thread_cpu_ns(void)
{
    return ts_ns(CLOCK_THREAD_CPUTIME_ID);
}

void rp_sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}
