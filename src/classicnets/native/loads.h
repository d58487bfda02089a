/* A load of 8 floats that reads nothing at or past the end of its tensor: the kernels read whole
   registers, and the last ones of a batch would reach past the end of its memory. */

#ifndef CLASSICNETS_NATIVE_LOADS_H
#define CLASSICNETS_NATIVE_LOADS_H

#include <stdint.h>
#include <immintrin.h>

/* 8 floats from p: a plain load where all 8 lie before `end` (all but the very end of a
   tensor), else a masked load of those that do (the others read as 0). */
static inline __m256 load_before(const float *p, const float *end)
{
    if (p + 8 <= end) return _mm256_loadu_ps(p);
    const int64_t inside = end - p;
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)inside),
                                                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
}

#endif
