/*
 * kd_train: glue from a decoded AgentJob to a trained model, and the single-agent
 * training loop that `kadet run` uses in-process.
 *
 * The pieces are exposed separately so that the distributed runtime builds the same
 * model, optimizer and schedule from the same spec, evaluates the same way, and only
 * replaces the loop: kd_train_setup_model / kd_train_schedule / kd_evaluate /
 * kd_train_math_setup. kd_train_single is the whole loop for one agent: per epoch,
 * walk the (seed, epoch) permutation in batches, forward+backward, optimizer step at the
 * scheduled learning rate, then evaluate on the test set and report.
 */
#ifndef KD_TRAIN_H
#define KD_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "kd_data.h"
#include "kd_model.h"
#include "kd_optim.h"
#include "kd_spec.h"

/* One line of progress, reported after each epoch's evaluation. */
typedef struct kd_epoch_report {
    int epoch;                 /* 1-based epoch just finished */
    int epochs;                /* planned epochs */
    float lr;                  /* learning rate of the epoch's last step */
    double train_loss;         /* mean training loss over the epoch's batches */
    double test_accuracy;      /* on the test split */
    double test_loss;          /* mean cross-entropy on the test split */
    double samples_per_second; /* training steps only, evaluation excluded */
    int agents;                /* agents that trained this epoch */
    double wall_seconds;       /* since the start of training */
} kd_epoch_report;

typedef void (*kd_epoch_fn)(void *arg, const kd_epoch_report *r);

typedef struct kd_train_options {
    const kd_agentjob *job;    /* borrowed; training.* is what is trained */
    const char *data_dir;      /* overrides job->dataset_path when not NULL */
    int epochs;                /* overrides job->epochs when > 0 */
    uint64_t seed;             /* initialisation and shuffle seed */
    int threads;               /* threads of this agent (each batch split over them), >= 1 */
    size_t max_train_samples;  /* use only the first N training samples, 0 = all */
    kd_epoch_fn on_epoch;      /* optional progress callback */
    void *on_epoch_arg;
} kd_train_options;

typedef struct kd_train_result {
    double test_accuracy;      /* after the last epoch */
    double train_loss;         /* mean training loss of the last epoch */
    int epochs;                /* epochs trained (fewer when targetAccuracy was reached) */
    int agents;                /* 1 here */
    double samples_per_second; /* all training samples / training step time */
    double wall_seconds;       /* loading excluded, evaluation included */
    double step_seconds;       /* time inside training steps */
} kd_train_result;

/* The BLAS build and the kernels it chose for this CPU, for `kadet version` and logs
 * (OPENBLAS_CORETYPE overrides the choice). Static storage; can't fail. */
const char *kd_blas_info(void);
/* Only the kernels' name (e.g. "Haswell", "SkylakeX"): what decides the speed of a step. */
const char *kd_blas_kernels(void);

/* Sets OpenBLAS's thread count (1 when the agent splits batches itself) and flushes
 * denormals to zero on this thread:
 * call once per agent process before training. */
void kd_train_math_setup(int threads);

/* The spec's model in one line for logs: "mlp 256-128" or "conv3x3(32) relu maxpool2
 * ... dense(10)" (truncated to len). */
void kd_train_model_desc(const kd_agentjob *job, char *buf, size_t len);

/* Builds (without initialising) the spec's model for n_in features and n_classes
 * classes: the mlp shorthand, a declared list of layers that is an MLP, or the network of
 * declared layers (the input shape checked against n_in). Errors in err; m freeable. */
int kd_train_build_model(const kd_agentjob *job, int n_in, int n_classes, int max_batch,
                         kd_model *m, char *err, size_t errlen);

/* Builds the spec's model for n_in features and n_classes classes with workspace for
 * max_batch samples, initialised from seed, and its optimizer. On error both are left
 * freeable. */
int kd_train_setup_model(const kd_agentjob *job, int n_in, int n_classes, int max_batch,
                         uint64_t seed, kd_model *m, kd_optim *o, char *err, size_t errlen);

/* The spec's learning-rate schedule. */
void kd_train_schedule(const kd_agentjob *job, kd_lr_schedule *s);

/* Accuracy and mean cross-entropy of m on ds, in batches of at most m->max_batch. */
int kd_evaluate(kd_model *m, const kd_dataset *ds, double *accuracy, double *mean_loss,
                char *err, size_t errlen);

/* Loads the data, trains one agent in-process and fills *res. Errors (data, spec) in
 * err. */
int kd_train_single(const kd_train_options *opt, kd_train_result *res, char *err,
                    size_t errlen);

/* Monotonic clock in seconds. */
double kd_now(void);

#endif
