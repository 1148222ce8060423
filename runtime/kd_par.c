/*
 * kd_par: batch-split training step over helper threads (see kd_par.h for why).
 *
 * Each step is three phases separated by barriers: (1) every thread gathers its slice of
 * the batch and runs forward/backward on its own replica into its own gradient buffer;
 * (2) every thread combines the slices' gradients over its share of the parameter range
 * into the main model's gradient buffer and applies the optimizer to that share;
 * (3) all done, so the caller may read the parameters. Thread 0 is the caller.
 */
#include "kd_par.h"

#include "kd_layers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KD_CPU_RELAX() _mm_pause()
#else
#define KD_CPU_RELAX() ((void)0)
#endif

#include "kd_error.h"

/* Spin this many rounds before sleeping at a barrier: the phases of one step are a few
 * hundred microseconds and balanced, so a waiter usually sees the release while
 * spinning; if the other thread was descheduled (a busy machine) it sleeps instead of
 * burning the core the other thread needs. */
#define KD_BAR_SPIN 4000

/* A barrier whose participant count can be lowered (when a helper thread fails to
 * start), which pthread_barrier_t cannot do. */
typedef struct kd_bar {
    pthread_mutex_t mu;  /* guards waiting and count */
    pthread_cond_t cv;   /* sleeping waiters */
    int count;           /* participants */
    int waiting;         /* arrived in the current generation */
    atomic_uint gen;     /* bumped when a generation is released */
} kd_bar;

static int bar_init(kd_bar *b, int count)
{
    b->count = count;
    b->waiting = 0;
    atomic_init(&b->gen, 0);
    if (pthread_mutex_init(&b->mu, NULL) != 0)
        return -1;
    if (pthread_cond_init(&b->cv, NULL) != 0) {
        pthread_mutex_destroy(&b->mu);
        return -1;
    }
    return 0;
}

static void bar_destroy(kd_bar *b)
{
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
}

/* Releases the generation (b->mu held). */
static void bar_release(kd_bar *b)
{
    b->waiting = 0;
    atomic_fetch_add(&b->gen, 1);
    pthread_cond_broadcast(&b->cv);
}

static void bar_wait(kd_bar *b)
{
    pthread_mutex_lock(&b->mu);
    unsigned g = atomic_load(&b->gen);
    if (++b->waiting >= b->count) {
        bar_release(b);
        pthread_mutex_unlock(&b->mu);
        return;
    }
    pthread_mutex_unlock(&b->mu);
    for (int i = 0; i < KD_BAR_SPIN; i++) {
        if (atomic_load_explicit(&b->gen, memory_order_acquire) != g)
            return;
        KD_CPU_RELAX();
    }
    pthread_mutex_lock(&b->mu);
    while (atomic_load(&b->gen) == g)
        pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
}

static void bar_set_count(kd_bar *b, int count)
{
    pthread_mutex_lock(&b->mu);
    b->count = count;
    if (b->waiting > 0 && b->waiting >= count)
        bar_release(b);
    pthread_mutex_unlock(&b->mu);
}

typedef struct helper_arg {
    struct kd_par *p; /* the pool */
    int r;            /* this helper's index */
} helper_arg;

struct kd_par {
    int n;                                     /* threads, caller included */
    kd_model *m;                               /* main model (borrowed) */
    kd_optim *o;                               /* optimizer of m (borrowed) */
    kd_model rep[KD_PAR_MAX_THREADS];          /* replicas for threads 1..n-1 */
    float *xb[KD_PAR_MAX_THREADS];             /* per-thread batch slice features */
    int32_t *yb[KD_PAR_MAX_THREADS];           /* per-thread batch slice labels */
    size_t plo[KD_PAR_MAX_THREADS + 1];        /* parameter range of thread r: [plo[r], plo[r+1]) */
    pthread_t tid[KD_PAR_MAX_THREADS];         /* helper threads (index 1..n-1) */
    helper_arg args[KD_PAR_MAX_THREADS];       /* their arguments */
    int started;                               /* helpers running */
    int bars;                                  /* barriers initialised */
    kd_bar start, grads, done;                 /* the three phase boundaries */
    /* the current step, written by thread 0 before the start barrier */
    const kd_dataset *ds;
    const uint32_t *idx;
    int count;                                 /* samples in the step */
    int active;                                /* slices with at least one sample */
    float lr;
    int stop;                                  /* helpers exit at the next start */
    float loss[KD_PAR_MAX_THREADS];            /* mean loss of each slice */
};

static kd_model *model_of(kd_par *p, int r)
{
    return r == 0 ? p->m : &p->rep[r];
}

static void slice_of(const kd_par *p, int r, int *lo, int *hi)
{
    *lo = (int)((long)p->count * r / p->active);
    *hi = (int)((long)p->count * (r + 1) / p->active);
}

static void phase_compute(kd_par *p, int r)
{
    if (r >= p->active)
        return;
    int lo, hi;
    slice_of(p, r, &lo, &hi);
    kd_dataset_gather(p->ds, p->idx + lo, (size_t)(hi - lo), p->xb[r], p->yb[r]);
    if (r > 0 && p->m->net) /* dropout masks by the sample's place in the whole batch */
        kd_model_set_dropout_key(&p->rep[r], p->m->net->dropout_key,
                                 p->m->net->dropout_first + (uint64_t)lo);
    p->loss[r] = kd_model_forward_backward(model_of(p, r), p->xb[r], p->yb[r], hi - lo);
}

static void phase_update(kd_par *p, int r)
{
    size_t lo = p->plo[r], len = p->plo[r + 1] - p->plo[r];
    float *g0 = p->m->grads + lo;
    /* Each slice's gradient is of its own mean loss; weight by slice size so the sum is
     * the gradient of the mean over the whole batch. */
    int s0, s1;
    slice_of(p, 0, &s0, &s1);
    float w0 = (float)(s1 - s0) / (float)p->count;
    for (size_t i = 0; i < len; i++)
        g0[i] *= w0;
    for (int k = 1; k < p->active; k++) {
        slice_of(p, k, &s0, &s1);
        float w = (float)(s1 - s0) / (float)p->count;
        const float *gk = p->rep[k].grads + lo;
        for (size_t i = 0; i < len; i++)
            g0[i] += w * gk[i];
    }
    kd_optim_step_range(p->o, p->m->params, p->m->grads, p->lr, lo, len);
}

static void *helper_main(void *arg)
{
    helper_arg *a = arg;
    kd_par *p = a->p;
    for (;;) {
        bar_wait(&p->start);
        if (p->stop)
            break;
        phase_compute(p, a->r);
        bar_wait(&p->grads);
        phase_update(p, a->r);
        bar_wait(&p->done);
    }
    return NULL;
}

int kd_par_threads(const kd_par *p)
{
    return p->n;
}

int kd_par_init(kd_par **out, kd_model *m, kd_optim *o, int threads, char *err,
                size_t errlen)
{
    *out = NULL;
    if (threads < 1 || threads > KD_PAR_MAX_THREADS)
        return kd_errf(err, errlen, KD_ERANGE, "threads %d outside [1, %d]", threads,
                       KD_PAR_MAX_THREADS);
    if (threads > m->max_batch)
        threads = m->max_batch; /* no thread would ever get a sample */
    kd_par *p = calloc(1, sizeof *p);
    if (!p)
        return kd_errf(err, errlen, KD_ENOMEM, "cannot allocate the thread pool");
    p->n = threads;
    p->m = m;
    p->o = o;
    int slice = (m->max_batch + threads - 1) / threads;
    int rc = KD_OK;
    for (int r = 0; r < threads; r++) {
        if (r > 0) {
            rc = kd_model_init_replica(&p->rep[r], m, slice, err, errlen);
            if (rc != KD_OK)
                goto fail;
        }
        /* Thread 0 also gathers whole batches when it runs alone. */
        int cap = threads == 1 ? m->max_batch : slice;
        p->xb[r] = aligned_alloc(64, ((size_t)cap * (size_t)m->sizes[0] * sizeof(float) + 63)
                                         / 64 * 64);
        p->yb[r] = malloc((size_t)cap * sizeof(int32_t));
        if (!p->xb[r] || !p->yb[r]) {
            rc = kd_errf(err, errlen, KD_ENOMEM, "cannot allocate the batch buffers");
            goto fail;
        }
    }
    /* Parameter shares on 64-byte boundaries so that threads never write one cache line. */
    for (int r = 0; r <= threads; r++) {
        size_t b = m->n_params * (size_t)r / (size_t)threads;
        p->plo[r] = r == threads ? m->n_params : b / 16 * 16;
    }
    if (threads > 1) {
        if (bar_init(&p->start, threads) != 0 || bar_init(&p->grads, threads) != 0 ||
            bar_init(&p->done, threads) != 0) {
            rc = kd_errf(err, errlen, KD_EINTERNAL, "cannot create barriers");
            goto fail;
        }
        p->bars = 1;
        for (int r = 1; r < threads; r++) {
            p->args[r] = (helper_arg){.p = p, .r = r};
            if (pthread_create(&p->tid[r], NULL, helper_main, &p->args[r]) != 0)
                break;
            p->started = r;
        }
        if (p->started + 1 < threads) {
            /* Not every helper started: let the ones that did leave, then fail. */
            p->stop = 1;
            if (p->started > 0)
                bar_set_count(&p->start, p->started);
            rc = kd_errf(err, errlen, KD_EINTERNAL, "cannot start %d helper threads",
                         threads - 1);
            goto fail;
        }
    }
    *out = p;
    return KD_OK;
fail:
    kd_par_free(p);
    return rc;
}

float kd_par_step(kd_par *p, const kd_dataset *ds, const uint32_t *idx, int count, float lr)
{
    if (p->n == 1) {
        kd_dataset_gather(ds, idx, (size_t)count, p->xb[0], p->yb[0]);
        float loss = kd_model_forward_backward(p->m, p->xb[0], p->yb[0], count);
        kd_optim_step(p->o, p->m->params, p->m->grads, lr);
        return loss;
    }
    p->ds = ds;
    p->idx = idx;
    p->count = count;
    p->active = count < p->n ? count : p->n;
    p->lr = lr;
    bar_wait(&p->start);
    phase_compute(p, 0);
    bar_wait(&p->grads);
    phase_update(p, 0);
    bar_wait(&p->done);
    kd_optim_advance(p->o);
    float loss = 0.0f;
    for (int k = 0; k < p->active; k++) {
        int lo, hi;
        slice_of(p, k, &lo, &hi);
        loss += p->loss[k] * (float)(hi - lo) / (float)count;
    }
    return loss;
}

void kd_par_free(kd_par *p)
{
    if (!p)
        return;
    if (p->started > 0) {
        if (!p->stop) {
            p->stop = 1;
            bar_wait(&p->start);
        }
        for (int r = 1; r <= p->started; r++)
            pthread_join(p->tid[r], NULL);
    }
    if (p->bars) {
        bar_destroy(&p->start);
        bar_destroy(&p->grads);
        bar_destroy(&p->done);
    }
    for (int r = 0; r < KD_PAR_MAX_THREADS; r++) {
        kd_model_free(&p->rep[r]);
        free(p->xb[r]);
        free(p->yb[r]);
    }
    free(p);
}
