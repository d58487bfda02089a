/* The share of a parallel loop's items that falls to the calling thread of an OpenMP team, in
   thread order: threads 0, 1, ... take consecutive runs of [0, total), so a loop that sums per
   thread and then adds the threads' sums in order gives the same bits for a given team size. */

#ifndef CLASSICNETS_NATIVE_THREADS_H
#define CLASSICNETS_NATIVE_THREADS_H

#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static inline int thread_number(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* [*first, *last): the calling thread's items (call it inside the parallel region). */
static inline void thread_share(int64_t total, int64_t *first, int64_t *last)
{
#ifdef _OPENMP
    const int64_t t = omp_get_thread_num(), team = omp_get_num_threads();
#else
    const int64_t t = 0, team = 1;
#endif
    *first = total * t / team;
    *last = total * (t + 1) / team;
}

#endif
