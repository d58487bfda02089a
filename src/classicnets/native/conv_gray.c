/* A convolution over one-channel images (LeNet-5's first layer on grey digits), forward and the
   gradients of its weight and bias, on float32, stride 1, no padding, with the output
   channels-last (classicnets/native/__init__.py says why it exists).

   Memory: the image is (n, h, w) (one channel: channels-last and the default layout agree), the
   weight (c, k, k), the output (n, ho, wo, c) with ho = h - k + 1 and wo = w - k + 1.

   Why not the usual way. oneDNN vectorises such a layer over output channels; with 6 of them,
   most of an 8-lane register is idle, and as a matrix product (im2col) the inner dimension is 25
   taps and the outer one 6 channels, shapes no kernel runs well. Here a register holds 8
   consecutive output values of one output row: with c channels, lane l of vector v of a group
   is position (8v + l) / c and channel (8v + l) % c. A group is the smallest run of positions
   that fills whole registers: lcm(c, 8) / c positions in lcm(c, 8) / 8 registers (c = 6: 4
   positions in 3 registers). For each tap, the input values a group needs sit in one short run
   of the input row; one load and one lane permutation per register spread them to their lanes,
   and a fused multiply-add with the tap's weights (spread the same way once per call) adds them.
   The output rows come out channels-last with no transposition. The weight gradient goes the
   other way round (see weight_grad_row): it transposes each row of the output gradient once and
   then needs no permutation per tap.

   The sums run in another order than oneDNN's, so results agree with PyTorch's to rounding,
   not bit for bit (tests/test_native_conv.py bounds the difference against float64). */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <immintrin.h>
#include "pool2x2.h"
#include "threads.h"

#ifndef __AVX2__
#error "conv_gray.c needs AVX2 (-mavx2 -mfma)"
#endif

#define MAX_K 7     /* kernel sizes up to 7x7 */
#define MAX_V 3     /* registers per group: c in {1, 2, 3, 4, 6, 8, 12, 16, 24} */

typedef struct {
    int64_t n, h, w, k, c, ho, wo;
    int v, p;                   /* registers and positions per group */
    int64_t groups;             /* whole groups per output row; positions past them go one at a time */
    __m256i lane_position[MAX_V];
    __m256i first_lanes;        /* the p lanes a load must fill (the others may lie past the image) */
    const float *end;           /* one past the last input value */
} Shape;

static int lcm8(int c)
{
    int a = c, b = 8;
    while (b) { int t = a % b; a = b; b = t; }
    return c / a * 8;
}

int conv_gray_supports(int64_t c, int64_t k)
{
    return c >= 1 && k >= 1 && k <= MAX_K && lcm8((int)c) / 8 <= MAX_V;
}

static Shape shape_of(int64_t n, int64_t h, int64_t w, int64_t k, int64_t c, const float *x)
{
    Shape s;
    s.n = n; s.h = h; s.w = w; s.k = k; s.c = c; s.ho = h - k + 1; s.wo = w - k + 1;
    s.v = lcm8((int)c) / 8;
    s.p = (int)(s.v * 8 / c);
    s.groups = s.wo / s.p;
    for (int v = 0; v < s.v; v++) {
        int32_t pos[8];
        for (int l = 0; l < 8; l++) pos[l] = (8 * v + l) / (int)c;
        s.lane_position[v] = _mm256_loadu_si256((const __m256i *)pos);
    }
    int32_t first[8];
    for (int l = 0; l < 8; l++) first[l] = l < s.p ? -1 : 0;
    s.first_lanes = _mm256_loadu_si256((const __m256i *)first);
    s.end = x + n * h * w;
    return s;
}

/* Input values p[0..p-1] in the low lanes. A full load where 8 values lie inside the image (all
   but the very end of it); a masked one, which reads nothing past the p lanes, at the end. */
static inline __m256 load_run(const Shape *s, const float *p)
{
    return p + 8 <= s->end ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, s->first_lanes);
}

/* The tap weights spread to the lanes: spread[(tap * v + j) * 8 + l] = weight[channel(j, l)][tap]. */
static void spread_weights(const Shape *s, const float *weight, float *spread)
{
    for (int64_t t = 0; t < s->k * s->k; t++)
        for (int j = 0; j < s->v; j++)
            for (int l = 0; l < 8; l++)
                spread[(t * s->v + j) * 8 + l] = weight[((8 * j + l) % s->c) * s->k * s->k + t];
}

/* One output row, `blocks` groups at a time (V and BLOCK are constants at every call, so the
   accumulators stay in registers). */
static inline __attribute__((always_inline)) void forward_row(
    const Shape *s, const float *in, float *out, const float *spread, const float *bias_spread,
    const int V, const int BLOCK)
{
    const int64_t k = s->k, w = s->w, p = s->p;
    int64_t g = 0;
    for (; g + BLOCK <= s->groups; g += BLOCK) {
        __m256 acc[8][MAX_V];  /* fixed sizes: sized by BLOCK and V they would be variable-length arrays */
        for (int b = 0; b < BLOCK; b++)
            for (int j = 0; j < V; j++) acc[b][j] = _mm256_loadu_ps(bias_spread + 8 * j);
        for (int64_t ky = 0; ky < k; ky++) {
            const float *row = in + ky * w + g * p;
            for (int64_t kx = 0; kx < k; kx++) {
                const float *wt = spread + (ky * k + kx) * V * 8;
                for (int b = 0; b < BLOCK; b++) {
                    __m256 run = load_run(s, row + b * p + kx);
                    for (int j = 0; j < V; j++)
                        acc[b][j] = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(run, s->lane_position[j]),
                                                    _mm256_loadu_ps(wt + 8 * j), acc[b][j]);
                }
            }
        }
        for (int b = 0; b < BLOCK; b++)
            for (int j = 0; j < V; j++) _mm256_storeu_ps(out + ((g + b) * V + j) * 8, acc[b][j]);
    }
    for (; g < s->groups; g++) {  /* the groups left over, one at a time */
        __m256 acc[MAX_V];
        for (int j = 0; j < V; j++) acc[j] = _mm256_loadu_ps(bias_spread + 8 * j);
        for (int64_t ky = 0; ky < k; ky++)
            for (int64_t kx = 0; kx < k; kx++) {
                __m256 run = load_run(s, in + ky * w + g * p + kx);
                const float *wt = spread + (ky * k + kx) * V * 8;
                for (int j = 0; j < V; j++)
                    acc[j] = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(run, s->lane_position[j]),
                                             _mm256_loadu_ps(wt + 8 * j), acc[j]);
            }
        for (int j = 0; j < V; j++) _mm256_storeu_ps(out + (g * V + j) * 8, acc[j]);
    }
}

/* Positions past the last whole group, one value at a time. */
static void forward_tail(const Shape *s, const float *in, float *out, const float *weight, const float *bias)
{
    const int64_t k = s->k, c = s->c;
    for (int64_t x = s->groups * s->p; x < s->wo; x++)
        for (int64_t ch = 0; ch < c; ch++) {
            float sum = bias[ch];
            for (int64_t ky = 0; ky < k; ky++)
                for (int64_t kx = 0; kx < k; kx++) sum += in[ky * s->w + x + kx] * weight[(ch * k + ky) * k + kx];
            out[x * c + ch] = sum;
        }
}

/* The weights and bias spread to the lanes, once per call. */
typedef struct {
    float taps[MAX_K * MAX_K * MAX_V * 8], bias[MAX_V * 8];
    const float *weight, *bias_values;
} Spread;

static const float no_bias[24] = {0};

static void spread_all(const Shape *s, const float *weight, const float *bias, Spread *spread)
{
    spread->weight = weight;
    spread->bias_values = bias ? bias : no_bias;
    spread_weights(s, weight, spread->taps);
    for (int j = 0; j < s->v; j++)
        for (int l = 0; l < 8; l++) spread->bias[8 * j + l] = spread->bias_values[(8 * j + l) % s->c];
}

/* Output row y of image i (its wo * c values, channels-last) to `out`. */
static void conv_row(const Shape *s, const Spread *spread, const float *x, int64_t i, int64_t y, float *out)
{
    const float *in = x + (i * s->h + y) * s->w;
    switch (s->v) {  /* constants for forward_row: enough accumulators, and no spills */
    case 1: forward_row(s, in, out, spread->taps, spread->bias, 1, 8); break;
    case 2: forward_row(s, in, out, spread->taps, spread->bias, 2, 4); break;
    default: forward_row(s, in, out, spread->taps, spread->bias, 3, 3); break;
    }
    forward_tail(s, in, out, spread->weight, spread->bias_values);
}

void conv_gray_forward(const float *x, const float *weight, const float *bias, float *y,
                       int64_t n, int64_t h, int64_t w, int64_t k, int64_t c, int threads)
{
    Shape s = shape_of(n, h, w, k, c, x);
    Spread spread;
    spread_all(&s, weight, bias, &spread);
    const int64_t rows = n * s.ho;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t r = 0; r < rows; r++) conv_row(&s, &spread, x, r / s.ho, r % s.ho, y + r * s.wo * c);
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
    Spread spread;
    spread_all(&s, weight, bias, &spread);
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
            conv_row(&s, &spread, x, i, y_top, pair);
            conv_row(&s, &spread, x, i, y_top + 1, pair + row);
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

   transpose_row writes the transposed row, adds it to the bias sums, and returns the lanes of the
   row's last register that lie inside the row (a load of the input must read no further). */
static inline __attribute__((always_inline)) __m256i transpose_row(
    const Shape *s, const float *grad, float *bias_sums, float *transposed, int64_t nv)
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

/* The weight and bias gradients from the output gradient `grad` (n, ho, wo, c), or, where
   `winner` is given, from the gradient of the fused block's pooled output (see
   conv_gray_pool_relu_weight_grad): each pair of output rows is then first expanded in a
   per-thread scratch, as pool2x2_row_backward would write it. Each thread sums its rows into its
   own buffers; the buffers are added in thread order, so a given thread count always gives the
   same bits, and the same bits both ways. Returns 0, or -1 when memory ran out (nothing written). */
static int weight_grads(const float *x, const float *grad, const float *out, const uint8_t *winner,
                        float *grad_weight, float *grad_bias, int64_t n, int64_t h, int64_t w, int64_t k, int64_t c,
                        int threads)
{
    Shape s = shape_of(n, h, w, k, c, x);
    const int64_t kk = k * k, nv = (s.wo + 7) / 8, sums_size = kk * c * 8 + c * 8, row = s.wo * c;
    const int64_t per_thread = sums_size + c * nv * 8 + (winner ? 2 * row : 0), rows = n * s.ho;
    if (threads < 1) threads = 1;
    float *buffers = calloc((size_t)(threads * per_thread), sizeof(float));
    if (!buffers) return -1;
#pragma omp parallel num_threads(threads)
    {
        float *sums = buffers + thread_number() * per_thread, *bias_sums = sums + kk * c * 8;
        float *transposed = sums + sums_size, *expanded = transposed + c * nv * 8;
        int64_t first, last;
        thread_share(rows, &first, &last);
        for (int64_t r = first; r < last; r++) {
            const float *in = x + (r / s.ho * h + r % s.ho) * w, *gr = grad + r * row;
            if (winner) {  /* the pair of rows this one belongs to, expanded once */
                const int64_t pooled = r / s.ho * (s.ho / 2) + r % s.ho / 2, pooled_row = s.wo / 2 * c;
                if (r == first || r % s.ho % 2 == 0)
                    pool2x2_row_backward(grad + pooled * pooled_row, winner + pooled * pooled_row,
                                         out + pooled * pooled_row, expanded, expanded + row, s.wo, c);
                gr = expanded + r % s.ho % 2 * row;
            }
            switch (nv) {  /* constants for weight_grad_row: the row's registers stay in registers */
            case 1: weight_grad_row(&s, in, gr, sums, bias_sums, transposed, 1); break;
            case 2: weight_grad_row(&s, in, gr, sums, bias_sums, transposed, 2); break;
            case 3: weight_grad_row(&s, in, gr, sums, bias_sums, transposed, 3); break;
            case 4: weight_grad_row(&s, in, gr, sums, bias_sums, transposed, 4); break;
            default: weight_grad_wide_row(&s, in, gr, sums, bias_sums, transposed, nv); break;
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
