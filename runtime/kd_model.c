/*
 * kd_model: the MLP's memory layout, initialisation, and fused forward/backward pass.
 *
 * Everything a step needs is allocated by kd_model_init: the flat parameter and gradient
 * buffers and one workspace block holding each layer's activations and two ping-pong
 * buffers for the backward pass, sized for max_batch samples. A step therefore never
 * allocates. The hot path fuses bias + ReLU after each forward GEMM, the ReLU mask into
 * the backward pass, and skips dX of the first layer (nobody needs the input gradient).
 */
#include "kd_model.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kd_data.h"
#include "kd_error.h"
#include "kd_layers.h"

/* Sub-buffers start on 64-byte boundaries so that vector loads in the fused loops and in
 * OpenBLAS's packing stay aligned. */
#define KD_ALIGN_FLOATS 16

static size_t round_up(size_t n)
{
    return (n + KD_ALIGN_FLOATS - 1) / KD_ALIGN_FLOATS * KD_ALIGN_FLOATS;
}

static float *alloc_floats(size_t n)
{
    size_t bytes = round_up(n ? n : 1) * sizeof(float);
    float *p = aligned_alloc(64, bytes);
    if (p)
        memset(p, 0, bytes);
    return p;
}

int kd_model_init(kd_model *m, int n_in, const int *hidden, int n_hidden, int n_out,
                  int max_batch, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    if (n_hidden < 0 || n_hidden + 1 > KD_MODEL_MAX_LAYERS)
        return kd_errf(err, errlen, KD_ERANGE, "model: %d hidden layers (at most %d)",
                       n_hidden, KD_MODEL_MAX_LAYERS - 1);
    if (n_hidden > 0 && !hidden)
        return kd_errf(err, errlen, KD_EINVAL, "model: hidden sizes missing");
    if (max_batch < 1 || max_batch > KD_MODEL_MAX_WIDTH)
        return kd_errf(err, errlen, KD_ERANGE, "model: batch size %d outside [1, %d]",
                       max_batch, KD_MODEL_MAX_WIDTH);
    m->n_layers = n_hidden + 1;
    m->sizes[0] = n_in;
    for (int i = 0; i < n_hidden; i++)
        m->sizes[i + 1] = hidden[i];
    m->sizes[m->n_layers] = n_out;
    for (int i = 0; i <= m->n_layers; i++) {
        if (m->sizes[i] < 1 || m->sizes[i] > KD_MODEL_MAX_WIDTH) {
            int n = m->n_layers;
            memset(m, 0, sizeof *m);
            return kd_errf(err, errlen, KD_ERANGE,
                           "model: layer %d width %d outside [1, %d] (%d layers)", i,
                           i == 0 ? n_in : (i == n ? n_out : hidden[i - 1]),
                           KD_MODEL_MAX_WIDTH, n);
        }
    }
    if (n_out < 2) {
        memset(m, 0, sizeof *m);
        return kd_errf(err, errlen, KD_ERANGE, "model: %d classes (need at least 2)", n_out);
    }

    size_t off = 0;
    size_t widest = 0;
    size_t act_total = 0;
    for (int i = 0; i < m->n_layers; i++) {
        size_t in = (size_t)m->sizes[i], out = (size_t)m->sizes[i + 1];
        m->w_off[i] = off;
        m->b_off[i] = off + in * out;
        off += in * out + out;
        if (out > widest)
            widest = out;
        act_total += round_up((size_t)max_batch * out);
    }
    m->n_params = off;
    m->max_batch = max_batch;
    size_t dact_len = round_up((size_t)max_batch * widest);

    m->params = alloc_floats(m->n_params);
    m->grads = alloc_floats(m->n_params + KD_MODEL_GRAD_SPARE);
    m->work = alloc_floats(act_total + 2 * dact_len);
    if (!m->params || !m->grads || !m->work) {
        kd_model_free(m);
        return kd_errf(err, errlen, KD_ENOMEM, "model: cannot allocate %zu parameters",
                       off);
    }
    float *p = m->work;
    for (int i = 0; i < m->n_layers; i++) {
        m->act[i] = p;
        p += round_up((size_t)max_batch * (size_t)m->sizes[i + 1]);
    }
    m->dact[0] = p;
    m->dact[1] = p + dact_len;
    return KD_OK;
}

int kd_model_init_layers(kd_model *m, const kd_spec_layer *layers, int n, kd_spec_shape in,
                         int max_batch, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    if (max_batch < 1 || max_batch > KD_MODEL_MAX_WIDTH)
        return kd_errf(err, errlen, KD_ERANGE, "model: batch size %d outside [1, %d]",
                       max_batch, KD_MODEL_MAX_WIDTH);
    m->net = calloc(1, sizeof *m->net);
    if (!m->net)
        return kd_errf(err, errlen, KD_ENOMEM, "model: out of memory");
    int rc = kd_net_init(m->net, layers, n, in, max_batch, err, errlen);
    if (rc != KD_OK) {
        kd_model_free(m);
        return rc;
    }
    kd_net *net = m->net;
    m->max_batch = max_batch;
    m->n_params = net->n_params;
    m->sizes[0] = (int)net->l[0].in_len;
    for (int i = 0; i < net->n && m->n_layers < KD_MODEL_MAX_LAYERS; i++) {
        const kd_net_layer *l = &net->l[i];
        if (l->n_w == 0)
            continue;
        m->w_off[m->n_layers] = l->w_off;
        m->b_off[m->n_layers] = l->b_off;
        m->sizes[++m->n_layers] = l->out.c;
    }
    m->params = alloc_floats(m->n_params);
    m->grads = alloc_floats(m->n_params + KD_MODEL_GRAD_SPARE);
    if (!m->params || !m->grads) {
        size_t np = m->n_params;
        kd_model_free(m);
        return kd_errf(err, errlen, KD_ENOMEM, "model: cannot allocate %zu parameters", np);
    }
    return KD_OK;
}

void kd_model_set_dropout_key(kd_model *m, uint64_t key, uint64_t first_sample)
{
    if (m->net) {
        m->net->dropout_key = key;
        m->net->dropout_first = first_sample;
    }
}

int kd_model_init_replica(kd_model *r, const kd_model *m, int max_batch, char *err,
                          size_t errlen)
{
    if (m->net) {
        const kd_net *net = m->net;
        kd_spec_layer layers[KD_SPEC_MAX_LAYERS];
        for (int i = 0; i < net->n; i++)
            layers[i] = net->l[i].spec;
        int rc = kd_model_init_layers(r, layers, net->n, net->l[0].in, max_batch, err,
                                      errlen);
        if (rc != KD_OK)
            return rc;
        r->net->dropout_seed = net->dropout_seed;
        free(r->params);
        r->params = m->params;
        r->params_borrowed = 1;
        return KD_OK;
    }
    int rc = kd_model_init(r, m->sizes[0], m->sizes + 1, m->n_layers - 1,
                           m->sizes[m->n_layers], max_batch, err, errlen);
    if (rc != KD_OK)
        return rc;
    free(r->params);
    r->params = m->params;
    r->params_borrowed = 1;
    return KD_OK;
}

void kd_model_free(kd_model *m)
{
    if (!m)
        return;
    if (!m->params_borrowed)
        free(m->params);
    free(m->grads);
    free(m->work);
    if (m->net) {
        kd_net_free(m->net);
        free(m->net);
    }
    memset(m, 0, sizeof *m);
}

void kd_model_init_params(kd_model *m, uint64_t seed)
{
    if (m->net) {
        kd_net_init_params(m->net, m->params, seed);
        return;
    }
    kd_rng rng;
    kd_rng_seed(&rng, seed);
    for (int i = 0; i < m->n_layers; i++) {
        int in = m->sizes[i], out = m->sizes[i + 1];
        float *w = m->params + m->w_off[i];
        size_t nw = (size_t)in * (size_t)out;
        if (i + 1 < m->n_layers) {
            /* He: keeps the variance of ReLU activations constant through depth. */
            double sd = sqrt(2.0 / in);
            for (size_t k = 0; k < nw; k++)
                w[k] = (float)(kd_rng_normal(&rng) * sd);
        } else {
            /* Xavier for the linear output layer feeding the softmax. */
            double lim = sqrt(6.0 / (in + out));
            for (size_t k = 0; k < nw; k++)
                w[k] = (float)((2.0 * kd_rng_uniform(&rng) - 1.0) * lim);
        }
        memset(m->params + m->b_off[i], 0, (size_t)out * sizeof(float));
    }
}

void kd_model_set_grad_ready(kd_model *m, kd_grad_ready_fn fn, void *arg)
{
    m->grad_ready = fn;
    m->grad_ready_arg = arg;
}

void kd_model_set_grad_scale(kd_model *m, float scale)
{
    m->grad_scale = scale;
}

void kd_model_set_grad_blocks(kd_model *m, int blocks, size_t first)
{
    int rows = m->net ? 1 : m->sizes[0];
    m->grad_blocks = blocks < 1 ? 1 : blocks > rows ? rows : blocks;
    m->grad_first = first;
}

void kd_model_set_first_dy(kd_model *m, float *dst)
{
    m->first_dy = dst;
}

/* ---- layer kernels ------------------------------------------------------------------ */

void kd_dense_forward(const float *x, const float *w, const float *bias, float *y, int batch,
                      int in, int out)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, batch, out, in, 1.0f, x, in, w,
                out, 0.0f, y, out);
    for (int b = 0; b < batch; b++) {
        float *row = y + (size_t)b * out;
        for (int j = 0; j < out; j++)
            row[j] += bias[j];
    }
}

/* db[j] = sum over rows of dy[:, j]. */
static void column_sums(const float *dy, float *db, int batch, int out)
{
    memcpy(db, dy, (size_t)out * sizeof(float));
    for (int b = 1; b < batch; b++) {
        const float *row = dy + (size_t)b * out;
        for (int j = 0; j < out; j++)
            db[j] += row[j];
    }
}

void kd_dense_backward(const float *x, const float *w, const float *dy, float *dw, float *db,
                       float *dx, int batch, int in, int out)
{
    /* dW[in x out] = x^T[in x batch] dy[batch x out] */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, in, out, batch, 1.0f, x, in, dy,
                out, 0.0f, dw, out);
    column_sums(dy, db, batch, out);
    if (dx) {
        /* dx[batch x in] = dy[batch x out] W^T[out x in] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, in, out, 1.0f, dy, out,
                    w, out, 0.0f, dx, in);
    }
}

void kd_relu_forward(float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = y[i] > 0.0f ? y[i] : 0.0f;
}

void kd_relu_backward(const float *y, float *dy, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dy[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

float kd_softmax_xent(float *logits, const int32_t *labels, float *dlogits, int batch,
                      int classes)
{
    double total = 0.0;
    float inv_batch = 1.0f / (float)batch;
    for (int b = 0; b < batch; b++) {
        float *z = logits + (size_t)b * classes;
        float mx = z[0];
        for (int j = 1; j < classes; j++)
            mx = z[j] > mx ? z[j] : mx;
        int32_t t = labels[b];
        double zt = (double)z[t];
        float sum = 0.0f;
        for (int j = 0; j < classes; j++) {
            z[j] = expf(z[j] - mx);
            sum += z[j];
        }
        /* log-sum-exp form: exact for any finite logits (no clamping that would hide a
         * diverging run), NaN when the logits are not finite. */
        total += log((double)sum) - (zt - (double)mx);
        float inv = 1.0f / sum;
        for (int j = 0; j < classes; j++)
            z[j] *= inv;
        if (dlogits) {
            float *d = dlogits + (size_t)b * classes;
            for (int j = 0; j < classes; j++)
                d[j] = z[j] * inv_batch;
            d[t] -= inv_batch;
        }
    }
    return (float)(total / batch);
}

/* ---- fused model passes ------------------------------------------------------------- */

/* y = relu(y + bias) (hidden layers) or y + bias (output layer), one pass. */
static void bias_act(float *y, const float *bias, int batch, int out, int relu)
{
    for (int b = 0; b < batch; b++) {
        float *row = y + (size_t)b * out;
        if (relu) {
            for (int j = 0; j < out; j++) {
                float v = row[j] + bias[j];
                row[j] = v > 0.0f ? v : 0.0f;
            }
        } else {
            for (int j = 0; j < out; j++)
                row[j] += bias[j];
        }
    }
}

static void forward(kd_model *m, const float *x, int batch)
{
    const float *in = x;
    for (int i = 0; i < m->n_layers; i++) {
        int ni = m->sizes[i], no = m->sizes[i + 1];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, batch, no, ni, 1.0f, in, ni,
                    m->params + m->w_off[i], no, 0.0f, m->act[i], no);
        bias_act(m->act[i], m->params + m->b_off[i], batch, no, i + 1 < m->n_layers);
        in = m->act[i];
    }
}

/* Layer 0's gradient in row blocks (kd_model_set_grad_blocks): dW rows [r0, r1) are
 * x[:, r0:r1]^T dy, one contiguous range each, reported as soon as computed. The bias
 * goes first: it is a cheap column sum. */
static void first_layer_blocked(kd_model *m, const float *x, const float *dy, int batch)
{
    int ni = m->sizes[0], no = m->sizes[1], nb = m->grad_blocks;
    float *dw = m->grads + m->w_off[0];
    column_sums(dy, m->grads + m->b_off[0], batch, no);
    m->grad_ready(m->grad_ready_arg, 0, m->b_off[0], (size_t)no);
    int start = 0;
    if (m->grad_first >= m->w_off[0] && m->grad_first < m->b_off[0])
        start = (int)((size_t)((m->grad_first - m->w_off[0]) / (size_t)no) * (size_t)nb /
                      (size_t)ni);
    for (int k = 0; k < nb; k++) {
        int b = (start + k) % nb;
        int r0 = (int)((long)ni * b / nb), r1 = (int)((long)ni * (b + 1) / nb);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r1 - r0, no, batch, 1.0f, x + r0,
                    ni, dy, no, 0.0f, dw + (size_t)r0 * no, no);
        m->grad_ready(m->grad_ready_arg, 0, m->w_off[0] + (size_t)r0 * no,
                      (size_t)(r1 - r0) * no);
    }
}

/* The declared network's step: the same loss, scale and callback as the MLP's. The batch
 * runs as near-equal parts of at most net->chunk samples (kd_layers.h), each part's
 * gradient weighted by its share of the batch and accumulated; grad_ready is called
 * during the last part's backward pass, when each layer's sum is complete. */
static float net_forward_backward(kd_model *m, const float *x, const int32_t *labels,
                                  int batch)
{
    kd_net *net = m->net;
    int classes = net->l[net->n - 1].spec.units;
    int parts = (batch + net->chunk - 1) / net->chunk;
    size_t in_len = net->l[0].in_len;
    uint64_t first = net->dropout_first;
    float gs = m->grad_scale != 0.0f ? m->grad_scale : 1.0f;
    double loss = 0.0;
    for (int q = 0, b0 = 0; q < parts; q++) {
        int nb = (batch - b0) / (parts - q);
        net->dropout_first = first + (uint64_t)b0;
        float *z = kd_net_forward(net, m->params, x + (size_t)b0 * in_len, nb, 1);
        loss += (double)kd_softmax_xent(z, labels + b0, z, nb, classes) * nb;
        float scale = parts > 1 ? gs * (float)nb / (float)batch : gs;
        if (scale != 1.0f) {
            size_t nd = (size_t)nb * (size_t)classes;
            for (size_t k = 0; k < nd; k++)
                z[k] *= scale;
        }
        net->accumulate = q > 0;
        kd_net_backward(net, m->params, m->grads, z, nb,
                        q == parts - 1 ? m->grad_ready : NULL, m->grad_ready_arg);
        b0 += nb;
    }
    net->accumulate = 0;
    net->dropout_first = first;
    return (float)(loss / batch); /* exactly the part's loss when parts == 1 */
}

float kd_model_forward_backward(kd_model *m, const float *x, const int32_t *labels,
                                int batch)
{
    if (m->net)
        return net_forward_backward(m, x, labels, batch);
    forward(m, x, batch);
    int last = m->n_layers - 1;
    /* The probabilities are not needed after the loss: dlogits overwrites them. */
    float loss = kd_softmax_xent(m->act[last], labels, m->act[last], batch,
                                 m->sizes[m->n_layers]);
    float *dy = m->act[last];
    if (m->grad_scale != 0.0f && m->grad_scale != 1.0f) {
        size_t nd = (size_t)batch * (size_t)m->sizes[m->n_layers];
        for (size_t k = 0; k < nd; k++)
            dy[k] *= m->grad_scale;
    }
    int ping = 0;
    for (int i = last; i >= 0; i--) {
        int ni = m->sizes[i], no = m->sizes[i + 1];
        const float *xin = i > 0 ? m->act[i - 1] : x;
        float *dw = m->grads + m->w_off[i];
        float *db = m->grads + m->b_off[i];
        if (i == 0 && m->first_dy != NULL) {
            memcpy(m->first_dy, dy, (size_t)batch * (size_t)no * sizeof(float));
            break;
        }
        if (i == 0 && m->grad_blocks > 1 && m->grad_ready) {
            first_layer_blocked(m, xin, dy, batch);
            break;
        }
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ni, no, batch, 1.0f, xin, ni,
                    dy, no, 0.0f, dw, no);
        column_sums(dy, db, batch, no);
        if (i > 0) {
            float *dx = m->dact[ping];
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, ni, no, 1.0f, dy, no,
                        m->params + m->w_off[i], no, 0.0f, dx, ni);
            /* The ReLU mask: the previous layer's output was clamped at 0 where <= 0. */
            kd_relu_backward(m->act[i - 1], dx, (size_t)batch * (size_t)ni);
            dy = dx;
            ping ^= 1;
        }
        if (m->grad_ready)
            m->grad_ready(m->grad_ready_arg, i, m->w_off[i],
                          (size_t)ni * (size_t)no + (size_t)no);
    }
    return loss;
}

void kd_model_first_layer_grad(kd_model *m, const float *x, const float *dy, int batch,
                               int r0, int r1, int accumulate)
{
    int no = m->sizes[1];
    if (r1 <= r0)
        return;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r1 - r0, no, batch, 1.0f, x + r0,
                m->sizes[0], dy, no, accumulate ? 1.0f : 0.0f,
                m->grads + m->w_off[0] + (size_t)r0 * (size_t)no, no);
}

void kd_model_first_layer_bias(kd_model *m, const float *dy, int batch)
{
    column_sums(dy, m->grads + m->b_off[0], batch, m->sizes[1]);
}

/* Argmax into pred (may be NULL) and summed cross-entropy against labels (may be NULL)
 * of logits z [batch x classes]. */
static double score_logits(const float *z, const int32_t *labels, int batch, int classes,
                           int32_t *pred);

double kd_model_predict(kd_model *m, const float *x, const int32_t *labels, int batch,
                        int32_t *pred)
{
    if (m->net) {
        /* In parts of at most net->chunk samples, as in training (kd_layers.h). */
        kd_net *net = m->net;
        int classes = net->l[net->n - 1].spec.units;
        int parts = (batch + net->chunk - 1) / net->chunk;
        double total = 0.0;
        for (int q = 0, b0 = 0; q < parts; q++) {
            int nb = (batch - b0) / (parts - q);
            const float *z = kd_net_forward(net, m->params, x + (size_t)b0 * net->l[0].in_len,
                                            nb, 0);
            total += score_logits(z, labels ? labels + b0 : NULL, nb, classes,
                                  pred ? pred + b0 : NULL);
            b0 += nb;
        }
        return total;
    }
    forward(m, x, batch);
    return score_logits(m->act[m->n_layers - 1], labels, batch, m->sizes[m->n_layers], pred);
}

static double score_logits(const float *z, const int32_t *labels, int batch, int classes,
                           int32_t *pred)
{
    double total = 0.0;
    for (int b = 0; b < batch; b++) {
        const float *row = z + (size_t)b * classes;
        int best = 0;
        float mx = row[0];
        for (int j = 1; j < classes; j++) {
            if (row[j] > mx) {
                mx = row[j];
                best = j;
            }
        }
        if (pred)
            pred[b] = best;
        if (labels) {
            double s = 0.0;
            for (int j = 0; j < classes; j++)
                s += exp((double)row[j] - mx);
            total += log(s) - ((double)row[labels[b]] - mx);
        }
    }
    return total;
}
