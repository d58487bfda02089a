/* A convolution over one-channel images (LeNet-5's first layer on grey digits), forward and the
   gradients of its weight and bias, on float32, stride 1, no padding, with the output
   channels-last (classicnets/native/__init__.py says why it exists).

   Memory: the image is (n, h, w) (one channel: channels-last and the default layout agree), the
   weight (c, k, k), the output (n, ho, wo, c) with ho = h - k + 1 and wo = w - k + 1.

   Why not the usual way. oneDNN vectorises such a layer over output channels; with 6 of them,
   most of an 8-lane register is idle, and as a matrix product (im2col) the inner dimension is 25
   taps and the outer one 6 channels, shapes no kernel runs well. Here a register holds 8
   consecutive positions of one output row and one channel: for each tap, a plain load of the
   input row meets the tap's weight broadcast to all lanes, one multiply-add per load and weight
   (forward_channels), and the finished registers are written out channels-last. An earlier form
   put positions x channels across a register's lanes, which needed a lane permutation per
   multiply-add and ran at about half the speed (1.65x now, in one process at batch 128 on the
   AVX-512 machine; the outputs bit for bit the same). The weight gradient goes the same way
   (see weight_grad_row): it transposes each row of the output gradient once and then needs no
   permutation per tap; in the fused block the pooled gradient is expanded straight into that
   transposed layout (expand_pair_transposed: 1.38-1.56x the expansion then the transposition).

   The sums run in another order than oneDNN's, so results agree with PyTorch's to rounding,
   not bit for bit (tests/test_native_conv.py bounds the difference against float64). */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>
#include "pool2x2.h"
#include "threads.h"

#ifndef __AVX2__
#error "conv_gray.c needs AVX2 (-mavx2 -mfma)"
#endif

#define MAX_K 7     /* kernel sizes up to 7x7 */
#define MAX_C 24    /* output channels */

typedef struct {
    int64_t n, h, w, k, c, ho, wo;
    const float *end;           /* one past the last input value */
} Shape;

int conv_gray_supports(int64_t c, int64_t k)
{
    return c >= 1 && c <= MAX_C && k >= 1 && k <= MAX_K;
}

static Shape shape_of(int64_t n, int64_t h, int64_t w, int64_t k, int64_t c, const float *x)
{
    Shape s;
    s.n = n; s.h = h; s.w = w; s.k = k; s.c = c; s.ho = h - k + 1; s.wo = w - k + 1;
    s.end = x + n * h * w;
    return s;
}

/* 8 input values from p: a full load where they all lie inside the image (all but the very end
   of it); at the end a masked load of those that do. Lanes past the image belong to positions
   past the output row, which are never stored. */
static inline __m256 load_run(const Shape *s, const float *p)
{
    if (p + 8 <= s->end) return _mm256_loadu_ps(p);
    const int64_t inside = s->end - p;
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)inside),
                                                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
}

/* Channels ch0 .. ch0 + CH - 1 of one output row, BLOCK registers of 8 positions at a time (CH
   and BLOCK are constants at every call, so the CH x BLOCK accumulators stay in registers). For
   each tap, BLOCK plain loads of the input row meet one broadcast weight per channel: one
   multiply-add per load and weight, and no lane permutation. Each output sums the bias and then
   the taps in row order, with a fused multiply-add per tap. */
static inline __attribute__((always_inline)) void forward_channels(
    const Shape *s, const float *in, float *out, const float *weight, const float *bias, int64_t ch0,
    const int CH, const int BLOCK)
{
    const int64_t k = s->k, w = s->w, c = s->c, wo = s->wo;
    for (int64_t x0 = 0; x0 < wo; x0 += 8 * BLOCK) {
        __m256 acc[6][4];  /* fixed sizes: sized by CH and BLOCK they would be variable-length arrays */
        for (int j = 0; j < CH; j++)
            for (int b = 0; b < BLOCK; b++) acc[j][b] = _mm256_set1_ps(bias[ch0 + j]);
        for (int64_t ky = 0; ky < k; ky++)
            for (int64_t kx = 0; kx < k; kx++) {
                const float *run = in + ky * w + x0 + kx;
                __m256 x[4];
                for (int b = 0; b < BLOCK; b++) x[b] = load_run(s, run + 8 * b);
                for (int j = 0; j < CH; j++) {
                    const __m256 wt = _mm256_broadcast_ss(weight + ((ch0 + j) * k + ky) * k + kx);
                    for (int b = 0; b < BLOCK; b++) acc[j][b] = _mm256_fmadd_ps(x[b], wt, acc[j][b]);
                }
            }
        float block[6][32];
        for (int j = 0; j < CH; j++)
            for (int b = 0; b < BLOCK; b++) _mm256_storeu_ps(block[j] + 8 * b, acc[j][b]);
        const int64_t positions = wo - x0 < 8 * BLOCK ? wo - x0 : 8 * BLOCK;
        for (int64_t p = 0; p < positions; p++)  /* to channels-last */
            for (int j = 0; j < CH; j++) out[(x0 + p) * c + ch0 + j] = block[j][p];
    }
}

static const float no_bias[MAX_C] = {0};  /* the bias a layer without one adds */

/* Output row y of image i (its wo * c values, channels-last) to `out`: up to 6 channels at a
   time, with 2 registers of positions each (4 where 3 channels or fewer are left): 12 accumulators,
   2 or 4 input registers and a broadcast weight fit AVX2's 16 registers. `b`: the bias, or no_bias. */
static void conv_row(const Shape *s, const float *wt, const float *b, const float *x, int64_t i, int64_t y,
                     float *out)
{
    const float *in = x + (i * s->h + y) * s->w;
    for (int64_t ch0 = 0; ch0 < s->c; ch0 += 6) {
        switch (s->c - ch0 < 6 ? s->c - ch0 : 6) {
        case 1: forward_channels(s, in, out, wt, b, ch0, 1, 4); break;
        case 2: forward_channels(s, in, out, wt, b, ch0, 2, 4); break;
        case 3: forward_channels(s, in, out, wt, b, ch0, 3, 4); break;
        case 4: forward_channels(s, in, out, wt, b, ch0, 4, 2); break;
        case 5: forward_channels(s, in, out, wt, b, ch0, 5, 2); break;
        default: forward_channels(s, in, out, wt, b, ch0, 6, 2); break;
        }
    }
}

void conv_gray_forward(const float *x, const float *weight, const float *bias, float *y,
                       int64_t n, int64_t h, int64_t w, int64_t k, int64_t c, int threads)
{
    Shape s = shape_of(n, h, w, k, c, x);
    const float *b = bias ? bias : no_bias;
    const int64_t rows = n * s.ho;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t r = 0; r < rows; r++) conv_row(&s, weight, b, x, r / s.ho, r % s.ho, y + r * s.wo * c);
}

/* lenet5's first block in one pass: this convolution, a 2x2 max pool with stride 2, then a ReLU
   (the order lenet5 runs them in). The convolution's output never goes to memory: each pair of
   its rows is made in a per-thread scratch and pooled while it sits in the L1 cache. The
   values are those of conv_gray_forward followed by pool2x2_forward with its ReLU, bit for bit.
   ho and wo must be even. y: (n, ho / 2, wo / 2, c), channels-last; winner: each window's
   winner, as pool2x2_forward gives it. Returns 0, or -1 when memory ran out (nothing written). */
int conv_gray_pool_relu_forward(const float *x, const float *weight, const float *bias, float *y, uint8_t *winner,
                                int64_t n, int64_t h, int64_t w, int64_t k, int64_t c, int threads)
{
    Shape s = shape_of(n, h, w, k, c, x);
    const float *b = bias ? bias : no_bias;
    const int64_t row = s.wo * c, pooled_row = s.wo / 2 * c, pooled_rows = n * (s.ho / 2);
    if (threads < 1) threads = 1;
    float *scratch = malloc((size_t)(threads * 2 * row) * sizeof(float));
    if (!scratch) return -1;
#pragma omp parallel num_threads(threads)
    {
        float *pair = scratch + thread_number() * 2 * row;
        int64_t first, last;
        thread_share(pooled_rows, &first, &last);
        for (int64_t r = first; r < last; r++) {
            const int64_t i = r / (s.ho / 2), y_top = 2 * (r % (s.ho / 2));
            conv_row(&s, weight, b, x, i, y_top, pair);
            conv_row(&s, weight, b, x, i, y_top + 1, pair + row);
            pool2x2_row(pair, pair + row, y + r * pooled_row, winner + r * pooled_row, s.wo, c, 1);
        }
    }
    free(scratch);
    return 0;
}

/* The weight gradient turns the layout around: an output row's gradient is first transposed to
   (c, wo), zero-padded to nv whole registers, so that for each tap a register holds 8 consecutive
   positions of one channel and the input it meets is a plain load of 8 consecutive input values
   (no lane permutation per tap). sums[((tap * c) + ch) * 8 + l] collects the products of lane l.

   transpose_row writes the transposed row (unless grad is NULL: then `transposed` holds it
   already), adds it to the bias sums, and returns the lanes of the row's last register that lie
   inside the row (a load of the input must read no further). */
static inline __attribute__((always_inline)) __m256i transpose_row(
    const Shape *s, const float *grad, float *bias_sums, float *transposed, int64_t nv)
{
    const int64_t wo = s->wo, c = s->c, stride = nv * 8;
    if (grad)
        for (int64_t x = 0; x < wo; x++)
            for (int64_t ch = 0; ch < c; ch++) transposed[ch * stride + x] = grad[x * c + ch];
    for (int64_t ch = 0; ch < c; ch++) {
        __m256 sum = _mm256_loadu_ps(bias_sums + ch * 8);
        for (int64_t v = 0; v < nv; v++)
            sum = _mm256_add_ps(sum, _mm256_loadu_ps(transposed + ch * stride + v * 8));
        _mm256_storeu_ps(bias_sums + ch * 8, sum);
    }
    int32_t lanes[8];
    for (int l = 0; l < 8; l++) lanes[l] = 8 * (nv - 1) + l < wo ? -1 : 0;
    return _mm256_loadu_si256((const __m256i *)lanes);
}

static inline __attribute__((always_inline)) void weight_grad_row(
    const Shape *s, const float *in, const float *grad, float *sums, float *bias_sums, float *transposed,
    const int NV)
{
    const int64_t c = s->c, k = s->k, w = s->w, stride = NV * 8;
    const __m256i last = transpose_row(s, grad, bias_sums, transposed, NV);
    for (int64_t ky = 0; ky < k; ky++)
        for (int64_t kx = 0; kx < k; kx++) {
            const float *run = in + ky * w + kx;
            __m256 x[4];
            for (int v = 0; v < NV - 1; v++) x[v] = _mm256_loadu_ps(run + v * 8);
            x[NV - 1] = _mm256_maskload_ps(run + (NV - 1) * 8, last);  /* nothing read past the row's end */
            float *dst = sums + (ky * k + kx) * c * 8;
            for (int64_t ch = 0; ch < c; ch++) {
                __m256 acc = _mm256_loadu_ps(dst + ch * 8);
                for (int v = 0; v < NV; v++)
                    acc = _mm256_fmadd_ps(x[v], _mm256_loadu_ps(transposed + ch * stride + v * 8), acc);
                _mm256_storeu_ps(dst + ch * 8, acc);
            }
        }
}

/* Rows wider than 32 positions: the same sums with the row's registers loaded per channel. */
static void weight_grad_wide_row(const Shape *s, const float *in, const float *grad, float *sums, float *bias_sums,
                                 float *transposed, int64_t nv)
{
    const int64_t c = s->c, k = s->k, w = s->w, stride = nv * 8;
    const __m256i last = transpose_row(s, grad, bias_sums, transposed, nv), all = _mm256_set1_epi32(-1);
    for (int64_t ky = 0; ky < k; ky++)
        for (int64_t kx = 0; kx < k; kx++) {
            const float *run = in + ky * w + kx;
            float *dst = sums + (ky * k + kx) * c * 8;
            for (int64_t ch = 0; ch < c; ch++) {
                __m256 acc = _mm256_loadu_ps(dst + ch * 8);
                for (int64_t v = 0; v < nv; v++)
                    acc = _mm256_fmadd_ps(_mm256_maskload_ps(run + v * 8, v == nv - 1 ? last : all),
                                          _mm256_loadu_ps(transposed + ch * stride + v * 8), acc);
                _mm256_storeu_ps(dst + ch * 8, acc);
            }
        }
}

/* The gradient of one pooled row of the fused block (g_row, with its winners and its outputs
   after the ReLU) back onto the pair of convolution rows under it, written straight in the
   transposed layout weight_grad_row reads (channel-major, `stride` apart): the values
   pool2x2_row_backward would write channels-last, so the rows need no transposition (it took about
   a quarter of the weight gradient's time). */
static void expand_pair_transposed(const float *g_row, const uint8_t *won, const float *out, float *top,
                                   float *bottom, int64_t wo, int64_t c, int64_t stride)
{
    for (int64_t ch = 0; ch < c; ch++) {  /* each channel's rows written in address order */
        float *t = top + ch * stride, *b = bottom + ch * stride;
        for (int64_t j = 0; j < wo / 2; j++) {  /* masks, not branches: the winners fall at random */
            uint32_t g;
            memcpy(&g, g_row + j * c + ch, sizeof g);
            g &= -(uint32_t)!(out[j * c + ch] <= 0.0f);  /* a NaN output lets it through */
            const uint32_t pos = won[j * c + ch];
            const uint32_t v[4] = {g & -(uint32_t)(pos == 0), g & -(uint32_t)(pos == 1), g & -(uint32_t)(pos == 2),
                                   g & -(uint32_t)(pos == 3)};
            memcpy(t + 2 * j, v, 2 * sizeof *v);
            memcpy(b + 2 * j, v + 2, 2 * sizeof *v);
        }
    }
}

/* The weight and bias gradients from the output gradient `grad` (n, ho, wo, c), or, where
   `winner` is given, from the gradient of the fused block's pooled output (see
   conv_gray_pool_relu_weight_grad): each pair of output rows is then first expanded in a
   per-thread scratch (expand_pair_transposed). Each thread sums its rows into its
   own buffers; the buffers are added in thread order, so a given thread count always gives the
   same bits, and the same bits both ways. Returns 0, or -1 when memory ran out (nothing written). */
static int weight_grads(const float *x, const float *grad, const float *out, const uint8_t *winner,
                        float *grad_weight, float *grad_bias, int64_t n, int64_t h, int64_t w, int64_t k, int64_t c,
                        int threads)
{
    Shape s = shape_of(n, h, w, k, c, x);
    const int64_t kk = k * k, nv = (s.wo + 7) / 8, sums_size = kk * c * 8 + c * 8, row = s.wo * c;
    /* per thread: the sums, then one transposed row, or the fused block's pair of them */
    const int64_t pair = c * nv * 8, per_thread = sums_size + (winner ? 2 : 1) * pair, rows = n * s.ho;
    if (threads < 1) threads = 1;
    float *buffers = calloc((size_t)(threads * per_thread), sizeof(float));
    if (!buffers) return -1;
#pragma omp parallel num_threads(threads)
    {
        float *sums = buffers + thread_number() * per_thread, *bias_sums = sums + kk * c * 8;
        float *transposed = sums + sums_size;
        int64_t first, last;
        thread_share(rows, &first, &last);
        for (int64_t r = first; r < last; r++) {
            const float *in = x + (r / s.ho * h + r % s.ho) * w, *gr = grad + r * row;
            float *tr = transposed;
            if (winner) {  /* the pair of rows this one belongs to, expanded once, already transposed */
                const int64_t pooled = r / s.ho * (s.ho / 2) + r % s.ho / 2, pooled_row = s.wo / 2 * c;
                if (r == first || r % s.ho % 2 == 0)
                    expand_pair_transposed(grad + pooled * pooled_row, winner + pooled * pooled_row,
                                           out + pooled * pooled_row, transposed, transposed + pair, s.wo, c, nv * 8);
                gr = NULL;
                tr = transposed + r % s.ho % 2 * pair;
            }
            switch (nv) {  /* constants for weight_grad_row: the row's registers stay in registers */
            case 1: weight_grad_row(&s, in, gr, sums, bias_sums, tr, 1); break;
            case 2: weight_grad_row(&s, in, gr, sums, bias_sums, tr, 2); break;
            case 3: weight_grad_row(&s, in, gr, sums, bias_sums, tr, 3); break;
            case 4: weight_grad_row(&s, in, gr, sums, bias_sums, tr, 4); break;
            default: weight_grad_wide_row(&s, in, gr, sums, bias_sums, tr, nv); break;
            }
        }
    }
    for (int64_t ch = 0; ch < c; ch++) {
        for (int64_t tap = 0; tap < kk; tap++) {
            float sum = 0.0f;
            for (int t = 0; t < threads; t++)
                for (int l = 0; l < 8; l++) sum += buffers[t * per_thread + (tap * c + ch) * 8 + l];
            grad_weight[ch * kk + tap] = sum;
        }
        if (grad_bias) {
            float sum = 0.0f;
            for (int t = 0; t < threads; t++)
                for (int l = 0; l < 8; l++) sum += buffers[t * per_thread + kk * c * 8 + ch * 8 + l];
            grad_bias[ch] = sum;
        }
    }
    free(buffers);
    return 0;
}

/* grad: (n, ho, wo, c) channels-last. Writes grad_weight (c, k, k) and, if not NULL, grad_bias (c).
   Returns 0, or -1 when memory ran out (nothing written). */
int conv_gray_weight_grad(const float *x, const float *grad, float *grad_weight, float *grad_bias,
                          int64_t n, int64_t h, int64_t w, int64_t k, int64_t c, int threads)
{
    return weight_grads(x, grad, NULL, NULL, grad_weight, grad_bias, n, h, w, k, c, threads);
}

/* The weight and bias gradients of the fused first block (conv_gray_pool_relu_forward): grad is
   the gradient of its pooled output, out that output and winner its winners (all (n, ho / 2,
   wo / 2, c), channels-last). The same bits as conv_gray_weight_grad on the gradient that
   pool2x2_backward with its ReLU would pass back. */
int conv_gray_pool_relu_weight_grad(const float *x, const float *grad, const float *out, const uint8_t *winner,
                                    float *grad_weight, float *grad_bias, int64_t n, int64_t h, int64_t w, int64_t k,
                                    int64_t c, int threads)
{
    return weight_grads(x, grad, out, winner, grad_weight, grad_bias, n, h, w, k, c, threads);
}
