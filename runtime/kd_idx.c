/*
 * kd_idx: reader for IDX files (the MNIST family's format), gzip-compressed or plain.
 *
 * An IDX file is: two zero bytes, a dtype byte, a dimension-count byte, that many
 * big-endian uint32 dimensions, then the items. Nothing in the header is trusted: the
 * dimensions are checked against caps and against what the compressed file could
 * possibly hold BEFORE the item buffer is allocated, so a corrupt or hostile header
 * cannot make us allocate gigabytes; short data, corrupt gzip streams and trailing bytes
 * are errors naming the file.
 */
#include "kd_data.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "kd_error.h"

/* deflate cannot expand data by more than about 1032:1; a header announcing more items
 * than the file could inflate to is refused before allocating. */
#define KD_IDX_MAX_RATIO 1100u

/* Reads exactly len bytes; returns the count read (short at EOF) or -1 on a zlib error. */
static long read_full(gzFile f, uint8_t *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        size_t chunk = len - got;
        if (chunk > (1u << 30))
            chunk = 1u << 30;
        int n = gzread(f, buf + got, (unsigned)chunk);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (long)got;
}

static int zerr(gzFile f, const char *path, char *err, size_t errlen)
{
    int code = 0;
    const char *msg = gzerror(f, &code);
    if (code == Z_ERRNO)
        return kd_errf(err, errlen, KD_EIO, "%s: read error: %s", path, strerror(errno));
    return kd_errf(err, errlen, KD_EPARSE, "%s: corrupt compressed data: %s", path,
                   msg ? msg : "unknown zlib error");
}

int kd_idx_read(const char *path, kd_idx *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    struct stat st;
    if (stat(path, &st) != 0)
        return kd_errf(err, errlen, KD_EIO, "%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return kd_errf(err, errlen, KD_EIO, "%s: not a regular file", path);
    gzFile f = gzopen(path, "rb");
    if (!f)
        return kd_errf(err, errlen, KD_EIO, "%s: %s", path,
                       errno ? strerror(errno) : "cannot open");
    gzbuffer(f, 256 * 1024);

    int rc;
    uint8_t hdr[4 + 4 * 4];
    long n = read_full(f, hdr, 4);
    if (n < 0) {
        rc = zerr(f, path, err, errlen);
        goto fail;
    }
    if (n < 4) {
        rc = kd_errf(err, errlen, KD_ETRUNCATED, "%s: file too short for an IDX header",
                     path);
        goto fail;
    }
    if (hdr[0] != 0 || hdr[1] != 0) {
        rc = kd_errf(err, errlen, KD_EFORMAT,
                     "%s: bad magic %02x %02x %02x %02x (not an IDX file)", path, hdr[0],
                     hdr[1], hdr[2], hdr[3]);
        goto fail;
    }
    if (hdr[2] != 0x08) {
        rc = kd_errf(err, errlen, KD_EFORMAT,
                     "%s: IDX dtype 0x%02x not supported (only 0x08, unsigned byte)", path,
                     hdr[2]);
        goto fail;
    }
    int ndim = hdr[3];
    if (ndim < 1 || ndim > 4) {
        rc = kd_errf(err, errlen, KD_EFORMAT, "%s: %d dimensions (expected 1 to 4)", path,
                     ndim);
        goto fail;
    }
    n = read_full(f, hdr + 4, 4 * (size_t)ndim);
    if (n < 0) {
        rc = zerr(f, path, err, errlen);
        goto fail;
    }
    if (n < 4 * ndim) {
        rc = kd_errf(err, errlen, KD_ETRUNCATED, "%s: header truncated", path);
        goto fail;
    }
    uint64_t item = 1;
    for (int i = 0; i < ndim; i++) {
        const uint8_t *d = hdr + 4 + 4 * i;
        out->dims[i] = (uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3];
        if (out->dims[i] == 0) {
            rc = kd_errf(err, errlen, KD_EFORMAT, "%s: dimension %d is zero", path, i);
            goto fail;
        }
        if (i > 0) {
            item *= out->dims[i];
            if (item > KD_DATA_MAX_DIM) {
                rc = kd_errf(err, errlen, KD_ETOOBIG,
                             "%s: items of more than %u values refused", path,
                             KD_DATA_MAX_DIM);
                goto fail;
            }
        }
    }
    if (out->dims[0] > KD_DATA_MAX_SAMPLES) {
        rc = kd_errf(err, errlen, KD_ETOOBIG, "%s: %u items (at most %u)", path, out->dims[0],
                     KD_DATA_MAX_SAMPLES);
        goto fail;
    }
    uint64_t count = item * out->dims[0];
    if (count > KD_DATA_MAX_BYTES) {
        rc = kd_errf(err, errlen, KD_ETOOBIG, "%s: %llu values (at most %llu)", path,
                     (unsigned long long)count, (unsigned long long)KD_DATA_MAX_BYTES);
        goto fail;
    }
    uint64_t possible = (uint64_t)st.st_size * KD_IDX_MAX_RATIO + 4096;
    if (count > possible) {
        rc = kd_errf(err, errlen, KD_ETRUNCATED,
                     "%s: header announces %llu values but the file is only %lld bytes",
                     path, (unsigned long long)count, (long long)st.st_size);
        goto fail;
    }
    out->ndim = ndim;
    out->count = (size_t)count;
    out->data = malloc(out->count);
    if (!out->data) {
        rc = kd_errf(err, errlen, KD_ENOMEM, "%s: cannot allocate %zu bytes", path,
                     out->count);
        goto fail;
    }
    n = read_full(f, out->data, out->count);
    if (n < 0) {
        rc = zerr(f, path, err, errlen);
        goto fail;
    }
    if ((size_t)n < out->count) {
        rc = kd_errf(err, errlen, KD_ETRUNCATED,
                     "%s: truncated: header announces %zu values, file holds %ld", path,
                     out->count, n);
        goto fail;
    }
    uint8_t extra;
    n = read_full(f, &extra, 1);
    if (n < 0) {
        rc = zerr(f, path, err, errlen);
        goto fail;
    }
    if (n > 0) {
        rc = kd_errf(err, errlen, KD_EPARSE, "%s: trailing bytes after %zu values", path,
                     out->count);
        goto fail;
    }
    gzclose(f);
    return KD_OK;
fail:
    gzclose(f);
    kd_idx_free(out);
    return rc;
}

void kd_idx_free(kd_idx *idx)
{
    if (!idx)
        return;
    free(idx->data);
    memset(idx, 0, sizeof *idx);
}

int kd_idx_load(const char *images_path, const char *labels_path, kd_dataset *ds,
                char *err, size_t errlen)
{
    memset(ds, 0, sizeof *ds);
    kd_idx im, lb;
    int rc = kd_idx_read(images_path, &im, err, errlen);
    if (rc != KD_OK)
        return rc;
    rc = kd_idx_read(labels_path, &lb, err, errlen);
    if (rc != KD_OK) {
        kd_idx_free(&im);
        return rc;
    }
    if (lb.ndim != 1) {
        rc = kd_errf(err, errlen, KD_EFORMAT, "%s: labels must have 1 dimension, not %d",
                     labels_path, lb.ndim);
        goto out;
    }
    if (lb.dims[0] != im.dims[0]) {
        rc = kd_errf(err, errlen, KD_EFORMAT, "%s has %u images but %s has %u labels",
                     images_path, im.dims[0], labels_path, lb.dims[0]);
        goto out;
    }
    ds->n = im.dims[0];
    ds->dim = im.count / ds->n;
    ds->x = aligned_alloc(64, (im.count * sizeof(float) + 63) / 64 * 64);
    ds->y = malloc(ds->n * sizeof(int32_t));
    if (!ds->x || !ds->y) {
        rc = kd_errf(err, errlen, KD_ENOMEM, "%s: cannot allocate %zu floats", images_path,
                     im.count);
        goto out;
    }
    /* Normalised once here so that no step pays for the conversion. */
    const float scale = 1.0f / 255.0f;
    for (size_t i = 0; i < im.count; i++)
        ds->x[i] = (float)im.data[i] * scale;
    int maxl = 0;
    for (size_t i = 0; i < ds->n; i++) {
        ds->y[i] = lb.data[i];
        if (lb.data[i] > maxl)
            maxl = lb.data[i];
    }
    ds->n_classes = maxl + 1;
    rc = KD_OK;
out:
    if (rc != KD_OK)
        kd_dataset_free(ds);
    kd_idx_free(&im);
    kd_idx_free(&lb);
    return rc;
}
