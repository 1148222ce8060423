/* kd_layers: every declared layer type's gradients (conv2d over several kernels, strides
 * and paddings, max and average pooling with and without overlapping windows, ReLU fused
 * and alone, dropout, flatten, dense) agree with central finite differences of an
 * independent float64 reference (direct convolution, no im2col) of the same network,
 * whose logits the float32 forward pass must also reproduce; im2col and col2im are
 * adjoint; dropout is reproducible from (seed, key, sample) and independent of how the
 * batch is split; the gradient-ready callback tiles the parameters last layer first; a
 * declared MLP trains as the MLP; bad shapes fail with the layer's path; a batch run in
 * parts (kd_net.chunk) gives the batch's gradient. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kd_data.h"
#include "kd_error.h"
#include "kd_layers.h"
#include "kd_model.h"

#define L_CONV(f, k, s, p) {KD_LAYER_CONV2D, (f), (k), (s), (p), 0.0}
#define L_DENSE(u) {KD_LAYER_DENSE, (u), 0, 0, 0, 0.0}
#define L_MAX(k, s) {KD_LAYER_MAXPOOL2D, 0, (k), (s), 0, 0.0}
#define L_AVG(k, s) {KD_LAYER_AVGPOOL2D, 0, (k), (s), 0, 0.0}
#define L_RELU {KD_LAYER_RELU, 0, 0, 0, 0, 0.0}
#define L_FLAT {KD_LAYER_FLATTEN, 0, 0, 0, 0, 0.0}
#define L_DROP(r) {KD_LAYER_DROPOUT, 0, 0, 0, 0, (r)}

static void fill(float *v, size_t n, kd_rng *r, double scale)
{
    for (size_t i = 0; i < n; i++)
        v[i] = (float)((2.0 * kd_rng_uniform(r) - 1.0) * scale);
}

/* ---- float64 reference of a net, straight from the definitions ----------------------- */

/* Mean cross-entropy of the net on x with parameters p (double), dropout masks taken from
 * the float model's last training forward pass. logits (may be NULL) receives them. */
static double ref_loss(const kd_net *net, const double *p, const float *x,
                       const int32_t *labels, int batch, double *logits)
{
    size_t cap = 0;
    for (int i = 0; i < net->n; i++) {
        size_t a = net->l[i].in_len > net->l[i].out_len ? net->l[i].in_len : net->l[i].out_len;
        cap = a > cap ? a : cap;
    }
    double *cur = calloc(cap * (size_t)batch, sizeof(double));
    double *nxt = calloc(cap * (size_t)batch, sizeof(double));
    assert_non_null(cur);
    assert_non_null(nxt);
    for (size_t i = 0; i < net->l[0].in_len * (size_t)batch; i++)
        cur[i] = x[i];
    for (int li = 0; li < net->n; li++) {
        const kd_net_layer *l = &net->l[li];
        const kd_spec_layer *s = &l->spec;
        int H = l->in.h, W = l->in.w, C = l->in.c, OH = l->out.h, OW = l->out.w,
            OC = l->out.c;
        for (int b = 0; b < batch; b++) {
            const double *xi = cur + (size_t)b * l->in_len;
            double *yo = nxt + (size_t)b * l->out_len;
            switch (s->type) {
            case KD_LAYER_CONV2D:
                for (int oy = 0; oy < OH; oy++)
                    for (int ox = 0; ox < OW; ox++)
                        for (int f = 0; f < OC; f++) {
                            double v = p[l->b_off + f];
                            for (int ky = 0; ky < s->kernel; ky++)
                                for (int kx = 0; kx < s->kernel; kx++)
                                    for (int c = 0; c < C; c++) {
                                        int iy = oy * s->stride - s->padding + ky;
                                        int ix = ox * s->stride - s->padding + kx;
                                        if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                                            continue;
                                        size_t wi = (((size_t)ky * s->kernel + kx) * C + c) *
                                                    OC + f;
                                        v += xi[((size_t)iy * W + ix) * C + c] * p[l->w_off + wi];
                                    }
                            yo[((size_t)oy * OW + ox) * OC + f] = v;
                        }
                break;
            case KD_LAYER_MAXPOOL2D:
            case KD_LAYER_AVGPOOL2D:
                for (int oy = 0; oy < OH; oy++)
                    for (int ox = 0; ox < OW; ox++)
                        for (int c = 0; c < C; c++) {
                            double mx = -INFINITY, sum = 0;
                            for (int ky = 0; ky < s->kernel; ky++)
                                for (int kx = 0; kx < s->kernel; kx++) {
                                    double v = xi[(((size_t)oy * s->stride + ky) * W +
                                                   (size_t)ox * s->stride + kx) * C + c];
                                    mx = fmax(mx, v);
                                    sum += v;
                                }
                            yo[((size_t)oy * OW + ox) * C + c] =
                                s->type == KD_LAYER_MAXPOOL2D ? mx
                                                              : sum / (s->kernel * s->kernel);
                        }
                break;
            case KD_LAYER_DENSE:
                for (int j = 0; j < s->units; j++) {
                    double v = p[l->b_off + j];
                    for (size_t k = 0; k < l->in_len; k++)
                        v += xi[k] * p[l->w_off + k * (size_t)s->units + j];
                    yo[j] = v;
                }
                break;
            case KD_LAYER_RELU:
                for (size_t k = 0; k < l->out_len; k++)
                    yo[k] = xi[k] > 0 ? xi[k] : 0;
                break;
            case KD_LAYER_DROPOUT:
                for (size_t k = 0; k < l->out_len; k++)
                    yo[k] = xi[k] * (s->rate > 0 ? l->mask[(size_t)b * l->out_len + k] : 1.0f);
                break;
            default:
                memcpy(yo, xi, l->in_len * sizeof(double));
                break;
            }
        }
        double *t = cur;
        cur = nxt;
        nxt = t;
    }
    int classes = net->l[net->n - 1].spec.units;
    double loss = 0;
    for (int b = 0; b < batch; b++) {
        const double *z = cur + (size_t)b * classes;
        double mx = z[0], s = 0;
        for (int j = 1; j < classes; j++)
            mx = fmax(mx, z[j]);
        for (int j = 0; j < classes; j++)
            s += exp(z[j] - mx);
        loss += log(s) + mx - z[labels[b]];
    }
    if (logits)
        memcpy(logits, cur, (size_t)batch * classes * sizeof(double));
    free(cur);
    free(nxt);
    return loss / batch;
}

typedef struct ready_log {
    size_t next_end; /* the next range must end here */
    int calls;
    int last_layer;
} ready_log;

static void on_ready(void *arg, int layer, size_t off, size_t len)
{
    ready_log *r = arg;
    assert_int_equal(off + len, r->next_end);
    assert_true(layer < r->last_layer);
    r->last_layer = layer;
    r->next_end = off;
    r->calls++;
}

/* When not 0, check_net's step runs in parts of at most this many samples. */
static int check_chunk;

/* Builds the net, runs one training step, and compares the gradient of every parameter
 * with central differences of the float64 reference; also the logits. */
static void check_net(const kd_spec_layer *layers, int n, kd_spec_shape in, int batch,
                      uint64_t seed)
{
    kd_model m;
    char err[256];
    int rc = kd_model_init_layers(&m, layers, n, in, batch, err, sizeof err);
    if (rc != KD_OK)
        fail_msg("init: %s", err);
    if (check_chunk)
        m.net->chunk = check_chunk;
    kd_model_init_params(&m, seed);
    kd_rng rng;
    kd_rng_seed(&rng, seed + 7);
    /* Biases nonzero too, so that their gradient paths are exercised. */
    for (int i = 0; i < m.net->n; i++)
        if (m.net->l[i].n_w)
            fill(m.params + m.net->l[i].b_off, (size_t)m.net->l[i].out.c, &rng, 0.1);
    size_t n_in = (size_t)in.c * in.h * in.w;
    float *x = malloc(n_in * batch * sizeof *x);
    int32_t *y = malloc(batch * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    fill(x, n_in * batch, &rng, 1.0);
    int classes = layers[n - 1].units;
    for (int b = 0; b < batch; b++)
        y[b] = (int32_t)(kd_rng_next(&rng) % (uint64_t)classes);

    ready_log log = {m.n_params, 0, 1 << 20};
    kd_model_set_grad_ready(&m, on_ready, &log);
    kd_model_set_dropout_key(&m, 3, 0);
    float loss = kd_model_forward_backward(&m, x, y, batch);
    assert_int_equal(log.next_end, 0);
    assert_int_equal(log.last_layer, 0);

    double *p = malloc(m.n_params * sizeof *p);
    double *g = malloc(m.n_params * sizeof *g);
    assert_non_null(p);
    assert_non_null(g);
    for (size_t i = 0; i < m.n_params; i++)
        p[i] = m.params[i];
    double ref = ref_loss(m.net, p, x, y, batch, NULL);
    if (fabs(ref - loss) > 1e-4 * (1 + fabs(ref)))
        fail_msg("loss %.7f, float64 reference %.7f", (double)loss, ref);
    /* The logits of evaluation (no dropout) equal the reference's without dropout. */
    const double h = 1e-6;
    double d = 0, na = 0, nb = 0;
    for (size_t i = 0; i < m.n_params; i++) {
        double keep = p[i];
        p[i] = keep + h;
        double up = ref_loss(m.net, p, x, y, batch, NULL);
        p[i] = keep - h;
        double down = ref_loss(m.net, p, x, y, batch, NULL);
        p[i] = keep;
        g[i] = (up - down) / (2 * h);
        d += (m.grads[i] - g[i]) * (m.grads[i] - g[i]);
        na += (double)m.grads[i] * m.grads[i];
        nb += g[i] * g[i];
    }
    double rel = sqrt(d) / (sqrt(na) + sqrt(nb) + 1e-12);
    if (!(rel < 1e-3) || na == 0)
        fail_msg("gradient relative error %.3g over %zu parameters (|g| %.3g)", rel,
                 m.n_params, sqrt(na));
    free(p);
    free(g);
    free(x);
    free(y);
    kd_model_free(&m);
}

static void test_conv_gradients_over_kernels_strides_paddings(void **state)
{
    (void)state;
    const kd_spec_layer a[] = {L_CONV(3, 3, 1, 0), L_DENSE(4)};
    check_net(a, 2, (kd_spec_shape){1, 6, 6}, 3, 1);
    const kd_spec_layer b[] = {L_CONV(4, 3, 2, 1), L_RELU, L_CONV(3, 2, 1, 1), L_FLAT,
                               L_DENSE(3)};
    check_net(b, 5, (kd_spec_shape){2, 7, 5}, 2, 2);
    const kd_spec_layer c[] = {L_CONV(5, 1, 1, 0), L_RELU, L_CONV(2, 5, 3, 2), L_DENSE(3)};
    check_net(c, 4, (kd_spec_shape){3, 8, 9}, 2, 3);
    const kd_spec_layer d[] = {L_CONV(2, 4, 1, 3), L_DENSE(2)};
    check_net(d, 2, (kd_spec_shape){2, 3, 4}, 2, 4);
    /* Many inputs per window, stride 2 with padding, as the first layer. */
    const kd_spec_layer e[] = {L_CONV(3, 4, 2, 1), L_RELU, L_DENSE(3)};
    check_net(e, 3, (kd_spec_shape){5, 6, 7}, 2, 12);
}

static void test_pooling_gradients(void **state)
{
    (void)state;
    const kd_spec_layer a[] = {L_CONV(3, 1, 1, 0), L_MAX(2, 2), L_DENSE(3)};
    check_net(a, 3, (kd_spec_shape){2, 4, 5}, 2, 5);
    /* Overlapping windows: one input may be the maximum of two outputs. */
    const kd_spec_layer b[] = {L_CONV(2, 3, 1, 1), L_RELU, L_MAX(3, 2), L_FLAT, L_DENSE(3)};
    check_net(b, 5, (kd_spec_shape){1, 7, 7}, 3, 6);
    const kd_spec_layer c[] = {L_CONV(3, 3, 1, 0), L_AVG(2, 2), L_RELU, L_DENSE(4)};
    check_net(c, 4, (kd_spec_shape){2, 6, 6}, 2, 7);
    const kd_spec_layer d[] = {L_CONV(2, 2, 1, 0), L_AVG(3, 1), L_DENSE(2)};
    check_net(d, 3, (kd_spec_shape){1, 6, 5}, 2, 8);
}

static void test_dense_relu_dropout_gradients(void **state)
{
    (void)state;
    const kd_spec_layer a[] = {L_DENSE(6), L_RELU, L_DROP(0.3), L_DENSE(5), L_RELU,
                               L_DENSE(3)};
    check_net(a, 6, (kd_spec_shape){7, 1, 1}, 4, 9);
    const kd_spec_layer b[] = {L_CONV(3, 3, 1, 1), L_RELU, L_DROP(0.5), L_MAX(2, 2),
                               L_FLAT, L_DENSE(6), L_RELU, L_DENSE(3)};
    check_net(b, 8, (kd_spec_shape){2, 4, 4}, 3, 10);
    /* Dropout on the input, below the first layer with parameters. */
    const kd_spec_layer c[] = {L_DROP(0.2), L_FLAT, L_DENSE(4)};
    check_net(c, 3, (kd_spec_shape){1, 3, 3}, 2, 11);
}

/* A convolution followed by 2x2 max pooling hands its bias and ReLU to the pooling (the
 * vectorised path needs channels in fours; the uncovered last row and column of an odd
 * input get no gradient), with and without the ReLU between. */
static void test_pooled_convolution_gradients(void **state)
{
    (void)state;
    const kd_spec_layer a[] = {L_CONV(4, 3, 1, 0), L_RELU, L_MAX(2, 2), L_CONV(8, 3, 1, 1),
                               L_MAX(2, 2), L_FLAT, L_DENSE(3)};
    check_net(a, 7, (kd_spec_shape){1, 9, 9}, 3, 13);
    /* Channels not in fours, and overlapping windows: the general form. */
    const kd_spec_layer b[] = {L_CONV(5, 3, 1, 0), L_RELU, L_MAX(2, 2), L_CONV(4, 2, 1, 0),
                               L_RELU, L_MAX(2, 1), L_DENSE(3)};
    check_net(b, 7, (kd_spec_shape){2, 10, 9}, 2, 14);
}

/* A batch larger than net->chunk runs in parts whose gradients add up to the batch's:
 * the same finite-difference check with parts of 2 and 1 samples (grad_ready still
 * tiles the parameters once), and with dropout the same gradient as in one part (its
 * masks follow the sample's index in the batch, not in the part). */
static void test_batch_in_parts_gives_the_batch_gradient(void **state)
{
    (void)state;
    const kd_spec_layer a[] = {L_CONV(4, 3, 1, 0), L_RELU, L_MAX(2, 2), L_FLAT, L_DENSE(5),
                               L_RELU, L_DENSE(3)};
    check_chunk = 2;
    check_net(a, 7, (kd_spec_shape){1, 8, 8}, 5, 15);
    check_chunk = 1;
    check_net(a, 7, (kd_spec_shape){1, 8, 8}, 3, 16);
    check_chunk = 0;

    const kd_spec_layer b[] = {L_CONV(4, 3, 1, 1), L_RELU, L_DROP(0.3), L_MAX(2, 2), L_FLAT,
                               L_DENSE(3)};
    const int batch = 7;
    kd_model one, parts;
    char err[256];
    assert_int_equal(kd_model_init_layers(&one, b, 6, (kd_spec_shape){2, 6, 6}, batch, err,
                                          sizeof err), KD_OK);
    assert_int_equal(kd_model_init_layers(&parts, b, 6, (kd_spec_shape){2, 6, 6}, batch, err,
                                          sizeof err), KD_OK);
    one.net->chunk = batch;
    parts.net->chunk = 3;
    kd_model_init_params(&one, 17);
    kd_model_init_params(&parts, 17);
    kd_rng rng;
    kd_rng_seed(&rng, 18);
    float x[7 * 72];
    int32_t y[7];
    fill(x, sizeof x / sizeof x[0], &rng, 1.0);
    for (int i = 0; i < batch; i++)
        y[i] = i % 3;
    kd_model_set_dropout_key(&one, 9, 4);
    kd_model_set_dropout_key(&parts, 9, 4);
    kd_model_set_grad_scale(&one, 0.5f);
    kd_model_set_grad_scale(&parts, 0.5f);
    float l1 = kd_model_forward_backward(&one, x, y, batch);
    float l2 = kd_model_forward_backward(&parts, x, y, batch);
    if (fabsf(l1 - l2) > 1e-5f * (1 + fabsf(l1)))
        fail_msg("loss in one part %.7f, in parts of 3 %.7f", (double)l1, (double)l2);
    double d = 0, na = 0;
    for (size_t i = 0; i < one.n_params; i++) {
        d += ((double)one.grads[i] - parts.grads[i]) * ((double)one.grads[i] - parts.grads[i]);
        na += (double)one.grads[i] * one.grads[i];
    }
    if (!(sqrt(d) <= 1e-5 * sqrt(na)) || na == 0)
        fail_msg("gradient in parts differs: |diff| %.3g, |g| %.3g", sqrt(d), sqrt(na));
    kd_model_free(&one);
    kd_model_free(&parts);
}

/* <im2col(x), c> == <x, col2im(c)>: col2im is the adjoint the backward pass needs. */
static void test_im2col_and_col2im_are_adjoint(void **state)
{
    (void)state;
    const int cases[][6] = {{5, 5, 1, 3, 1, 0}, {6, 4, 3, 3, 2, 1}, {7, 7, 2, 4, 3, 2},
                            {3, 3, 4, 1, 1, 0}};
    kd_rng rng;
    kd_rng_seed(&rng, 42);
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        int h = cases[t][0], w = cases[t][1], c = cases[t][2], k = cases[t][3],
            s = cases[t][4], p = cases[t][5], batch = 2;
        int oh = kd_conv_out(h, k, s, p), ow = kd_conv_out(w, k, s, p);
        size_t nx = (size_t)batch * h * w * c, nc = (size_t)batch * oh * ow * k * k * c;
        float *x = malloc(nx * 4), *col = malloc(nc * 4), *cc = malloc(nc * 4),
              *dx = malloc(nx * 4);
        assert_true(x && col && cc && dx);
        fill(x, nx, &rng, 1.0);
        fill(cc, nc, &rng, 1.0);
        kd_im2col(x, col, batch, h, w, c, k, s, p);
        kd_col2im(cc, dx, batch, h, w, c, k, s, p);
        double lhs = 0, rhs = 0;
        for (size_t i = 0; i < nc; i++)
            lhs += (double)col[i] * cc[i];
        for (size_t i = 0; i < nx; i++)
            rhs += (double)x[i] * dx[i];
        if (fabs(lhs - rhs) > 1e-4 * (1 + fabs(lhs)))
            fail_msg("case %zu: <im2col x, c> %.6f != <x, col2im c> %.6f", t, lhs, rhs);
        free(x);
        free(col);
        free(cc);
        free(dx);
    }
}

/* The same (seed, key, global sample) gives the same mask however the batch is split. */
static void test_dropout_is_reproducible_and_split_independent(void **state)
{
    (void)state;
    enum { B = 8, D = 50 };
    float x[B * D], y1[B * D], m1[B * D], y2[B * D], m2[B * D];
    for (int i = 0; i < B * D; i++)
        x[i] = 1.0f;
    kd_dropout_forward(x, y1, m1, B * D, D, 0.25, 7, 11, 0);
    kd_dropout_forward(x, y2, m2, 3 * D, D, 0.25, 7, 11, 0);
    kd_dropout_forward(x + 3 * D, y2 + 3 * D, m2 + 3 * D, 5 * D, D, 0.25, 7, 11, 3);
    assert_memory_equal(m1, m2, sizeof m1);
    int zeros = 0;
    for (int i = 0; i < B * D; i++) {
        assert_true(m1[i] == 0.0f || fabsf(m1[i] - 1.0f / 0.75f) < 1e-6f);
        zeros += m1[i] == 0.0f;
    }
    /* 400 draws at 0.25: 100 expected; 60..140 is over 4.6 standard deviations. */
    assert_in_range(zeros, 60, 140);
    kd_dropout_forward(x, y2, m2, B * D, D, 0.25, 7, 12, 0);
    assert_memory_not_equal(m1, m2, sizeof m1);
}

/* Evaluation ignores dropout; training with it keeps the expected activation. */
static void test_predict_runs_without_dropout(void **state)
{
    (void)state;
    const kd_spec_layer a[] = {L_DROP(0.5), L_DENSE(3)};
    kd_model m;
    char err[256];
    assert_int_equal(kd_model_init_layers(&m, a, 2, (kd_spec_shape){4, 1, 1}, 4, err,
                                          sizeof err), KD_OK);
    kd_model_init_params(&m, 1);
    float x[16];
    int32_t y[4] = {0, 1, 2, 0}, pred[4];
    for (int i = 0; i < 16; i++)
        x[i] = (float)(i % 5) - 2.0f;
    double s1 = kd_model_predict(&m, x, y, 4, pred);
    double s2 = kd_model_predict(&m, x, y, 4, pred);
    assert_true(s1 == s2);
    kd_model_set_dropout_key(&m, 1, 0);
    float l1 = kd_model_forward_backward(&m, x, y, 4);
    kd_model_set_dropout_key(&m, 1, 0);
    float l2 = kd_model_forward_backward(&m, x, y, 4);
    assert_true(l1 == l2);
    kd_model_free(&m);
}

static void test_init_layers_rejects_bad_shapes_naming_the_field(void **state)
{
    (void)state;
    kd_model m;
    char err[256];
    const kd_spec_layer a[] = {L_CONV(4, 3, 1, 0), L_MAX(2, 2), L_CONV(4, 7, 1, 0),
                               L_DENSE(3)};
    assert_int_equal(kd_model_init_layers(&m, a, 4, (kd_spec_shape){1, 12, 12}, 4, err,
                                          sizeof err), KD_EINVALID_OBJECT);
    assert_string_equal(err, "spec.training.model.layers[2].kernel: 7 is larger than its "
                             "5x5 input");
    const kd_spec_layer b[] = {L_CONV(4, 3, 1, 0), L_RELU};
    assert_int_equal(kd_model_init_layers(&m, b, 2, (kd_spec_shape){1, 12, 12}, 4, err,
                                          sizeof err), KD_EINVALID_OBJECT);
    assert_non_null(strstr(err, "layers[1].type: the last layer must be dense"));
    const kd_spec_layer c[] = {L_MAX(3, 3), L_DENSE(3)};
    assert_int_equal(kd_model_init_layers(&m, c, 2, (kd_spec_shape){2, 2, 8}, 4, err,
                                          sizeof err), KD_EINVALID_OBJECT);
    assert_string_equal(err, "spec.training.model.layers[0].size: 3 is larger than its "
                             "2x8 input");
    kd_model_free(&m);
}

/* The sample's CNN: sizes, parameter count, and a step that lowers the loss. */
static void test_sample_cnn_layout_and_step(void **state)
{
    (void)state;
    const kd_spec_layer a[] = {L_CONV(32, 3, 1, 0), L_RELU, L_MAX(2, 2), L_CONV(64, 3, 1, 0),
                               L_RELU, L_MAX(2, 2), L_FLAT, L_DENSE(128), L_RELU, L_DENSE(10)};
    kd_model m;
    char err[256];
    assert_int_equal(kd_model_init_layers(&m, a, 10, (kd_spec_shape){1, 28, 28}, 16, err,
                                          sizeof err), KD_OK);
    assert_int_equal(m.n_params, 320 + 18496 + 204928 + 1290);
    assert_int_equal(m.sizes[0], 784);
    assert_int_equal(m.n_layers, 4);
    assert_int_equal(m.net->l[6].out.c, 1600);
    assert_int_equal(m.w_off[1], 320);
    kd_model_init_params(&m, 5);
    kd_rng rng;
    kd_rng_seed(&rng, 3);
    float *x = malloc(16 * 784 * sizeof *x);
    assert_non_null(x);
    fill(x, 16 * 784, &rng, 1.0);
    int32_t y[16];
    for (int i = 0; i < 16; i++)
        y[i] = i % 10;
    float l0 = kd_model_forward_backward(&m, x, y, 16);
    for (int s = 0; s < 5; s++) {
        for (size_t i = 0; i < m.n_params; i++)
            m.params[i] -= 0.05f * m.grads[i];
        kd_model_forward_backward(&m, x, y, 16);
    }
    float l1 = kd_model_forward_backward(&m, x, y, 16);
    assert_true(l1 < l0);
    free(x);
    kd_model_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_gradients_over_kernels_strides_paddings),
        cmocka_unit_test(test_pooling_gradients),
        cmocka_unit_test(test_dense_relu_dropout_gradients),
        cmocka_unit_test(test_pooled_convolution_gradients),
        cmocka_unit_test(test_batch_in_parts_gives_the_batch_gradient),
        cmocka_unit_test(test_im2col_and_col2im_are_adjoint),
        cmocka_unit_test(test_dropout_is_reproducible_and_split_independent),
        cmocka_unit_test(test_predict_runs_without_dropout),
        cmocka_unit_test(test_init_layers_rejects_bad_shapes_naming_the_field),
        cmocka_unit_test(test_sample_cnn_layout_and_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
