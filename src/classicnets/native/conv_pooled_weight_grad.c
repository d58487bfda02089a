/* The weight and bias gradients of a convolution followed by a 2x2 max pool (stride 2) and a
   ReLU, straight from the gradient of the pooled output: lenet5's second block, conv2 (6 maps
   in, 16 out, 5x5) (classicnets/models/fused.py). Float32, stride 1, no padding, channels-last.

   Memory: the input x is (n, h, w, ci); the pooled output, its gradient and the pool's winners
   are (n, ho / 2, wo / 2, co) with ho = h - k + 1 and wo = w - k + 1 (both even); the weight
   gradient is (co, ci, k, k), PyTorch's layout.

   Of each pool window only the winner's convolution output reached the pooled output, so the
   gradient the pool passes back is zero at the other three positions: the weight gradient is a
   sum over the windows alone, each window's gradient (stopped by the ReLU) times the input patch
   under its winner's taps. Channels-last, one row of that patch (k positions x ci maps, 30
   values for conv2) is contiguous: nreg registers of 8 (4 for conv2), whose products with the
   window's gradient broadcast to all lanes add up, for one output channel, in registers. A
   quarter of the multiply-adds of the dense weight gradient, about 94% of the lanes used, and
   no full-size gradient to make or read. oneDNN's dense weight gradient on the full-size
   gradient sums in another order: the values agree with it to float32 rounding. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>
#include "loads.h"
#include "pool2x2.h"
#include "threads.h"

#ifndef __AVX2__
#error "conv_pooled_weight_grad.c needs AVX2 (-mavx2 -mfma)"
#endif

#define MAX_K 7
#define MAX_NREG 4  /* k x ci <= 32 values in a patch row */
#define MAX_ACC 12  /* accumulators in registers (AVX2 has 16) */

int conv_pooled_weight_grad_supports(int64_t ci, int64_t k)
{
    return ci >= 1 && k >= 1 && k <= MAX_K && k * ci <= 8 * MAX_NREG;
}

typedef struct {
    int64_t h, w, ci, co, k, ph, pw;
    const float *end;  /* one past the last input value */
} Shape;

/* Output channel o of one image: patch rows ky0 .. ky0 + ROWS - 1, NREG registers each, summed over
   every window into sums (row ky at sums + ky * 8 * MAX_NREG). ROWS x NREG <= MAX_ACC accumulators
   stay in registers. INSIDE: every load lies inside the input (any image but the batch's last).
   Returns the sum of the windows' gradients (the bias gradient's share). */
static inline __attribute__((always_inline)) float channel_rows(
    const Shape *s, const float *img, const float *g, const float *out, const uint8_t *won, int64_t o, int64_t ky0,
    float *sums, const int NREG, const int ROWS, const int INSIDE)
{
    const int64_t co = s->co, ci = s->ci, line = s->w * ci;
    const int64_t corner[4] = {0, ci, line, line + ci};  /* a winner's offset in its window */
    __m256 acc[MAX_ACC];
    for (int a = 0; a < ROWS * NREG; a++) acc[a] = _mm256_setzero_ps();
    float bias = 0.0f;
    for (int64_t py = 0; py < s->ph; py++)
        for (int64_t px = 0; px < s->pw; px++) {
            const int64_t at = (py * s->pw + px) * co + o;
            const float grad = relu_masked_grad(g, out, at);
            const float *patch = img + (2 * py + ky0) * line + 2 * px * ci + corner[won[at]];
            const __m256 gv = _mm256_set1_ps(grad);
            bias += grad;
            for (int r = 0; r < ROWS; r++)
                for (int v = 0; v < NREG; v++) {  /* lanes past a patch row's k * ci values: never stored */
                    const float *p = patch + r * line + 8 * v;
                    const __m256 in = INSIDE ? _mm256_loadu_ps(p) : load_before(p, s->end);
                    acc[r * NREG + v] = _mm256_fmadd_ps(in, gv, acc[r * NREG + v]);
                }
        }
    for (int r = 0; r < ROWS; r++)
        for (int v = 0; v < NREG; v++) {
            float *dst = sums + (ky0 + r) * 8 * MAX_NREG + 8 * v;
            _mm256_storeu_ps(dst, _mm256_add_ps(_mm256_loadu_ps(dst), acc[r * NREG + v]));
        }
    return bias;
}

#define ROWS_CASE(NREG, ROWS) \
    case NREG * 16 + ROWS: \
        return inside ? channel_rows(s, img, g, out, won, o, ky0, sums, NREG, ROWS, 1) \
                      : channel_rows(s, img, g, out, won, o, ky0, sums, NREG, ROWS, 0);

/* channel_rows with its constants: nreg registers a row, `rows` rows (rows x nreg <= 12). */
static float rows_of(const Shape *s, const float *img, const float *g, const float *out, const uint8_t *won,
                     int64_t o, int64_t ky0, float *sums, int64_t nreg, int64_t rows, int inside)
{
    switch (nreg * 16 + rows) {
    ROWS_CASE(1, 1) ROWS_CASE(1, 2) ROWS_CASE(1, 3) ROWS_CASE(1, 4) ROWS_CASE(1, 5) ROWS_CASE(1, 6) ROWS_CASE(1, 7)
    ROWS_CASE(2, 1) ROWS_CASE(2, 2) ROWS_CASE(2, 3) ROWS_CASE(2, 4) ROWS_CASE(2, 5) ROWS_CASE(2, 6)
    ROWS_CASE(3, 1) ROWS_CASE(3, 2) ROWS_CASE(3, 3) ROWS_CASE(3, 4)
    ROWS_CASE(4, 1) ROWS_CASE(4, 2) ROWS_CASE(4, 3)
    default: return 0.0f;  /* not reached: conv_pooled_weight_grad_supports */
    }
}

/* grad, out, winner: the pooled gradient, output and winners (n, ho / 2, wo / 2, co); x the
   convolution's input (n, h, w, ci). Writes grad_weight (co, ci, k, k) and, if not NULL,
   grad_bias (co). The threads split (image, output channel) pairs, each summing into its own
   buffer, added in thread order: a given thread count gives the same bits. Returns 0, or -1 when
   memory ran out (nothing written). */
int conv_pooled_weight_grad(const float *x, const float *grad, const float *out, const uint8_t *winner,
                            float *grad_weight, float *grad_bias, int64_t n, int64_t h, int64_t w, int64_t ci,
                            int64_t co, int64_t k, int threads)
{
    Shape s;
    s.h = h; s.w = w; s.ci = ci; s.co = co; s.k = k; s.ph = (h - k + 1) / 2; s.pw = (w - k + 1) / 2;
    s.end = x + n * h * w * ci;
    const int64_t nreg = (k * ci + 7) / 8, rows = MAX_ACC / nreg < k ? MAX_ACC / nreg : k;
    const int64_t sums_size = co * k * 8 * MAX_NREG, per_thread = sums_size + co, pooled = s.ph * s.pw * co;
    if (threads < 1) threads = 1;
    float *buffers = calloc((size_t)(threads * per_thread), sizeof(float));
    if (!buffers) return -1;
#pragma omp parallel num_threads(threads)
    {
        float *sums = buffers + thread_number() * per_thread, *bias_sums = sums + sums_size;
        int64_t first, end;
        thread_share(n * co, &first, &end);
        for (int64_t u = first; u < end; u++) {
            const int64_t i = u / co, o = u % co;
            const float *img = x + i * h * w * ci;
            for (int64_t ky0 = 0; ky0 < k; ky0 += rows) {
                const float bias = rows_of(&s, img, grad + i * pooled, out + i * pooled, winner + i * pooled, o, ky0,
                                           sums + o * k * 8 * MAX_NREG, nreg, k - ky0 < rows ? k - ky0 : rows,
                                           i + 1 < n);
                if (ky0 == 0) bias_sums[o] += bias;
            }
        }
    }
    for (int64_t o = 0; o < co; o++) {
        for (int64_t i = 0; i < ci; i++)
            for (int64_t ky = 0; ky < k; ky++)
                for (int64_t kx = 0; kx < k; kx++) {
                    float sum = 0.0f;
                    for (int t = 0; t < threads; t++)
                        sum += buffers[t * per_thread + (o * k + ky) * 8 * MAX_NREG + kx * ci + i];
                    grad_weight[((o * ci + i) * k + ky) * k + kx] = sum;
                }
        if (grad_bias) {
            float sum = 0.0f;
            for (int t = 0; t < threads; t++) sum += buffers[t * per_thread + sums_size + o];
            grad_bias[o] = sum;
        }
    }
    free(buffers);
    return 0;
}
