/* One row of 2x2 max pooling (stride 2, channels-last float32): pool2x2.c runs it over whole
   tensors, conv_gray.c's fused first block on rows it has just computed. */

#ifndef CLASSICNETS_NATIVE_POOL2X2_H
#define CLASSICNETS_NATIVE_POOL2X2_H

#include <stdint.h>
#include <string.h>

/* out and won: w / 2 windows of c channels from input rows top and bottom (w * c values each);
   relu: the maxima go through a ReLU. won holds each window's winner (0-3: top left, top right,
   bottom left, bottom right). */
void pool2x2_row(const float *top, const float *bottom, float *out, uint8_t *won, int64_t w, int64_t c, int relu);

/* The gradient g[at] of a pooled output out[at] that went through a ReLU, as relu's backward
   passes it on: stopped where the output is <= 0, let through where it is NaN (bits masked, no
   branch: the outputs' signs fall at random). The fused blocks' backward kernels start from it. */
static inline float relu_masked_grad(const float *g, const float *out, int64_t at)
{
    uint32_t bits;
    memcpy(&bits, g + at, sizeof bits);
    bits &= -(uint32_t)!(out[at] <= 0.0f);
    float masked;
    memcpy(&masked, &bits, sizeof masked);
    return masked;
}

#endif
