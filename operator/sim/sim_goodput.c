/*
 * sim_goodput.c: kadet-sim's goodput job model (--batch-model goodput), built to be
 * comparable with the simulator of the Pollux artifact (petuum/adaptdl, simulator/;
 * docs/scheduler.md, "Goodput model"). Written from the artifact's description of its
 * model, not from its code:
 *
 * - Step time: a placement's own rows of placements.csv (key: the per-node agent counts
 *   as digits, rotated to the smallest string) interpolated linearly in the local batch;
 *   placements never measured are interpolated over (nodes, replicas, local batch) from
 *   the mean of the measured rows of each shape and the scalability.csv rows.
 * - Accumulation: a local batch above the application's largest local batch is split into
 *   integer micro-batches; one replica above the smallest traced batch always
 *   accumulates (its gradient statistics need two micro-batches); the total never exceeds
 *   the largest traced batch.
 * - Progress: in epoch e a step of global batch B makes gain(B, e) steps' worth of
 *   progress at the smallest traced batch, gain = (var + sqr) / (var / scale + sqr) from
 *   the epoch's grad_sqr and grad_var (the gradient noise scale), so progress grows at
 *   gain / step_time; a job finishes when it reaches the progress of its last epoch.
 *
 * Every file is checked as in sim_model.c; bad rows give an error naming file and line.
 */
#include "sim.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_error.h"

#define GP_LINE_MAX 512
#define GP_FIELDS 8
#define GP_EPOCHS_MAX 100000
#define GP_CANDIDATES 50 /* batch sizes tried by the adaptive batch, as the artifact */

/* Constants of the artifact's application table that the traces do not carry: the
 * largest local batch that fits one accelerator when it is below the largest measured. */
static const struct {
    const char *app;
    double max_lb;
} gp_app_limits[] = {{"yolov3", 8}};

/* Normalises a digit string in place to its lexicographically smallest rotation. */
static void gp_rotate_min(char *id)
{
    size_t k = strlen(id);
    char best[SIM_PLACE_MAX + 1], cand[SIM_PLACE_MAX + 1];
    memcpy(best, id, k + 1);
    for (size_t r = 1; r < k; r++) {
        memcpy(cand, id + r, k - r);
        memcpy(cand + (k - r), id, r);
        cand[k] = '\0';
        if (strcmp(cand, best) < 0)
            memcpy(best, cand, k + 1);
    }
    memcpy(id, best, k + 1);
}

static int gp_cmp_prow(const void *x, const void *y)
{
    const sim_prow *a = x, *b = y;
    int c = strcmp(a->id, b->id);
    if (c)
        return c;
    return (a->lb > b->lb) - (a->lb < b->lb);
}

static int gp_cmp_grow(const void *x, const void *y)
{
    const sim_grow *a = x, *b = y;
    if (a->k != b->k)
        return a->k - b->k;
    if (a->n != b->n)
        return a->n - b->n;
    return (a->lb > b->lb) - (a->lb < b->lb);
}

typedef struct gp_buf {
    void *p;
    int n, cap;
    size_t size;
} gp_buf;

static void *gp_push(gp_buf *b)
{
    if (b->n == b->cap) {
        int cap = b->cap ? b->cap * 2 : 256;
        void *np = realloc(b->p, b->size * (size_t)cap);
        if (!np)
            return NULL;
        b->p = np;
        b->cap = cap;
    }
    return (char *)b->p + b->size * (size_t)b->n++;
}

/* Reads placements.csv (scal = 0) or scalability.csv (scal = 1) rows. */
static int gp_read_perf(const char *path, int scal, gp_buf *prow, gp_buf *grow, char *err,
                        size_t errlen)
{
    char line[GP_LINE_MAX], *f[GP_FIELDS];
    FILE *fp = fopen(path, "r");
    if (!fp)
        return kd_errf(err, errlen, KD_EIO, "%s: %s", path, strerror(errno));
    int lineno = 0, rows = 0, rc = KD_OK;
    while (fgets(line, sizeof(line), fp)) {
        lineno++;
        if (lineno == 1 || line[0] == '\n' || line[0] == '\0')
            continue;
        int nf = sim_csv_split(line, f, GP_FIELDS);
        double v[5];
        if (nf != (scal ? 5 : 4)) {
            rc = kd_errf(err, errlen, KD_EPARSE, "%s:%d: want %d fields", path, lineno,
                         scal ? 5 : 4);
            break;
        }
        int bad = 0;
        for (int i = scal ? 0 : 1; i < nf; i++)
            bad |= sim_csv_num(f[i], &v[i]) != 0;
        double lb = v[nf - 3], step = v[nf - 2], sync = v[nf - 1];
        if (bad || !(lb > 0) || !(step > 0) || sync < 0 || sync > step) {
            rc = kd_errf(err, errlen, KD_ERANGE, "%s:%d: bad numbers", path, lineno);
            break;
        }
        if (scal) {
            if (v[0] < 1 || v[1] < v[0] || v[1] > 100000 || v[0] != floor(v[0]) ||
                v[1] != floor(v[1])) {
                rc = kd_errf(err, errlen, KD_ERANGE, "%s:%d: bad node or replica count",
                             path, lineno);
                break;
            }
            sim_grow *g = gp_push(grow);
            if (!g) {
                rc = kd_errf(err, errlen, KD_ENOMEM, "out of memory");
                break;
            }
            *g = (sim_grow){(int)v[0], (int)v[1], lb, step, sync};
        } else {
            size_t k = strlen(f[0]);
            int ok = k >= 1 && k <= SIM_PLACE_MAX;
            for (size_t i = 0; ok && i < k; i++)
                ok = isdigit((unsigned char)f[0][i]) && f[0][i] != '0';
            if (!ok) {
                rc = kd_errf(err, errlen, KD_ERANGE, "%s:%d: bad placement '%s'", path, lineno,
                             f[0]);
                break;
            }
            sim_prow *r = gp_push(prow);
            if (!r) {
                rc = kd_errf(err, errlen, KD_ENOMEM, "out of memory");
                break;
            }
            memcpy(r->id, f[0], k + 1);
            gp_rotate_min(r->id);
            r->lb = lb;
            r->step = step;
            r->sync = sync;
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

/* Reads validation-<B>.csv: progress, iteration, metric, grad_sqr, grad_var per epoch. */
static int gp_read_validation(const char *path, double **prog, double **sqr, double **var,
                              int *n, char *err, size_t errlen)
{
    char line[GP_LINE_MAX], *f[GP_FIELDS];
    FILE *fp = fopen(path, "r");
    if (!fp)
        return kd_errf(err, errlen, KD_EIO, "%s: %s", path, strerror(errno));
    int lineno = 0, cap = 0, rc = KD_OK;
    *n = 0;
    *prog = *sqr = *var = NULL;
    while (fgets(line, sizeof(line), fp)) {
        lineno++;
        if (lineno == 1 || line[0] == '\n' || line[0] == '\0')
            continue;
        double v[5];
        int nf = sim_csv_split(line, f, GP_FIELDS);
        if (nf != 5 || sim_csv_num(f[0], &v[0]) || sim_csv_num(f[3], &v[3]) ||
            sim_csv_num(f[4], &v[4]) || v[0] < 0 || v[3] < 0 || v[4] < 0 ||
            (*n > 0 && v[0] < (*prog)[*n - 1])) {
            rc = kd_errf(err, errlen, KD_EPARSE,
                         "%s:%d: want progress (not decreasing),iteration,metric,"
                         "grad_sqr>=0,grad_var>=0", path, lineno);
            break;
        }
        if (*n == GP_EPOCHS_MAX) {
            rc = kd_errf(err, errlen, KD_ERANGE, "%s: more than %d epochs", path,
                         GP_EPOCHS_MAX);
            break;
        }
        if (*n == cap) {
            cap = cap ? cap * 2 : 128;
            double *a = realloc(*prog, sizeof(double) * (size_t)cap);
            double *b = a ? realloc(*sqr, sizeof(double) * (size_t)cap) : NULL;
            if (a)
                *prog = a;
            if (b)
                *sqr = b;
            double *c = b ? realloc(*var, sizeof(double) * (size_t)cap) : NULL;
            if (c)
                *var = c;
            if (!a || !b || !c) {
                rc = kd_errf(err, errlen, KD_ENOMEM, "out of memory");
                break;
            }
        }
        (*prog)[*n] = v[0];
        (*sqr)[*n] = v[3];
        (*var)[*n] = v[4];
        (*n)++;
    }
    fclose(fp);
    if (rc == KD_OK && *n == 0)
        rc = kd_errf(err, errlen, KD_EFORMAT, "%s: no epochs", path);
    if (rc != KD_OK) {
        free(*prog);
        free(*sqr);
        free(*var);
        *prog = *sqr = *var = NULL;
    }
    return rc;
}

void sim_gp_free(sim_gp *g)
{
    if (!g)
        return;
    free(g->prow);
    free(g->grow);
    free(g->sqr);
    free(g->var);
    free(g->prog);
    free(g);
}

/* Mean of the placements rows by (nodes, replicas, local batch) into grow. */
static int gp_group(const sim_prow *pr, int n_pr, gp_buf *grow)
{
    sim_grow *tmp = malloc(sizeof(*tmp) * (size_t)(n_pr > 0 ? n_pr : 1));
    if (!tmp)
        return -1;
    for (int i = 0; i < n_pr; i++) {
        int k = (int)strlen(pr[i].id), n = 0;
        for (int c = 0; c < k; c++)
            n += pr[i].id[c] - '0';
        tmp[i] = (sim_grow){k, n, pr[i].lb, pr[i].step, pr[i].sync};
    }
    qsort(tmp, (size_t)n_pr, sizeof(*tmp), gp_cmp_grow);
    for (int i = 0; i < n_pr;) {
        int e = i;
        double st = 0, sy = 0;
        while (e < n_pr && gp_cmp_grow(&tmp[i], &tmp[e]) == 0) {
            st += tmp[e].step;
            sy += tmp[e].sync;
            e++;
        }
        sim_grow *g = gp_push(grow);
        if (!g) {
            free(tmp);
            return -1;
        }
        *g = (sim_grow){tmp[i].k, tmp[i].n, tmp[i].lb, st / (e - i), sy / (e - i)};
        i = e;
    }
    free(tmp);
    return 0;
}

int sim_gp_load(sim_app *a, const char *traces_dir, char *err, size_t errlen)
{
    char path[2048];
    gp_buf prow = {.size = sizeof(sim_prow)}, grow = {.size = sizeof(sim_grow)};
    double *vp[SIM_MAX_BSZ] = {0}, *vs[SIM_MAX_BSZ] = {0}, *vv[SIM_MAX_BSZ] = {0};
    int vn[SIM_MAX_BSZ] = {0}, vb[SIM_MAX_BSZ] = {0}, nv = 0, rc;
    sim_gp *g = calloc(1, sizeof(*g));

    a->gp = NULL;
    if (!g)
        return kd_errf(err, errlen, KD_ENOMEM, "out of memory");
    snprintf(path, sizeof(path), "%s/%s/placements.csv", traces_dir, a->name);
    rc = gp_read_perf(path, 0, &prow, &grow, err, errlen);
    if (rc == KD_OK) {
        qsort(prow.p, (size_t)prow.n, sizeof(sim_prow), gp_cmp_prow);
        if (gp_group(prow.p, prow.n, &grow) != 0)
            rc = kd_errf(err, errlen, KD_ENOMEM, "out of memory");
    }
    if (rc == KD_OK) {
        snprintf(path, sizeof(path), "%s/%s/scalability.csv", traces_dir, a->name);
        rc = gp_read_perf(path, 1, &prow, &grow, err, errlen);
    }
    if (rc == KD_OK)
        qsort(grow.p, (size_t)grow.n, sizeof(sim_grow), gp_cmp_grow);
    /* validation traces in ascending batch size (the fixed model found them already) */
    for (int i = 0; rc == KD_OK && i < a->n_bsz; i++) {
        int b = a->bsz[i], at = nv;
        while (at > 0 && vb[at - 1] > b)
            at--;
        memmove(&vb[at + 1], &vb[at], sizeof(int) * (size_t)(nv - at));
        memmove(&vp[at + 1], &vp[at], sizeof(double *) * (size_t)(nv - at));
        memmove(&vs[at + 1], &vs[at], sizeof(double *) * (size_t)(nv - at));
        memmove(&vv[at + 1], &vv[at], sizeof(double *) * (size_t)(nv - at));
        memmove(&vn[at + 1], &vn[at], sizeof(int) * (size_t)(nv - at));
        nv++;
        vb[at] = b;
        vp[at] = vs[at] = vv[at] = NULL;
        snprintf(path, sizeof(path), "%s/%s/validation-%d.csv", traces_dir, a->name, b);
        rc = gp_read_validation(path, &vp[at], &vs[at], &vv[at], &vn[at], err, errlen);
    }
    if (rc == KD_OK && nv == 0)
        rc = kd_errf(err, errlen, KD_EFORMAT, "%s/%s: no validation traces", traces_dir,
                     a->name);
    if (rc == KD_OK) {
        g->prow = prow.p;
        g->n_prow = prow.n;
        g->grow = grow.p;
        g->n_grow = grow.n;
        prow.p = grow.p = NULL;
        g->n_val = nv;
        g->n_ep = vn[0];
        for (int i = 0; i < nv; i++) {
            g->vbsz[i] = vb[i];
            if (vn[i] < g->n_ep)
                g->n_ep = vn[i];
        }
        g->init_bsz = vb[0];
        g->max_bsz = vb[nv - 1];
        g->max_epochs = g->n_ep;
        g->min_lb = INFINITY;
        g->max_lb = 0;
        for (int i = 0; i < g->n_prow; i++) {
            g->min_lb = fmin(g->min_lb, g->prow[i].lb);
            g->max_lb = fmax(g->max_lb, g->prow[i].lb);
        }
        for (size_t i = 0; i < sizeof(gp_app_limits) / sizeof(gp_app_limits[0]); i++)
            if (strcmp(a->name, gp_app_limits[i].app) == 0 &&
                gp_app_limits[i].max_lb < g->max_lb)
                g->max_lb = gp_app_limits[i].max_lb;
        g->sqr = malloc(sizeof(double) * (size_t)nv * (size_t)g->n_ep);
        g->var = malloc(sizeof(double) * (size_t)nv * (size_t)g->n_ep);
        g->prog = malloc(sizeof(double) * (size_t)(g->n_ep + 1));
        if (!g->sqr || !g->var || !g->prog) {
            rc = kd_errf(err, errlen, KD_ENOMEM, "out of memory");
        } else {
            g->prog[0] = 0;
            for (int e = 0; e < g->n_ep; e++) {
                g->prog[e + 1] = INFINITY;
                for (int i = 0; i < nv; i++) {
                    g->sqr[i * g->n_ep + e] = vs[i][e];
                    g->var[i * g->n_ep + e] = vv[i][e];
                    g->prog[e + 1] = fmin(g->prog[e + 1], vp[i][e]);
                }
            }
            for (int e = 0; e < g->n_ep; e++)
                if (!(g->prog[e + 1] > g->prog[e])) {
                    rc = kd_errf(err, errlen, KD_EFORMAT,
                                 "%s/%s: validation progress does not grow at epoch %d",
                                 traces_dir, a->name, e + 1);
                    break;
                }
        }
        if (rc == KD_OK && !(g->min_lb <= g->max_lb))
            rc = kd_errf(err, errlen, KD_EFORMAT, "%s/%s: no local batch measured", traces_dir,
                         a->name);
    }
    for (int i = 0; i < nv; i++) {
        free(vp[i]);
        free(vs[i]);
        free(vv[i]);
    }
    free(prow.p);
    free(grow.p);
    if (rc != KD_OK) {
        sim_gp_free(g);
        return rc;
    }
    a->gp = g;
    return KD_OK;
}

/* Linear interpolation in lb over n rows sorted by lb (clamped at the ends), of the field
 * at offset v in rows `stride` bytes apart whose lb is at offset lb: sim_prow and
 * sim_grow both carry (lb, step, sync). */
static double gp_field(const void *rows, size_t stride, size_t off, int i)
{
    double v;
    memcpy(&v, (const char *)rows + stride * (size_t)i + off, sizeof v);
    return v;
}

static double gp_lerp(const void *r, size_t stride, size_t lb, size_t v, int n, double x)
{
    if (x <= gp_field(r, stride, lb, 0))
        return gp_field(r, stride, v, 0);
    for (int i = 1; i < n; i++) {
        double hi = gp_field(r, stride, lb, i);
        if (x <= hi) {
            double lo = gp_field(r, stride, lb, i - 1);
            double a = gp_field(r, stride, v, i - 1), b = gp_field(r, stride, v, i);
            return a + (x - lo) / (hi - lo) * (b - a);
        }
    }
    return gp_field(r, stride, v, n - 1);
}

static double gp_lerp_prow(const sim_prow *r, int n, double x, int sync)
{
    return gp_lerp(r, sizeof *r, offsetof(sim_prow, lb),
                   sync ? offsetof(sim_prow, sync) : offsetof(sim_prow, step), n, x);
}

static double gp_lerp_grow(const sim_grow *r, int n, double x, int sync)
{
    return gp_lerp(r, sizeof *r, offsetof(sim_grow, lb),
                   sync ? offsetof(sim_grow, sync) : offsetof(sim_grow, step), n, x);
}

/* Step and sync at k nodes, replicas n (real), local batch lb: linear between the
 * measured replica counts of that node count (clamped), each linear in lb. */
static void gp_grid_at_k(const sim_gp *g, int lo, int hi, double n, double lb, double *st,
                         double *sy)
{
    /* rows [lo, hi) all have the same k, sorted by n then lb */
    int nlo = -1, nhi = -1;
    for (int i = lo; i < hi; i++) {
        if (g->grow[i].n <= n)
            nlo = g->grow[i].n;
        if (g->grow[i].n >= n && nhi < 0)
            nhi = g->grow[i].n;
    }
    if (nlo < 0)
        nlo = nhi;
    if (nhi < 0)
        nhi = nlo;
    double v[2][2];
    int ns[2] = {nlo, nhi};
    for (int s = 0; s < 2; s++) {
        int a = lo;
        while (a < hi && g->grow[a].n != ns[s])
            a++;
        int b = a;
        while (b < hi && g->grow[b].n == ns[s])
            b++;
        v[s][0] = gp_lerp_grow(&g->grow[a], b - a, lb, 0);
        v[s][1] = gp_lerp_grow(&g->grow[a], b - a, lb, 1);
    }
    double t = nhi > nlo ? (n - nlo) / (double)(nhi - nlo) : 0;
    *st = v[0][0] + t * (v[1][0] - v[0][0]);
    *sy = v[0][1] + t * (v[1][1] - v[0][1]);
}

/* Placements never measured: between the measured node counts around k (at most 16, as
 * the artifact), at the same agents per node, each interpolated in replicas and lb. */
static void gp_grid(const sim_gp *g, int k, int n, double lb, double *st, double *sy)
{
    if (k > 16)
        k = 16;
    int klo = -1, khi = -1;
    for (int i = 0; i < g->n_grow; i++) {
        if (g->grow[i].k <= k)
            klo = g->grow[i].k;
        if (g->grow[i].k >= k && khi < 0)
            khi = g->grow[i].k;
    }
    if (klo < 0)
        klo = khi;
    if (khi < 0)
        khi = klo;
    double density = (double)n / k, v[2][2];
    int ks[2] = {klo, khi};
    for (int s = 0; s < 2; s++) {
        int a = 0;
        while (a < g->n_grow && g->grow[a].k != ks[s])
            a++;
        int b = a;
        while (b < g->n_grow && g->grow[b].k == ks[s])
            b++;
        double nn = klo == khi ? n : density * ks[s];
        gp_grid_at_k(g, a, b, nn, lb, &v[s][0], &v[s][1]);
    }
    double t = khi > klo ? (double)(k - klo) / (khi - klo) : 0;
    *st = v[0][0] + t * (v[1][0] - v[0][0]);
    *sy = v[0][1] + t * (v[1][1] - v[0][1]);
}

void sim_gp_step(const sim_gp *g, const int *place, int k, double lb, double *step,
                 double *sync)
{
    char id[SIM_PLACE_MAX + 1];
    int n = 0, digits = k >= 1 && k <= SIM_PLACE_MAX;
    for (int i = 0; i < k; i++) {
        n += place[i];
        if (place[i] < 1 || place[i] > 9)
            digits = 0;
        else if (digits)
            id[i] = (char)('0' + place[i]);
    }
    if (n < 1) {
        *step = *sync = INFINITY;
        return;
    }
    if (digits) {
        id[k] = '\0';
        gp_rotate_min(id);
        /* binary search for the first row of id */
        int lo = 0, hi = g->n_prow;
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (strcmp(g->prow[mid].id, id) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < g->n_prow && strcmp(g->prow[lo].id, id) == 0) {
            int e = lo;
            while (e < g->n_prow && strcmp(g->prow[e].id, id) == 0)
                e++;
            *step = gp_lerp_prow(&g->prow[lo], e - lo, lb, 0);
            *sync = gp_lerp_prow(&g->prow[lo], e - lo, lb, 1);
            return;
        }
    }
    gp_grid(g, k, n, lb, step, sync);
    if (*sync > *step)
        *sync = *step;
}

void sim_gp_fixed(const sim_gp *g, int n, int batch, int *atomic, int *accum)
{
    const double eps = 1e-8;
    if (n < 1)
        n = 1;
    double local = ceil((double)batch / n - eps);
    int acc = (int)ceil(local / g->max_lb - eps) - 1;
    if (acc < 0)
        acc = 0;
    if (n == 1 && batch > g->init_bsz && acc < 1)
        acc = 1;
    int at = (int)ceil(local / (acc + 1) - eps);
    int cap = (int)((double)g->max_bsz / ((double)n * (acc + 1)));
    if (at > cap)
        at = cap;
    if (at < 1)
        at = 1;
    *atomic = at;
    *accum = acc;
}

double sim_gp_gain(const sim_gp *g, double batch, int epoch)
{
    if (epoch < 0)
        epoch = 0;
    if (epoch >= g->n_ep)
        epoch = g->n_ep - 1;
    int lo = 0, hi = g->n_val - 1;
    for (int i = 0; i < g->n_val; i++) {
        if (g->vbsz[i] <= batch)
            lo = i;
        if (g->vbsz[i] >= batch) {
            hi = i;
            break;
        }
    }
    if (batch >= g->vbsz[g->n_val - 1])
        lo = hi = g->n_val - 1;
    double sqr = g->sqr[lo * g->n_ep + epoch], var = g->var[lo * g->n_ep + epoch];
    if (hi != lo) {
        double t = (batch - g->vbsz[lo]) / (double)(g->vbsz[hi] - g->vbsz[lo]);
        sqr += t * (g->sqr[hi * g->n_ep + epoch] - sqr);
        var += t * (g->var[hi * g->n_ep + epoch] - var);
    }
    double scale = batch / g->init_bsz, denom = var / scale + sqr;
    return denom > 0 ? (var + sqr) / denom : 1.0;
}

double sim_gp_rate(const sim_gp *g, const int *place, int k, int atomic, int accum, int epoch)
{
    int n = 0;
    for (int i = 0; i < k; i++)
        n += place[i];
    if (n < 1 || atomic < 1)
        return 0;
    double step, sync;
    sim_gp_step(g, place, k, atomic, &step, &sync);
    double total = step + (step - sync) * accum;
    if (!(total > 0) || !isfinite(total))
        return 0;
    return sim_gp_gain(g, (double)n * atomic * (accum + 1), epoch) / total;
}

double sim_gp_best(const sim_gp *g, const int *place, int k, int epoch, int *atomic,
                   int *accum)
{
    const double eps = 1e-8;
    int n = 0;
    for (int i = 0; i < k; i++)
        n += place[i];
    if (n < 1) {
        *atomic = *accum = 0;
        return 0;
    }
    double lo = fmax(g->init_bsz, g->min_lb * n), hi = fmax(lo, g->max_bsz), best = -1;
    int bat = 0, bacc = 0;
    for (int c = 0; c < GP_CANDIDATES; c++) {
        double b = lo * pow(hi / lo, (double)c / (GP_CANDIDATES - 1)), local = b / n;
        int acc = (int)ceil(local / g->max_lb - eps) - 1;
        if (acc < 0)
            acc = 0;
        if (n == 1 && local > g->init_bsz + eps && acc < 1)
            acc = 1;
        int at = (int)ceil(local / (acc + 1) - eps);
        if (at < g->min_lb || at > g->max_lb)
            continue;
        int cap = (int)((double)g->max_bsz / ((double)n * (acc + 1)));
        if (at > cap && cap >= 1)
            at = cap;
        double r = sim_gp_rate(g, place, k, at, acc, epoch);
        if (r > best) {
            best = r;
            bat = at;
            bacc = acc;
        }
    }
    if (best < 0) { /* no candidate within the bounds: the smallest local batch */
        bat = (int)ceil(g->min_lb);
        bacc = 0;
        best = sim_gp_rate(g, place, k, bat, bacc, epoch);
    }
    *atomic = bat;
    *accum = bacc;
    return best;
}
