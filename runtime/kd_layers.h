/*
 * kd_layers: the kernels of a declared network (spec.training.model.layers) and the
 * network built from them on kd_model's flat buffers.
 *
 * Activations are stored channels last: a batch of images is [batch x H x W x C]
 * row-major, so that a convolution over the whole minibatch is ONE sgemm:
 *     im2col:  col[batch*OH*OW x K*K*C]  (row = output pixel, columns in ky, kx, c order)
 *     forward: y[batch*OH*OW x F] = col * W[K*K*C x F] + bias   (y is NHWC again)
 *     backward: dW = col^T dy, db = column sums of dy, dcol = dy W^T, dx = col2im(dcol)
 * Dense layers are the MLP's ([in x out] weights then the bias; an image input is
 * flattened in H, W, C order). A ReLU right after a convolution or a dense layer is
 * fused into its bias pass and its mask into its backward pass. A convolution followed by
 * max pooling (with or without a ReLU between) leaves its bias and ReLU to the pooling,
 * which applies them to the pooled outputs only (relu(max(z) + b) = max(relu(z + b))),
 * and whose backward pass then yields the bias gradient and the ReLU mask.
 *
 * Every buffer a step needs (activations, im2col, pooling argmax, dropout masks, two
 * gradient ping-pong buffers) is allocated by kd_net_init for max_batch samples: a step
 * never allocates. Parameters and gradients are NOT owned here: the net keeps offsets
 * into kd_model's flat params/grads, laid out layer after layer (weights, then bias), so
 * a layer's gradient is one contiguous range, reported through kd_model's grad_ready
 * callback as soon as backward has finished it (last layer first).
 *
 * Dropout is inverted (kept activations scaled by 1/(1-rate) in training, identity in
 * evaluation); its mask is a hash of (seed, step key, sample index in the global batch,
 * element), so it is reproducible from the seed and independent of how a batch is split
 * over threads or agents.
 */
#ifndef KD_LAYERS_H
#define KD_LAYERS_H

#include <stddef.h>
#include <stdint.h>

#include "kd_spec.h"

typedef struct kd_net_layer {
    kd_spec_layer spec;   /* what was declared */
    kd_spec_shape in;     /* input shape per sample */
    kd_spec_shape out;    /* output shape per sample */
    size_t in_len;        /* floats of one sample's input (c*h*w) */
    size_t out_len;       /* floats of one sample's output */
    size_t w_off;         /* params offset of the weights (dense, conv2d) */
    size_t n_w;           /* weights; 0 for layers without parameters */
    size_t b_off;         /* params offset of the bias (n = out.c) */
    int fuse_relu;        /* dense/conv2d followed by relu: relu applied in the bias pass */
    int fused;            /* this relu is fused into the layer before (forward no-op) */
    int pooled;           /* conv2d followed by maxpool2d (a relu between): its bias and
                           * ReLU are applied by the pooling, y is conv(x) without them */
    int conv;             /* maxpool2d: index of the pooled conv2d above, or -1 */
    float *y;             /* output [max_batch x out_len] (aliases for fused/flatten) */
    const float *x;       /* input of the last forward pass (previous y or the data) */
    float *col;           /* conv2d: im2col [max_batch*OH*OW x K*K*C], NULL for 1x1 */
    float *mask;          /* dropout: 0 or 1/(1-rate) per output element */
} kd_net_layer;

typedef struct kd_net {
    int n;                              /* layers */
    kd_net_layer l[KD_SPEC_MAX_LAYERS];
    int first_param;                    /* first layer with parameters (no dx below it) */
    int max_batch;
    size_t n_params;                    /* floats of parameters of all layers */
    float *dbuf[2];                     /* ping-pong dL/d(activation) buffers */
    float *work;                        /* one block for every buffer above (owned) */
    uint64_t dropout_seed;              /* set by kd_net_init_params */
    uint64_t dropout_key;               /* per step (kd_model_set_dropout_key) */
    uint64_t dropout_first;             /* index of this net's first sample in the batch */
    int chunk;                          /* most samples per forward/backward call for
                                         * speed (kd_net_chunk); max_batch without
                                         * convolutions */
    int accumulate;                     /* backward adds to grads instead of writing */
} kd_net;

/* Lays out layers[0..n) for an input of shape `in` (params start at offset 0), and
 * allocates the workspace for max_batch samples. Errors (shapes, memory) in err; on error
 * the net is left freeable. */
int kd_net_init(kd_net *net, const kd_spec_layer *layers, int n, kd_spec_shape in,
                int max_batch, char *err, size_t errlen);
void kd_net_free(kd_net *net);

/* He-normal weights for layers followed by a ReLU (fan-in K*K*C or in), Xavier-uniform
 * for the others (the output layer), zero biases, from the seeded generator. */
void kd_net_init_params(kd_net *net, float *params, uint64_t seed);

/* Forward through every layer (dropout active when train), leaving the logits of the
 * last layer in net->l[n-1].y; returns that pointer. */
float *kd_net_forward(kd_net *net, const float *params, const float *x, int batch,
                      int train);

/* Batches larger than net->chunk run faster as several forward/backward passes of at
 * most chunk samples, their gradients accumulated (net->accumulate): a convolution's
 * im2col and output then stay in the core's cache between the kernels that read them.
 * kd_model does this split; chunk is set by kd_net_init. */

/* Backward from dlogits (in place of the logits buffer) into grads (added to them when
 * net->accumulate is set); calls ready(arg,
 * layer, offset, length) after each parameterised layer, last first, `layer` being its
 * index among the parameterised layers. */
typedef void (*kd_net_ready_fn)(void *arg, int layer, size_t offset, size_t length);
void kd_net_backward(kd_net *net, const float *params, float *grads, float *dlogits,
                     int batch, kd_net_ready_fn ready, void *arg);

/* ---- kernels, exposed for the gradient checks (NHWC, row-major) ---------------------- */

/* Output size of a window of `k` with stride s and padding p over n: (n+2p-k)/s + 1. */
int kd_conv_out(int n, int k, int s, int p);

/* col[batch*oh*ow x k*k*c] from x[batch x h x w x c]; zeros where the window is in the
 * padding. */
void kd_im2col(const float *x, float *col, int batch, int h, int w, int c, int k, int s,
               int p);
/* dx[batch x h x w x c] = sum of dcol's entries over the windows (dx is overwritten). */
void kd_col2im(const float *dcol, float *dx, int batch, int h, int w, int c, int k, int s,
               int p);

/* y[batch*oh*ow x f] = conv(x, W[k*k*c x f]) + bias. col is scratch of im2col's size. */
void kd_conv2d_forward(const float *x, const float *w, const float *bias, float *y,
                       float *col, int batch, int h, int wd, int c, int f, int k, int s,
                       int p);
/* dw, db from dy[batch*oh*ow x f]; dx (may be NULL) = the input gradient. col must hold
 * im2col(x) on entry (as forward leaves it) and is overwritten. */
void kd_conv2d_backward(const float *w, const float *dy, float *dw, float *db, float *dx,
                        float *col, int batch, int h, int wd, int c, int f, int k, int s,
                        int p);

/* Max pooling over k x k windows with stride s (no padding): y[batch x oh x ow x c].
 * Backward: dx = 0, then each dy goes to the first input of its window (row-major) that
 * equals the window's maximum y, found again from x and y rather than stored. (The
 * network's pooling of a convolution uses fused forms of these with its bias and ReLU.) */
void kd_maxpool_forward(const float *x, float *y, int batch, int h, int w, int c, int k,
                        int s);
void kd_maxpool_backward(const float *x, const float *y, const float *dy, float *dx,
                         int batch, int h, int w, int c, int k, int s);
/* Average pooling, same windows; backward spreads dy/(k*k) over each window. */
void kd_avgpool_forward(const float *x, float *y, int batch, int h, int w, int c, int k,
                        int s);
void kd_avgpool_backward(const float *dy, float *dx, int batch, int h, int w, int c, int k,
                         int s);

/* Inverted dropout: mask[i] = 0 with probability rate, else 1/(1-rate), from a hash of
 * (seed, key, first_sample + i / per_sample, i % per_sample); y = x * mask. */
void kd_dropout_forward(const float *x, float *y, float *mask, size_t n, size_t per_sample,
                        double rate, uint64_t seed, uint64_t key, uint64_t first_sample);

#endif
