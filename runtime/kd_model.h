/*
 * kd_model: the multi-layer perceptron that kadet trains, and its layer kernels.
 *
 * A model is a stack of dense layers (ReLU after every hidden layer) ending in a
 * softmax cross-entropy loss. Its parameters, its gradients live in ONE flat contiguous
 * float32 buffer each (m->params, m->grads, both m->n_params long); layers only hold
 * offsets into them, so that the distributed runtime can allreduce the gradient buffer in
 * one call and ship the parameters as one frame. Layer i's weights are an [in x out]
 * row-major matrix at w_off[i], its bias (out floats) at b_off[i] = w_off[i] + in*out;
 * layers are laid out in order, so layer i's gradients are the contiguous range
 * [w_off[i], w_off[i] + in*out + out).
 *
 * Lifecycle: kd_model_init (allocates parameters, gradients and the workspace for up to
 * max_batch samples), kd_model_init_params (seeded He/Xavier initialisation), then any
 * number of kd_model_forward_backward / kd_model_predict calls, which never allocate;
 * kd_model_free. The optimizer step is separate (kd_optim.h) so that gradients can be
 * exchanged in between. A model is not thread-safe; one per agent.
 *
 * Math: float32, row-major, every matrix product is a cblas_sgemm.
 */
#ifndef KD_MODEL_H
#define KD_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "kd_spec.h"

struct kd_net;

#define KD_MODEL_MAX_LAYERS 16   /* dense layers, output layer included */
#define KD_MODEL_MAX_WIDTH 65536 /* widest layer accepted (inputs, hidden, classes) */
/* m->grads has this many floats after the n_params gradients that the model never
 * touches: the distributed runtime carries its per-step control floats there, so that
 * they travel in the same allreduce message as the gradient's last part. */
#define KD_MODEL_GRAD_SPARE 16

/* Called during backward, last layer first, as soon as the gradient range
 * [offset, offset + length) of m->grads (in floats) is final, so that communication can
 * overlap the rest of the backward pass. */
typedef void (*kd_grad_ready_fn)(void *arg, int layer, size_t offset, size_t length);

typedef struct kd_model {
    int n_layers;                          /* dense layers, output layer included */
    int sizes[KD_MODEL_MAX_LAYERS + 1];    /* sizes[0] inputs, sizes[n_layers] classes */
    size_t w_off[KD_MODEL_MAX_LAYERS];     /* offset of layer i's weights in params */
    size_t b_off[KD_MODEL_MAX_LAYERS];     /* offset of layer i's bias in params */
    size_t n_params;                       /* floats in params and in grads */
    float *params;                         /* flat parameter buffer (owned) */
    float *grads;                          /* flat gradient buffer (owned, + spare) */
    int max_batch;                         /* workspace capacity in samples */
    float *act[KD_MODEL_MAX_LAYERS];       /* layer outputs (post-ReLU; logits->probs) */
    float *dact[2];                        /* two ping-pong buffers for dL/d(activation) */
    float *work;                           /* one block holding act[] and dact[] (owned) */
    kd_grad_ready_fn grad_ready;           /* optional backward callback, NULL = none */
    void *grad_ready_arg;                  /* passed to grad_ready */
    int grad_blocks;                       /* row blocks of layer 0's dW (<= 1: one) */
    size_t grad_first;                     /* params offset wanted first in layer 0 */
    float grad_scale;                      /* gradient multiplier (0 or 1: none) */
    float *first_dy;                       /* factored: where backward leaves layer 0's
                                            * dL/d(output) and stops, NULL = off */
    int params_borrowed;                   /* replica: params belong to another model */
    struct kd_net *net;                    /* declared layers (kd_layers.h), NULL = the
                                            * MLP above; with a net, n_layers, sizes[],
                                            * w_off[] and b_off[] describe its first
                                            * KD_MODEL_MAX_LAYERS parameterised layers
                                            * (sizes[0] the flat input, sizes[i+1] the
                                            * output channels/units of layer i) */
} kd_model;

/* Builds an MLP n_in -> hidden[0] -> ... -> hidden[n_hidden-1] -> n_out with workspace
 * for max_batch samples. Parameters are zero until kd_model_init_params. Returns KD_OK,
 * KD_EINVAL/KD_ERANGE (message in err) or KD_ENOMEM. On error *m is left freeable. */
int kd_model_init(kd_model *m, int n_in, const int *hidden, int n_hidden, int n_out,
                  int max_batch, char *err, size_t errlen);

/* Builds the network of declared layers (spec.training.model.layers) for inputs of
 * shape `in` with workspace for max_batch samples; parameters zero until
 * kd_model_init_params. The same flat buffers, callbacks and contracts as an MLP, except
 * that the factored first layer (kd_model_set_first_dy, kd_model_first_layer_*) and the
 * blocked first-layer gradient are MLP-only (the distributed runtime does not use them
 * with a net). Errors name the layer and field. */
int kd_model_init_layers(kd_model *m, const kd_spec_layer *layers, int n, kd_spec_shape in,
                         int max_batch, char *err, size_t errlen);

/* Dropout masks of the next forward_backward: a hash of (seed, key, first_sample + the
 * sample's index in this batch, element). The trainers set key to the step and
 * first_sample to where this batch starts in the step's global batch, so that masks do
 * not depend on threads or agents. No effect without dropout layers. */
void kd_model_set_dropout_key(kd_model *m, uint64_t key, uint64_t first_sample);

/* A replica of m for another thread: same shape, its OWN gradients and workspace (for up
 * to max_batch samples), and m's parameter buffer (borrowed: m must outlive it). */
int kd_model_init_replica(kd_model *r, const kd_model *m, int max_batch, char *err,
                          size_t errlen);

/* Frees what kd_model_init allocated and zeroes *m; accepts NULL and a zeroed model. */
void kd_model_free(kd_model *m);

/* He-normal weights for ReLU layers, Xavier-uniform for the output layer, zero biases,
 * from a seeded generator: the same seed gives bit-identical parameters. */
void kd_model_init_params(kd_model *m, uint64_t seed);

void kd_model_set_grad_ready(kd_model *m, kd_grad_ready_fn fn, void *arg);

/* Computes the first layer's weight gradient (the largest, and the last one backward
 * reaches) in `blocks` row blocks of near-equal size, each reported to grad_ready as soon
 * as it is final (after the layer's bias), starting with the block that holds params
 * offset `first` and wrapping around: a ring allreduce can then send the part it needs
 * first while the rest is computed. blocks <= 1 (the default) computes it in one call and
 * reports the whole layer at once. The ranges still tile the buffer exactly. */
void kd_model_set_grad_blocks(kd_model *m, int blocks, size_t first);

/* Multiplies the gradient kd_model_forward_backward produces by `scale` (1 = the plain
 * batch mean). Applied to d(loss)/d(logits), everything backward is linear in it, so it
 * costs nothing; the distributed runtime weights each rank's gradient by its share of the
 * global batch this way. */
void kd_model_set_grad_scale(kd_model *m, float scale);

/* Factored first layer (the distributed runtime's "factors" exchange): with dst not
 * NULL, kd_model_forward_backward stops before layer 0's gradient and copies dL/d(layer 0
 * output) there instead ([batch x sizes[1]], already scaled by grad_scale); grad_ready is
 * not called for layer 0. Since dW0 = x^T dy and db0 = colsum(dy), ranks that all hold
 * the training data can exchange these batch x sizes[1] "sufficient factors" instead of
 * the sizes[0] x sizes[1] gradient and then rebuild the global gradient with
 * kd_model_first_layer_grad. NULL restores the plain backward pass. */
void kd_model_set_first_dy(kd_model *m, float *dst);

/* Layer 0's weight gradient from factors, rows [r0, r1) of it (0 <= r0 <= r1 <=
 * sizes[0]): dW0[r0:r1] = x[:, r0:r1]^T dy, written into m->grads (accumulate = 0) or
 * added to what is there (1). x is [batch x sizes[0]], dy [batch x sizes[1]], batch >= 1
 * (may exceed max_batch: no workspace is used). Rows let ranks split the work. */
void kd_model_first_layer_grad(kd_model *m, const float *x, const float *dy, int batch,
                               int r0, int r1, int accumulate);

/* Layer 0's bias gradient from factors: db0 = the column sums of dy [batch x sizes[1]]. */
void kd_model_first_layer_bias(kd_model *m, const float *dy, int batch);

/* Forward and backward on one batch: x is [batch x sizes[0]] row-major, labels are class
 * indices in [0, n_out). Overwrites m->grads with the gradient of the MEAN loss over the
 * batch and returns that mean loss. 1 <= batch <= max_batch and labels in range are the
 * caller's contract (checked when the data is loaded); this can't fail. */
float kd_model_forward_backward(kd_model *m, const float *x, const int32_t *labels,
                                int batch);

/* Forward only: writes the argmax class of each of the batch samples into pred (may be
 * NULL) and, when labels is not NULL, returns the summed cross-entropy over the batch
 * (0 otherwise). */
double kd_model_predict(kd_model *m, const float *x, const int32_t *labels, int batch,
                        int32_t *pred);

/* Layer kernels, exposed for the gradient checks; the model uses fused forms of them.
 * All matrices are row-major float32.
 *   dense:   y[b x out] = x[b x in] * W[in x out] + bias
 *   backward: dW = x^T dy, db = sum over rows of dy, dx = dy W^T (dx may be NULL)  */
void kd_dense_forward(const float *x, const float *w, const float *bias, float *y, int batch,
                      int in, int out);
void kd_dense_backward(const float *x, const float *w, const float *dy, float *dw, float *db,
                       float *dx, int batch, int in, int out);
/* ReLU in place on n values; backward zeroes dy where the forward output y was <= 0. */
void kd_relu_forward(float *y, size_t n);
void kd_relu_backward(const float *y, float *dy, size_t n);
/* Softmax cross-entropy of logits [batch x classes]: replaces the logits by the
 * probabilities and returns the mean loss; when dlogits is not NULL writes
 * d(mean loss)/d(logits) there (may alias logits). */
float kd_softmax_xent(float *logits, const int32_t *labels, float *dlogits, int batch,
                      int classes);

#endif
