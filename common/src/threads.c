#include "rp/threads.h"

#include <omp.h>
#include <unistd.h>

/* From OpenBLAS's cblas.h; declared here so that common/ does not need its headers. */
void openblas_set_num_threads(int num_threads);

int rp_ncores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void rp_compute_threads(int n)
{
    if (n <= 0) n = rp_ncores();
    openblas_set_num_threads(n);
    omp_set_num_threads(n);
}
