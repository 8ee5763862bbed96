/* rp/clock.h — clocks. */
#ifndef RP_CLOCK_H
#define RP_CLOCK_H

#include <stdint.h>

/* Monotonic nanoseconds (CLOCK_MONOTONIC). */
uint64_t rp_now_ns(void);
/* Wall clock, Unix seconds. */
int64_t rp_wall_s(void);
/* Wall clock, Unix nanoseconds. */
int64_t rp_wall_ns(void);
/* Thread CPU time in nanoseconds (CLOCK_THREAD_CPUTIME_ID). */
uint64_t rp_thread_cpu_ns(void);
/* Sleeps ns nanoseconds (restarts on EINTR). */
void rp_sleep_ns(uint64_t ns);

#endif
