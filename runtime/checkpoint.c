/* checkpoint: atomic, checksummed checkpoint files with fallback to the previous one
 * (see checkpoint.h). Header layout, little-endian; format 3 (written), 112 bytes:
 *   0 magic "KDCKPT\0\3"  8 fingerprint  16 generation(u32) 20 epoch(u32)  24 cursor
 *   32 step  40 optim_t  48 seed  56 n_params  64 n_state  72 eval_epoch(u32)
 *   76 batch(u32, 0 = not recorded)  80 accuracy(f64)  88 train_loss(f64)
 *   96 noise_g2(f64)  104 noise_s(f64)
 * Format 2 (read only) is the same up to 96, with 76 reserved (zero): no batch state.
 * Format 1 (read only) is the same up to 72, then reserved(8, zero): 80 bytes, and no
 * evaluation. Then n_params + n_state float32, then the CRC32 of everything before it
 * (u32). */
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "kd_error.h"
#include "kd_le.h"
#include "kd_log.h"
#include "kd_wire.h"

#define CKPT_HDR_V1 80
#define CKPT_HDR_V2 96
#define CKPT_HDR 112 /* format 3; the largest header */
#define CKPT_VERSION 3
/* Refuse absurd sizes before allocating: 1 Gi floats each. */
#define CKPT_MAX_FLOATS (1ull << 30)
/* The last byte is the format version. */
static const unsigned char ckpt_magic[7] = {'K', 'D', 'C', 'K', 'P', 'T', 0};

static void put_f64(unsigned char *p, double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    kd_le_put64(p, u);
}

static double get_f64(const unsigned char *p)
{
    uint64_t u = kd_le_get64(p);
    double v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static int write_all(int fd, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Floats go out little-endian in blocks, with the CRC updated as they go. */
static int write_floats(int fd, const float *v, size_t n, uLong *crc)
{
    unsigned char block[64 * 1024];
    size_t per = sizeof block / 4;
    for (size_t i = 0; i < n; i += per) {
        size_t k = n - i < per ? n - i : per;
        kd_wire_floats_to_le(block, v + i, k);
        *crc = crc32(*crc, block, (uInt)(k * 4));
        if (write_all(fd, block, k * 4) != 0)
            return -1;
    }
    return 0;
}

static int path_join(char *out, size_t len, const char *dir, const char *name)
{
    int w = snprintf(out, len, "%s/%s", dir, name);
    return w > 0 && (size_t)w < len ? 0 : -1;
}

int kd_ckpt_probe(const char *dir, char *err, size_t errlen)
{
    char probe[4096];
    if (path_join(probe, sizeof probe, dir, "checkpoint.probe") != 0)
        return kd_errf(err, errlen, KD_EINVAL, "checkpoint: directory name too long");
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return kd_errf(err, errlen, KD_EIO, "checkpoint: mkdir %s: %s", dir, strerror(errno));
    int fd = open(probe, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return kd_errf(err, errlen, KD_EIO, "checkpoint: open %s: %s", probe, strerror(errno));
    int bad = write_all(fd, "k", 1) != 0 || fsync(fd) != 0;
    int e = errno;
    if (close(fd) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    unlink(probe);
    if (bad)
        return kd_errf(err, errlen, KD_EIO, "checkpoint: write %s: %s", probe, strerror(e));
    return KD_OK;
}

int kd_ckpt_save(const char *dir, const kd_ckpt *c, char *err, size_t errlen)
{
    char tmp[4096], cur[4096], prev[4096];
    if (path_join(tmp, sizeof tmp, dir, "checkpoint.tmp") != 0 ||
        path_join(cur, sizeof cur, dir, KD_CKPT_FILE) != 0 ||
        path_join(prev, sizeof prev, dir, KD_CKPT_PREV) != 0)
        return kd_errf(err, errlen, KD_EINVAL, "checkpoint: directory name too long");
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return kd_errf(err, errlen, KD_EIO, "checkpoint: mkdir %s: %s", dir, strerror(errno));
    unsigned char hdr[CKPT_HDR] = {0};
    memcpy(hdr, ckpt_magic, 7);
    hdr[7] = CKPT_VERSION;
    kd_le_put64(hdr + 8, c->fingerprint);
    kd_le_put32(hdr + 16, c->generation);
    kd_le_put32(hdr + 20, c->epoch);
    kd_le_put64(hdr + 24, c->cursor);
    kd_le_put64(hdr + 32, c->step);
    kd_le_put64(hdr + 40, c->optim_t);
    kd_le_put64(hdr + 48, c->seed);
    kd_le_put64(hdr + 56, c->n_params);
    kd_le_put64(hdr + 64, c->n_state);
    kd_le_put32(hdr + 72, c->eval_epoch);
    kd_le_put32(hdr + 76, c->batch);
    put_f64(hdr + 80, c->eval_epoch > 0 ? c->accuracy : 0.0);
    put_f64(hdr + 88, c->eval_epoch > 0 ? c->train_loss : 0.0);
    put_f64(hdr + 96, c->noise_g2);
    put_f64(hdr + 104, c->noise_s);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return kd_errf(err, errlen, KD_EIO, "checkpoint: open %s: %s", tmp, strerror(errno));
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, hdr, CKPT_HDR);
    unsigned char tail[4];
    int bad = write_all(fd, hdr, CKPT_HDR) != 0 ||
              write_floats(fd, c->params, c->n_params, &crc) != 0 ||
              write_floats(fd, c->state, c->n_state, &crc) != 0;
    kd_le_put32(tail, (uint32_t)crc);
    bad = bad || write_all(fd, tail, 4) != 0 || fsync(fd) != 0;
    int e = errno;
    if (close(fd) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    if (bad) {
        unlink(tmp);
        return kd_errf(err, errlen, KD_EIO, "checkpoint: write %s: %s", tmp, strerror(e));
    }
    /* Keep the checkpoint being replaced: if this one turns out damaged on disk, the
     * loader falls back to it. */
    if (rename(cur, prev) != 0 && errno != ENOENT)
        KD_WARN("checkpoint: cannot keep previous path=%s error=\"%s\"", cur, strerror(errno));
    if (rename(tmp, cur) != 0) {
        e = errno;
        unlink(tmp);
        return kd_errf(err, errlen, KD_EIO, "checkpoint: rename %s: %s", tmp, strerror(e));
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        /* Makes both renames durable; without it a power cut could resurrect the old
         * directory entries. */
        if (fsync(dfd) != 0)
            KD_WARN("checkpoint: fsync dir=%s error=\"%s\"", dir, strerror(errno));
        close(dfd);
    }
    return KD_OK;
}

void kd_ckpt_free(kd_ckpt *c)
{
    if (c == NULL)
        return;
    free(c->params);
    free(c->state);
    memset(c, 0, sizeof *c);
}

int kd_ckpt_load_file(const char *path, uint64_t fingerprint, kd_ckpt *out, char *err,
                      size_t errlen)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return kd_errf(err, errlen, errno == ENOENT ? KD_ENOTFOUND : KD_EIO,
                       "checkpoint %s: %s", path, strerror(errno));
    unsigned char hdr[CKPT_HDR];
    int rc = KD_OK;
    unsigned char *body = NULL;
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        rc = kd_errf(err, errlen, KD_EIO, "checkpoint %s: %s", path, strerror(errno));
        goto out;
    }
    /* The version byte decides the header's length, so read the common part first. */
    if (fread(hdr, 1, CKPT_HDR_V1, f) != CKPT_HDR_V1) {
        rc = kd_errf(err, errlen, KD_ETRUNCATED, "checkpoint %s: truncated header", path);
        goto out;
    }
    if (memcmp(hdr, ckpt_magic, 7) != 0 || hdr[7] < 1 || hdr[7] > CKPT_VERSION) {
        rc = kd_errf(err, errlen, KD_EFORMAT, "checkpoint %s: not a kadet checkpoint%s",
                     path, memcmp(hdr, ckpt_magic, 7) == 0 ? " (format from a newer kadet)"
                                                           : "");
        goto out;
    }
    int version = hdr[7];
    size_t hlen = version == 1 ? CKPT_HDR_V1 : version == 2 ? CKPT_HDR_V2 : CKPT_HDR;
    if (hlen > CKPT_HDR_V1 &&
        fread(hdr + CKPT_HDR_V1, 1, hlen - CKPT_HDR_V1, f) != hlen - CKPT_HDR_V1) {
        rc = kd_errf(err, errlen, KD_ETRUNCATED, "checkpoint %s: truncated header", path);
        goto out;
    }
    if ((version == 1 && kd_le_get64(hdr + 72) != 0) ||
        (version == 2 && kd_le_get32(hdr + 76) != 0)) {
        rc = kd_errf(err, errlen, KD_EFORMAT, "checkpoint %s: not a kadet checkpoint", path);
        goto out;
    }
    uint64_t np = kd_le_get64(hdr + 56), ns = kd_le_get64(hdr + 64);
    if (np == 0 || np > CKPT_MAX_FLOATS || ns > CKPT_MAX_FLOATS) {
        rc = kd_errf(err, errlen, KD_EFORMAT, "checkpoint %s: absurd sizes %llu/%llu", path,
                     (unsigned long long)np, (unsigned long long)ns);
        goto out;
    }
    uint64_t want = hlen + 4 * (np + ns) + 4;
    if ((uint64_t)st.st_size != want) {
        rc = kd_errf(err, errlen, (uint64_t)st.st_size < want ? KD_ETRUNCATED : KD_EFORMAT,
                     "checkpoint %s: %lld bytes, expected %llu", path, (long long)st.st_size,
                     (unsigned long long)want);
        goto out;
    }
    size_t blen = (size_t)(4 * (np + ns) + 4);
    body = malloc(blen);
    out->params = malloc((size_t)np * sizeof(float));
    out->state = ns > 0 ? malloc((size_t)ns * sizeof(float)) : NULL;
    if (body == NULL || out->params == NULL || (ns > 0 && out->state == NULL)) {
        rc = kd_errf(err, errlen, KD_ENOMEM, "checkpoint %s: out of memory", path);
        goto out;
    }
    if (fread(body, 1, blen, f) != blen) {
        rc = kd_errf(err, errlen, KD_ETRUNCATED, "checkpoint %s: short read", path);
        goto out;
    }
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, hdr, (uInt)hlen);
    crc = crc32(crc, body, (uInt)(blen - 4));
    if ((uint32_t)crc != kd_le_get32(body + blen - 4)) {
        rc = kd_errf(err, errlen, KD_ECHECKSUM, "checkpoint %s: checksum mismatch", path);
        goto out;
    }
    out->fingerprint = kd_le_get64(hdr + 8);
    if (fingerprint != 0 && out->fingerprint != fingerprint) {
        rc = kd_errf(err, errlen, KD_ECONFLICT,
                     "checkpoint %s: belongs to another job or model (fingerprint %016llx, "
                     "expected %016llx)", path, (unsigned long long)out->fingerprint,
                     (unsigned long long)fingerprint);
        goto out;
    }
    out->generation = kd_le_get32(hdr + 16);
    out->epoch = kd_le_get32(hdr + 20);
    out->cursor = kd_le_get64(hdr + 24);
    out->step = kd_le_get64(hdr + 32);
    out->optim_t = kd_le_get64(hdr + 40);
    out->seed = kd_le_get64(hdr + 48);
    out->n_params = (size_t)np;
    out->n_state = (size_t)ns;
    out->format = version;
    if (version >= 2) {
        double acc = get_f64(hdr + 80), loss = get_f64(hdr + 88);
        /* Covered by the CRC, but a value written by a buggy or foreign writer must not
         * become a reported accuracy. */
        if (!(acc >= 0.0 && acc <= 1.0) || !(loss >= 0.0 && loss < 1e30)) {
            rc = kd_errf(err, errlen, KD_EFORMAT,
                         "checkpoint %s: evaluation out of range (accuracy %g, loss %g)",
                         path, acc, loss);
            goto out;
        }
        out->eval_epoch = kd_le_get32(hdr + 72);
        out->accuracy = acc;
        out->train_loss = loss;
    }
    if (version >= 3) {
        uint32_t batch = kd_le_get32(hdr + 76);
        double g2 = get_f64(hdr + 96), s = get_f64(hdr + 104);
        if (batch > (1u << 20) || !isfinite(g2) || !isfinite(s)) {
            rc = kd_errf(err, errlen, KD_EFORMAT,
                         "checkpoint %s: batch state out of range (batch %u, noise %g/%g)",
                         path, batch, g2, s);
            goto out;
        }
        out->batch = batch;
        out->noise_g2 = g2;
        out->noise_s = s;
    }
    kd_wire_floats_from_le(out->params, body, (size_t)np);
    if (ns > 0)
        kd_wire_floats_from_le(out->state, body + 4 * np, (size_t)ns);
out:
    free(body);
    fclose(f);
    if (rc != KD_OK)
        kd_ckpt_free(out);
    return rc;
}

int kd_ckpt_load(const char *dir, uint64_t fingerprint, kd_ckpt *out, const char **which,
                 char *err, size_t errlen)
{
    char cur[4096], prev[4096];
    if (path_join(cur, sizeof cur, dir, KD_CKPT_FILE) != 0 ||
        path_join(prev, sizeof prev, dir, KD_CKPT_PREV) != 0)
        return kd_errf(err, errlen, KD_EINVAL, "checkpoint: directory name too long");
    char first[512];
    int rc = kd_ckpt_load_file(cur, fingerprint, out, first, sizeof first);
    if (rc == KD_OK) {
        if (which)
            *which = KD_CKPT_FILE;
        return KD_OK;
    }
    if (rc != KD_ENOTFOUND)
        KD_WARN("checkpoint: latest unusable, trying the previous one error=\"%s\"", first);
    int rc2 = kd_ckpt_load_file(prev, fingerprint, out, err, errlen);
    if (rc2 == KD_OK) {
        if (which)
            *which = KD_CKPT_PREV;
        return KD_OK;
    }
    if (rc2 == KD_ENOTFOUND && rc != KD_ENOTFOUND)
        return kd_errf(err, errlen, rc, "%s (and no previous checkpoint)", first);
    return rc2;
}
