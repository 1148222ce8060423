/*
 * kd_csv: reader for tabular datasets in CSV (numeric features, one integer label).
 *
 * The whole file is read once, rows are counted to size the buffers exactly, then each
 * field is parsed with strtod/strtol checked for full consumption. A first line with a
 * non-numeric field is a header and skipped; every later error names the line and the
 * column (1-based, as an editor shows them). Quoting is not supported: tabular training
 * data is numbers only.
 */
#include "kd_data.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kd_error.h"
#include "kd_yaml.h"

#define KD_CSV_MAX_FILE (4ull << 30)

/* A field [s, e) with surrounding blanks trimmed. */
static void trim(const char **s, const char **e)
{
    while (*s < *e && (**s == ' ' || **s == '\t'))
        (*s)++;
    while (*e > *s && ((*e)[-1] == ' ' || (*e)[-1] == '\t' || (*e)[-1] == '\r'))
        (*e)--;
}

static int parse_double(const char *s, const char *e, double *out)
{
    char buf[64];
    size_t len = (size_t)(e - s);
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    double v = strtod(buf, &end);
    if (*end != '\0' || errno == ERANGE || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

static int parse_label(const char *s, const char *e, long *out)
{
    char buf[32];
    size_t len = (size_t)(e - s);
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    long v = strtol(buf, &end, 10);
    if (*end != '\0' || errno == ERANGE)
        return -1;
    *out = v;
    return 0;
}

static size_t count_fields(const char *s, const char *e)
{
    size_t n = 1;
    for (const char *p = s; p < e; p++)
        n += *p == ',';
    return n;
}

static int is_blank(const char *s, const char *e)
{
    for (; s < e; s++)
        if (!isspace((unsigned char)*s))
            return 0;
    return 1;
}

/* Whether every field of the line parses as a number (else it is a header). */
static int all_numeric(const char *s, const char *e)
{
    while (s <= e) {
        const char *c = memchr(s, ',', (size_t)(e - s));
        const char *fe = c ? c : e;
        const char *fs = s;
        trim(&fs, &fe);
        double v;
        if (parse_double(fs, fe, &v) != 0)
            return 0;
        if (!c)
            break;
        s = c + 1;
    }
    return 1;
}

int kd_csv_load(const char *path, int label_col, kd_dataset *ds, char *err, size_t errlen)
{
    memset(ds, 0, sizeof *ds);
    char *text = NULL;
    size_t len = 0;
    int rc = kd_read_file(path, KD_CSV_MAX_FILE, &text, &len, err, errlen);
    if (rc != KD_OK)
        return rc;
    const char *end = text + len;

    size_t lines = 1;
    for (const char *p = text; p < end; p++)
        lines += *p == '\n';

    size_t ncols = 0, lab = 0, row = 0, lineno = 0;
    int maxl = -1;
    const char *p = text;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        lineno++;
        if (is_blank(p, le)) {
            p = nl ? nl + 1 : end;
            continue;
        }
        if (ncols == 0) {
            ncols = count_fields(p, le);
            if (ncols < 2) {
                rc = kd_errf(err, errlen, KD_EFORMAT,
                             "%s:%zu: need a label and at least one feature column", path,
                             lineno);
                goto fail;
            }
            if (label_col < -1 || label_col >= (long)ncols) {
                rc = kd_errf(err, errlen, KD_EINVAL, "%s: label column %d but rows have %zu "
                             "columns", path, label_col, ncols);
                goto fail;
            }
            lab = label_col < 0 ? ncols - 1 : (size_t)label_col;
            ds->dim = ncols - 1;
            if (ds->dim > KD_DATA_MAX_DIM || lines > KD_DATA_MAX_SAMPLES ||
                (unsigned long long)lines * ds->dim > KD_DATA_MAX_BYTES) {
                rc = kd_errf(err, errlen, KD_ETOOBIG, "%s: %zu rows of %zu features is too "
                             "large", path, lines, ds->dim);
                goto fail;
            }
            ds->x = aligned_alloc(64, (lines * ds->dim * sizeof(float) + 63) / 64 * 64);
            ds->y = malloc(lines * sizeof(int32_t));
            if (!ds->x || !ds->y) {
                rc = kd_errf(err, errlen, KD_ENOMEM, "%s: cannot allocate the data", path);
                goto fail;
            }
            if (!all_numeric(p, le)) {
                p = nl ? nl + 1 : end; /* header line */
                continue;
            }
        }
        size_t nf = count_fields(p, le);
        if (nf != ncols) {
            rc = kd_errf(err, errlen, KD_EPARSE, "%s:%zu: %zu fields, expected %zu", path,
                         lineno, nf, ncols);
            goto fail;
        }
        const char *s = p;
        float *xr = ds->x + row * ds->dim;
        for (size_t c = 0; c < ncols; c++) {
            const char *comma = c + 1 < ncols ? memchr(s, ',', (size_t)(le - s)) : le;
            const char *fs = s, *fe = comma;
            trim(&fs, &fe);
            if (c == lab) {
                long v;
                if (parse_label(fs, fe, &v) != 0 || v < 0 || v >= KD_DATA_MAX_CLASSES) {
                    rc = kd_errf(err, errlen, KD_EPARSE,
                                 "%s:%zu column %zu: label must be an integer in [0, %d), "
                                 "got \"%.*s\"", path, lineno, c + 1, KD_DATA_MAX_CLASSES,
                                 (int)(fe - fs > 40 ? 40 : fe - fs), fs);
                    goto fail;
                }
                ds->y[row] = (int32_t)v;
                if (v > maxl)
                    maxl = (int)v;
            } else {
                double v;
                if (parse_double(fs, fe, &v) != 0) {
                    rc = kd_errf(err, errlen, KD_EPARSE,
                                 "%s:%zu column %zu: expected a number, got \"%.*s\"", path,
                                 lineno, c + 1, (int)(fe - fs > 40 ? 40 : fe - fs), fs);
                    goto fail;
                }
                *xr++ = (float)v;
            }
            s = comma + 1;
        }
        row++;
        p = nl ? nl + 1 : end;
    }
    if (row == 0) {
        rc = kd_errf(err, errlen, KD_EFORMAT, "%s: no data rows", path);
        goto fail;
    }
    ds->n = row;
    ds->n_classes = maxl + 1 < 2 ? 2 : maxl + 1;
    free(text);
    return KD_OK;
fail:
    free(text);
    kd_dataset_free(ds);
    return rc;
}
