/* kd_model: every layer's and the whole MLP's analytic gradients agree with central
 * finite differences of a float64 reference implementation of the same function
 * (relative error of the gradient vector below 1e-3); seeded initialisation is
 * reproducible; the gradient-ready callback reports each layer's range, last layer
 * first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kd_data.h"
#include "kd_error.h"
#include "kd_model.h"

static void fill(float *v, size_t n, kd_rng *r, double scale)
{
    for (size_t i = 0; i < n; i++)
        v[i] = (float)((2.0 * kd_rng_uniform(r) - 1.0) * scale);
}

/* ||a - b|| / (||a|| + ||b||), the usual gradient-check measure. */
static double rel_err(const float *a, const double *b, size_t n)
{
    double d = 0, na = 0, nb = 0;
    for (size_t i = 0; i < n; i++) {
        d += (a[i] - b[i]) * (a[i] - b[i]);
        na += (double)a[i] * a[i];
        nb += b[i] * b[i];
    }
    return sqrt(d) / (sqrt(na) + sqrt(nb) + 1e-12);
}

/* ---- float64 references -------------------------------------------------------------- */

/* sum(r * (x W + b)) */
static double ref_dense_loss(const double *x, const double *w, const double *b,
                             const float *r, int batch, int in, int out)
{
    double s = 0;
    for (int i = 0; i < batch; i++)
        for (int j = 0; j < out; j++) {
            double y = b[j];
            for (int k = 0; k < in; k++)
                y += x[i * in + k] * w[k * out + j];
            s += r[i * out + j] * y;
        }
    return s;
}

static double ref_xent(const double *z, const int32_t *labels, int batch, int classes)
{
    double s = 0;
    for (int i = 0; i < batch; i++) {
        double mx = z[i * classes];
        for (int j = 1; j < classes; j++)
            mx = fmax(mx, z[i * classes + j]);
        double e = 0;
        for (int j = 0; j < classes; j++)
            e += exp(z[i * classes + j] - mx);
        s += log(e) + mx - z[i * classes + labels[i]];
    }
    return s / batch;
}

static void to_double(const float *f, double *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        d[i] = f[i];
}

static void test_dense_gradients_match_finite_differences(void **state)
{
    (void)state;
    enum { B = 5, IN = 7, OUT = 4 };
    kd_rng r;
    kd_rng_seed(&r, 11);
    float x[B * IN], w[IN * OUT], b[OUT], dy[B * OUT], y[B * OUT];
    float dw[IN * OUT], db[OUT], dx[B * IN];
    fill(x, B * IN, &r, 1.0);
    fill(w, IN * OUT, &r, 0.5);
    fill(b, OUT, &r, 0.5);
    fill(dy, B * OUT, &r, 1.0);
    kd_dense_forward(x, w, b, y, B, IN, OUT);
    kd_dense_backward(x, w, dy, dw, db, dx, B, IN, OUT);

    double xd[B * IN], wd[IN * OUT], bd[OUT];
    to_double(x, xd, B * IN);
    to_double(w, wd, IN * OUT);
    to_double(b, bd, OUT);
    /* the forward output itself */
    for (int i = 0; i < B; i++)
        for (int j = 0; j < OUT; j++) {
            double v = bd[j];
            for (int k = 0; k < IN; k++)
                v += xd[i * IN + k] * wd[k * OUT + j];
            assert_true(fabs(v - y[i * OUT + j]) < 1e-5);
        }
    const double h = 1e-6;
    double num_w[IN * OUT], num_b[OUT], num_x[B * IN];
    for (int k = 0; k < IN * OUT; k++) {
        double o = wd[k];
        wd[k] = o + h;
        double lp = ref_dense_loss(xd, wd, bd, dy, B, IN, OUT);
        wd[k] = o - h;
        double lm = ref_dense_loss(xd, wd, bd, dy, B, IN, OUT);
        wd[k] = o;
        num_w[k] = (lp - lm) / (2 * h);
    }
    for (int k = 0; k < OUT; k++) {
        double o = bd[k];
        bd[k] = o + h;
        double lp = ref_dense_loss(xd, wd, bd, dy, B, IN, OUT);
        bd[k] = o - h;
        double lm = ref_dense_loss(xd, wd, bd, dy, B, IN, OUT);
        bd[k] = o;
        num_b[k] = (lp - lm) / (2 * h);
    }
    for (int k = 0; k < B * IN; k++) {
        double o = xd[k];
        xd[k] = o + h;
        double lp = ref_dense_loss(xd, wd, bd, dy, B, IN, OUT);
        xd[k] = o - h;
        double lm = ref_dense_loss(xd, wd, bd, dy, B, IN, OUT);
        xd[k] = o;
        num_x[k] = (lp - lm) / (2 * h);
    }
    assert_true(rel_err(dw, num_w, IN * OUT) < 1e-3);
    assert_true(rel_err(db, num_b, OUT) < 1e-3);
    assert_true(rel_err(dx, num_x, B * IN) < 1e-3);
}

static void test_relu_forward_and_backward(void **state)
{
    (void)state;
    /* Values kept away from 0, where ReLU has no derivative. */
    float y[6] = {-2.0f, -0.5f, 0.25f, 1.5f, -0.1f, 3.0f};
    float dy[6] = {1, 2, 3, 4, 5, 6};
    float x[6];
    memcpy(x, y, sizeof x);
    kd_relu_forward(y, 6);
    for (int i = 0; i < 6; i++)
        assert_true(y[i] == (x[i] > 0 ? x[i] : 0.0f));
    kd_relu_backward(y, dy, 6);
    /* d/dx sum(r * relu(x)) by finite differences in double */
    const double h = 1e-6;
    double num[6];
    float r[6] = {1, 2, 3, 4, 5, 6};
    for (int i = 0; i < 6; i++) {
        double xp = x[i] + h, xm = x[i] - h;
        num[i] = r[i] * ((xp > 0 ? xp : 0) - (xm > 0 ? xm : 0)) / (2 * h);
    }
    assert_true(rel_err(dy, num, 6) < 1e-6);
}

static void test_softmax_xent_loss_and_gradient(void **state)
{
    (void)state;
    enum { B = 4, C = 5 };
    kd_rng r;
    kd_rng_seed(&r, 5);
    float z[B * C], d[B * C];
    fill(z, B * C, &r, 3.0);
    int32_t labels[B] = {0, 4, 2, 2};
    double zd[B * C];
    to_double(z, zd, B * C);
    double expect = ref_xent(zd, labels, B, C);
    float loss = kd_softmax_xent(z, labels, d, B, C);
    assert_true(fabs(loss - expect) < 1e-5);
    for (int i = 0; i < B; i++) {
        double s = 0;
        for (int j = 0; j < C; j++)
            s += z[i * C + j];
        assert_true(fabs(s - 1.0) < 1e-5); /* logits became probabilities */
    }
    const double h = 1e-6;
    double num[B * C];
    for (int k = 0; k < B * C; k++) {
        double o = zd[k];
        zd[k] = o + h;
        double lp = ref_xent(zd, labels, B, C);
        zd[k] = o - h;
        double lm = ref_xent(zd, labels, B, C);
        zd[k] = o;
        num[k] = (lp - lm) / (2 * h);
    }
    assert_true(rel_err(d, num, B * C) < 1e-3);
}

static void test_softmax_xent_is_stable_for_huge_logits(void **state)
{
    (void)state;
    float z[3] = {1000.0f, -1000.0f, 0.0f};
    int32_t label = 1;
    float d[3];
    float loss = kd_softmax_xent(z, &label, d, 1, 3);
    assert_true(isfinite(loss));
    assert_true(loss > 60.0f);
    for (int j = 0; j < 3; j++)
        assert_true(isfinite(d[j]));
}

/* Whole-MLP loss in float64 from the model's flat parameters. */
static double ref_mlp_loss(const kd_model *m, const double *p, const float *x,
                           const int32_t *labels, int batch)
{
    double a[64 * 16], bufb[64 * 16];
    double *in = a, *out = bufb;
    for (int i = 0; i < batch * m->sizes[0]; i++)
        in[i] = x[i];
    for (int l = 0; l < m->n_layers; l++) {
        int ni = m->sizes[l], no = m->sizes[l + 1];
        const double *w = p + m->w_off[l], *b = p + m->b_off[l];
        for (int s = 0; s < batch; s++)
            for (int j = 0; j < no; j++) {
                double v = b[j];
                for (int k = 0; k < ni; k++)
                    v += in[s * ni + k] * w[k * no + j];
                out[s * no + j] = (l + 1 < m->n_layers && v < 0) ? 0 : v;
            }
        double *t = in;
        in = out;
        out = t;
    }
    return ref_xent(in, labels, batch, m->sizes[m->n_layers]);
}

typedef struct ready_log {
    int n;
    int layer[8];
    size_t off[8], len[8];
} ready_log;

static void on_ready(void *arg, int layer, size_t off, size_t len)
{
    ready_log *l = arg;
    l->layer[l->n] = layer;
    l->off[l->n] = off;
    l->len[l->n] = len;
    l->n++;
}

static void test_mlp_gradient_matches_finite_differences(void **state)
{
    (void)state;
    enum { B = 6 };
    int hidden[2] = {9, 6};
    kd_model m;
    char err[128];
    assert_int_equal(kd_model_init(&m, 8, hidden, 2, 4, 16, err, sizeof err), KD_OK);
    assert_int_equal(m.n_params, 8 * 9 + 9 + 9 * 6 + 6 + 6 * 4 + 4);
    kd_model_init_params(&m, 3);
    kd_rng r;
    kd_rng_seed(&r, 99);
    /* Biases away from zero so that few pre-activations sit at the ReLU kink. */
    for (int l = 0; l < m.n_layers; l++)
        fill(m.params + m.b_off[l], (size_t)m.sizes[l + 1], &r, 0.3);
    float x[B * 8];
    fill(x, B * 8, &r, 1.0);
    int32_t labels[B] = {0, 1, 2, 3, 1, 2};
    ready_log log = {0};
    kd_model_set_grad_ready(&m, on_ready, &log);
    float loss = kd_model_forward_backward(&m, x, labels, B);

    double *p = malloc(m.n_params * sizeof *p);
    double *num = malloc(m.n_params * sizeof *num);
    to_double(m.params, p, m.n_params);
    assert_true(fabs(loss - ref_mlp_loss(&m, p, x, labels, B)) < 1e-5);
    const double h = 1e-6;
    for (size_t k = 0; k < m.n_params; k++) {
        double o = p[k];
        p[k] = o + h;
        double lp = ref_mlp_loss(&m, p, x, labels, B);
        p[k] = o - h;
        double lm = ref_mlp_loss(&m, p, x, labels, B);
        p[k] = o;
        num[k] = (lp - lm) / (2 * h);
    }
    double e = rel_err(m.grads, num, m.n_params);
    print_message("mlp gradient relative error %.3g\n", e);
    assert_true(e < 1e-3);

    assert_int_equal(log.n, 3);
    for (int i = 0; i < 3; i++) {
        int l = 2 - i;
        assert_int_equal(log.layer[i], l);
        assert_int_equal(log.off[i], m.w_off[l]);
        assert_int_equal(log.len[i], (size_t)m.sizes[l] * m.sizes[l + 1] + m.sizes[l + 1]);
    }
    /* the ranges tile the buffer exactly */
    assert_int_equal(log.off[0] + log.len[0], m.n_params);
    free(p);
    free(num);
    kd_model_free(&m);
}

static void test_same_seed_gives_identical_parameters_and_steps(void **state)
{
    (void)state;
    int hidden[2] = {32, 16};
    kd_model a, b, c;
    char err[128];
    assert_int_equal(kd_model_init(&a, 20, hidden, 2, 5, 8, err, sizeof err), KD_OK);
    assert_int_equal(kd_model_init(&b, 20, hidden, 2, 5, 8, err, sizeof err), KD_OK);
    assert_int_equal(kd_model_init(&c, 20, hidden, 2, 5, 8, err, sizeof err), KD_OK);
    kd_model_init_params(&a, 42);
    kd_model_init_params(&b, 42);
    kd_model_init_params(&c, 43);
    assert_memory_equal(a.params, b.params, a.n_params * sizeof(float));
    assert_memory_not_equal(a.params, c.params, a.n_params * sizeof(float));
    /* He init: the first layer's weights have variance close to 2 / fan-in */
    double s2 = 0;
    for (int i = 0; i < 20 * 32; i++)
        s2 += (double)a.params[i] * a.params[i];
    double var = s2 / (20 * 32);
    assert_true(var > 0.07 && var < 0.13);
    float x[8 * 20];
    kd_rng r;
    kd_rng_seed(&r, 1);
    fill(x, 8 * 20, &r, 1.0);
    int32_t y[8] = {0, 1, 2, 3, 4, 0, 1, 2};
    float la = kd_model_forward_backward(&a, x, y, 8);
    float lb = kd_model_forward_backward(&b, x, y, 8);
    assert_true(la == lb);
    assert_memory_equal(a.grads, b.grads, a.n_params * sizeof(float));
    kd_model_free(&a);
    kd_model_free(&b);
    kd_model_free(&c);
}

/* The factored first layer: two half batches, each stopping at layer 0's output
 * gradient (weighted by its share), then layer 0's gradient rebuilt from the stacked
 * factors, in two blocks of rows and from the two halves added up, equals the whole
 * batch's gradient; the upper layers' gradients are the sum of the halves'. */
static void test_factored_first_layer_equals_whole_batch(void **state)
{
    (void)state;
    enum { IN = 20, B = 8, H = B / 2 };
    int hidden[2] = {32, 16};
    kd_model whole, half;
    char err[128];
    assert_int_equal(kd_model_init(&whole, IN, hidden, 2, 5, B, err, sizeof err), KD_OK);
    assert_int_equal(kd_model_init(&half, IN, hidden, 2, 5, B, err, sizeof err), KD_OK);
    kd_model_init_params(&whole, 7);
    kd_model_init_params(&half, 7);
    float x[B * IN], dy[B * 32];
    kd_rng r;
    kd_rng_seed(&r, 3);
    fill(x, B * IN, &r, 1.0);
    int32_t y[B] = {0, 1, 2, 3, 4, 0, 1, 2};
    kd_model_forward_backward(&whole, x, y, B);
    size_t l0 = half.b_off[0] + 32, n = half.n_params;
    float *upper = calloc(n, sizeof(float));
    assert_non_null(upper);
    kd_model_set_grad_scale(&half, 0.5f);
    for (int part = 0; part < 2; part++) {
        kd_model_set_first_dy(&half, dy + part * H * 32);
        kd_model_forward_backward(&half, x + part * H * IN, y + part * H, H);
        for (size_t k = l0; k < n; k++)
            upper[k] += half.grads[k];
    }
    kd_model_set_first_dy(&half, NULL);
    memset(half.grads, 0xff, l0 * sizeof(float)); /* NaNs: every element must be written */
    /* Rows [0, 7) from the whole stacked batch; rows [7, 20) from one half, then the other
     * added. */
    kd_model_first_layer_grad(&half, x, dy, B, 0, 7, 0);
    kd_model_first_layer_grad(&half, x, dy, H, 7, IN, 0);
    kd_model_first_layer_grad(&half, x + H * IN, dy + H * 32, H, 7, IN, 1);
    kd_model_first_layer_bias(&half, dy, B);
    for (size_t k = 0; k < n; k++) {
        float g = k < l0 ? half.grads[k] : upper[k];
        assert_true(fabsf(g - whole.grads[k]) <= 1e-6f + 1e-5f * fabsf(whole.grads[k]));
    }
    free(upper);
    kd_model_free(&whole);
    kd_model_free(&half);
}

static void test_predict_returns_argmax_and_summed_loss(void **state)
{
    (void)state;
    kd_model m;
    char err[128];
    assert_int_equal(kd_model_init(&m, 2, NULL, 0, 3, 4, err, sizeof err), KD_OK);
    /* identity-like weights: class j scores x[j] (class 2 scores 0) */
    memset(m.params, 0, m.n_params * sizeof(float));
    m.params[0 * 3 + 0] = 1.0f;
    m.params[1 * 3 + 1] = 1.0f;
    float x[3 * 2] = {2, 0, 0, 3, -1, -1};
    int32_t labels[3] = {0, 1, 2};
    int32_t pred[3];
    double total = kd_model_predict(&m, x, labels, 3, pred);
    assert_int_equal(pred[0], 0);
    assert_int_equal(pred[1], 1);
    assert_int_equal(pred[2], 2);
    double zd[9] = {2, 0, 0, 0, 3, 0, -1, -1, 0};
    assert_true(fabs(total - 3 * ref_xent(zd, labels, 3, 3)) < 1e-5);
    kd_model_free(&m);
}

static void test_init_rejects_bad_shapes(void **state)
{
    (void)state;
    kd_model m;
    char err[128];
    int hidden[1] = {0};
    assert_int_equal(kd_model_init(&m, 4, hidden, 1, 3, 8, err, sizeof err), KD_ERANGE);
    assert_non_null(strstr(err, "layer 1 width 0"));
    assert_int_equal(kd_model_init(&m, 4, NULL, 0, 1, 8, err, sizeof err), KD_ERANGE);
    assert_int_equal(kd_model_init(&m, 4, NULL, 0, 3, 0, err, sizeof err), KD_ERANGE);
    assert_int_equal(kd_model_init(&m, 4, NULL, KD_MODEL_MAX_LAYERS, 3, 8, err, sizeof err),
                     KD_ERANGE);
    kd_model_free(&m);
    kd_model_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_gradients_match_finite_differences),
        cmocka_unit_test(test_relu_forward_and_backward),
        cmocka_unit_test(test_softmax_xent_loss_and_gradient),
        cmocka_unit_test(test_softmax_xent_is_stable_for_huge_logits),
        cmocka_unit_test(test_mlp_gradient_matches_finite_differences),
        cmocka_unit_test(test_same_seed_gives_identical_parameters_and_steps),
        cmocka_unit_test(test_factored_first_layer_equals_whole_batch),
        cmocka_unit_test(test_predict_returns_argmax_and_summed_loss),
        cmocka_unit_test(test_init_rejects_bad_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
