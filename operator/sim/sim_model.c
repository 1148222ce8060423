/*
 * sim_model.c: the job model of kadet-sim, built from the Pollux traces, and the workload
 * reader. Compute time per step depends only on the local batch size (the traces show it
 * is the same whatever the placement), so it is averaged over every row by local batch;
 * synchronisation time depends on the agent and node counts and is averaged over rows by
 * (agents, nodes), with a per-agent-count multi-node mean to fill placements that were
 * never measured. Every file is checked: a missing column, a non-number or a negative
 * time is an error naming the file and line, never a crash.
 */
#include "sim.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_error.h"

#define SIM_LINE_MAX 512
#define SIM_FIELDS 8

/* Splits line in place at commas; trims the newline. Returns the field count. */
static int sim_split(char *line, char **f, int max)
{
    int n = 0;
    size_t len = strlen(line);
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        line[--len] = '\0';
    char *p = line;
    while (n < max) {
        f[n++] = p;
        char *c = strchr(p, ',');
        if (!c)
            break;
        *c = '\0';
        p = c + 1;
    }
    return n;
}

static int sim_num(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno != 0 || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

/* Accumulators while reading one app's traces. */
typedef struct sim_acc {
    double comp_sum[SIM_MAX_LB];
    int comp_cnt[SIM_MAX_LB];
    double sync_sum[SIM_MAX_N + 1][SIM_MAX_K + 1];
    int sync_cnt[SIM_MAX_N + 1][SIM_MAX_K + 1];
} sim_acc;

static int sim_add_row(sim_app *a, sim_acc *acc, int n, int k, double lb, double step,
                       double sync)
{
    if (n < 1 || k < 1 || k > n || lb <= 0 || step <= 0 || sync < 0 || sync > step)
        return -1;
    int i;
    for (i = 0; i < a->n_lb; i++)
        if (a->lb[i] == lb)
            break;
    if (i == a->n_lb) {
        if (a->n_lb == SIM_MAX_LB)
            return 0; /* more batch sizes than kept: the rest only add sync samples */
        a->lb[a->n_lb++] = lb;
    }
    acc->comp_sum[i] += step - sync;
    acc->comp_cnt[i]++;
    if (n <= SIM_MAX_N && k <= SIM_MAX_K) {
        acc->sync_sum[n][k] += sync;
        acc->sync_cnt[n][k]++;
    }
    return 0;
}

/* Reads placements.csv (placement digits) or scalability.csv (num_nodes, num_replicas). */
static int sim_read_perf(sim_app *a, sim_acc *acc, const char *path, int scal, char *err,
                         size_t errlen)
{
    char line[SIM_LINE_MAX], *f[SIM_FIELDS];
    FILE *fp = fopen(path, "r");
    if (!fp)
        return kd_errf(err, errlen, KD_EIO, "%s: %s", path, strerror(errno));
    int lineno = 0, rows = 0, rc = KD_OK;
    while (fgets(line, sizeof(line), fp)) {
        lineno++;
        if (lineno == 1)
            continue; /* header */
        if (line[0] == '\n' || line[0] == '\0')
            continue;
        int nf = sim_split(line, f, SIM_FIELDS);
        double v[4];
        int n = 0, k = 0;
        if (scal) {
            double sync;
            if (nf != 5 || sim_num(f[0], &v[0]) || sim_num(f[1], &v[1]) || sim_num(f[2], &v[2]) ||
                sim_num(f[3], &v[3]) || sim_num(f[4], &sync)) {
                rc = kd_errf(err, errlen, KD_EPARSE, "%s:%d: want 5 numbers", path, lineno);
                break;
            }
            k = v[0] >= 1 && v[0] <= 100000 ? (int)v[0] : -1;
            n = v[1] >= 1 && v[1] <= 100000 ? (int)v[1] : -1;
            if (sim_add_row(a, acc, n, k, v[2], v[3], sync) != 0) {
                rc = kd_errf(err, errlen, KD_ERANGE, "%s:%d: values out of range", path, lineno);
                break;
            }
        } else {
            if (nf != 4 || sim_num(f[1], &v[1]) || sim_num(f[2], &v[2]) || sim_num(f[3], &v[3])) {
                rc = kd_errf(err, errlen, KD_EPARSE, "%s:%d: want placement and 3 numbers", path,
                              lineno);
                break;
            }
            for (const char *c = f[0]; *c; c++) {
                if (!isdigit((unsigned char)*c) || *c == '0') {
                    n = -1;
                    break;
                }
                n += *c - '0';
                k++;
            }
            if (n <= 0 || sim_add_row(a, acc, n, k, v[1], v[2], v[3]) != 0) {
                rc = kd_errf(err, errlen, KD_ERANGE, "%s:%d: bad placement or values", path,
                              lineno);
                break;
            }
        }
        rows++;
    }
    if (rc == KD_OK && ferror(fp))
        rc = kd_errf(err, errlen, KD_EIO, "%s: read error", path);
    fclose(fp);
    if (rc == KD_OK && rows == 0)
        rc = kd_errf(err, errlen, KD_EFORMAT, "%s: no data rows", path);
    return rc;
}

/* Last iteration count of a validation trace. */
static int sim_read_validation(const char *path, double *iters, char *err, size_t errlen)
{
    char line[SIM_LINE_MAX], *f[SIM_FIELDS];
    FILE *fp = fopen(path, "r");
    if (!fp)
        return kd_errf(err, errlen, KD_EIO, "%s: %s", path, strerror(errno));
    int lineno = 0;
    double last = -1;
    while (fgets(line, sizeof(line), fp)) {
        lineno++;
        if (lineno == 1 || line[0] == '\n')
            continue;
        double v;
        if (sim_split(line, f, SIM_FIELDS) < 2 || sim_num(f[1], &v) || v < 0) {
            fclose(fp);
            return kd_errf(err, errlen, KD_EPARSE, "%s:%d: bad iteration", path, lineno);
        }
        last = v;
    }
    fclose(fp);
    if (!(last > 0))
        return kd_errf(err, errlen, KD_EFORMAT, "%s: no epochs", path);
    *iters = last;
    return KD_OK;
}

static int sim_cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

int sim_app_load(sim_app *a, const char *traces_dir, const char *app, char *err, size_t errlen)
{
    char path[2048];
    sim_acc *acc = calloc(1, sizeof(*acc));
    int rc;

    if (!acc)
        return kd_errf(err, errlen, KD_ENOMEM, "out of memory");
    memset(a, 0, sizeof(*a));
    snprintf(a->name, sizeof(a->name), "%s", app);
    snprintf(path, sizeof(path), "%s/%s/placements.csv", traces_dir, app);
    rc = sim_read_perf(a, acc, path, 0, err, errlen);
    if (rc == KD_OK) {
        snprintf(path, sizeof(path), "%s/%s/scalability.csv", traces_dir, app);
        rc = sim_read_perf(a, acc, path, 1, err, errlen);
    }
    if (rc != KD_OK) {
        free(acc);
        return rc;
    }
    /* compute time by local batch, ascending */
    double pairs[SIM_MAX_LB][2];
    for (int i = 0; i < a->n_lb; i++) {
        pairs[i][0] = a->lb[i];
        pairs[i][1] = acc->comp_sum[i] / acc->comp_cnt[i];
    }
    qsort(pairs, (size_t)a->n_lb, sizeof(pairs[0]), sim_cmp_double);
    for (int i = 0; i < a->n_lb; i++) {
        a->lb[i] = pairs[i][0];
        a->comp[i] = pairs[i][1];
    }
    for (int n = 0; n <= SIM_MAX_N; n++) {
        double msum = 0;
        int mcnt = 0;
        for (int k = 0; k <= SIM_MAX_K; k++) {
            a->sync[n][k] = acc->sync_cnt[n][k] ? acc->sync_sum[n][k] / acc->sync_cnt[n][k] : -1;
            if (k >= 2 && acc->sync_cnt[n][k]) {
                msum += acc->sync_sum[n][k];
                mcnt += acc->sync_cnt[n][k];
            }
        }
        a->sync_multi[n] = mcnt ? msum / mcnt : -1;
    }
    free(acc);
    if (a->sync[1][1] < 0)
        return kd_errf(err, errlen, KD_EFORMAT, "%s/%s: no single-agent measurement",
                        traces_dir, app);

    /* validation traces: validation-<B>.csv */
    snprintf(path, sizeof(path), "%s/%s", traces_dir, app);
    DIR *d = opendir(path);
    if (!d)
        return kd_errf(err, errlen, KD_EIO, "%s: %s", path, strerror(errno));
    struct dirent *de;
    rc = KD_OK;
    while (rc == KD_OK && (de = readdir(d)) != NULL) {
        int b;
        char tail[8];
        if (sscanf(de->d_name, "validation-%d.%7s", &b, tail) != 2 || strcmp(tail, "csv") != 0 ||
            b <= 0 || a->n_bsz == SIM_MAX_BSZ)
            continue;
        snprintf(path, sizeof(path), "%s/%s/%s", traces_dir, app, de->d_name);
        rc = sim_read_validation(path, &a->iters[a->n_bsz], err, errlen);
        if (rc == KD_OK)
            a->bsz[a->n_bsz++] = b;
    }
    closedir(d);
    if (rc == KD_OK && a->n_bsz == 0)
        rc = kd_errf(err, errlen, KD_EFORMAT, "%s/%s: no validation-<B>.csv", traces_dir, app);
    if (rc == KD_OK && sim_gp_load(a, traces_dir, a->gp_err, sizeof(a->gp_err)) != KD_OK)
        a->gp = NULL; /* only --batch-model goodput needs it; gp_err says why */
    return rc;
}

void sim_app_free(sim_app *a)
{
    if (!a)
        return;
    sim_gp_free(a->gp);
    a->gp = NULL;
}

int sim_csv_split(char *line, char **f, int max)
{
    return sim_split(line, f, max);
}

int sim_csv_num(const char *s, double *out)
{
    return sim_num(s, out);
}

/* Compute seconds of one step at local batch lb (within the measured range). */
static double sim_compute(const sim_app *a, double lb)
{
    if (lb <= a->lb[0])
        return a->comp[0]; /* smaller batches are not measured: no faster than the smallest */
    for (int i = 1; i < a->n_lb; i++)
        if (lb <= a->lb[i]) {
            double t = (lb - a->lb[i - 1]) / (a->lb[i] - a->lb[i - 1]);
            return a->comp[i - 1] + t * (a->comp[i] - a->comp[i - 1]);
        }
    return a->comp[a->n_lb - 1];
}

static double sim_sync(const sim_app *a, int n, int k)
{
    if (n <= 1)
        return a->sync[1][1];
    if (n <= SIM_MAX_N && k <= SIM_MAX_K && a->sync[n][k] >= 0)
        return a->sync[n][k];
    if (k <= 1) { /* single node beyond the measurements: the largest measured one */
        for (int m = (n < SIM_MAX_N ? n : SIM_MAX_N); m >= 1; m--)
            if (a->sync[m][1] >= 0)
                return a->sync[m][1];
    }
    /* multi-node: interpolate the per-count mean in log n between measured counts */
    int lo = -1, hi = -1;
    for (int m = 2; m <= SIM_MAX_N; m++) {
        if (a->sync_multi[m] < 0)
            continue;
        if (m <= n)
            lo = m;
        if (m >= n && hi < 0)
            hi = m;
    }
    if (lo < 0 && hi < 0)
        return a->sync[1][1];
    if (lo < 0)
        return a->sync_multi[hi];
    if (hi < 0 || hi == lo)
        return a->sync_multi[lo];
    double t = (log((double)n) - log((double)lo)) / (log((double)hi) - log((double)lo));
    return a->sync_multi[lo] + t * (a->sync_multi[hi] - a->sync_multi[lo]);
}

double sim_step_time(const sim_app *a, double bsz, int n, int k)
{
    if (n < 1)
        n = 1;
    if (k < 1)
        k = 1;
    double lb = bsz / n, maxlb = a->lb[a->n_lb - 1];
    double accum = ceil(lb / maxlb - 1e-9);
    if (accum < 1)
        accum = 1;
    return accum * sim_compute(a, lb / accum) + sim_sync(a, n, k);
}

double sim_iterations(const sim_app *a, int bsz)
{
    int best = 0;
    for (int i = 0; i < a->n_bsz; i++) {
        if (a->bsz[i] == bsz)
            return a->iters[i];
        if (fabs(log((double)a->bsz[i] / bsz)) < fabs(log((double)a->bsz[best] / bsz)))
            best = i;
    }
    /* same number of samples as the nearest measured batch size */
    return a->iters[best] * a->bsz[best] / bsz;
}

void sim_model_init(sim_model *m, const char *traces_dir)
{
    memset(m, 0, sizeof(*m));
    snprintf(m->traces_dir, sizeof(m->traces_dir), "%s", traces_dir);
}

void sim_model_free(sim_model *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_apps; i++)
        sim_app_free(&m->apps[i]);
    free(m->apps);
    m->apps = NULL;
    m->n_apps = 0;
}

static int sim_model_app(sim_model *m, const char *name, char *err, size_t errlen)
{
    for (int i = 0; i < m->n_apps; i++)
        if (strcmp(m->apps[i].name, name) == 0)
            return i;
    for (const char *c = name; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '_' && *c != '-')
            return kd_errf(err, errlen, KD_EINVAL, "application name '%s' is not a plain name",
                            name);
    if (name[0] == '\0' || strlen(name) >= sizeof(m->apps[0].name))
        return kd_errf(err, errlen, KD_EINVAL, "bad application name");
    sim_app *na = realloc(m->apps, sizeof(*na) * (size_t)(m->n_apps + 1));
    if (!na)
        return kd_errf(err, errlen, KD_ENOMEM, "out of memory");
    m->apps = na;
    int rc = sim_app_load(&m->apps[m->n_apps], m->traces_dir, name, err, errlen);
    if (rc != KD_OK) {
        sim_app_free(&m->apps[m->n_apps]);
        return rc;
    }
    return m->n_apps++;
}

static int sim_cmp_arrival(const void *x, const void *y)
{
    const sim_wjob *a = x, *b = y;
    return (a->arrival > b->arrival) - (a->arrival < b->arrival);
}

int sim_workload_load(sim_workload *w, sim_model *m, const char *path, char *err, size_t errlen)
{
    char line[SIM_LINE_MAX], *f[SIM_FIELDS];
    int lineno = 0, cap = 0, rc = KD_OK;

    memset(w, 0, sizeof(*w));
    FILE *fp = fopen(path, "r");
    if (!fp)
        return kd_errf(err, errlen, KD_EIO, "workload %s: %s", path, strerror(errno));
    while (fgets(line, sizeof(line), fp)) {
        lineno++;
        int nf = sim_split(line, f, SIM_FIELDS);
        if (lineno == 1) {
            if (nf != 5 || strcmp(f[0], "name") != 0 || strcmp(f[1], "time") != 0 ||
                strcmp(f[2], "application") != 0 || strcmp(f[3], "num_replicas") != 0 ||
                strcmp(f[4], "batch_size") != 0) {
                rc = kd_errf(err, errlen, KD_EFORMAT,
                              "workload %s: header must be name,time,application,"
                              "num_replicas,batch_size", path);
                break;
            }
            continue;
        }
        if (nf == 1 && f[0][0] == '\0')
            continue;
        double t, r, b;
        if (nf != 5 || sim_num(f[1], &t) || sim_num(f[3], &r) || sim_num(f[4], &b) || t < 0 ||
            r < 1 || r > 100000 || b < 1 || b > 1e9 || r != floor(r) || b != floor(b)) {
            rc = kd_errf(err, errlen, KD_EPARSE,
                          "workload %s:%d: want name,time>=0,application,replicas>=1,batch>=1",
                          path, lineno);
            break;
        }
        int app = sim_model_app(m, f[2], err, errlen);
        if (app < 0) {
            rc = app;
            break;
        }
        if (w->n_jobs == cap) {
            cap = cap ? cap * 2 : 64;
            sim_wjob *nj = realloc(w->jobs, sizeof(*nj) * (size_t)cap);
            if (!nj) {
                rc = kd_errf(err, errlen, KD_ENOMEM, "out of memory");
                break;
            }
            w->jobs = nj;
        }
        sim_wjob *j = &w->jobs[w->n_jobs++];
        snprintf(j->name, sizeof(j->name), "%s", f[0]);
        j->arrival = t;
        j->app = app;
        j->request = (int)r;
        j->bsz = (int)b;
    }
    fclose(fp);
    if (rc == KD_OK && w->n_jobs == 0)
        rc = kd_errf(err, errlen, KD_EFORMAT, "workload %s: no jobs", path);
    if (rc != KD_OK) {
        sim_workload_free(w);
        return rc;
    }
    qsort(w->jobs, (size_t)w->n_jobs, sizeof(w->jobs[0]), sim_cmp_arrival);
    return KD_OK;
}

void sim_workload_free(sim_workload *w)
{
    if (!w)
        return;
    free(w->jobs);
    w->jobs = NULL;
    w->n_jobs = 0;
}
