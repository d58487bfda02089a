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
   (see band_taps): it transposes each row of the output gradient once and then needs no
   permutation per tap, and keeps its sums in registers over a whole image. In the fused block
   (conv, 2x2 max pool, ReLU) the weight gradient reads the pooled gradient itself and sums the
   pools' winners alone (pooled_window): a quarter of the multiply-adds, and no full-size
   gradient. At batch 128 on the AVX-512 machine, in one process: the fused weight gradient 3.5x
   the earlier expand-then-sum kernel, the plain one 1.3-1.5x.

   The sums run in another order than oneDNN's, so results agree with PyTorch's to rounding,
   not bit for bit (tests/test_native_conv.py bounds the difference against float64). */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>
#include "loads.h"
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

/* 8 input values from p (loads.h: none read past the batch's last image). Lanes past the image
   belong to positions past the output row, which are never stored. */
static inline __m256 load_run(const Shape *s, const float *p) { return load_before(p, s->end); }

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

   transpose_row writes the transposed row and adds it to the bias sums. */
static inline void transpose_row(const Shape *s, const float *grad, float *bias_sums, float *transposed,
                                 int64_t nv)
{
    const int64_t wo = s->wo, c = s->c, stride = nv * 8;
    for (int64_t x = 0; x < wo; x++)
        for (int64_t ch = 0; ch < c; ch++) transposed[ch * stride + x] = grad[x * c + ch];
    for (int64_t ch = 0; ch < c; ch++) {
        __m256 sum = _mm256_loadu_ps(bias_sums + ch * 8);
        for (int64_t v = 0; v < nv; v++)
            sum = _mm256_add_ps(sum, _mm256_loadu_ps(transposed + ch * stride + v * 8));
        _mm256_storeu_ps(bias_sums + ch * 8, sum);
    }
}

/* The sums of taps (ky, kx0 .. kx0 + KX - 1) and channels ch0 .. ch0 + CH - 1 over a band of
   `rows` transposed gradient rows (`band`, rows c * stride apart) and the input rows under them
   (`in`: the input row of the band's first output row). The CH x KX accumulators stay in
   registers for the whole band and go to memory once at its end: each register of the
   gradient, loaded once, meets KX input registers, so there are more multiply-adds than loads
   (an earlier form kept the sums in memory, loading and storing them for every tap of every
   row, and ran at about half the speed). `last` masks the loads of a row's last register to the
   lanes inside the output row: the input is read no further than the row's end, so a NaN or
   infinity there reaches only the taps whose sums it belongs to. */
static inline __attribute__((always_inline)) void band_taps(
    const Shape *s, const float *in, const float *band, int64_t rows, int64_t nv, __m256i last, int64_t ky,
    int64_t kx0, int64_t ch0, float *sums, const int CH, const int KX)
{
    const int64_t c = s->c, k = s->k, w = s->w, stride = nv * 8;
    __m256 acc[6][2];  /* fixed sizes: sized by CH and KX they would be variable-length arrays */
    for (int j = 0; j < CH; j++)
        for (int t = 0; t < KX; t++) acc[j][t] = _mm256_setzero_ps();
    for (int64_t r = 0; r < rows; r++) {
        const float *run = in + (r + ky) * w + kx0, *g = band + (r * c + ch0) * stride;
        for (int64_t v = 0; v < nv; v++) {
            __m256 x[2];
            for (int t = 0; t < KX; t++)
                x[t] = v < nv - 1 ? _mm256_loadu_ps(run + t + 8 * v) : _mm256_maskload_ps(run + t + 8 * v, last);
            for (int j = 0; j < CH; j++) {
                const __m256 gv = _mm256_loadu_ps(g + j * stride + 8 * v);
                for (int t = 0; t < KX; t++) acc[j][t] = _mm256_fmadd_ps(x[t], gv, acc[j][t]);
            }
        }
    }
    for (int j = 0; j < CH; j++)
        for (int t = 0; t < KX; t++) {
            float *dst = sums + ((ky * k + kx0 + t) * c + ch0 + j) * 8;
            _mm256_storeu_ps(dst, _mm256_add_ps(_mm256_loadu_ps(dst), acc[j][t]));
        }
}

/* Every tap and channel over one band: 6 channels x 2 taps at a time (12 accumulators, 2 input
   registers and a gradient register fit AVX2's 16). */
static void band_all_taps(const Shape *s, const float *in, const float *band, int64_t rows, int64_t nv,
                          __m256i last, float *sums)
{
    for (int64_t ch0 = 0; ch0 < s->c; ch0 += 6) {
        const int64_t ch = s->c - ch0 < 6 ? s->c - ch0 : 6;
        for (int64_t ky = 0; ky < s->k; ky++)
            for (int64_t kx0 = 0; kx0 < s->k; kx0 += 2) {
                const int pair = kx0 + 1 < s->k;
                switch (ch * 2 + pair) {  /* constants for band_taps: its accumulators stay in registers */
                case 2: band_taps(s, in, band, rows, nv, last, ky, kx0, ch0, sums, 1, 1); break;
                case 3: band_taps(s, in, band, rows, nv, last, ky, kx0, ch0, sums, 1, 2); break;
                case 4: band_taps(s, in, band, rows, nv, last, ky, kx0, ch0, sums, 2, 1); break;
                case 5: band_taps(s, in, band, rows, nv, last, ky, kx0, ch0, sums, 2, 2); break;
                case 6: band_taps(s, in, band, rows, nv, last, ky, kx0, ch0, sums, 3, 1); break;
                case 7: band_taps(s, in, band, rows, nv, last, ky, kx0, ch0, sums, 3, 2); break;
                case 8: band_taps(s, in, band, rows, nv, last, ky, kx0, ch0, sums, 4, 1); break;
                case 9: band_taps(s, in, band, rows, nv, last, ky, kx0, ch0, sums, 4, 2); break;
                case 10: band_taps(s, in, band, rows, nv, last, ky, kx0, ch0, sums, 5, 1); break;
                case 11: band_taps(s, in, band, rows, nv, last, ky, kx0, ch0, sums, 5, 2); break;
                case 12: band_taps(s, in, band, rows, nv, last, ky, kx0, ch0, sums, 6, 1); break;
                default: band_taps(s, in, band, rows, nv, last, ky, kx0, ch0, sums, 6, 2); break;
                }
            }
    }
}

/* The weight and bias gradients from the output gradient `grad` (n, ho, wo, c). The threads
   split the images; each takes its images a band of up to BAND_ROWS rows at a time (a whole
   28-row LeNet-5 image is one band): the band's gradient is transposed into a per-thread scratch,
   then band_all_taps sums it. Each thread sums into its own buffers; the buffers are added in
   thread order, so a given thread count always gives the same bits. Returns 0, or -1 when memory
   ran out (nothing written). */
#define BAND_ROWS 32
static int weight_grads(const float *x, const float *grad, float *grad_weight, float *grad_bias, int64_t n, int64_t h,
                        int64_t w, int64_t k, int64_t c, int threads)
{
    Shape s = shape_of(n, h, w, k, c, x);
    const int64_t kk = k * k, nv = (s.wo + 7) / 8, sums_size = (kk * c * 8 + c * 8 + 15) / 16 * 16, row = s.wo * c;
    const int64_t band_rows = s.ho < BAND_ROWS ? s.ho : BAND_ROWS, transposed_row = c * nv * 8;
    /* per thread: the sums, then a band of transposed rows */
    const int64_t per_thread = (sums_size + band_rows * transposed_row + 15) / 16 * 16;
    if (threads < 1) threads = 1;
    /* 64-byte aligned (per_thread is a multiple of 16 floats): no load of a register straddles two
       cache lines */
    const size_t bytes = (size_t)(threads * per_thread) * sizeof(float);
    float *buffers = aligned_alloc(64, bytes);
    if (!buffers) return -1;
    memset(buffers, 0, bytes);
    int32_t lanes[8];
    for (int l = 0; l < 8; l++) lanes[l] = 8 * (nv - 1) + l < s.wo ? -1 : 0;
    const __m256i last = _mm256_loadu_si256((const __m256i *)lanes);
#pragma omp parallel num_threads(threads)
    {
        float *sums = buffers + thread_number() * per_thread, *bias_sums = sums + kk * c * 8;
        float *band = sums + sums_size;
        int64_t first, end;
        thread_share(n, &first, &end);
        for (int64_t i = first; i < end; i++)
            for (int64_t y0 = 0; y0 < s.ho; y0 += band_rows) {
                const int64_t rows = s.ho - y0 < band_rows ? s.ho - y0 : band_rows;
                for (int64_t r = 0; r < rows; r++)
                    transpose_row(&s, grad + (i * s.ho + y0 + r) * row, bias_sums, band + r * transposed_row, nv);
                band_all_taps(&s, x + (i * h + y0) * w, band, rows, nv, last, sums);
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
    return weight_grads(x, grad, grad_weight, grad_bias, n, h, w, k, c, threads);
}

/* One window of the fused block's backward, for one channel: only the window's winner reached
   the pooled output, so only the convolution output at its position has a gradient, g (already
   stopped by the ReLU). Its taps' input is a K x K patch: row ky is one load of 8 input values,
   lanes 0 .. K - 1 its taps (the rest are never stored), into acc[ky]. Lane 7 of row 0 is 1
   instead: acc[0]'s lane 7 sums the bias gradient (K <= 7 leaves it free). INSIDE: the 8 values
   of every row lie inside the input (any image but the batch's last), so plain loads do. */
static inline __attribute__((always_inline)) void pooled_window(
    const Shape *s, const float *patch, float g, __m256 *acc, const int K, const int INSIDE)
{
    const __m256 gv = _mm256_set1_ps(g);
    for (int ky = 0; ky < K; ky++) {
        __m256 row = INSIDE ? _mm256_loadu_ps(patch + ky * s->w) : load_run(s, patch + ky * s->w);
        if (ky == 0) row = _mm256_blend_ps(row, _mm256_set1_ps(1.0f), 0x80);
        acc[ky] = _mm256_fmadd_ps(row, gv, acc[ky]);
    }
}

/* Channel ch of image img over all its windows, into sums (K rows of 8 lanes): two sets of
   accumulators, even and odd windows, so that consecutive multiply-adds do not wait on each other. */
static inline __attribute__((always_inline)) void pooled_channel(
    const Shape *s, const float *img, const float *g, const float *out, const uint8_t *won, int64_t ch,
    float *sums, const int K, const int INSIDE)
{
    const int64_t c = s->c, ph = s->ho / 2, pw = s->wo / 2, w = s->w;
    const int64_t corner[4] = {0, 1, w, w + 1};  /* a winner's offset in its window */
    __m256 even[MAX_K], odd[MAX_K];
    for (int ky = 0; ky < K; ky++) even[ky] = odd[ky] = _mm256_setzero_ps();
    for (int64_t py = 0; py < ph; py++) {
        const float *row = img + 2 * py * w;
        const int64_t at0 = py * pw * c + ch;
        int64_t px = 0;
        for (; px + 1 < pw; px += 2) {
            const int64_t at = at0 + px * c, next = at + c;
            pooled_window(s, row + 2 * px + corner[won[at]], relu_masked_grad(g, out, at), even, K, INSIDE);
            pooled_window(s, row + 2 * px + 2 + corner[won[next]], relu_masked_grad(g, out, next), odd, K, INSIDE);
        }
        if (px < pw) {
            const int64_t at = at0 + px * c;
            pooled_window(s, row + 2 * px + corner[won[at]], relu_masked_grad(g, out, at), even, K, INSIDE);
        }
    }
    for (int ky = 0; ky < K; ky++) {
        const __m256 both = _mm256_add_ps(even[ky], odd[ky]);
        _mm256_storeu_ps(sums + ky * 8, _mm256_add_ps(_mm256_loadu_ps(sums + ky * 8), both));
    }
}

#define POOLED_CHANNEL(K) (i + 1 < n ? pooled_channel(&s, img, g, o, won, ch, dst, K, 1) \
                                     : pooled_channel(&s, img, g, o, won, ch, dst, K, 0))

/* The weight and bias gradients of the fused first block (conv_gray_pool_relu_forward): grad is
   the gradient of its pooled output, out that output and winner its winners (all (n, ho / 2,
   wo / 2, c), channels-last). The gradient that pool2x2_backward with its ReLU would pass back
   is zero at three positions of every window, so this sums the winners' products alone
   (pooled_window), a quarter of conv_gray_weight_grad's multiply-adds on that gradient, and
   never makes it. The values agree with conv_gray_weight_grad's on it to rounding (they are
   summed in another order); a NaN or infinity in the input meets only the windows' winners, not
   the zeros of the losers (0 x inf would be NaN). The threads split (image, channel) pairs, each
   summing into its own buffer, added in thread order: a given thread count gives the same bits.
   Returns 0, or -1 when memory ran out (nothing written). */
int conv_gray_pool_relu_weight_grad(const float *x, const float *grad, const float *out, const uint8_t *winner,
                                    float *grad_weight, float *grad_bias, int64_t n, int64_t h, int64_t w, int64_t k,
                                    int64_t c, int threads)
{
    Shape s = shape_of(n, h, w, k, c, x);
    const int64_t per_thread = c * k * 8, pooled = (s.ho / 2) * (s.wo / 2) * c;
    if (threads < 1) threads = 1;
    float *buffers = calloc((size_t)(threads * per_thread), sizeof(float));
    if (!buffers) return -1;
#pragma omp parallel num_threads(threads)
    {
        float *sums = buffers + thread_number() * per_thread;
        int64_t first, end;
        thread_share(n * c, &first, &end);
        for (int64_t u = first; u < end; u++) {
            const int64_t i = u / c, ch = u % c;
            const float *img = x + i * h * w, *g = grad + i * pooled, *o = out + i * pooled;
            const uint8_t *won = winner + i * pooled;
            float *dst = sums + ch * k * 8;
            switch (k) {  /* constants for pooled_channel: its accumulators stay in registers */
            case 1: POOLED_CHANNEL(1); break;
            case 2: POOLED_CHANNEL(2); break;
            case 3: POOLED_CHANNEL(3); break;
            case 4: POOLED_CHANNEL(4); break;
            case 5: POOLED_CHANNEL(5); break;
            case 6: POOLED_CHANNEL(6); break;
            default: POOLED_CHANNEL(7); break;
            }
        }
    }
    for (int64_t ch = 0; ch < c; ch++) {
        for (int64_t ky = 0; ky < k; ky++)
            for (int64_t kx = 0; kx < k; kx++) {
                float sum = 0.0f;
                for (int t = 0; t < threads; t++) sum += buffers[t * per_thread + (ch * k + ky) * 8 + kx];
                grad_weight[(ch * k + ky) * k + kx] = sum;
            }
        if (grad_bias) {
            float sum = 0.0f;
            for (int t = 0; t < threads; t++) sum += buffers[t * per_thread + ch * k * 8 + 7];
            grad_bias[ch] = sum;
        }
    }
    free(buffers);
    return 0;
}
