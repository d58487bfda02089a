/* 2x2 max pooling with stride 2 on channels-last float32 tensors, forward and backward, with the
   results of PyTorch's max_pool2d bit for bit (classicnets/native/__init__.py says why it exists).

   Memory is (n, h, w, c): channels innermost. An output row i reads input rows 2i and 2i+1; a
   window j reads columns 2j and 2j+1 of both, c channels each. Channels go 8 at a time in AVX2
   registers. LeNet-5's first pool has 6 channels: the 8 lanes then reach 2 channels into the
   next window, whose own turn rewrites what they wrote (stores go in increasing address order),
   as long as the lanes stay inside the row; the rest goes one value at a time.

   With `relu`, the maxima also go through a ReLU, and the backward stops a gradient where that
   output is <= 0, as torch's relu does: lenet5's max pool and the ReLU after it, one pass each way. */

#include <stddef.h>
#include <stdint.h>
#include <immintrin.h>
#include "pool2x2.h"
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

/* max(v, 0) as relu gives it: NaN stays NaN. */
static inline float relu_of(float v) { return (v > 0.0f) | (v != v) ? v : 0.0f; }

static inline __m256 relu_vector(__m256 v)
{
    const __m256 zero = _mm256_setzero_ps();
    return _mm256_and_ps(v, _mm256_or_ps(_mm256_cmp_ps(v, zero, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
}

/* One output row from input rows `top` and `bottom` (w * c values each); with `relu`, the
   maxima go through a ReLU (max pooling, then ReLU, as lenet5 runs them). Also called by
   conv_gray.c's fused first block, on the two rows of convolution output it has just made. */
void pool2x2_row(const float *top, const float *bottom, float *out, uint8_t *won, int64_t w, int64_t c, int relu)
{
    const int64_t wo = w / 2, row = w * c, out_row = wo * c;
    const __m256i one = _mm256_set1_epi32(1), two = _mm256_set1_epi32(2);
    for (int64_t j = 0; j < wo; j++) {
        const float *p = top + 2 * j * c, *q = bottom + 2 * j * c;
        int64_t k = 0;
        for (; k < c && 2 * j * c + c + k + 8 <= row && j * c + k + 8 <= out_row; k += 8) {
            __m256 a = _mm256_loadu_ps(p + k), b = _mm256_loadu_ps(p + c + k);
            __m256 d = _mm256_loadu_ps(q + k), e = _mm256_loadu_ps(q + c + k);
            __m256 take_b = later_wins(b, a), take_e = later_wins(e, d);
            __m256 top_max = _mm256_blendv_ps(a, b, take_b), bottom_max = _mm256_blendv_ps(d, e, take_e);
            __m256 take_bottom = later_wins(bottom_max, top_max);
            __m256i from_top = _mm256_and_si256(_mm256_castps_si256(take_b), one);
            __m256i from_bottom = _mm256_add_epi32(two, _mm256_and_si256(_mm256_castps_si256(take_e), one));
            __m256i pos = _mm256_castps_si256(_mm256_blendv_ps(
                _mm256_castsi256_ps(from_top), _mm256_castsi256_ps(from_bottom), take_bottom));
            __m256 best = _mm256_blendv_ps(top_max, bottom_max, take_bottom);
            _mm256_storeu_ps(out + j * c + k, relu ? relu_vector(best) : best);
            __m128i pos16 = _mm_packus_epi32(_mm256_castsi256_si128(pos), _mm256_extracti128_si256(pos, 1));
            _mm_storel_epi64((__m128i *)(won + j * c + k), _mm_packus_epi16(pos16, pos16));
        }
        for (; k < c; k++) {
            window(p[k], p[c + k], q[k], q[c + k], out + j * c + k, won + j * c + k);
            if (relu) out[j * c + k] = relu_of(out[j * c + k]);
        }
    }
}

/* The gradient of one output row back onto its two input rows: every input value is written,
   the gradient where it won its window, else 0. Where `out` is given (the row's outputs after
   their ReLU), the gradient stops where out <= 0, as relu's backward stops it (a NaN lets it
   through). The window's left column before its right one keeps the stores in address order. */
static void pool2x2_row_backward(const float *g_row, const uint8_t *won, const float *out, float *top, float *bottom,
                                 int64_t w, int64_t c)
{
    const int64_t wo = w / 2, row = w * c, out_row = wo * c;
    const __m256 zero = _mm256_setzero_ps();
    for (int64_t j = 0; j < wo; j++) {
        for (int side = 0; side < 2; side++) {
            float *p = top + 2 * j * c + side * c, *q = bottom + 2 * j * c + side * c;
            const __m256i at_top = _mm256_set1_epi32(side), at_bottom = _mm256_set1_epi32(2 + side);
            int64_t k = 0;
            for (; k < c && 2 * j * c + side * c + k + 8 <= row && j * c + k + 8 <= out_row; k += 8) {
                __m256 g = _mm256_loadu_ps(g_row + j * c + k);
                if (out) g = _mm256_and_ps(g, _mm256_cmp_ps(_mm256_loadu_ps(out + j * c + k), zero, _CMP_NLE_UQ));
                __m256i pos = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(won + j * c + k)));
                _mm256_storeu_ps(p + k, _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(pos, at_top)), g));
                _mm256_storeu_ps(q + k, _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(pos, at_bottom)), g));
            }
            for (; k < c; k++) {
                const float g = out ? relu_masked_grad(g_row, out, j * c + k) : g_row[j * c + k];
                int pos = won[j * c + k];
                p[k] = pos == side ? g : 0.0f;
                q[k] = pos == 2 + side ? g : 0.0f;
            }
        }
    }
}

static void forward_rows(const float *x, float *y, uint8_t *winner, int64_t first, int64_t last,
                         int64_t h, int64_t w, int64_t c, int relu)
{
    const int64_t ho = h / 2, row = w * c, out_row = (w / 2) * c;
    for (int64_t r = first; r < last; r++) {
        const float *top = x + (r / ho * h + 2 * (r % ho)) * row;
        pool2x2_row(top, top + row, y + r * out_row, winner + r * out_row, w, c, relu);
    }
}

static void backward_rows(const float *grad_out, const uint8_t *winner, const float *out, float *grad_in,
                          int64_t first, int64_t last, int64_t h, int64_t w, int64_t c)
{
    const int64_t ho = h / 2, row = w * c, out_row = (w / 2) * c;
    for (int64_t r = first; r < last; r++) {
        float *top = grad_in + (r / ho * h + 2 * (r % ho)) * row;
        pool2x2_row_backward(grad_out + r * out_row, winner + r * out_row, out ? out + r * out_row : NULL,
                             top, top + row, w, c);
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

/* relu: the maxima go through a ReLU. */
void pool2x2_forward(const float *x, float *y, uint8_t *winner, int64_t n, int64_t h, int64_t w, int64_t c,
                     int relu, int threads)
{
    const int64_t rows = n * (h / 2);
    SPLIT_ROWS(forward_rows(x, y, winner, first, last, h, w, c, relu))
}

/* out: the forward's outputs after their ReLU, or NULL where the forward had none. */
void pool2x2_backward(const float *grad_out, const uint8_t *winner, const float *out, float *grad_in, int64_t n,
                      int64_t h, int64_t w, int64_t c, int threads)
{
    const int64_t rows = n * (h / 2);
    SPLIT_ROWS(backward_rows(grad_out, winner, out, grad_in, first, last, h, w, c))
}

/* The version of every kernel's calling convention in the library (ABI_VERSION in __init__.py): the
   build checks that the library it loads is this one. */
int classicnets_native_abi_version(void) { return 4; }
