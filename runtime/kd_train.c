/*
 * kd_train: builds the model, optimizer and schedule a spec describes, evaluates, and
 * runs the single-agent training loop.
 *
 * The loop allocates everything (permutation, batch buffers, model workspace) before the
 * first step; a step is gather -> forward/backward -> optimizer step at the scheduled
 * learning rate. Timing counts only those steps, so that samples/s is comparable with
 * other trainers whatever their evaluation costs.
 */
#include "kd_train.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#include "kd_clock.h"
#include "kd_error.h"
#include "kd_par.h"

double kd_now(void)
{
    return kd_mono_s();
}

const char *kd_blas_info(void)
{
    static char buf[256];
    snprintf(buf, sizeof buf, "%s; kernels %s", openblas_get_config(), openblas_get_corename());
    return buf;
}

const char *kd_blas_kernels(void) { return openblas_get_corename(); }

void kd_train_math_setup(int threads)
{
    openblas_set_num_threads(threads < 1 ? 1 : threads);
#if defined(__SSE__)
    /* Flush-to-zero and denormals-are-zero: tiny gradients late in training would
     * otherwise hit the slow microcode path for denormal floats. */
    _mm_setcsr(_mm_getcsr() | 0x8040);
#endif
}

void kd_train_schedule(const kd_agentjob *job, kd_lr_schedule *s)
{
    memset(s, 0, sizeof *s);
    switch (job->schedule) {
    case KD_SPEC_SCHED_COSINE:
        s->type = KD_LR_COSINE;
        break;
    case KD_SPEC_SCHED_STEP:
        s->type = KD_LR_STEP;
        break;
    case KD_SPEC_SCHED_CONSTANT:
    default:
        s->type = KD_LR_CONSTANT;
        break;
    }
    s->base_lr = (float)job->learning_rate;
    s->min_lr = (float)job->min_learning_rate;
    s->warmup_epochs = job->warmup_epochs;
    s->step_epochs = job->step_epochs;
    s->gamma = (float)job->gamma;
}

void kd_train_model_desc(const kd_agentjob *job, char *buf, size_t len)
{
    size_t n = 0;
    if (len == 0)
        return;
    buf[0] = '\0';
#define PUT(...)                                                                     \
    do {                                                                             \
        int k_ = snprintf(buf + n, len - n, __VA_ARGS__);                            \
        if (k_ < 0 || (size_t)k_ >= len - n)                                         \
            return;                                                                  \
        n += (size_t)k_;                                                             \
    } while (0)
    if (job->n_layers == 0) {
        PUT("mlp");
        for (int i = 0; i < job->n_hidden; i++)
            PUT("%s%d", i ? "-" : " ", job->hidden[i]);
        return;
    }
    for (int i = 0; i < job->n_layers; i++) {
        const kd_spec_layer *l = &job->layers[i];
        const char *sep = i ? " " : "";
        switch (l->type) {
        case KD_LAYER_CONV2D:
            PUT("%sconv%dx%d(%d", sep, l->kernel, l->kernel, l->units);
            if (l->stride != 1)
                PUT(",s%d", l->stride);
            if (l->padding != 0)
                PUT(",p%d", l->padding);
            PUT(")");
            break;
        case KD_LAYER_DENSE:
            PUT("%sdense(%d)", sep, l->units);
            break;
        case KD_LAYER_MAXPOOL2D:
        case KD_LAYER_AVGPOOL2D:
            PUT("%s%s%d", sep, l->type == KD_LAYER_MAXPOOL2D ? "maxpool" : "avgpool", l->kernel);
            if (l->stride != l->kernel)
                PUT("(s%d)", l->stride);
            break;
        case KD_LAYER_DROPOUT:
            PUT("%sdropout(%g)", sep, l->rate);
            break;
        default:
            PUT("%s%s", sep, kd_spec_layer_name(l->type));
            break;
        }
    }
#undef PUT
}

int kd_train_build_model(const kd_agentjob *job, int n_in, int n_classes, int max_batch,
                         kd_model *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    if (job->n_layers == 0)
        return kd_model_init(m, n_in, job->hidden, job->n_hidden, n_classes, max_batch, err,
                             errlen);
    const kd_spec_layer *last = &job->layers[job->n_layers - 1];
    if (last->units < n_classes)
        return kd_errf(err, errlen, KD_EINVAL,
                       "spec.training.model.layers[%d].units: %d classes, but the dataset "
                       "has labels up to %d", job->n_layers - 1, last->units, n_classes - 1);
    int hidden[KD_SPEC_MAX_HIDDEN], nh = 0;
    if (kd_spec_layers_as_mlp(job, hidden, &nh))
        return kd_model_init(m, n_in, hidden, nh, last->units, max_batch, err, errlen);
    kd_spec_shape in = job->input_shape;
    if (in.c == 0)
        in = (kd_spec_shape){n_in, 1, 1};
    if ((long)in.c * in.h * in.w != (long)n_in)
        return kd_errf(err, errlen, KD_EINVAL,
                       "spec.training.model.inputShape: [%d, %d, %d] is %ld values, but the "
                       "dataset's samples have %d", in.c, in.h, in.w, (long)in.c * in.h * in.w,
                       n_in);
    return kd_model_init_layers(m, job->layers, job->n_layers, in, max_batch, err, errlen);
}

int kd_train_setup_model(const kd_agentjob *job, int n_in, int n_classes, int max_batch,
                         uint64_t seed, kd_model *m, kd_optim *o, char *err, size_t errlen)
{
    memset(o, 0, sizeof *o);
    int rc = kd_train_build_model(job, n_in, n_classes, max_batch, m, err, errlen);
    if (rc != KD_OK)
        return rc;
    kd_model_init_params(m, seed);
    kd_optim_config cfg;
    kd_optim_config_default(&cfg, job->optimizer == KD_SPEC_OPT_ADAM ? KD_OPTIM_ADAM
                                                                     : KD_OPTIM_SGD);
    cfg.momentum = (float)job->momentum;
    cfg.weight_decay = (float)job->weight_decay;
    cfg.beta1 = (float)job->beta1;
    cfg.beta2 = (float)job->beta2;
    cfg.epsilon = (float)job->epsilon;
    if (job->optimizer == KD_SPEC_OPT_ADAM)
        cfg.momentum = 0.0f;
    rc = kd_optim_init(o, &cfg, m->n_params, err, errlen);
    if (rc != KD_OK)
        kd_model_free(m);
    return rc;
}

int kd_evaluate(kd_model *m, const kd_dataset *ds, double *accuracy, double *mean_loss,
                char *err, size_t errlen)
{
    if (ds->n == 0)
        return kd_errf(err, errlen, KD_EINVAL, "evaluate: empty dataset");
    if (ds->dim != (size_t)m->sizes[0])
        return kd_errf(err, errlen, KD_EINVAL, "evaluate: samples have %zu features, the "
                       "model takes %d", ds->dim, m->sizes[0]);
    int32_t pred[1024];
    int chunk = m->max_batch < 1024 ? m->max_batch : 1024;
    size_t correct = 0;
    double loss = 0.0;
    for (size_t i = 0; i < ds->n; i += (size_t)chunk) {
        int cnt = (int)(ds->n - i < (size_t)chunk ? ds->n - i : (size_t)chunk);
        /* The dataset is contiguous, so evaluation reads it in place without a gather. */
        loss += kd_model_predict(m, ds->x + i * ds->dim, ds->y + i, cnt, pred);
        for (int k = 0; k < cnt; k++)
            correct += pred[k] == ds->y[i + (size_t)k];
    }
    *accuracy = (double)correct / (double)ds->n;
    if (mean_loss)
        *mean_loss = loss / (double)ds->n;
    return KD_OK;
}

/* Loads both splits and checks that they fit together and the model. */
static int load_data(const kd_train_options *opt, kd_dataset *train, kd_dataset *test,
                     char *err, size_t errlen)
{
    const kd_agentjob *job = opt->job;
    const char *dir = opt->data_dir ? opt->data_dir : job->dataset_path;
    int rc = kd_dataset_load_dir(job->dataset_format, dir, "train", job->dataset_label_column,
                                 train, err, errlen);
    if (rc != KD_OK)
        return rc;
    rc = kd_dataset_load_dir(job->dataset_format, dir, "test", job->dataset_label_column, test,
                             err, errlen);
    if (rc != KD_OK)
        return rc;
    if (train->dim != test->dim)
        return kd_errf(err, errlen, KD_EFORMAT,
                       "dataset %s: train samples have %zu features, test samples %zu", dir,
                       train->dim, test->dim);
    if (train->dim > KD_MODEL_MAX_WIDTH)
        return kd_errf(err, errlen, KD_ETOOBIG, "dataset %s: %zu features (model takes at "
                       "most %d)", dir, train->dim, KD_MODEL_MAX_WIDTH);
    if (opt->max_train_samples > 0 && opt->max_train_samples < train->n)
        train->n = opt->max_train_samples;
    int classes = train->n_classes > test->n_classes ? train->n_classes : test->n_classes;
    train->n_classes = test->n_classes = classes;
    return KD_OK;
}

int kd_train_single(const kd_train_options *opt, kd_train_result *res, char *err,
                    size_t errlen)
{
    memset(res, 0, sizeof *res);
    const kd_agentjob *job = opt->job;
    int epochs = opt->epochs > 0 ? opt->epochs : job->epochs;
    int batch = job->batch_size;
    kd_dataset train = {0}, test = {0};
    kd_model m = {0};
    kd_optim o = {0};
    kd_par *par = NULL;
    uint32_t *perm = NULL;

    int rc = load_data(opt, &train, &test, err, errlen);
    if (rc != KD_OK)
        goto out;
    /* Threads split each batch (kd_par); every GEMM itself stays single-threaded. */
    kd_train_math_setup(1);
    rc = kd_train_setup_model(job, (int)train.dim, train.n_classes, batch, opt->seed, &m, &o,
                              err, errlen);
    if (rc != KD_OK)
        goto out;
    kd_lr_schedule sched;
    kd_train_schedule(job, &sched);

    rc = kd_par_init(&par, &m, &o, opt->threads < 1 ? 1 : opt->threads, err, errlen);
    if (rc != KD_OK)
        goto out;
    perm = malloc(train.n * sizeof *perm);
    if (!perm) {
        rc = kd_errf(err, errlen, KD_ENOMEM, "cannot allocate the permutation");
        goto out;
    }

    double start = kd_now(), step_time = 0.0;
    size_t trained = 0;
    uint64_t steps = 0;
    for (int e = 0; e < epochs; e++) {
        kd_shuffle_perm(opt->seed, (uint64_t)e, perm, train.n);
        double t0 = kd_now(), loss_sum = 0.0;
        float lr = sched.base_lr;
        for (size_t cur = 0; cur < train.n; cur += (size_t)batch) {
            int cnt = (int)(train.n - cur < (size_t)batch ? train.n - cur : (size_t)batch);
            lr = kd_lr_at(&sched, e + (double)cur / (double)train.n, epochs);
            kd_model_set_dropout_key(&m, steps++, 0);
            float loss = kd_par_step(par, &train, perm + cur, cnt, lr);
            if (!isfinite(loss)) {
                rc = kd_errf(err, errlen, KD_ERANGE,
                             "training diverged: loss is %s at epoch %d sample %zu (lower "
                             "spec.training.optimizer.learningRate)",
                             isnan(loss) ? "NaN" : "infinite", e + 1, cur);
                goto out;
            }
            loss_sum += (double)loss * cnt;
        }
        double dt = kd_now() - t0;
        step_time += dt;
        trained += train.n;

        double acc, tloss;
        rc = kd_evaluate(&m, &test, &acc, &tloss, err, errlen);
        if (rc != KD_OK)
            goto out;
        res->test_accuracy = acc;
        res->train_loss = loss_sum / (double)train.n;
        res->epochs = e + 1;
        if (opt->on_epoch) {
            kd_epoch_report r = {
                .epoch = e + 1,
                .epochs = epochs,
                .lr = lr,
                .train_loss = res->train_loss,
                .test_accuracy = acc,
                .test_loss = tloss,
                .samples_per_second = dt > 0 ? (double)train.n / dt : 0.0,
                .agents = 1,
                .wall_seconds = kd_now() - start,
            };
            opt->on_epoch(opt->on_epoch_arg, &r);
        }
        if (job->target_accuracy > 0.0 && acc >= job->target_accuracy)
            break;
    }
    res->agents = 1;
    res->wall_seconds = kd_now() - start;
    res->step_seconds = step_time;
    res->samples_per_second = step_time > 0 ? (double)trained / step_time : 0.0;
    rc = KD_OK;
out:
    free(perm);
    kd_par_free(par);
    kd_optim_free(&o);
    kd_model_free(&m);
    kd_dataset_free(&train);
    kd_dataset_free(&test);
    return rc;
}
