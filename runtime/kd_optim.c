/*
 * kd_optim: optimizer updates over flat float32 buffers and learning-rate schedules.
 *
 * The update loops are the only O(parameters) work per step besides the GEMMs, so they
 * are single passes over the buffers written to vectorise; the hot loops are compiled for
 * AVX-512/AVX2 as well as the baseline and picked at load time (target_clones), so the
 * binary stays portable.
 */
#include "kd_optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kd_error.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define KD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define KD_CLONES
#endif

void kd_optim_config_default(kd_optim_config *cfg, kd_optim_type type)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->type = type;
    cfg->beta1 = 0.9f;
    cfg->beta2 = 0.999f;
    cfg->epsilon = 1e-8f;
}

int kd_optim_init(kd_optim *o, const kd_optim_config *cfg, size_t n, char *err,
                  size_t errlen)
{
    memset(o, 0, sizeof *o);
    if (cfg->type != KD_OPTIM_SGD && cfg->type != KD_OPTIM_ADAM)
        return kd_errf(err, errlen, KD_EINVAL, "optimizer: unknown type %d", (int)cfg->type);
    if (!(cfg->momentum >= 0.0f && cfg->momentum < 1.0f))
        return kd_errf(err, errlen, KD_EINVAL, "optimizer: momentum %g outside [0, 1)",
                       (double)cfg->momentum);
    if (!(cfg->weight_decay >= 0.0f))
        return kd_errf(err, errlen, KD_EINVAL, "optimizer: negative weight decay %g",
                       (double)cfg->weight_decay);
    if (cfg->type == KD_OPTIM_ADAM &&
        !(cfg->beta1 >= 0.0f && cfg->beta1 < 1.0f && cfg->beta2 >= 0.0f &&
          cfg->beta2 < 1.0f && cfg->epsilon > 0.0f))
        return kd_errf(err, errlen, KD_EINVAL,
                       "optimizer: Adam needs betas in [0, 1) and epsilon > 0");
    o->cfg = *cfg;
    o->n = n;
    if (cfg->type == KD_OPTIM_ADAM)
        o->state_len = 2 * n;
    else if (cfg->momentum > 0.0f)
        o->state_len = n;
    if (o->state_len) {
        o->state = calloc(o->state_len, sizeof(float));
        if (!o->state) {
            memset(o, 0, sizeof *o);
            return kd_errf(err, errlen, KD_ENOMEM, "optimizer: cannot allocate state");
        }
    }
    return KD_OK;
}

void kd_optim_free(kd_optim *o)
{
    if (!o)
        return;
    free(o->state);
    memset(o, 0, sizeof *o);
}

void kd_optim_reset(kd_optim *o)
{
    if (o->state)
        memset(o->state, 0, o->state_len * sizeof(float));
    o->t = 0;
}

KD_CLONES
static void sgd_plain(float *restrict p, const float *restrict g, size_t n, float lr,
                      float wd)
{
    for (size_t i = 0; i < n; i++)
        p[i] -= lr * (g[i] + wd * p[i]);
}

KD_CLONES
static void sgd_momentum(float *restrict p, const float *restrict g, float *restrict v,
                         size_t n, float lr, float mu, float wd)
{
    for (size_t i = 0; i < n; i++) {
        float vi = mu * v[i] + (g[i] + wd * p[i]);
        v[i] = vi;
        p[i] -= lr * vi;
    }
}

/* First step of momentum SGD: PyTorch initialises the buffer to the gradient itself. */
KD_CLONES
static void sgd_momentum_first(float *restrict p, const float *restrict g, float *restrict v,
                               size_t n, float lr, float wd)
{
    for (size_t i = 0; i < n; i++) {
        float vi = g[i] + wd * p[i];
        v[i] = vi;
        p[i] -= lr * vi;
    }
}

KD_CLONES
static void adam(float *restrict p, const float *restrict g, float *restrict m1,
                 float *restrict m2, size_t n, float step, float b1, float b2, float eps,
                 float wd, float inv_sqrt_bc2)
{
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] + wd * p[i];
        float a = b1 * m1[i] + (1.0f - b1) * gi;
        float b = b2 * m2[i] + (1.0f - b2) * gi * gi;
        m1[i] = a;
        m2[i] = b;
        p[i] -= step * a / (sqrtf(b) * inv_sqrt_bc2 + eps);
    }
}

/* The steady state of SGD with momentum on the sum g + g2 of two ranks' gradients (g2:
 * float32 at any alignment), the sum taken as the element is used: the same bits as
 * adding g2 into g and then sgd_momentum, one pass fewer over the gradient. */
KD_CLONES
static void sgd_momentum_sum(float *restrict p, const float *restrict g,
                             const unsigned char *restrict g2, float *restrict v, size_t n,
                             float lr, float mu, float wd)
{
    for (size_t i = 0; i < n; i++) {
        float b;
        memcpy(&b, g2 + 4 * i, sizeof b);
        float vi = mu * v[i] + ((g[i] + b) + wd * p[i]);
        v[i] = vi;
        p[i] -= lr * vi;
    }
}

/* The update of [off, off + len) from g, the gradient of element off onwards. */
static void step_range(kd_optim *o, float *params, const float *g, float lr, size_t off,
                       size_t len)
{
    const kd_optim_config *c = &o->cfg;
    uint64_t t = o->t + 1;
    float *p = params + off;
    if (c->type == KD_OPTIM_ADAM) {
        double bc1 = 1.0 - pow((double)c->beta1, (double)t);
        double bc2 = 1.0 - pow((double)c->beta2, (double)t);
        adam(p, g, o->state + off, o->state + o->n + off, len, (float)(lr / bc1), c->beta1,
             c->beta2, c->epsilon, c->weight_decay, (float)(1.0 / sqrt(bc2)));
    } else if (o->state_len == 0) {
        sgd_plain(p, g, len, lr, c->weight_decay);
    } else if (t == 1) {
        sgd_momentum_first(p, g, o->state + off, len, lr, c->weight_decay);
    } else {
        sgd_momentum(p, g, o->state + off, len, lr, c->momentum, c->weight_decay);
    }
}

void kd_optim_step_range(kd_optim *o, float *params, const float *grads, float lr,
                         size_t off, size_t len)
{
    step_range(o, params, grads + off, lr, off, len);
}

void kd_optim_step_range_sum(kd_optim *o, float *params, const float *grads,
                             const unsigned char *peer, float lr, size_t off, size_t len)
{
    if (o->cfg.type == KD_OPTIM_SGD && o->state_len != 0 && o->t > 0) {
        sgd_momentum_sum(params + off, grads + off, peer, o->state + off, len, lr,
                         o->cfg.momentum, o->cfg.weight_decay);
        return;
    }
    /* The other updates: the sum a block at a time, while it is in the cache. */
    float sum[1024];
    for (size_t j = 0; j < len; j += 1024) {
        size_t m = len - j < 1024 ? len - j : 1024;
        memcpy(sum, peer + 4 * j, m * sizeof(float));
        for (size_t i = 0; i < m; i++)
            sum[i] = grads[off + j + i] + sum[i];
        step_range(o, params, sum, lr, off + j, m);
    }
}

void kd_optim_advance(kd_optim *o)
{
    o->t++;
}

void kd_optim_step(kd_optim *o, float *params, const float *grads, float lr)
{
    kd_optim_step_range(o, params, grads, lr, 0, o->n);
    kd_optim_advance(o);
}

double kd_lr_ramp(double from, double to, uint64_t start, uint64_t len, uint64_t step)
{
    if (len == 0 || step >= start + len)
        return to;
    if (step <= start)
        return from;
    return from + (to - from) * ((double)(step - start) / (double)len);
}

float kd_lr_at(const kd_lr_schedule *s, double epoch_pos, double total_epochs)
{
    double base = s->base_lr;
    if (epoch_pos < 0.0)
        epoch_pos = 0.0;
    if (s->warmup_epochs > 0.0 && epoch_pos < s->warmup_epochs) {
        /* Linear ramp from a tenth of the rate, so the first step already moves. */
        double f = epoch_pos / s->warmup_epochs;
        return (float)(base * (0.1 + 0.9 * f));
    }
    switch (s->type) {
    case KD_LR_COSINE: {
        double span = total_epochs - s->warmup_epochs;
        double f = span > 0.0 ? (epoch_pos - s->warmup_epochs) / span : 1.0;
        if (f > 1.0)
            f = 1.0;
        double lo = s->min_lr;
        return (float)(lo + 0.5 * (base - lo) * (1.0 + cos(M_PI * f)));
    }
    case KD_LR_STEP: {
        double se = s->step_epochs > 0.0 ? s->step_epochs : 1.0;
        double k = floor((epoch_pos - s->warmup_epochs) / se + 1e-9);
        return (float)(base * pow((double)s->gamma, k));
    }
    case KD_LR_CONSTANT:
    default:
        return (float)base;
    }
}

const char *kd_lr_schedule_name(kd_lr_schedule_type type)
{
    switch (type) {
    case KD_LR_CONSTANT:
        return "constant";
    case KD_LR_COSINE:
        return "cosine";
    case KD_LR_STEP:
        return "step";
    }
    return NULL;
}
