/*
 * kd_layers: convolution (im2col + one sgemm per minibatch), pooling, ReLU, dropout and
 * dense kernels on channels-last activations, and the declared network's forward and
 * backward passes over kd_model's flat parameter and gradient buffers.
 *
 * kd_net_init computes every layer's shapes and parameter offsets and allocates one
 * workspace block; forward and backward only read and write inside it. Backward walks the
 * layers last first with two ping-pong gradient buffers; layers without a gradient of
 * their own (flatten, a fused ReLU) pass the buffer through, element-wise ones (ReLU,
 * dropout) work in place, and no input gradient is computed below the first layer with
 * parameters.
 */
#include "kd_layers.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kd_data.h"
#include "kd_error.h"

#define ALIGN_FLOATS 16
/* A training pass over a net with convolutions takes at most as many samples as fit
 * their largest layer's im2col and output in this many bytes (kd_net.chunk). Measured on
 * the CNN sample (170 KB per sample in its second convolution; 1 MB L2 per core), CPU
 * time of a batch-64 step, 3 runs each, machine shared: one pass 18.1 ms; without the
 * pooling fusion 2, 4, 8 passes 15.6-17.1, 14.6-15.8, 14.8-15.4 ms; with it, parts of
 * 8, 11, 16, 22, 32 samples 15.3-16.1, 15.1-15.9, 15.8-17.4, 17.2-18.4, 17.0-21.4 ms.
 * 2 MB gives parts of 10-11. */
#define KD_NET_CHUNK_BYTES ((size_t)2 << 20)

static size_t round_up(size_t n)
{
    return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
}

int kd_conv_out(int n, int k, int s, int p)
{
    return (n + 2 * p - k) / s + 1;
}

/* ---- kernels ---------------------------------------------------------------------- */

/* no-tree-loop-distribute-patterns: GCC would turn the short inline copy below back into
 * a memcpy call. */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
void kd_im2col(const float *x, float *col, int batch, int h, int w, int c, int k, int s,
               int p)
{
    int oh = kd_conv_out(h, k, s, p), ow = kd_conv_out(w, k, s, p);
    size_t kc = (size_t)k * (size_t)c, kkc = (size_t)k * kc;
    for (int b = 0; b < batch; b++) {
        const float *xb = x + (size_t)b * h * w * c;
        for (int oy = 0; oy < oh; oy++) {
            for (int ox = 0; ox < ow; ox++) {
                float *row = col + (((size_t)b * oh + oy) * ow + ox) * kkc;
                int ix0 = ox * s - p;
                for (int ky = 0; ky < k; ky++) {
                    int iy = oy * s - p + ky;
                    float *dst = row + (size_t)ky * kc;
                    if (iy < 0 || iy >= h) {
                        memset(dst, 0, kc * sizeof(float));
                        continue;
                    }
                    const float *src = xb + ((size_t)iy * w) * c;
                    if (ix0 >= 0 && ix0 + k <= w) {
                        /* The window's row of k pixels is contiguous in NHWC. A few
                         * floats (a first layer's 3 for 3x3 over one channel) are
                         * copied inline: a memcpy call per 12 bytes cost more than the
                         * copy. */
                        const float *from = src + (size_t)ix0 * c;
                        if (kc <= 8) {
                            for (size_t j = 0; j < kc; j++)
                                dst[j] = from[j];
                        } else {
                            memcpy(dst, from, kc * sizeof(float));
                        }
                        continue;
                    }
                    for (int kx = 0; kx < k; kx++) {
                        int ix = ix0 + kx;
                        if (ix < 0 || ix >= w)
                            memset(dst + (size_t)kx * c, 0, (size_t)c * sizeof(float));
                        else
                            memcpy(dst + (size_t)kx * c, src + (size_t)ix * c,
                                   (size_t)c * sizeof(float));
                    }
                }
            }
        }
    }
}

void kd_col2im(const float *dcol, float *dx, int batch, int h, int w, int c, int k, int s,
               int p)
{
    int oh = kd_conv_out(h, k, s, p), ow = kd_conv_out(w, k, s, p);
    size_t kc = (size_t)k * (size_t)c, kkc = (size_t)k * kc;
    memset(dx, 0, (size_t)batch * h * w * c * sizeof(float));
    for (int b = 0; b < batch; b++) {
        float *xb = dx + (size_t)b * h * w * c;
        for (int oy = 0; oy < oh; oy++) {
            for (int ox = 0; ox < ow; ox++) {
                const float *row = dcol + (((size_t)b * oh + oy) * ow + ox) * kkc;
                int ix0 = ox * s - p;
                for (int ky = 0; ky < k; ky++) {
                    int iy = oy * s - p + ky;
                    if (iy < 0 || iy >= h)
                        continue;
                    const float *src = row + (size_t)ky * kc;
                    float *dst = xb + ((size_t)iy * w) * c;
                    if (ix0 >= 0 && ix0 + k <= w) {
                        float *d = dst + (size_t)ix0 * c;
                        for (size_t j = 0; j < kc; j++)
                            d[j] += src[j];
                        continue;
                    }
                    for (int kx = 0; kx < k; kx++) {
                        int ix = ix0 + kx;
                        if (ix < 0 || ix >= w)
                            continue;
                        float *d = dst + (size_t)ix * c;
                        const float *sv = src + (size_t)kx * c;
                        for (int j = 0; j < c; j++)
                            d[j] += sv[j];
                    }
                }
            }
        }
    }
}

/* y = relu(y + bias) or y + bias over rows x n. */
static void bias_act(float *y, const float *bias, size_t rows, int n, int relu)
{
    for (size_t r = 0; r < rows; r++) {
        float *row = y + r * (size_t)n;
        if (relu) {
            for (int j = 0; j < n; j++) {
                float v = row[j] + bias[j];
                row[j] = v > 0.0f ? v : 0.0f;
            }
        } else {
            for (int j = 0; j < n; j++)
                row[j] += bias[j];
        }
    }
}

/* db[j] = sum over rows of dy[:, j], added to db when acc. */
static void column_sums(const float *dy, float *db, size_t rows, int n, int acc)
{
    if (acc) {
        for (int j = 0; j < n; j++)
            db[j] += dy[j];
    } else {
        memcpy(db, dy, (size_t)n * sizeof(float));
    }
    for (size_t r = 1; r < rows; r++) {
        const float *row = dy + r * (size_t)n;
        for (int j = 0; j < n; j++)
            db[j] += row[j];
    }
}

static void relu_mask(const float *y, float *dy, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dy[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

static int is_pointwise(int k, int s, int p)
{
    return k == 1 && s == 1 && p == 0;
}

void kd_conv2d_forward(const float *x, const float *w, const float *bias, float *y,
                       float *col, int batch, int h, int wd, int c, int f, int k, int s,
                       int p)
{
    int oh = kd_conv_out(h, k, s, p), ow = kd_conv_out(wd, k, s, p);
    int m = batch * oh * ow, kkc = k * k * c;
    const float *a = x;
    if (!is_pointwise(k, s, p)) {
        kd_im2col(x, col, batch, h, wd, c, k, s, p);
        a = col;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, f, kkc, 1.0f, a, kkc, w, f,
                0.0f, y, f);
    bias_act(y, bias, (size_t)m, f, 0);
}

/* The backward pass proper, with the input `a` the GEMM saw (col, or x for 1x1); acc adds
 * dw and db to what they hold. */
static void conv_backward(const float *a, const float *w, const float *dy, float *dw,
                          float *db, float *dx, float *col, int batch, int h, int wd, int c,
                          int f, int k, int s, int p, int acc)
{
    int oh = kd_conv_out(h, k, s, p), ow = kd_conv_out(wd, k, s, p);
    int m = batch * oh * ow, kkc = k * k * c;
    if (db) /* else the fused max pooling has written it */
        column_sums(dy, db, (size_t)m, f, acc);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kkc, f, m, 1.0f, a, kkc, dy, f,
                acc ? 1.0f : 0.0f, dw, f);
    if (!dx)
        return;
    if (is_pointwise(k, s, p)) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, kkc, f, 1.0f, dy, f, w, f,
                    0.0f, dx, kkc);
        return;
    }
    /* dcol overwrites col: dW above was its last use. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, kkc, f, 1.0f, dy, f, w, f, 0.0f,
                col, kkc);
    kd_col2im(col, dx, batch, h, wd, c, k, s, p);
}

void kd_conv2d_backward(const float *w, const float *dy, float *dw, float *db, float *dx,
                        float *col, int batch, int h, int wd, int c, int f, int k, int s,
                        int p)
{
    conv_backward(col, w, dy, dw, db, dx, col, batch, h, wd, c, f, k, s, p, 0);
}

/* Max pooling, optionally with the bias and ReLU of the convolution before it applied to
 * the pooled outputs instead of to every input: max(z) + b = max(z + b) and ReLU is
 * monotone, so relu(max(z) + b) is the unfused result at a quarter (2x2) of the cost. */
static void maxpool_forward(const float *restrict x, float *restrict y, const float *bias,
                            int relu, int batch, int h, int w, int c, int k, int s)
{
    int oh = kd_conv_out(h, k, s, 0), ow = kd_conv_out(w, k, s, 0);
    for (int b = 0; b < batch; b++) {
        for (int oy = 0; oy < oh; oy++) {
            for (int ox = 0; ox < ow; ox++) {
                float *restrict yo = y + (((size_t)b * oh + oy) * ow + ox) * c;
                const float *x0 = x + (((size_t)b * h + (size_t)oy * s) * w + (size_t)ox * s) * c;
                memcpy(yo, x0, (size_t)c * sizeof(float));
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        const float *restrict xi = x0 + ((size_t)ky * w + kx) * c;
                        for (int j = 0; j < c; j++)
                            yo[j] = xi[j] > yo[j] ? xi[j] : yo[j];
                    }
                if (bias && relu) {
                    for (int j = 0; j < c; j++) {
                        float v = yo[j] + bias[j];
                        yo[j] = v > 0.0f ? v : 0.0f;
                    }
                } else if (bias) {
                    for (int j = 0; j < c; j++)
                        yo[j] += bias[j];
                }
            }
        }
    }
}

void kd_maxpool_forward(const float *restrict x, float *restrict y, int batch, int h, int w,
                        int c, int k, int s)
{
    maxpool_forward(x, y, NULL, 0, batch, h, w, c, k, s);
}

/* Zeroes what windows of size k with stride k do not cover: rows from oh*k and columns
 * from ow*k of every sample. */
static void zero_uncovered(float *dx, int batch, int h, int w, int c, int oh, int ow, int k)
{
    size_t row = (size_t)w * c;
    for (int b = 0; b < batch; b++) {
        float *xb = dx + (size_t)b * h * row;
        for (int y = 0; y < oh * k; y++)
            if (ow * k < w)
                memset(xb + (size_t)y * row + (size_t)ow * k * c, 0,
                       (size_t)(w - ow * k) * c * sizeof(float));
        if (oh * k < h)
            memset(xb + (size_t)oh * k * row, 0, (size_t)(h - oh * k) * row * sizeof(float));
    }
}

/* Zeroes what windows of size k with stride k do not cover: rows from oh*k and columns
 * from ow*k of every sample. */
static void zero_uncovered(float *dx, int batch, int h, int w, int c, int oh, int ow, int k);

/* maxpool_backward for the common 2x2 windows with stride 2, in one pass over the
 * channels of each window whose lanes are independent, so that the compiler vectorises
 * it: the step spent 13% of its time in the general form. Same results bit for bit. */
/* Four floats and four lane masks (GCC vector extensions): the 2x2 pooling kernels below
 * are written with them because GCC left the plain loops scalar (a run-time overlap check
 * and the selects), and the general backward form had become 13% of the CNN's step. */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

static inline v4f v4_load(const float *p)
{
    v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void v4_store(float *p, v4f v)
{
    memcpy(p, &v, sizeof v);
}

/* mask ? a : b, lane by lane. */
static inline v4f v4_select(v4i mask, v4f a, v4f b)
{
    return (v4f)(((v4i)a & mask) | ((v4i)b & ~mask));
}

/* maxpool_backward for 2x2 windows with stride 2 and a multiple of 4 channels. Same
 * results bit for bit: the same maximum (x > m ? x : m in window order) and the same
 * first-hit routing. */
static void maxpool2_backward(const float *x, const float *y, const float *dy, float *dx,
                              float *db, int relu, int acc, int batch, int h, int w, int c)
{
    int oh = h / 2, ow = w / 2;
    size_t row = (size_t)w * c;
    const v4f zero = {0.0f, 0.0f, 0.0f, 0.0f};
    v4i live = {-1, -1, -1, -1};
    zero_uncovered(dx, batch, h, w, c, oh, ow, 2);
    if (db && !acc)
        memset(db, 0, (size_t)c * sizeof(float));
    for (int b = 0; b < batch; b++) {
        for (int oy = 0; oy < oh; oy++) {
            for (int ox = 0; ox < ow; ox++) {
                size_t o = (((size_t)b * oh + oy) * ow + ox) * c;
                size_t i0 = (((size_t)b * h + (size_t)oy * 2) * w + (size_t)ox * 2) * c;
                const float *x0 = x + i0, *x2 = x0 + row;
                float *d0 = dx + i0, *d2 = d0 + row;
                for (int j = 0; j < c; j += 4) {
                    v4f a0 = v4_load(x0 + j), a1 = v4_load(x0 + c + j);
                    v4f a2 = v4_load(x2 + j), a3 = v4_load(x2 + c + j);
                    v4f yo = v4_load(y + o + j), r = v4_load(dy + o + j), m = yo;
                    if (db) {
                        m = a0;
                        m = v4_select(a1 > m, a1, m);
                        m = v4_select(a2 > m, a2, m);
                        m = v4_select(a3 > m, a3, m);
                        if (relu)
                            r = v4_select(yo > zero, r, zero);
                        v4_store(db + j, v4_load(db + j) + r);
                    }
                    v4i left = live, hit;
                    hit = (a0 == m) & left;
                    v4_store(d0 + j, v4_select(hit, r, zero));
                    left &= ~hit;
                    hit = (a1 == m) & left;
                    v4_store(d0 + c + j, v4_select(hit, r, zero));
                    left &= ~hit;
                    hit = (a2 == m) & left;
                    v4_store(d2 + j, v4_select(hit, r, zero));
                    left &= ~hit;
                    hit = (a3 == m) & left;
                    v4_store(d2 + c + j, v4_select(hit, r, zero));
                }
            }
        }
    }
}

/* Max pooling backward. The gradient goes to the first input of the window (row-major)
 * equal to the window's maximum, the one the forward pass kept, found again instead of
 * stored: it is y without db. With db (the fused form of maxpool_forward with a bias) y
 * holds relu(max + bias), so the maximum is computed again from x (same comparisons in
 * the same order, so the same float); dy is first masked by the ReLU (relu: zero where y
 * is 0) and its per-channel sums are written to db: only the kept inputs carry a
 * gradient, so these are the convolution's bias gradient (added to db when acc), and dx
 * is the gradient of the convolution's output before bias and ReLU. */
static void maxpool_backward(const float *restrict x, const float *restrict y,
                             const float *restrict dy, float *restrict dx, float *db,
                             int relu, int acc, int batch, int h, int w, int c, int k, int s)
{
    int oh = kd_conv_out(h, k, s, 0), ow = kd_conv_out(w, k, s, 0);
    if (k == 2 && s == 2 && c % 4 == 0) {
        maxpool2_backward(x, y, dy, dx, db, relu, acc, batch, h, w, c);
        return;
    }
    /* Windows that tile the input (stride = size) assign every input they cover once;
     * others accumulate. */
    int tiled = s == k;
    if (tiled)
        zero_uncovered(dx, batch, h, w, c, oh, ow, k);
    else
        memset(dx, 0, (size_t)batch * h * w * c * sizeof(float));
    if (db && !acc)
        memset(db, 0, (size_t)c * sizeof(float));
    /* Per window and block of channels: mx the maximum, rem what is still to be routed. */
    enum { BLOCK = 256 };
    float rem[BLOCK], mx[BLOCK];
    for (int b = 0; b < batch; b++) {
        for (int oy = 0; oy < oh; oy++) {
            for (int ox = 0; ox < ow; ox++) {
                size_t o = (((size_t)b * oh + oy) * ow + ox) * c;
                size_t i0 = (((size_t)b * h + (size_t)oy * s) * w + (size_t)ox * s) * c;
                for (int j0 = 0; j0 < c; j0 += BLOCK) {
                    int n = c - j0 < BLOCK ? c - j0 : BLOCK;
                    const float *restrict x0 = x + i0 + j0;
                    const float *restrict top = y + o + j0;
                    if (db) {
                        memcpy(mx, x0, (size_t)n * sizeof(float));
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                const float *restrict xi = x0 + ((size_t)ky * w + kx) * c;
                                for (int j = 0; j < n; j++)
                                    mx[j] = xi[j] > mx[j] ? xi[j] : mx[j];
                            }
                        top = mx;
                    }
                    const float *restrict g = dy + o + j0;
                    if (relu) {
                        const float *restrict yo = y + o + j0;
                        for (int j = 0; j < n; j++)
                            rem[j] = yo[j] > 0.0f ? g[j] : 0.0f;
                    } else {
                        memcpy(rem, g, (size_t)n * sizeof(float));
                    }
                    if (db) {
                        float *restrict dbj = db + j0;
                        for (int j = 0; j < n; j++)
                            dbj[j] += rem[j];
                    }
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            size_t i = ((size_t)ky * w + kx) * c;
                            const float *restrict xi = x0 + i;
                            float *restrict di = dx + i0 + j0 + i;
                            if (tiled) {
                                for (int j = 0; j < n; j++) {
                                    int hit = xi[j] == top[j];
                                    di[j] = hit ? rem[j] : 0.0f;
                                    rem[j] = hit ? 0.0f : rem[j];
                                }
                            } else {
                                for (int j = 0; j < n; j++) {
                                    int hit = xi[j] == top[j];
                                    di[j] += hit ? rem[j] : 0.0f;
                                    rem[j] = hit ? 0.0f : rem[j];
                                }
                            }
                        }
                }
            }
        }
    }
}

void kd_maxpool_backward(const float *restrict x, const float *restrict y,
                         const float *restrict dy, float *restrict dx, int batch, int h, int w,
                         int c, int k, int s)
{
    maxpool_backward(x, y, dy, dx, NULL, 0, 0, batch, h, w, c, k, s);
}

void kd_avgpool_forward(const float *x, float *y, int batch, int h, int w, int c, int k,
                        int s)
{
    int oh = kd_conv_out(h, k, s, 0), ow = kd_conv_out(w, k, s, 0);
    float inv = 1.0f / (float)(k * k);
    for (int b = 0; b < batch; b++) {
        for (int oy = 0; oy < oh; oy++) {
            for (int ox = 0; ox < ow; ox++) {
                float *yo = y + (((size_t)b * oh + oy) * ow + ox) * c;
                size_t i0 = (((size_t)b * h + (size_t)oy * s) * w + (size_t)ox * s) * c;
                memset(yo, 0, (size_t)c * sizeof(float));
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        const float *xi = x + i0 + ((size_t)ky * w + kx) * c;
                        for (int j = 0; j < c; j++)
                            yo[j] += xi[j];
                    }
                for (int j = 0; j < c; j++)
                    yo[j] *= inv;
            }
        }
    }
}

void kd_avgpool_backward(const float *dy, float *dx, int batch, int h, int w, int c, int k,
                         int s)
{
    int oh = kd_conv_out(h, k, s, 0), ow = kd_conv_out(w, k, s, 0);
    float inv = 1.0f / (float)(k * k);
    memset(dx, 0, (size_t)batch * h * w * c * sizeof(float));
    for (int b = 0; b < batch; b++) {
        for (int oy = 0; oy < oh; oy++) {
            for (int ox = 0; ox < ow; ox++) {
                const float *g = dy + (((size_t)b * oh + oy) * ow + ox) * c;
                size_t i0 = (((size_t)b * h + (size_t)oy * s) * w + (size_t)ox * s) * c;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        float *d = dx + i0 + ((size_t)ky * w + kx) * c;
                        for (int j = 0; j < c; j++)
                            d[j] += g[j] * inv;
                    }
            }
        }
    }
}

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void kd_dropout_forward(const float *x, float *y, float *mask, size_t n, size_t per_sample,
                        double rate, uint64_t seed, uint64_t key, uint64_t first_sample)
{
    float keep = (float)(1.0 / (1.0 - rate));
    /* Keep when the hash's top 24 bits, as a fraction, are at least the rate. */
    uint64_t cut = (uint64_t)ceil(rate * 16777216.0);
    uint64_t base = mix64(seed ^ mix64(key + 0x9e3779b97f4a7c15ull));
    uint64_t g0 = first_sample * (uint64_t)per_sample;
    for (size_t i = 0; i < n; i++) {
        uint64_t u = mix64(base ^ (g0 + i)) >> 40;
        mask[i] = u >= cut ? keep : 0.0f;
        y[i] = x[i] * mask[i];
    }
}

/* ---- the network ---------------------------------------------------------------- */

int kd_net_init(kd_net *net, const kd_spec_layer *layers, int n, kd_spec_shape in,
                int max_batch, char *err, size_t errlen)
{
    memset(net, 0, sizeof *net);
    kd_spec_shape shapes[KD_SPEC_MAX_LAYERS];
    int rc = kd_spec_layer_shapes(layers, n, in, shapes, "spec.training.model.layers", err,
                                  errlen);
    if (rc != KD_OK)
        return rc;
    if (in.c < 1 || max_batch < 1)
        return kd_errf(err, errlen, KD_EINVAL, "model: input shape or batch missing");
    net->n = n;
    net->max_batch = max_batch;
    net->first_param = -1;
    size_t off = 0, act = 0, dmax = 0, conv_bytes = 0;
    size_t B = (size_t)max_batch;
    kd_spec_shape s = in;
    for (int i = 0; i < n; i++) {
        kd_net_layer *l = &net->l[i];
        l->spec = layers[i];
        l->in = s;
        l->out = shapes[i];
        l->in_len = (size_t)s.c * s.h * s.w;
        l->out_len = (size_t)l->out.c * l->out.h * l->out.w;
        s = l->out;
        int k = l->spec.kernel;
        switch (l->spec.type) {
        case KD_LAYER_DENSE:
            l->n_w = l->in_len * (size_t)l->spec.units;
            break;
        case KD_LAYER_CONV2D: {
            l->n_w = (size_t)k * k * l->in.c * l->spec.units;
            size_t per = l->out_len; /* floats per sample: output and im2col */
            if (!is_pointwise(k, l->spec.stride, l->spec.padding)) {
                act += round_up(B * l->out.h * l->out.w * (size_t)k * k * l->in.c);
                per += (size_t)l->out.h * l->out.w * k * k * l->in.c;
            }
            if (per * sizeof(float) > conv_bytes)
                conv_bytes = per * sizeof(float);
            break;
        }
        case KD_LAYER_DROPOUT:
            act += round_up(B * l->out_len); /* mask */
            break;
        default:
            break;
        }
        if (l->n_w > 0) {
            if (net->first_param < 0)
                net->first_param = i;
            l->w_off = off;
            l->b_off = off + l->n_w;
            off += l->n_w + (size_t)l->out.c;
            l->fuse_relu = i + 1 < n && layers[i + 1].type == KD_LAYER_RELU;
        }
        if (i > 0 && layers[i].type == KD_LAYER_RELU && net->l[i - 1].fuse_relu)
            l->fused = 1;
        l->conv = -1;
        if (l->spec.type == KD_LAYER_MAXPOOL2D) {
            int j = i > 0 && net->l[i - 1].fused ? i - 2 : i - 1;
            if (j >= 0 && net->l[j].spec.type == KD_LAYER_CONV2D) {
                l->conv = j;
                net->l[j].pooled = 1;
            }
        }
        if (l->spec.type != KD_LAYER_FLATTEN && !l->fused)
            act += round_up(B * l->out_len);
        size_t big = l->in_len > l->out_len ? l->in_len : l->out_len;
        if (B * big > dmax)
            dmax = B * big;
    }
    net->n_params = off;
    net->chunk = max_batch;
    if (conv_bytes > 0) {
        size_t fit = KD_NET_CHUNK_BYTES / conv_bytes;
        net->chunk = fit < 1 ? 1 : fit < B ? (int)fit : max_batch;
    }
    net->work = aligned_alloc(64, (act + 2 * round_up(dmax)) * sizeof(float));
    if (!net->work)
        return kd_errf(err, errlen, KD_ENOMEM, "model: cannot allocate %zu MiB of workspace "
                       "for batch %d", (act + 2 * dmax) * sizeof(float) >> 20, max_batch);
    float *p = net->work;
    for (int i = 0; i < n; i++) {
        kd_net_layer *l = &net->l[i];
        int k = l->spec.kernel;
        if (l->spec.type == KD_LAYER_CONV2D && !is_pointwise(k, l->spec.stride, l->spec.padding)) {
            l->col = p;
            p += round_up(B * l->out.h * l->out.w * (size_t)k * k * l->in.c);
        }
        if (l->spec.type == KD_LAYER_DROPOUT) {
            l->mask = p;
            p += round_up(B * l->out_len);
        }
        if (l->spec.type != KD_LAYER_FLATTEN && !l->fused) {
            l->y = p;
            p += round_up(B * l->out_len);
        }
    }
    net->dbuf[0] = p;
    net->dbuf[1] = p + round_up(dmax);
    return KD_OK;
}

void kd_net_free(kd_net *net)
{
    if (!net)
        return;
    free(net->work);
    memset(net, 0, sizeof *net);
}

void kd_net_init_params(kd_net *net, float *params, uint64_t seed)
{
    kd_rng rng;
    kd_rng_seed(&rng, seed);
    net->dropout_seed = mix64(seed ^ 0x64726f706f7574ull);
    for (int i = 0; i < net->n; i++) {
        kd_net_layer *l = &net->l[i];
        if (l->n_w == 0)
            continue;
        float *w = params + l->w_off;
        size_t fan_in = l->n_w / (size_t)l->out.c, fan_out = (size_t)l->out.c;
        if (l->spec.type == KD_LAYER_CONV2D)
            fan_out = (size_t)l->spec.kernel * l->spec.kernel * l->out.c;
        if (l->fuse_relu) {
            double sd = sqrt(2.0 / (double)fan_in);
            for (size_t k = 0; k < l->n_w; k++)
                w[k] = (float)(kd_rng_normal(&rng) * sd);
        } else {
            double lim = sqrt(6.0 / (double)(fan_in + fan_out));
            for (size_t k = 0; k < l->n_w; k++)
                w[k] = (float)((2.0 * kd_rng_uniform(&rng) - 1.0) * lim);
        }
        memset(params + l->b_off, 0, (size_t)l->out.c * sizeof(float));
    }
}

float *kd_net_forward(kd_net *net, const float *params, const float *x, int batch,
                      int train)
{
    const float *cur = x;
    size_t B = (size_t)batch;
    for (int i = 0; i < net->n; i++) {
        kd_net_layer *l = &net->l[i];
        const kd_spec_layer *sp = &l->spec;
        l->x = cur;
        switch (sp->type) {
        case KD_LAYER_CONV2D: {
            int k = sp->kernel, s = sp->stride, p = sp->padding, f = sp->units;
            int m = batch * l->out.h * l->out.w, kkc = k * k * l->in.c;
            const float *a = cur;
            if (l->col) {
                kd_im2col(cur, l->col, batch, l->in.h, l->in.w, l->in.c, k, s, p);
                a = l->col;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, f, kkc, 1.0f, a, kkc,
                        params + l->w_off, f, 0.0f, l->y, f);
            if (!l->pooled)
                bias_act(l->y, params + l->b_off, (size_t)m, f, l->fuse_relu);
            cur = l->y;
            break;
        }
        case KD_LAYER_DENSE: {
            int ni = (int)l->in_len, no = sp->units;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, batch, no, ni, 1.0f, cur,
                        ni, params + l->w_off, no, 0.0f, l->y, no);
            bias_act(l->y, params + l->b_off, B, no, l->fuse_relu);
            cur = l->y;
            break;
        }
        case KD_LAYER_MAXPOOL2D:
            maxpool_forward(cur, l->y, l->conv >= 0 ? params + net->l[l->conv].b_off : NULL,
                            l->conv >= 0 && net->l[l->conv].fuse_relu, batch, l->in.h,
                            l->in.w, l->in.c, sp->kernel, sp->stride);
            cur = l->y;
            break;
        case KD_LAYER_AVGPOOL2D:
            kd_avgpool_forward(cur, l->y, batch, l->in.h, l->in.w, l->in.c, sp->kernel,
                               sp->stride);
            cur = l->y;
            break;
        case KD_LAYER_RELU:
            if (!l->fused) {
                size_t n = B * l->out_len;
                for (size_t j = 0; j < n; j++)
                    l->y[j] = cur[j] > 0.0f ? cur[j] : 0.0f;
                cur = l->y;
            }
            break;
        case KD_LAYER_DROPOUT:
            if (train && sp->rate > 0.0) {
                kd_dropout_forward(cur, l->y, l->mask, B * l->out_len, l->out_len, sp->rate,
                                   net->dropout_seed, net->dropout_key, net->dropout_first);
                cur = l->y;
            }
            break;
        default: /* flatten: the same floats */
            break;
        }
    }
    /* The last layer is dense (kd_spec_layer_shapes), so cur is its own buffer. */
    return (float *)cur;
}

void kd_net_backward(kd_net *net, const float *params, float *grads, float *dlogits,
                     int batch, kd_net_ready_fn ready, void *arg)
{
    size_t B = (size_t)batch;
    int acc = net->accumulate;
    float *dy = dlogits;
    int buf = -1; /* which dbuf holds dy, -1 = neither */
    int pl = 0;
    for (int i = 0; i < net->n; i++)
        pl += net->l[i].n_w > 0;
    for (int i = net->n - 1; i >= 0 && i >= net->first_param; i--) {
        kd_net_layer *l = &net->l[i];
        const kd_spec_layer *sp = &l->spec;
        int need_dx = i > net->first_param;
        float *dx = net->dbuf[buf == 0 ? 1 : 0];
        int moved = 0;
        switch (sp->type) {
        case KD_LAYER_CONV2D: {
            int k = sp->kernel, s = sp->stride, p = sp->padding;
            if (l->fuse_relu && !l->pooled)
                relu_mask(l->y, dy, B * l->out_len);
            conv_backward(l->col ? l->col : l->x, params + l->w_off, dy, grads + l->w_off,
                          l->pooled ? NULL : grads + l->b_off, need_dx ? dx : NULL, l->col,
                          batch, l->in.h, l->in.w, l->in.c, sp->units, k, s, p, acc);
            moved = 1;
            break;
        }
        case KD_LAYER_DENSE: {
            int ni = (int)l->in_len, no = sp->units;
            if (l->fuse_relu)
                relu_mask(l->y, dy, B * l->out_len);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ni, no, batch, 1.0f, l->x, ni,
                        dy, no, acc ? 1.0f : 0.0f, grads + l->w_off, no);
            column_sums(dy, grads + l->b_off, B, no, acc);
            if (need_dx)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, ni, no, 1.0f, dy,
                            no, params + l->w_off, no, 0.0f, dx, ni);
            moved = 1;
            break;
        }
        case KD_LAYER_MAXPOOL2D:
            maxpool_backward(l->x, l->y, dy, dx,
                             l->conv >= 0 ? grads + net->l[l->conv].b_off : NULL,
                             l->conv >= 0 && net->l[l->conv].fuse_relu, acc, batch, l->in.h,
                             l->in.w, l->in.c, sp->kernel, sp->stride);
            moved = 1;
            break;
        case KD_LAYER_AVGPOOL2D:
            kd_avgpool_backward(dy, dx, batch, l->in.h, l->in.w, l->in.c, sp->kernel,
                                sp->stride);
            moved = 1;
            break;
        case KD_LAYER_RELU:
            if (!l->fused)
                relu_mask(l->x, dy, B * l->out_len);
            break;
        case KD_LAYER_DROPOUT:
            if (sp->rate > 0.0) {
                size_t n = B * l->out_len;
                for (size_t j = 0; j < n; j++)
                    dy[j] *= l->mask[j];
            }
            break;
        default: /* flatten */
            break;
        }
        if (l->n_w > 0) {
            pl--;
            if (ready)
                ready(arg, pl, l->w_off, l->n_w + (size_t)l->out.c);
        }
        if (moved && need_dx) {
            dy = dx;
            buf = buf == 0 ? 1 : 0;
        }
    }
}
