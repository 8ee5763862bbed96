/*
 * rp/threads.h — how many threads the numeric libraries may use.
 *
 * Services get their parallelism from request threads and run OpenBLAS and OpenMP
 * (FAISS) single-threaded inside each (DESIGN.md: two request threads with one OpenMP
 * thread each doubled one thread's IVF search rate; OpenMP=2 gave less). Batch jobs
 * (training, index build) use every core.
 */
#ifndef RP_THREADS_H
#define RP_THREADS_H

/* Sets OpenBLAS and OpenMP to n threads each; n <= 0 means the number of online cores. */
void rp_compute_threads(int n);
/* The number of online cores (at least 1). */
int rp_ncores(void);

#endif
