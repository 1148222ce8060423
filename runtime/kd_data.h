/*
 * kd_data: training data in memory, its readers and its deterministic order.
 *
 * A dataset is n samples of dim float32 features (row-major, normalised once at load:
 * IDX bytes become [0, 1]) with an integer class label each. Readers:
 *   - IDX (the MNIST family, gzip-compressed or not): magic, dtype, dimensions and counts
 *     are validated against the file's real size, and absurd dimensions are refused
 *     before anything is allocated;
 *   - CSV: numeric features and one integer label column; a first line with a
 *     non-numeric field is taken as a header.
 * Order: kd_shuffle_perm gives the permutation of epoch e from (seed, e) alone, so a
 * global "cursor" (a position in that permutation) names a sample; the distributed
 * runtime hands workers ranges [cursor, cursor + n) of it. kd_dataset_gather copies the
 * samples of a list of indices into a preallocated batch buffer.
 */
#ifndef KD_DATA_H
#define KD_DATA_H

#include <stddef.h>
#include <stdint.h>

#define KD_DATA_MAX_SAMPLES 100000000u /* refuse datasets with more samples */
#define KD_DATA_MAX_DIM 1048576u        /* refuse samples with more features */
#define KD_DATA_MAX_CLASSES 65536       /* labels must be in [0, this) */
#define KD_DATA_MAX_BYTES (8ull << 30)  /* refuse feature matrices above 8 GiB */

typedef struct kd_dataset {
    size_t n;       /* samples */
    size_t dim;     /* features per sample */
    int n_classes;  /* 1 + the largest label */
    float *x;       /* [n x dim] features (owned) */
    int32_t *y;     /* [n] labels in [0, n_classes) (owned) */
} kd_dataset;

/* One IDX file as read: dimensions and raw unsigned bytes. */
typedef struct kd_idx {
    int ndim;            /* 1 to 4 */
    uint32_t dims[4];    /* dims[0] is the item count */
    size_t count;        /* product of the dims */
    uint8_t *data;       /* count bytes (owned) */
} kd_idx;

/* Reads an IDX file (gzip or plain; only dtype 0x08, unsigned byte, is accepted).
 * Errors: KD_EIO (cannot open/read), KD_EFORMAT (bad magic or dtype), KD_ETOOBIG
 * (dimensions over the caps), KD_ETRUNCATED (fewer bytes than the header announces),
 * KD_EPARSE (corrupt gzip or trailing bytes), KD_ENOMEM; detail, naming the file, in err.
 * On error *out is zeroed. */
int kd_idx_read(const char *path, kd_idx *out, char *err, size_t errlen);
void kd_idx_free(kd_idx *idx);

/* Images (any ndim >= 1: features = product of dims[1..]) plus labels (ndim 1) into a
 * dataset with features scaled to [0, 1]. The item counts must agree. */
int kd_idx_load(const char *images_path, const char *labels_path, kd_dataset *ds,
                char *err, size_t errlen);

/* A CSV file: every row has the same number of fields; label_col (0-based, -1 = last)
 * holds an integer label in [0, KD_DATA_MAX_CLASSES), the others are numbers (features
 * used as given). Errors name the line and column. */
int kd_csv_load(const char *path, int label_col, kd_dataset *ds, char *err, size_t errlen);

/* Loads split "train" or "test" of a dataset directory: for format "idx" the files
 * <split>-images-idx3-ubyte[.gz] and <split>-labels-idx1-ubyte[.gz] (the test split may
 * also be named t10k-...), for format "csv" <split>.csv with the label in column
 * label_col. */
int kd_dataset_load_dir(const char *format, const char *dir, const char *split,
                        int label_col, kd_dataset *ds, char *err, size_t errlen);

/* Whether both splits' files of a dataset directory are there (readable), without
 * loading them: KD_OK, or KD_ENOTFOUND / KD_EINVAL with the same message as
 * kd_dataset_load_dir. What the files hold is checked when they are loaded. */
int kd_dataset_check_dir(const char *format, const char *dir, char *err, size_t errlen);

/* Frees the buffers and zeroes *ds; accepts NULL and a zeroed dataset. */
void kd_dataset_free(kd_dataset *ds);

/* The permutation of [0, n) for epoch `epoch` under `seed` (Fisher-Yates driven by a
 * counter-based generator): identical on every machine for the same arguments. */
void kd_shuffle_perm(uint64_t seed, uint64_t epoch, uint32_t *perm, size_t n);

/* Copies samples idx[0..count) into x (count x dim) and their labels into y. */
void kd_dataset_gather(const kd_dataset *ds, const uint32_t *idx, size_t count, float *x,
                       int32_t *y);

/* splitmix64-style seeded generator shared by the shuffle and the initialisation. */
typedef struct kd_rng {
    uint64_t s; /* state */
} kd_rng;
void kd_rng_seed(kd_rng *r, uint64_t seed);
uint64_t kd_rng_next(kd_rng *r);
/* Uniform in [0, 1) with 53 bits. */
double kd_rng_uniform(kd_rng *r);
/* Uniform integer in [0, bound) without modulo bias; bound > 0. */
uint64_t kd_rng_below(kd_rng *r, uint64_t bound);
/* Standard normal (Box-Muller). */
double kd_rng_normal(kd_rng *r);

#endif
