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

/* db[j] = sum over rows of dy[:, j]. */
static void column_sums(const float *dy, float *db, size_t rows, int n)
{
    memcpy(db, dy, (size_t)n * sizeof(float));
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

/* The backward pass proper, with the input `a` the GEMM saw (col, or x for 1x1). */
static void conv_backward(const float *a, const float *w, const float *dy, float *dw,
                          float *db, float *dx, float *col, int batch, int h, int wd, int c,
                          int f, int k, int s, int p)
{
    int oh = kd_conv_out(h, k, s, p), ow = kd_conv_out(wd, k, s, p);
    int m = batch * oh * ow, kkc = k * k * c;
    column_sums(dy, db, (size_t)m, f);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kkc, f, m, 1.0f, a, kkc, dy, f, 0.0f,
                dw, f);
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
    conv_backward(col, w, dy, dw, db, dx, col, batch, h, wd, c, f, k, s, p);
}

void kd_maxpool_forward(const float *restrict x, float *restrict y, int batch, int h, int w,
                        int c, int k, int s)
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
            }
        }
    }
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

void kd_maxpool_backward(const float *restrict x, const float *restrict y,
                         const float *restrict dy, float *restrict dx, int batch, int h, int w,
                         int c, int k, int s)
{
    int oh = kd_conv_out(h, k, s, 0), ow = kd_conv_out(w, k, s, 0);
    /* Windows that tile the input (stride = size) assign every input they cover once;
     * others accumulate. */
    int tiled = s == k;
    if (tiled)
        zero_uncovered(dx, batch, h, w, c, oh, ow, k);
    else
        memset(dx, 0, (size_t)batch * h * w * c * sizeof(float));
    /* The gradient goes to the first input of the window (row-major) equal to the
     * maximum, the one the forward pass kept: found again from x and y instead of stored.
     * rem holds what is still to be routed, per channel, in blocks that fit the stack. */
    enum { BLOCK = 256 };
    float rem[BLOCK];
    for (int b = 0; b < batch; b++) {
        for (int oy = 0; oy < oh; oy++) {
            for (int ox = 0; ox < ow; ox++) {
                size_t o = (((size_t)b * oh + oy) * ow + ox) * c;
                size_t i0 = (((size_t)b * h + (size_t)oy * s) * w + (size_t)ox * s) * c;
                for (int j0 = 0; j0 < c; j0 += BLOCK) {
                    int n = c - j0 < BLOCK ? c - j0 : BLOCK;
                    const float *restrict yo = y + o + j0;
                    memcpy(rem, dy + o + j0, (size_t)n * sizeof(float));
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            size_t i = i0 + ((size_t)ky * w + kx) * c + (size_t)j0;
                            const float *restrict xi = x + i;
                            float *restrict di = dx + i;
                            if (tiled) {
                                for (int j = 0; j < n; j++) {
                                    int hit = xi[j] == yo[j];
                                    di[j] = hit ? rem[j] : 0.0f;
                                    rem[j] = hit ? 0.0f : rem[j];
                                }
                            } else {
                                for (int j = 0; j < n; j++) {
                                    int hit = xi[j] == yo[j];
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
    size_t off = 0, act = 0, dmax = 0;
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
        case KD_LAYER_CONV2D:
            l->n_w = (size_t)k * k * l->in.c * l->spec.units;
            if (!is_pointwise(k, l->spec.stride, l->spec.padding))
                act += round_up(B * l->out.h * l->out.w * (size_t)k * k * l->in.c);
            break;
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
        if (l->spec.type != KD_LAYER_FLATTEN && !l->fused)
            act += round_up(B * l->out_len);
        size_t big = l->in_len > l->out_len ? l->in_len : l->out_len;
        if (B * big > dmax)
            dmax = B * big;
    }
    net->n_params = off;
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
            kd_maxpool_forward(cur, l->y, batch, l->in.h, l->in.w, l->in.c, sp->kernel,
                               sp->stride);
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
            if (l->fuse_relu)
                relu_mask(l->y, dy, B * l->out_len);
            conv_backward(l->col ? l->col : l->x, params + l->w_off, dy, grads + l->w_off,
                          grads + l->b_off, need_dx ? dx : NULL, l->col, batch, l->in.h,
                          l->in.w, l->in.c, sp->units, k, s, p);
            moved = 1;
            break;
        }
        case KD_LAYER_DENSE: {
            int ni = (int)l->in_len, no = sp->units;
            if (l->fuse_relu)
                relu_mask(l->y, dy, B * l->out_len);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ni, no, batch, 1.0f, l->x, ni,
                        dy, no, 0.0f, grads + l->w_off, no);
            column_sums(dy, grads + l->b_off, B, no);
            if (need_dx)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, ni, no, 1.0f, dy,
                            no, params + l->w_off, no, 0.0f, dx, ni);
            moved = 1;
            break;
        }
        case KD_LAYER_MAXPOOL2D:
            kd_maxpool_backward(l->x, l->y, dy, dx, batch, l->in.h, l->in.w, l->in.c,
                                sp->kernel, sp->stride);
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
