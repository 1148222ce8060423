/*
 * metrics: counters and gauges with labels and their Prometheus text rendering
 * (metrics.h).
 *
 * Each family keeps its series in an array sorted by label values, so lookups are a
 * binary search and the output order is stable (scrapes and tests can compare text).
 * One mutex per registry guards everything: updates are a few hundred nanoseconds and
 * scrapes are rare, so finer locking would buy nothing.
 */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "kd_error.h"

typedef struct opm_series {
    char **values; /* label values, one per label name (owned) */
    double value;  /* current value; a histogram's count */
    double *counts; /* histogram: observations per bucket, nbounds + 1 (owned), else NULL */
    double sum;     /* histogram: sum of the observations */
} opm_series;

struct opm_family {
    opm_registry *reg;                  /* owner, for its lock */
    opm_type type;                      /* counter or gauge */
    char *name;                         /* metric name (owned) */
    char *help;                         /* help text (owned) */
    size_t nlabels;                     /* number of label names */
    char *labels[OPM_MAX_LABELS];       /* label names (owned) */
    opm_series *series;                 /* sorted by label values */
    double bounds[OPM_MAX_BUCKETS];     /* histogram: bucket upper bounds, ascending */
    size_t nbounds;                     /* histogram: number of bounds */
    size_t nseries, capseries;          /* used and allocated entries of series */
    struct opm_family *next;            /* registration order */
};

struct opm_registry {
    pthread_mutex_t lock; /* guards every family and series */
    opm_family *head;     /* first registered family */
    opm_family *tail;     /* last registered family, for appending */
};

int opm_registry_new(opm_registry **out)
{
    if (out == NULL)
        return KD_EINVAL;
    opm_registry *r = calloc(1, sizeof *r);
    if (r == NULL)
        return KD_ENOMEM;
    if (pthread_mutex_init(&r->lock, NULL) != 0) {
        free(r);
        return KD_ENOMEM;
    }
    *out = r;
    return KD_OK;
}

static void series_clear(opm_series *s, size_t nlabels)
{
    for (size_t i = 0; i < nlabels; i++)
        free(s->values[i]);
    free(s->values);
    free(s->counts);
}

static void family_free(opm_family *f)
{
    for (size_t i = 0; i < f->nseries; i++)
        series_clear(&f->series[i], f->nlabels);
    free(f->series);
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->labels[i]);
    free(f->name);
    free(f->help);
    free(f);
}

void opm_registry_free(opm_registry **reg)
{
    if (reg == NULL || *reg == NULL)
        return;
    opm_family *f = (*reg)->head;
    while (f != NULL) {
        opm_family *next = f->next;
        family_free(f);
        f = next;
    }
    pthread_mutex_destroy(&(*reg)->lock);
    free(*reg);
    *reg = NULL;
}

static int valid_name(const char *s, int allow_colon)
{
    if (s == NULL || s[0] == '\0')
        return 0;
    for (size_t i = 0; s[i] != '\0'; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                 (allow_colon && c == ':') || (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return 1;
}

static int series_at(opm_family *f, const char *const *values, opm_series **out);

static int family_add(opm_registry *reg, opm_type type, const char *name, const char *help,
                      size_t nlabels, const char *const *label_names, const double *bounds,
                      size_t nbounds, opm_family **out, char *err, size_t errlen)
{
    if (reg == NULL || out == NULL)
        return kd_errf(err, errlen, KD_EINVAL, "metrics: bad arguments");
    if (!valid_name(name, 1))
        return kd_errf(err, errlen, KD_EINVAL, "metrics: bad metric name '%s'",
                       name != NULL ? name : "(null)");
    if (help == NULL)
        return kd_errf(err, errlen, KD_EINVAL, "metrics: %s has no help text", name);
    if (nlabels > OPM_MAX_LABELS || (nlabels > 0 && label_names == NULL))
        return kd_errf(err, errlen, KD_EINVAL, "metrics: %s: at most %d labels", name,
                       OPM_MAX_LABELS);
    for (size_t i = 0; i < nlabels; i++) {
        const char *l = label_names[i];
        if (!valid_name(l, 0) || strncmp(l, "__", 2) == 0)
            return kd_errf(err, errlen, KD_EINVAL, "metrics: %s: bad label name '%s'", name,
                           l != NULL ? l : "(null)");
        for (size_t j = 0; j < i; j++)
            if (strcmp(label_names[j], l) == 0)
                return kd_errf(err, errlen, KD_EINVAL, "metrics: %s: label '%s' repeated",
                               name, l);
    }

    opm_family *f = calloc(1, sizeof *f);
    if (f == NULL)
        return kd_errf(err, errlen, KD_ENOMEM, "metrics: out of memory");
    f->reg = reg;
    f->type = type;
    f->nlabels = nlabels;
    for (size_t i = 0; i < nbounds; i++)
        f->bounds[i] = bounds[i];
    f->nbounds = nbounds;
    f->name = strdup(name);
    f->help = strdup(help);
    int ok = f->name != NULL && f->help != NULL;
    for (size_t i = 0; i < nlabels && ok; i++) {
        f->labels[i] = strdup(label_names[i]);
        ok = f->labels[i] != NULL;
    }
    if (!ok) {
        family_free(f);
        return kd_errf(err, errlen, KD_ENOMEM, "metrics: out of memory");
    }

    pthread_mutex_lock(&reg->lock);
    for (opm_family *g = reg->head; g != NULL; g = g->next) {
        if (strcmp(g->name, name) == 0) {
            pthread_mutex_unlock(&reg->lock);
            family_free(f);
            return kd_errf(err, errlen, KD_EEXISTS, "metrics: %s registered twice", name);
        }
    }
    if (reg->tail != NULL)
        reg->tail->next = f;
    else
        reg->head = f;
    reg->tail = f;
    pthread_mutex_unlock(&reg->lock);
    *out = f;
    if (nlabels == 0) { /* a family without labels is always exposed, starting at 0 */
        opm_series *s;
        pthread_mutex_lock(&reg->lock);
        int rc = series_at(f, NULL, &s);
        pthread_mutex_unlock(&reg->lock);
        return rc;
    }
    return KD_OK;
}

int opm_family_add(opm_registry *reg, opm_type type, const char *name, const char *help,
                   size_t nlabels, const char *const *label_names, opm_family **out,
                   char *err, size_t errlen)
{
    if (type != OPM_COUNTER && type != OPM_GAUGE)
        return kd_errf(err, errlen, KD_EINVAL, "metrics: bad arguments");
    return family_add(reg, type, name, help, nlabels, label_names, NULL, 0, out, err, errlen);
}

int opm_histogram_add(opm_registry *reg, const char *name, const char *help, size_t nlabels,
                      const char *const *label_names, const double *bounds, size_t nbounds,
                      opm_family **out, char *err, size_t errlen)
{
    if (bounds == NULL || nbounds == 0 || nbounds > OPM_MAX_BUCKETS)
        return kd_errf(err, errlen, KD_EINVAL, "metrics: %s: 1 to %d bucket bounds",
                       name != NULL ? name : "(null)", OPM_MAX_BUCKETS);
    for (size_t i = 0; i < nbounds; i++)
        if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1])))
            return kd_errf(err, errlen, KD_EINVAL,
                           "metrics: %s: bucket bounds must be finite and ascending",
                           name != NULL ? name : "(null)");
    return family_add(reg, OPM_HISTOGRAM, name, help, nlabels, label_names, bounds, nbounds,
                      out, err, errlen);
}

static int compare_values(const opm_family *f, char *const *a, const char *const *b)
{
    for (size_t i = 0; i < f->nlabels; i++) {
        int c = strcmp(a[i], b[i]);
        if (c != 0)
            return c;
    }
    return 0;
}

/* Binary search: returns 1 and the index when found, else 0 and the insertion point.
 * Caller holds the lock. */
static int find_series(const opm_family *f, const char *const *values, size_t *pos)
{
    size_t lo = 0, hi = f->nseries;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = compare_values(f, f->series[mid].values, values);
        if (c == 0) {
            *pos = mid;
            return 1;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *pos = lo;
    return 0;
}

static int check_values(const opm_family *f, const char *const *values)
{
    if (f->nlabels > 0 && values == NULL)
        return KD_EINVAL;
    for (size_t i = 0; i < f->nlabels; i++) {
        if (values[i] == NULL)
            return KD_EINVAL;
        if (strlen(values[i]) > OPM_MAX_VALUE_LEN)
            return KD_ETOOBIG;
    }
    return KD_OK;
}

/* Finds or creates the series; caller holds the lock. */
static int series_at(opm_family *f, const char *const *values, opm_series **out)
{
    size_t pos;
    if (find_series(f, values, &pos)) {
        *out = &f->series[pos];
        return KD_OK;
    }
    if (f->nseries == OPM_MAX_SERIES)
        return KD_ETOOBIG;
    if (f->nseries == f->capseries) {
        size_t cap = f->capseries ? f->capseries * 2 : 8;
        opm_series *grown = realloc(f->series, cap * sizeof *grown);
        if (grown == NULL)
            return KD_ENOMEM;
        f->series = grown;
        f->capseries = cap;
    }
    opm_series s = {NULL, 0.0, NULL, 0.0};
    if (f->type == OPM_HISTOGRAM) {
        s.counts = calloc(f->nbounds + 1, sizeof *s.counts);
        if (s.counts == NULL)
            return KD_ENOMEM;
    }
    if (f->nlabels > 0) {
        s.values = calloc(f->nlabels, sizeof *s.values);
        if (s.values == NULL)
            return KD_ENOMEM;
        for (size_t i = 0; i < f->nlabels; i++) {
            s.values[i] = strdup(values[i]);
            if (s.values[i] == NULL) {
                series_clear(&s, f->nlabels);
                return KD_ENOMEM;
            }
        }
    }
    memmove(&f->series[pos + 1], &f->series[pos], (f->nseries - pos) * sizeof *f->series);
    f->series[pos] = s;
    f->nseries++;
    *out = &f->series[pos];
    return KD_OK;
}

static int update(opm_family *f, const char *const *values, double v, int is_set)
{
    if (f == NULL)
        return KD_EINVAL;
    int rc = check_values(f, values);
    if (rc != KD_OK)
        return rc;
    if ((is_set && f->type != OPM_GAUGE) || f->type == OPM_HISTOGRAM)
        return KD_EINVAL;
    if (!is_set && f->type == OPM_COUNTER && !(v >= 0.0))
        return KD_EINVAL;
    pthread_mutex_lock(&f->reg->lock);
    opm_series *s = NULL;
    rc = series_at(f, values, &s);
    if (rc == KD_OK) {
        if (is_set)
            s->value = v;
        else
            s->value += v;
    }
    pthread_mutex_unlock(&f->reg->lock);
    return rc;
}

int opm_observe(opm_family *f, const char *const *values, double v)
{
    if (f == NULL || f->type != OPM_HISTOGRAM || isnan(v))
        return KD_EINVAL;
    int rc = check_values(f, values);
    if (rc != KD_OK)
        return rc;
    pthread_mutex_lock(&f->reg->lock);
    opm_series *s = NULL;
    rc = series_at(f, values, &s);
    if (rc == KD_OK) {
        size_t b = 0;
        while (b < f->nbounds && v > f->bounds[b])
            b++;
        s->counts[b] += 1;
        s->sum += v;
        s->value += 1;
    }
    pthread_mutex_unlock(&f->reg->lock);
    return rc;
}

int opm_add(opm_family *fam, const char *const *values, double delta)
{
    return update(fam, values, delta, 0);
}

int opm_set(opm_family *fam, const char *const *values, double value)
{
    return update(fam, values, value, 1);
}

int opm_get(opm_family *fam, const char *const *values, double *value)
{
    if (fam == NULL || value == NULL)
        return KD_EINVAL;
    int rc = check_values(fam, values);
    if (rc != KD_OK)
        return rc;
    pthread_mutex_lock(&fam->reg->lock);
    size_t pos;
    int found = find_series(fam, values, &pos);
    if (found)
        *value = fam->series[pos].value;
    pthread_mutex_unlock(&fam->reg->lock);
    return found ? KD_OK : KD_ENOTFOUND;
}

int opm_remove(opm_family *fam, const char *const *values)
{
    if (fam == NULL)
        return KD_EINVAL;
    int rc = check_values(fam, values);
    if (rc != KD_OK)
        return rc;
    pthread_mutex_lock(&fam->reg->lock);
    size_t pos;
    int found = find_series(fam, values, &pos);
    if (found) {
        series_clear(&fam->series[pos], fam->nlabels);
        memmove(&fam->series[pos], &fam->series[pos + 1],
                (fam->nseries - pos - 1) * sizeof *fam->series);
        fam->nseries--;
    }
    pthread_mutex_unlock(&fam->reg->lock);
    return found ? KD_OK : KD_ENOTFOUND;
}

/* A growing output buffer; a failed append sets failed and later appends do nothing. */
typedef struct opm_buf {
    char *data;  /* NUL-terminated text */
    size_t len;  /* bytes used, without the NUL */
    size_t cap;  /* bytes allocated */
    int failed;  /* an allocation failed */
} opm_buf;

static void buf_reserve(opm_buf *b, size_t extra)
{
    if (b->failed || b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *grown = realloc(b->data, cap);
    if (grown == NULL) {
        b->failed = 1;
        return;
    }
    b->data = grown;
    b->cap = cap;
}

static void buf_put(opm_buf *b, const char *s, size_t n)
{
    buf_reserve(b, n);
    if (b->failed)
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void buf_str(opm_buf *b, const char *s) { buf_put(b, s, strlen(s)); }

/* Escapes backslash and newline (help text), plus double quotes (label values). */
static void buf_escaped(opm_buf *b, const char *s, int quotes)
{
    for (const char *p = s; *p != '\0'; p++) {
        if (*p == '\\')
            buf_put(b, "\\\\", 2);
        else if (*p == '\n')
            buf_put(b, "\\n", 2);
        else if (quotes && *p == '"')
            buf_put(b, "\\\"", 2);
        else
            buf_put(b, p, 1);
    }
}

static void buf_number(opm_buf *b, double v)
{
    char num[64];
    if (isnan(v))
        snprintf(num, sizeof num, "NaN");
    else if (isinf(v))
        snprintf(num, sizeof num, "%s", v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 9007199254740992.0) /* exact integers, 2^53 */
        snprintf(num, sizeof num, "%.0f", v);
    else
        snprintf(num, sizeof num, "%.17g", v);
    buf_str(b, num);
}

/* The labels of a series, with an extra le="bound" when le is not NULL. */
static void buf_labels(opm_buf *b, const opm_family *f, const opm_series *s, const char *le)
{
    size_t n = 0;
    for (size_t l = 0; l < f->nlabels; l++, n++) {
        buf_str(b, n == 0 ? "{" : ",");
        buf_str(b, f->labels[l]);
        buf_str(b, "=\"");
        buf_escaped(b, s->values[l], 1);
        buf_str(b, "\"");
    }
    if (le != NULL) {
        buf_str(b, n == 0 ? "{le=\"" : ",le=\"");
        buf_str(b, le);
        buf_str(b, "\"");
        n++;
    }
    buf_str(b, n > 0 ? "} " : " ");
}

static void render_histogram(opm_buf *b, const opm_family *f, const opm_series *s)
{
    double cum = 0;
    for (size_t k = 0; k <= f->nbounds; k++) {
        char le[64];
        if (k < f->nbounds)
            snprintf(le, sizeof le, "%g", f->bounds[k]);
        else
            snprintf(le, sizeof le, "+Inf");
        cum += s->counts[k];
        buf_str(b, f->name);
        buf_str(b, "_bucket");
        buf_labels(b, f, s, le);
        buf_number(b, cum);
        buf_str(b, "\n");
    }
    buf_str(b, f->name);
    buf_str(b, "_sum");
    buf_labels(b, f, s, NULL);
    buf_number(b, s->sum);
    buf_str(b, "\n");
    buf_str(b, f->name);
    buf_str(b, "_count");
    buf_labels(b, f, s, NULL);
    buf_number(b, s->value);
    buf_str(b, "\n");
}

int opm_render(opm_registry *reg, char **text, size_t *len)
{
    if (reg == NULL || text == NULL || len == NULL)
        return KD_EINVAL;
    opm_buf b = {NULL, 0, 0, 0};
    buf_reserve(&b, 0);
    if (!b.failed)
        b.data[0] = '\0';
    pthread_mutex_lock(&reg->lock);
    for (opm_family *f = reg->head; f != NULL; f = f->next) {
        buf_str(&b, "# HELP ");
        buf_str(&b, f->name);
        buf_str(&b, " ");
        buf_escaped(&b, f->help, 0);
        buf_str(&b, "\n# TYPE ");
        buf_str(&b, f->name);
        buf_str(&b, f->type == OPM_COUNTER ? " counter\n"
                    : f->type == OPM_GAUGE ? " gauge\n" : " histogram\n");
        for (size_t i = 0; i < f->nseries; i++) {
            const opm_series *s = &f->series[i];
            if (f->type == OPM_HISTOGRAM) {
                render_histogram(&b, f, s);
                continue;
            }
            buf_str(&b, f->name);
            for (size_t l = 0; l < f->nlabels; l++) {
                buf_str(&b, l == 0 ? "{" : ",");
                buf_str(&b, f->labels[l]);
                buf_str(&b, "=\"");
                buf_escaped(&b, s->values[l], 1);
                buf_str(&b, "\"");
            }
            buf_str(&b, f->nlabels > 0 ? "} " : " ");
            buf_number(&b, s->value);
            buf_str(&b, "\n");
        }
    }
    pthread_mutex_unlock(&reg->lock);
    if (b.failed) {
        free(b.data);
        return KD_ENOMEM;
    }
    *text = b.data;
    *len = b.len;
    return KD_OK;
}

static const char *const op_phases[] = {"Pending", "Running", "Succeeded", "Failed",
                                        "Suspended"};

int op_metrics_init(op_metrics *m, char *err, size_t errlen)
{
    if (m == NULL)
        return kd_errf(err, errlen, KD_EINVAL, "metrics: NULL");
    memset(m, 0, sizeof *m);
    int rc = opm_registry_new(&m->reg);
    if (rc != KD_OK)
        return kd_errf(err, errlen, rc, "metrics: out of memory");
    static const char *const l_result[] = {"result"};
    static const char *const l_component[] = {"component"};
    static const char *const l_resource[] = {"resource"};
    static const char *const l_decision[] = {"policy", "action"};
    static const char *const l_policy[] = {"policy"};
    static const char *const l_job[] = {"namespace", "job"};
    static const char *const l_phase[] = {"phase"};
    static const char *const l_version[] = {"version"};
    static const char *const l_reason[] = {"policy", "reason"};
    static const char *const l_jobname[] = {"namespace", "name"};
    const struct {
        opm_family **slot;
        opm_type type;
        const char *name;
        const char *help;
        size_t nlabels;
        const char *const *labels;
    } defs[] = {
        {&m->reconciles, OPM_COUNTER, "kadet_reconciles_total",
         "AgentJob reconciles by result (success, error, requeue).", 1, l_result},
        {&m->errors, OPM_COUNTER, "kadet_errors_total", "Errors by component.", 1, l_component},
        {&m->queue_depth, OPM_GAUGE, "kadet_workqueue_depth",
         "Keys waiting in the work queue.", 0, NULL},
        {&m->watch_restarts, OPM_COUNTER, "kadet_watch_restarts_total",
         "Watches restarted (disconnect or 410 relist) by resource.", 1, l_resource},
        {&m->sched_decisions, OPM_COUNTER, "kadet_scheduling_decisions_total",
         "Scheduling decisions by policy and action (up, down, hold).", 2, l_decision},
        {&m->sched_reward_sum, OPM_GAUGE, "kadet_scheduling_reward_sum",
         "Sum of the rewards observed by each policy.", 1, l_policy},
        {&m->sched_reward, OPM_GAUGE, "kadet_scheduling_last_reward",
         "Reward of the last decision interval of each job.", 2, l_job},
        {&m->jobs, OPM_GAUGE, "kadet_jobs", "AgentJobs by phase.", 1, l_phase},
        {&m->leader, OPM_GAUGE, "kadet_leader",
         "1 while this replica holds the leader Lease (or runs without election).", 0, NULL},
        {&m->build_info, OPM_GAUGE, "kadet_build_info", "Version of kadet-operator.", 1,
         l_version},
        {&m->start_time, OPM_GAUGE, "process_start_time_seconds",
         "Start time of the process since the Unix epoch, in seconds.", 0, NULL},
        {&m->sched_reasons, OPM_COUNTER, "kadet_scheduling_decisions_by_reason_total",
         "Scheduling decisions by policy and reason (the reason's kind, without numbers).", 2,
         l_reason},
        {&m->job_agents, OPM_GAUGE, "kadet_job_agents", "Ready agents of each AgentJob.", 2,
         l_jobname},
        {&m->job_desired, OPM_GAUGE, "kadet_job_desired_agents",
         "Agents the scheduler wants for each AgentJob.", 2, l_jobname},
        {&m->job_batch, OPM_GAUGE, "kadet_job_batch_size",
         "Per-agent batch of each AgentJob's running world.", 2, l_jobname},
        {&m->job_speed, OPM_GAUGE, "kadet_job_samples_per_second",
         "Training throughput of each AgentJob.", 2, l_jobname},
        {&m->job_loss, OPM_GAUGE, "kadet_job_loss", "Training loss of each AgentJob.", 2,
         l_jobname},
        {&m->job_accuracy, OPM_GAUGE, "kadet_job_accuracy",
         "Test accuracy of each AgentJob's last evaluated epoch (absent before the first).", 2,
         l_jobname},
        {&m->job_epoch, OPM_GAUGE, "kadet_job_epoch", "Current epoch of each AgentJob.", 2,
         l_jobname},
    };
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) {
        rc = opm_family_add(m->reg, defs[i].type, defs[i].name, defs[i].help, defs[i].nlabels,
                            defs[i].labels, defs[i].slot, err, errlen);
        if (rc != KD_OK) {
            op_metrics_free(m);
            return rc;
        }
    }
    /* Reconciles take milliseconds (API round trips); seconds mean a slow API server. */
    static const double reconcile_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                              0.25, 0.5, 1, 2.5, 5, 10};
    rc = opm_histogram_add(m->reg, "kadet_reconcile_duration_seconds",
                           "Time of one AgentJob reconcile (sync), in seconds.", 0, NULL,
                           reconcile_bounds,
                           sizeof reconcile_bounds / sizeof reconcile_bounds[0],
                           &m->reconcile_seconds, err, errlen);
    if (rc != KD_OK) {
        op_metrics_free(m);
        return rc;
    }
    for (size_t i = 0; i < sizeof op_phases / sizeof op_phases[0] && rc == KD_OK; i++) {
        const char *v[] = {op_phases[i]};
        rc = opm_set(m->jobs, v, 0.0);
    }
    if (rc == KD_OK) {
        const char *v[] = {KADET_VERSION};
        rc = opm_set(m->build_info, v, 1.0);
    }
    if (rc == KD_OK) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        rc = opm_set(m->start_time, NULL, (double)ts.tv_sec + ts.tv_nsec / 1e9);
    }
    if (rc != KD_OK) {
        op_metrics_free(m);
        return kd_errf(err, errlen, rc, "metrics: %s", kd_strerror(rc));
    }
    return KD_OK;
}

void op_metrics_free(op_metrics *m)
{
    if (m == NULL)
        return;
    opm_registry_free(&m->reg);
    memset(m, 0, sizeof *m);
}

/* One gauge from a number in the status, or no series when it is absent. */
static void job_gauge(opm_family *f, const char *const *v, const json_t *x)
{
    if (json_is_number(x))
        opm_set(f, v, json_number_value(x));
    else
        opm_remove(f, v);
}

void op_metrics_set_job(op_metrics *m, const char *ns, const char *name, const json_t *status)
{
    if (m == NULL || m->reg == NULL || ns == NULL || name == NULL)
        return;
    const char *v[] = {ns, name};
    const json_t *agents = json_object_get(status, "agents");
    const json_t *pr = json_object_get(status, "progress");
    job_gauge(m->job_agents, v, json_object_get(agents, "ready"));
    job_gauge(m->job_desired, v, json_object_get(agents, "desired"));
    job_gauge(m->job_batch, v, json_object_get(pr, "batchSize"));
    job_gauge(m->job_speed, v, json_object_get(pr, "samplesPerSecond"));
    job_gauge(m->job_loss, v, json_object_get(pr, "loss"));
    job_gauge(m->job_accuracy, v, json_object_get(pr, "accuracy"));
    job_gauge(m->job_epoch, v, json_object_get(pr, "epoch"));
}

void op_metrics_remove_job(op_metrics *m, const char *ns, const char *name)
{
    if (m == NULL || m->reg == NULL || ns == NULL || name == NULL)
        return;
    const char *v[] = {ns, name};
    opm_family *fams[] = {m->job_agents, m->job_desired, m->job_batch, m->job_speed,
                          m->job_loss, m->job_accuracy, m->job_epoch};
    for (size_t i = 0; i < sizeof fams / sizeof fams[0]; i++)
        opm_remove(fams[i], v);
}
