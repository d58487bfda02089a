/* The input gradient of a convolution with few input channels (LeNet-5's conv2: 16 output
   channels back onto 6 input channels), stride 1, no padding, float32, channels-last
   (classicnets/native/__init__.py says why it exists).

   Memory: the output gradient is (n, ho, wo, co), the weight (co, ci, k, k), the input gradient
   (n, h, w, ci) with h = ho + k - 1 and w = wo + k - 1.

   dx[y][x][i] = sum over ky, kx, o of g[y - ky][x - kx][o] * weight[o][i][ky][kx], for the
   output positions that exist. oneDNN computes it with the 6 input channels across its vector
   lanes (6 of 8 used) and runs at a third of its forward speed on LeNet-5's shapes. Here a
   register holds 8 consecutive positions x of one input channel: each image's output gradient is
   first transposed to (ho, co, x) with k - 1 zeros on either side of every row, so that for
   each (ky, kx, o) the values a register needs are one plain load, multiplied by one weight
   broadcast to all lanes. The zeros stand for the output positions past the row's ends. Each
   input-gradient row is then written back channels-last. Every value of dx is summed in the same
   order whatever the thread count (threads split the images). */

#include <stdint.h>
#include <stdlib.h>
#include <immintrin.h>
#include "pool2x2.h"
#include "threads.h"

#ifndef __AVX2__
#error "conv_input_grad.c needs AVX2 (-mavx2 -mfma)"
#endif

#define MAX_CI 8
#define MAX_K 7

int conv_input_grad_supports(int64_t ci, int64_t k)
{
    return ci >= 1 && ci <= MAX_CI && k >= 1 && k <= MAX_K;
}

typedef struct {
    int64_t ho, wo, co, ci, k, h, w, nv, padded;
} Shape;

/* Input-gradient row y, registers v0 .. v0 + NV - 1 of its positions, CI channels: accumulators
   in registers (CI x NV of them, at most 12), stored to out[i * nv * 8 + x]. */
static inline __attribute__((always_inline)) void row_block(
    const Shape *s, const float *transposed, const float *weights, int64_t y, int64_t v0, float *out,
    const int CI, const int NV)
{
    __m256 acc[MAX_CI][2];  /* fixed sizes: arrays sized by CI and NV would be variable-length, in memory */
    for (int i = 0; i < CI; i++)
        for (int v = 0; v < NV; v++) acc[i][v] = _mm256_setzero_ps();
    const int64_t k = s->k, co = s->co;
    const int64_t ky_first = y - (s->ho - 1) > 0 ? y - (s->ho - 1) : 0, ky_last = y < k - 1 ? y : k - 1;
    for (int64_t ky = ky_first; ky <= ky_last; ky++) {
        const float *g_row = transposed + (y - ky) * co * s->padded;
        for (int64_t kx = 0; kx < k; kx++) {
            const float *wt = weights + (ky * k + kx) * co * CI;
            for (int64_t o = 0; o < co; o++) {
                const float *g = g_row + o * s->padded + (k - 1 - kx) + v0 * 8;
                __m256 run[2];
                for (int v = 0; v < NV; v++) run[v] = _mm256_loadu_ps(g + v * 8);
                for (int i = 0; i < CI; i++) {
                    const __m256 weight = _mm256_broadcast_ss(wt + o * CI + i);
                    for (int v = 0; v < NV; v++) acc[i][v] = _mm256_fmadd_ps(run[v], weight, acc[i][v]);
                }
            }
        }
    }
    for (int i = 0; i < CI; i++)
        for (int v = 0; v < NV; v++) _mm256_storeu_ps(out + i * s->nv * 8 + (v0 + v) * 8, acc[i][v]);
}

static inline __attribute__((always_inline)) void row(
    const Shape *s, const float *transposed, const float *weights, int64_t y, float *out, const int CI)
{
    int64_t v0 = 0;
    if (CI <= 6)
        for (; v0 + 2 <= s->nv; v0 += 2) row_block(s, transposed, weights, y, v0, out, CI, 2);
    for (; v0 < s->nv; v0++) row_block(s, transposed, weights, y, v0, out, CI, 1);
}

/* The gradient of a 2x2 max pool with stride 2 and a ReLU after it (winner and out: its winners
   and outputs, pooled: the gradient of those outputs, all (n, ho / 2, wo / 2, co)) back onto the
   pool's input, image b's, written at each window's winner into the transposed layout (the rest
   of which is zero): the values pool2x2_backward with its ReLU would pass back (the gradient
   stops where the output is <= 0; a NaN output lets it through). With `clear`, zeros are
   written instead, leaving the layout as it was. */
static void scatter_winners(const Shape *s, const float *pooled, const float *out, const uint8_t *winner, int64_t b,
                            float *transposed, int clear)
{
    const int64_t co = s->co, ph = s->ho / 2, pw = s->wo / 2;
    for (int64_t py = 0; py < ph; py++)
        for (int64_t px = 0; px < pw; px++)
            for (int64_t o = 0; o < co; o++) {
                const int64_t at = ((b * ph + py) * pw + px) * co + o, won = winner[at];
                const int64_t y = 2 * py + (won >> 1), x = 2 * px + (won & 1);
                transposed[(y * co + o) * s->padded + s->k - 1 + x] = clear ? 0.0f : relu_masked_grad(pooled, out, at);
            }
}

/* The input gradient from the output gradient grad (n, ho, wo, co), or, where winner is given,
   from the gradient of a 2x2 max pool and ReLU after the convolution (see scatter_winners; grad is
   then the pooled gradient): the zeros the pool's backward would write cost nothing to sum, so
   the result is the same, bit for bit, without the full-size gradient. */
static int input_grads(const float *grad, const float *out, const uint8_t *winner, const float *weight,
                       float *grad_input, int64_t n, int64_t ho, int64_t wo, int64_t co, int64_t ci, int64_t k,
                       int threads)
{
    Shape s;
    s.ho = ho; s.wo = wo; s.co = co; s.ci = ci; s.k = k; s.h = ho + k - 1; s.w = wo + k - 1;
    s.nv = (s.w + 7) / 8;
    s.padded = s.nv * 8 + k - 1;  /* k - 1 zeros, the row, zeros to the last register's reach */
    if (threads < 1) threads = 1;
    /* The weights as [ky][kx][o][i], the order the loops read them. */
    float *weights = malloc((size_t)(k * k * co * ci) * sizeof(float));
    const int64_t per_thread = ho * co * s.padded + ci * s.nv * 8;
    float *buffers = calloc((size_t)(threads * per_thread), sizeof(float));
    if (!weights || !buffers) {
        free(weights);
        free(buffers);
        return -1;
    }
    for (int64_t o = 0; o < co; o++)
        for (int64_t i = 0; i < ci; i++)
            for (int64_t t = 0; t < k * k; t++) weights[(t * co + o) * ci + i] = weight[(o * ci + i) * k * k + t];
#pragma omp parallel num_threads(threads)
    {
        float *transposed = buffers + thread_number() * per_thread, *out_row = transposed + ho * co * s.padded;
        int64_t first, last;
        thread_share(n, &first, &last);
        for (int64_t b = first; b < last; b++) {
            if (winner) {
                scatter_winners(&s, grad, out, winner, b, transposed, 0);
            } else {
                const float *g = grad + b * ho * wo * co;
                for (int64_t y = 0; y < ho; y++)  /* the zeros around each row stay zero from calloc */
                    for (int64_t x = 0; x < wo; x++)
                        for (int64_t o = 0; o < co; o++)
                            transposed[(y * co + o) * s.padded + k - 1 + x] = g[(y * wo + x) * co + o];
            }
            float *dx = grad_input + b * s.h * s.w * ci;
            for (int64_t y = 0; y < s.h; y++) {
                switch (ci) {  /* constants for row(): the accumulators stay in registers */
                case 1: row(&s, transposed, weights, y, out_row, 1); break;
                case 2: row(&s, transposed, weights, y, out_row, 2); break;
                case 3: row(&s, transposed, weights, y, out_row, 3); break;
                case 4: row(&s, transposed, weights, y, out_row, 4); break;
                case 5: row(&s, transposed, weights, y, out_row, 5); break;
                case 6: row(&s, transposed, weights, y, out_row, 6); break;
                case 7: row(&s, transposed, weights, y, out_row, 7); break;
                default: row(&s, transposed, weights, y, out_row, 8); break;
                }
                float *dst = dx + y * s.w * ci;
                for (int64_t x = 0; x < s.w; x++)
                    for (int64_t i = 0; i < ci; i++) dst[x * ci + i] = out_row[i * s.nv * 8 + x];
            }
            if (winner) scatter_winners(&s, grad, out, winner, b, transposed, 1);  /* all zero again */
        }
    }
    free(weights);
    free(buffers);
    return 0;
}

/* grad (n, ho, wo, co) and weight (co, ci, k, k) -> grad_input (n, ho + k - 1, wo + k - 1, ci).
   Returns 0, or -1 when memory ran out (nothing written). */
int conv_input_grad(const float *grad, const float *weight, float *grad_input, int64_t n, int64_t ho, int64_t wo,
                    int64_t co, int64_t ci, int64_t k, int threads)
{
    return input_grads(grad, NULL, NULL, weight, grad_input, n, ho, wo, co, ci, k, threads);
}

/* The same for a convolution followed by a 2x2 max pool (stride 2) and a ReLU, from the gradient
   of the pooled output: pooled, out and winner (n, ho / 2, wo / 2, co); ho and wo even. The
   bits of conv_input_grad on what pool2x2_backward with its ReLU passes back. */
int conv_pool_relu_input_grad(const float *pooled, const float *out, const uint8_t *winner, const float *weight,
                              float *grad_input, int64_t n, int64_t ho, int64_t wo, int64_t co, int64_t ci, int64_t k,
                              int threads)
{
    return input_grads(pooled, out, winner, weight, grad_input, n, ho, wo, co, ci, k, threads);
}
