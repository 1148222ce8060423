/*
 * kd_par: one agent's training step spread over several threads by splitting the batch.
 *
 * For this model's small GEMMs (64 x 784 x 256) OpenBLAS's own threading gains little:
 * the per-call fork/join costs about what the second core saves. Splitting the batch
 * instead gives each thread whole GEMMs on its slice, into its own gradient buffer (a
 * kd_model replica sharing the parameters); the slices' gradients are then combined
 * (weighted by slice size, so the result is the gradient of the mean loss over the whole
 * batch) and the optimizer step is applied, each thread doing both for its share of the
 * parameter range. Two barriers per step; no allocation inside a step. With one thread
 * the step is the plain gather / forward-backward / optimizer step.
 *
 * Results are deterministic for a given thread count; different thread counts sum the
 * gradients in a different order, so they differ in the last bits.
 */
#ifndef KD_PAR_H
#define KD_PAR_H

#include <stddef.h>
#include <stdint.h>

#include "kd_data.h"
#include "kd_model.h"
#include "kd_optim.h"

#define KD_PAR_MAX_THREADS 16

typedef struct kd_par kd_par;

/* Starts threads - 1 helper threads for model m (whose m->max_batch is the largest batch
 * a step will get) and optimizer o, both borrowed and outliving the kd_par. Call
 * kd_train_math_setup(1) first: each thread runs single-threaded GEMMs. */
int kd_par_init(kd_par **out, kd_model *m, kd_optim *o, int threads, char *err,
                size_t errlen);

/* One training step on samples idx[0..count) of ds (1 <= count <= m->max_batch):
 * gather, forward/backward, gradient combination, optimizer step at lr. Returns the mean
 * loss over the batch; m->grads holds the combined gradient afterwards. */
float kd_par_step(kd_par *p, const kd_dataset *ds, const uint32_t *idx, int count, float lr);

int kd_par_threads(const kd_par *p);

/* Stops and joins the helper threads and frees everything; accepts NULL. */
void kd_par_free(kd_par *p);

#endif
