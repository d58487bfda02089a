/* 2x2 max pooling with stride 2 on channels-last float32 tensors, forward and backward, with the
   results of PyTorch's max_pool2d bit for bit (classicnets/native/__init__.py says why it exists).

   Memory is (n, h, w, c): channels innermost. An output row i reads input rows 2i and 2i+1; a
   window j reads columns 2j and 2j+1 of both, c channels each. Channels go 8 at a time in AVX2
   registers. LeNet-5's first pool has 6 channels: the 8 lanes then reach 2 channels into the
   next window, whose own turn rewrites what they wrote (stores go in increasing address order),
   as long as the lanes stay inside the row; the rest goes one value at a time. */

#include <stdint.h>
#include <immintrin.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef __AVX2__
#error "pool2x2.c needs AVX2 (-mavx2)"
#endif

/* max_pool2d scans a window row by row and takes a value when it is greater than the best so
   far or when it is NaN: the first maximum wins, and any NaN beats every number (the last NaN).
   Pairing (a, b) and (d, e) first, then the two winners, picks the same one. Positions: 0 a (top
   left), 1 b (top right), 2 d (bottom left), 3 e (bottom right). */
static inline void window(float a, float b, float d, float e, float *out, uint8_t *winner)
{
    int take_b = (b > a) | (b != b), take_e = (e > d) | (e != e);
    float top = take_b ? b : a, bottom = take_e ? e : d;
    int take_bottom = (bottom > top) | (bottom != bottom);
    *out = take_bottom ? bottom : top;
    *winner = (uint8_t)(take_bottom ? 2 + take_e : take_b);
}

static inline __m256 later_wins(__m256 later, __m256 earlier)
{
    return _mm256_or_ps(_mm256_cmp_ps(later, earlier, _CMP_GT_OQ), _mm256_cmp_ps(later, later, _CMP_UNORD_Q));
}

static void forward_rows(const float *x, float *y, uint8_t *winner, int64_t first, int64_t last,
                         int64_t h, int64_t w, int64_t c)
{
    const int64_t ho = h / 2, wo = w / 2, row = w * c, out_row = wo * c;
    const __m256i one = _mm256_set1_epi32(1), two = _mm256_set1_epi32(2);
    for (int64_t r = first; r < last; r++) {
        const float *top_row = x + (r / ho * h + 2 * (r % ho)) * row, *bottom_row = top_row + row;
        float *out = y + r * out_row;
        uint8_t *won = winner + r * out_row;
        for (int64_t j = 0; j < wo; j++) {
            const float *p = top_row + 2 * j * c, *q = bottom_row + 2 * j * c;
            int64_t k = 0;
            for (; k < c && 2 * j * c + c + k + 8 <= row && j * c + k + 8 <= out_row; k += 8) {
                __m256 a = _mm256_loadu_ps(p + k), b = _mm256_loadu_ps(p + c + k);
                __m256 d = _mm256_loadu_ps(q + k), e = _mm256_loadu_ps(q + c + k);
                __m256 take_b = later_wins(b, a), take_e = later_wins(e, d);
                __m256 top = _mm256_blendv_ps(a, b, take_b), bottom = _mm256_blendv_ps(d, e, take_e);
                __m256 take_bottom = later_wins(bottom, top);
                __m256i from_top = _mm256_and_si256(_mm256_castps_si256(take_b), one);
                __m256i from_bottom = _mm256_add_epi32(two, _mm256_and_si256(_mm256_castps_si256(take_e), one));
                __m256i pos = _mm256_castps_si256(_mm256_blendv_ps(
                    _mm256_castsi256_ps(from_top), _mm256_castsi256_ps(from_bottom), take_bottom));
                _mm256_storeu_ps(out + j * c + k, _mm256_blendv_ps(top, bottom, take_bottom));
                __m128i pos16 = _mm_packus_epi32(_mm256_castsi256_si128(pos), _mm256_extracti128_si256(pos, 1));
                _mm_storel_epi64((__m128i *)(won + j * c + k), _mm_packus_epi16(pos16, pos16));
            }
            for (; k < c; k++)
                window(p[k], p[c + k], q[k], q[c + k], out + j * c + k, won + j * c + k);
        }
    }
}

static void backward_rows(const float *grad_out, const uint8_t *winner, float *grad_in, int64_t first, int64_t last,
                          int64_t h, int64_t w, int64_t c)
{
    const int64_t ho = h / 2, wo = w / 2, row = w * c, out_row = wo * c;
    for (int64_t r = first; r < last; r++) {
        float *top_row = grad_in + (r / ho * h + 2 * (r % ho)) * row, *bottom_row = top_row + row;
        const float *g_row = grad_out + r * out_row;
        const uint8_t *won = winner + r * out_row;
        for (int64_t j = 0; j < wo; j++) {
            /* Every input value is written: the gradient where it won its window, else 0. The
               window's left column before its right one keeps the stores in address order. */
            for (int side = 0; side < 2; side++) {
                float *p = top_row + 2 * j * c + side * c, *q = bottom_row + 2 * j * c + side * c;
                const __m256i at_top = _mm256_set1_epi32(side), at_bottom = _mm256_set1_epi32(2 + side);
                int64_t k = 0;
                for (; k < c && 2 * j * c + side * c + k + 8 <= row && j * c + k + 8 <= out_row; k += 8) {
                    __m256 g = _mm256_loadu_ps(g_row + j * c + k);
                    __m256i pos = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(won + j * c + k)));
                    _mm256_storeu_ps(p + k, _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(pos, at_top)), g));
                    _mm256_storeu_ps(q + k, _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(pos, at_bottom)), g));
                }
                for (; k < c; k++) {
                    float g = g_row[j * c + k];
                    int pos = won[j * c + k];
                    p[k] = pos == side ? g : 0.0f;
                    q[k] = pos == 2 + side ? g : 0.0f;
                }
            }
        }
    }
}

/* Output rows (n * h/2 of them) split evenly over the threads: each writes only its own rows.
   With OpenMP the threads are torch's own (see __init__.py). */
#ifdef _OPENMP
#define SPLIT_ROWS(call)                                                          \
    _Pragma("omp parallel num_threads(threads)")                                  \
    {                                                                             \
        int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();             \
        int64_t first = rows * t / nt, last = rows * (t + 1) / nt;                \
        call;                                                                     \
    }
#else
#define SPLIT_ROWS(call)                                                          \
    {                                                                             \
        (void)threads;                                                            \
        int64_t first = 0, last = rows;                                           \
        call;                                                                     \
    }
#endif

void pool2x2_forward(const float *x, float *y, uint8_t *winner, int64_t n, int64_t h, int64_t w, int64_t c,
                     int threads)
{
    const int64_t rows = n * (h / 2);
    SPLIT_ROWS(forward_rows(x, y, winner, first, last, h, w, c))
}

void pool2x2_backward(const float *grad_out, const uint8_t *winner, float *grad_in, int64_t n, int64_t h, int64_t w,
                      int64_t c, int threads)
{
    const int64_t rows = n * (h / 2);
    SPLIT_ROWS(backward_rows(grad_out, winner, grad_in, first, last, h, w, c))
}

/* The version of every kernel's calling convention in the library (ABI_VERSION in __init__.py): the
   build checks that the library it loads is this one. */
int classicnets_native_abi_version(void) { return 2; }
