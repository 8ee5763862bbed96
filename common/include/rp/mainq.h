/*
 * rp/mainq.h — work that runs on the process's main thread.
 *
 * Services load their bundles here. glibc serves the main thread from the main heap,
 * the one arena whose free top malloc_trim gives back to the kernel; a thread arena
 * keeps up to M_TRIM_THRESHOLD (4 MiB, rpc_server.c) of free memory at its top. A
 * bundle loaded on whichever request thread ran Admin.Reload lands in that thread's
 * arena, and when it is swapped out its pages stay resident there: the ~3 MB steps in
 * resident memory that bench/soak saw begin at one reload and end at a later one. On
 * the main thread every bundle is allocated from one heap, and freeing the old one
 * returns its memory.
 *
 * The main thread serves this queue while it waits for a stop signal
 * (rp_wait_for_signal). Where no main loop runs (unit tests, batch commands) the work
 * runs on the calling thread.
 */
#ifndef RP_MAINQ_H
#define RP_MAINQ_H

/* Runs fn(arg) on the main thread and returns its result, waiting for it. Runs it on
 * the calling thread when no main loop is running or when called from the main loop
 * itself. Jobs run one at a time in the order posted. */
int rp_main_run(int (*fn)(void *arg), void *arg);

/* The main loop: runs posted jobs until fd is readable, then returns 0 (or -1 with errno
 * set if poll fails). Jobs posted before it returns are run before it returns. One loop
 * at a time per process. */
int rp_main_wait(int fd);

#endif
