/*
 * kd_dataset: what every reader shares: the seeded generator, the per-epoch permutation,
 * batch gathering, and finding a split's files in a dataset directory.
 *
 * The generator is splitmix64: tiny, fast, and simple enough to reimplement bit for bit
 * elsewhere (the PyTorch benchmark does, to feed PyTorch the same sample order).
 */
#include "kd_data.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kd_error.h"

void kd_rng_seed(kd_rng *r, uint64_t seed)
{
    r->s = seed;
}

uint64_t kd_rng_next(kd_rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double kd_rng_uniform(kd_rng *r)
{
    return (double)(kd_rng_next(r) >> 11) * 0x1.0p-53;
}

uint64_t kd_rng_below(kd_rng *r, uint64_t bound)
{
    /* Reject the top sliver of the range that would bias r % bound. */
    uint64_t threshold = (0 - bound) % bound;
    for (;;) {
        uint64_t x = kd_rng_next(r);
        if (x >= threshold)
            return x % bound;
    }
}

double kd_rng_normal(kd_rng *r)
{
    double u1 = 1.0 - kd_rng_uniform(r); /* (0, 1]: log is finite */
    double u2 = kd_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

void kd_shuffle_perm(uint64_t seed, uint64_t epoch, uint32_t *perm, size_t n)
{
    kd_rng r;
    kd_rng_seed(&r, seed);
    /* One draw decorrelates nearby seeds before the epoch is mixed in. */
    kd_rng_seed(&r, kd_rng_next(&r) ^ (epoch * 0xD1B54A32D192ED03ull));
    for (size_t i = 0; i < n; i++)
        perm[i] = (uint32_t)i;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)kd_rng_below(&r, i);
        uint32_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}

void kd_dataset_gather(const kd_dataset *ds, const uint32_t *idx, size_t count, float *x,
                       int32_t *y)
{
    size_t row = ds->dim * sizeof(float);
    for (size_t i = 0; i < count; i++) {
        memcpy(x + i * ds->dim, ds->x + (size_t)idx[i] * ds->dim, row);
        y[i] = ds->y[idx[i]];
    }
}

void kd_dataset_free(kd_dataset *ds)
{
    if (!ds)
        return;
    free(ds->x);
    free(ds->y);
    memset(ds, 0, sizeof *ds);
}

/* First of the candidate names that exists in dir, into out. */
static int find_file(const char *dir, const char *const *names, size_t n, char *out,
                     size_t outlen)
{
    for (size_t i = 0; i < n; i++) {
        int w = snprintf(out, outlen, "%s/%s", dir, names[i]);
        if (w > 0 && (size_t)w < outlen && access(out, R_OK) == 0)
            return 0;
    }
    snprintf(out, outlen, "%s/%s", dir, names[0]);
    return -1;
}

/* The files of a split: for idx the images into a and the labels into b, for csv the
 * one file into a. KD_ENOTFOUND / KD_EINVAL with the message in err. */
static int split_paths(const char *format, const char *dir, const char *split, char *a,
                       char *b, size_t len, char *err, size_t errlen)
{
    int train = strcmp(split, "train") == 0;
    if (!train && strcmp(split, "test") != 0)
        return kd_errf(err, errlen, KD_EINVAL, "unknown split \"%s\" (train or test)", split);
    if (strcmp(format, "idx") == 0) {
        static const char *const tr_img[] = {"train-images-idx3-ubyte.gz",
                                             "train-images-idx3-ubyte"};
        static const char *const tr_lab[] = {"train-labels-idx1-ubyte.gz",
                                             "train-labels-idx1-ubyte"};
        static const char *const te_img[] = {"t10k-images-idx3-ubyte.gz",
                                             "t10k-images-idx3-ubyte",
                                             "test-images-idx3-ubyte.gz",
                                             "test-images-idx3-ubyte"};
        static const char *const te_lab[] = {"t10k-labels-idx1-ubyte.gz",
                                             "t10k-labels-idx1-ubyte",
                                             "test-labels-idx1-ubyte.gz",
                                             "test-labels-idx1-ubyte"};
        int r1 = find_file(dir, train ? tr_img : te_img, train ? 2 : 4, a, len);
        int r2 = find_file(dir, train ? tr_lab : te_lab, train ? 2 : 4, b, len);
        if (r1 != 0 || r2 != 0)
            return kd_errf(err, errlen, KD_ENOTFOUND,
                           "dataset %s: no %s split (looked for %s)", dir, split,
                           r1 != 0 ? a : b);
        return KD_OK;
    }
    if (strcmp(format, "csv") == 0) {
        const char *name = train ? "train.csv" : "test.csv";
        if (find_file(dir, &name, 1, a, len) != 0)
            return kd_errf(err, errlen, KD_ENOTFOUND, "dataset %s: no %s split (looked for %s)",
                           dir, split, a);
        return KD_OK;
    }
    return kd_errf(err, errlen, KD_EINVAL, "unknown dataset format \"%s\" (idx or csv)",
                   format);
}

int kd_dataset_load_dir(const char *format, const char *dir, const char *split,
                        int label_col, kd_dataset *ds, char *err, size_t errlen)
{
    memset(ds, 0, sizeof *ds);
    char a[4096], b[4096];
    int rc = split_paths(format, dir, split, a, b, sizeof a, err, errlen);
    if (rc != KD_OK)
        return rc;
    if (strcmp(format, "idx") == 0)
        return kd_idx_load(a, b, ds, err, errlen);
    return kd_csv_load(a, label_col, ds, err, errlen);
}

int kd_dataset_check_dir(const char *format, const char *dir, char *err, size_t errlen)
{
    char a[4096], b[4096];
    int rc = split_paths(format, dir, "train", a, b, sizeof a, err, errlen);
    return rc != KD_OK ? rc : split_paths(format, dir, "test", a, b, sizeof a, err, errlen);
}
