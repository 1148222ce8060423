/*
 * kd_optim: the optimizer step (SGD with momentum and weight decay, Adam) and the
 * learning-rate schedules (constant, cosine, step, each with optional linear warm-up).
 *
 * The optimizer state lives in ONE flat float32 buffer (o->state, o->state_len floats:
 * the velocity for SGD with momentum, the first then the second moment for Adam) plus
 * the step counter o->t, so that the distributed runtime can ship parameters + state as
 * one frame and restore them. The step takes the learning rate as an argument: the
 * schedule (and any elastic rescaling) is the caller's decision, per step.
 *
 * Semantics match PyTorch's torch.optim.SGD / Adam (L2 weight decay added to the
 * gradient; SGD momentum buffer v = mu*v + g, p -= lr*v; Adam with bias correction).
 */
#ifndef KD_OPTIM_H
#define KD_OPTIM_H

#include <stddef.h>
#include <stdint.h>

typedef enum kd_optim_type {
    KD_OPTIM_SGD = 0,
    KD_OPTIM_ADAM = 1
} kd_optim_type;

typedef struct kd_optim_config {
    kd_optim_type type;  /* SGD or Adam */
    float momentum;      /* SGD momentum in [0, 1); 0 = plain SGD (no state) */
    float weight_decay;  /* L2 coefficient added to the gradient, >= 0 */
    float beta1;         /* Adam first-moment decay, default 0.9 */
    float beta2;         /* Adam second-moment decay, default 0.999 */
    float epsilon;       /* Adam denominator guard, default 1e-8 */
} kd_optim_config;

typedef struct kd_optim {
    kd_optim_config cfg; /* copy of the configuration */
    size_t n;            /* parameters updated by a step */
    float *state;        /* flat state buffer (owned), NULL when state_len == 0 */
    size_t state_len;    /* floats in state: 0, n (SGD momentum) or 2n (Adam) */
    uint64_t t;          /* steps taken (Adam's bias correction uses it) */
} kd_optim;

/* Fills cfg with the defaults of type (momentum 0, weight decay 0, Adam betas
 * 0.9/0.999, epsilon 1e-8). */
void kd_optim_config_default(kd_optim_config *cfg, kd_optim_type type);

/* Allocates zeroed state for n parameters. KD_EINVAL (message in err) or KD_ENOMEM. */
int kd_optim_init(kd_optim *o, const kd_optim_config *cfg, size_t n, char *err,
                  size_t errlen);
/* Frees the state and zeroes *o; accepts NULL and a zeroed optimizer. */
void kd_optim_free(kd_optim *o);
/* Zeroes the state and the step counter. */
void kd_optim_reset(kd_optim *o);

/* One update of params (o->n floats) from grads with learning rate lr; no allocation,
 * can't fail. Same as kd_optim_step_range over [0, n) followed by kd_optim_advance. */
void kd_optim_step(kd_optim *o, float *params, const float *grads, float lr);

/* The update of step o->t + 1 restricted to [off, off + len) (params and grads are the
 * whole buffers), without advancing o->t: several threads can update disjoint ranges of
 * one step, or a layer can be updated as soon as its gradient is complete. Call
 * kd_optim_advance once every range of the step is done. */
void kd_optim_step_range(kd_optim *o, float *params, const float *grads, float lr,
                         size_t off, size_t len);
/* kd_optim_step_range with the gradient grads + peer, the sum of two ranks' gradients
 * taken inside the update and never stored (peer: len little-endian float32 values at
 * any alignment, peer[0] the value of element off; kd_comm_begin_deferred). Bit for bit
 * the update from grads[i] + peer[i]. */
void kd_optim_step_range_sum(kd_optim *o, float *params, const float *grads,
                             const unsigned char *peer, float lr, size_t off, size_t len);
void kd_optim_advance(kd_optim *o);

typedef enum kd_lr_schedule_type {
    KD_LR_CONSTANT = 0,
    KD_LR_COSINE = 1, /* base -> min_lr along a half cosine over the whole run */
    KD_LR_STEP = 2    /* base * gamma^floor(epoch / step_epochs) */
} kd_lr_schedule_type;

typedef struct kd_lr_schedule {
    kd_lr_schedule_type type; /* shape after warm-up */
    float base_lr;            /* learning rate at the end of warm-up */
    float min_lr;             /* cosine floor, >= 0 */
    double warmup_epochs;     /* linear ramp from base_lr/10 over this many epochs, >= 0 */
    double step_epochs;       /* step schedule: epochs between decays, > 0 */
    float gamma;              /* step schedule: decay factor in (0, 1] */
} kd_lr_schedule;

/* The learning rate at a fractional position in training (epochs done, for example 2.5
 * = half way through the third epoch) of a run of total_epochs. Positions are in epochs,
 * not steps, so that the schedule does not depend on the batch size or agent count. */
float kd_lr_at(const kd_lr_schedule *s, double epoch_pos, double total_epochs);

/* The elastic learning-rate scale at `step` of a linear ramp from `from` at step `start`
 * to `to` over `len` steps (`to` from start + len on, and at once when len is 0). The
 * coordinator announces a world's ramp and its workers follow it: both evaluate it here,
 * so that the scale the coordinator continues from at the next change is the one the
 * workers trained with. */
double kd_lr_ramp(double from, double to, uint64_t start, uint64_t len, uint64_t step);

/* "constant", "cosine", "step" or NULL for an unknown type. */
const char *kd_lr_schedule_name(kd_lr_schedule_type type);

#endif
