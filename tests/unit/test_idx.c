/* kd_idx / kd_dataset: IDX files written here with zlib read back exactly (gzip and
 * plain); truncated, wrong-magic, wrong-dtype, oversized-dimension, trailing-byte and
 * mismatched files give the documented error code and a message naming the file, never
 * a crash or a huge allocation; the per-epoch permutation is a deterministic permutation;
 * gather copies the right samples; dataset directories resolve the MNIST file names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <zlib.h>

#include "kd_data.h"
#include "kd_error.h"

static char dir[256];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/kd_test_idx.XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Rotating buffers: a call may pass two paths at once. */
static const char *path_of(const char *name)
{
    static char p[4][512];
    static int next;
    char *out = p[next++ % 4];
    snprintf(out, sizeof p[0], "%s/%s", dir, name);
    return out;
}

/* Writes header (dtype, dims) + n payload bytes; gz selects gzip. */
static void write_idx(const char *name, int gz, uint8_t magic0, uint8_t dtype, int ndim,
                      const uint32_t *dims, const uint8_t *payload, size_t n)
{
    uint8_t hdr[4 + 16] = {magic0, 0, dtype, (uint8_t)ndim};
    for (int i = 0; i < ndim; i++) {
        hdr[4 + 4 * i] = (uint8_t)(dims[i] >> 24);
        hdr[5 + 4 * i] = (uint8_t)(dims[i] >> 16);
        hdr[6 + 4 * i] = (uint8_t)(dims[i] >> 8);
        hdr[7 + 4 * i] = (uint8_t)dims[i];
    }
    size_t hl = 4 + 4 * (size_t)ndim;
    if (gz) {
        gzFile f = gzopen(path_of(name), "wb");
        assert_non_null(f);
        assert_int_equal(gzwrite(f, hdr, (unsigned)hl), (int)hl);
        if (n)
            assert_int_equal(gzwrite(f, payload, (unsigned)n), (int)n);
        assert_int_equal(gzclose(f), Z_OK);
    } else {
        FILE *f = fopen(path_of(name), "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(hdr, 1, hl, f), hl);
        if (n)
            assert_int_equal(fwrite(payload, 1, n, f), n);
        fclose(f);
    }
}

static uint8_t pix[5 * 4 * 3];

static void write_valid_pair(const char *img, const char *lab, int gz)
{
    for (size_t i = 0; i < sizeof pix; i++)
        pix[i] = (uint8_t)(i * 17 % 256);
    uint32_t d[3] = {5, 4, 3};
    write_idx(img, gz, 0, 0x08, 3, d, pix, sizeof pix);
    uint8_t labels[5] = {3, 0, 9, 1, 3};
    uint32_t dl[1] = {5};
    write_idx(lab, gz, 0, 0x08, 1, dl, labels, 5);
}

static void test_valid_gzip_and_plain_files_load_exactly(void **state)
{
    (void)state;
    for (int gz = 0; gz <= 1; gz++) {
        write_valid_pair("img", "lab", gz);
        kd_idx idx;
        char err[256];
        assert_int_equal(kd_idx_read(path_of("img"), &idx, err, sizeof err), KD_OK);
        assert_int_equal(idx.ndim, 3);
        assert_int_equal(idx.dims[0], 5);
        assert_int_equal(idx.count, 60);
        assert_memory_equal(idx.data, pix, 60);
        kd_idx_free(&idx);

        kd_dataset ds;
        assert_int_equal(kd_idx_load(path_of("img"), path_of("lab"), &ds, err, sizeof err),
                         KD_OK);
        assert_int_equal(ds.n, 5);
        assert_int_equal(ds.dim, 12);
        assert_int_equal(ds.n_classes, 10);
        assert_int_equal(ds.y[2], 9);
        for (size_t i = 0; i < 60; i++)
            assert_true(ds.x[i] == (float)pix[i] * (1.0f / 255.0f));
        kd_dataset_free(&ds);
    }
}

static void expect_error(const char *name, int code, const char *fragment)
{
    kd_idx idx;
    char err[256] = "";
    int rc = kd_idx_read(path_of(name), &idx, err, sizeof err);
    if (rc != code)
        fail_msg("%s: got %d (%s), expected %d", name, rc, err, code);
    assert_non_null(strstr(err, name));
    if (fragment && !strstr(err, fragment))
        fail_msg("message \"%s\" lacks \"%s\"", err, fragment);
    assert_null(idx.data);
}

static void test_truncated_file_is_refused(void **state)
{
    (void)state;
    uint32_t d[3] = {5, 4, 3};
    write_idx("short.gz", 1, 0, 0x08, 3, d, pix, 59);
    expect_error("short.gz", KD_ETRUNCATED, "truncated");
    write_idx("short", 0, 0, 0x08, 3, d, pix, 10);
    expect_error("short", KD_ETRUNCATED, NULL);
    /* header cut inside the dimensions */
    FILE *f = fopen(path_of("hdr"), "wb");
    fwrite("\0\0\x08\x03\0\0", 1, 6, f);
    fclose(f);
    expect_error("hdr", KD_ETRUNCATED, "header");
    f = fopen(path_of("empty"), "wb");
    fclose(f);
    expect_error("empty", KD_ETRUNCATED, NULL);
}

static void test_wrong_magic_and_dtype_are_refused(void **state)
{
    (void)state;
    uint32_t d[1] = {5};
    write_idx("magic", 1, 0x1f, 0x08, 1, d, pix, 5);
    expect_error("magic", KD_EFORMAT, "magic");
    write_idx("dtype", 1, 0, 0x0D, 1, d, pix, 5);
    expect_error("dtype", KD_EFORMAT, "0x0d");
    write_idx("ndim", 1, 0, 0x08, 0, d, pix, 5);
    expect_error("ndim", KD_EFORMAT, "dimensions");
    uint32_t z[2] = {5, 0};
    write_idx("zero", 1, 0, 0x08, 2, z, pix, 0);
    expect_error("zero", KD_EFORMAT, "zero");
}

static void test_oversized_dimensions_are_refused_before_allocating(void **state)
{
    (void)state;
    /* 4 billion items of 4 billion values: over every cap */
    uint32_t huge[2] = {0xFFFFFFFFu, 0xFFFFFFFFu};
    write_idx("huge", 1, 0, 0x08, 2, huge, pix, 10);
    expect_error("huge", KD_ETOOBIG, NULL);
    uint32_t many[1] = {KD_DATA_MAX_SAMPLES + 1};
    write_idx("many", 1, 0, 0x08, 1, many, pix, 10);
    expect_error("many", KD_ETOOBIG, NULL);
    /* within the caps, but far more than a 100-byte file could inflate to */
    uint32_t big[3] = {60000, 28, 28};
    write_idx("big", 1, 0, 0x08, 3, big, pix, 10);
    expect_error("big", KD_ETRUNCATED, "only");
}

static void test_trailing_bytes_and_corrupt_gzip_are_refused(void **state)
{
    (void)state;
    uint32_t d[1] = {5};
    write_idx("trail", 1, 0, 0x08, 1, d, pix, 8);
    expect_error("trail", KD_EPARSE, "trailing");
    /* a valid gzip file with its middle overwritten */
    uint8_t big[4096];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7919 % 251);
    uint32_t db[1] = {4096};
    write_idx("corrupt", 1, 0, 0x08, 1, db, big, sizeof big);
    FILE *f = fopen(path_of("corrupt"), "r+b");
    fseek(f, 40, SEEK_SET);
    fwrite("garbagegarbagegarbage", 1, 21, f);
    fclose(f);
    kd_idx idx;
    char err[256];
    int rc = kd_idx_read(path_of("corrupt"), &idx, err, sizeof err);
    assert_true(rc == KD_EPARSE || rc == KD_ETRUNCATED);
    assert_null(idx.data);
}

static void test_mismatched_image_and_label_counts(void **state)
{
    (void)state;
    write_valid_pair("img", "lab", 1);
    uint32_t dl[1] = {4};
    write_idx("lab4", 1, 0, 0x08, 1, dl, pix, 4);
    kd_dataset ds;
    char err[256];
    assert_int_equal(kd_idx_load(path_of("img"), path_of("lab4"), &ds, err, sizeof err),
                     KD_EFORMAT);
    assert_non_null(strstr(err, "5 images"));
    assert_null(ds.x);
    assert_int_equal(kd_idx_load(path_of("img"), path_of("img"), &ds, err, sizeof err),
                     KD_EFORMAT);
    assert_int_equal(kd_idx_read(path_of("missing"), &(kd_idx){0}, err, sizeof err), KD_EIO);
}

static void test_dataset_dir_finds_mnist_names(void **state)
{
    (void)state;
    write_valid_pair("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 1);
    write_valid_pair("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 0);
    kd_dataset ds;
    char err[512];
    assert_int_equal(kd_dataset_load_dir("idx", dir, "train", 0, &ds, err, sizeof err), KD_OK);
    assert_int_equal(ds.n, 5);
    kd_dataset_free(&ds);
    assert_int_equal(kd_dataset_load_dir("idx", dir, "test", 0, &ds, err, sizeof err), KD_OK);
    kd_dataset_free(&ds);
    assert_int_equal(kd_dataset_load_dir("csv", dir, "test", 0, &ds, err, sizeof err),
                     KD_ENOTFOUND);
    assert_non_null(strstr(err, "test.csv"));
    assert_int_equal(kd_dataset_load_dir("parquet", dir, "test", 0, &ds, err, sizeof err),
                     KD_EINVAL);
    assert_int_equal(kd_dataset_load_dir("idx", dir, "valid", 0, &ds, err, sizeof err),
                     KD_EINVAL);
}

static void test_shuffle_is_a_deterministic_permutation_per_epoch(void **state)
{
    (void)state;
    enum { N = 1000 };
    static uint32_t a[N], b[N], c[N], d[N];
    kd_shuffle_perm(7, 0, a, N);
    kd_shuffle_perm(7, 0, b, N);
    kd_shuffle_perm(7, 1, c, N);
    kd_shuffle_perm(8, 0, d, N);
    assert_memory_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
    assert_memory_not_equal(a, d, sizeof a);
    static uint8_t seen[N];
    memset(seen, 0, sizeof seen);
    size_t fixed = 0;
    for (int i = 0; i < N; i++) {
        assert_true(c[i] < N);
        assert_int_equal(seen[c[i]], 0);
        seen[c[i]] = 1;
        fixed += c[i] == (uint32_t)i;
    }
    assert_true(fixed < 10); /* a shuffle, not the identity */
    /* Pinned values: other implementations (the PyTorch benchmark) reproduce this order. */
    uint32_t p[5];
    kd_shuffle_perm(1, 0, p, 5);
    print_message("perm(seed 1, epoch 0, n 5) = %u %u %u %u %u\n", p[0], p[1], p[2], p[3],
                  p[4]);
    kd_rng r;
    kd_rng_seed(&r, 0);
    assert_true(kd_rng_next(&r) == 0xE220A8397B1DCDAFull); /* splitmix64 reference value */
}

static void test_gather_copies_selected_samples(void **state)
{
    (void)state;
    float x[4 * 3] = {0, 1, 2, 10, 11, 12, 20, 21, 22, 30, 31, 32};
    int32_t y[4] = {0, 1, 2, 3};
    kd_dataset ds = {.n = 4, .dim = 3, .n_classes = 4, .x = x, .y = y};
    uint32_t idx[3] = {3, 0, 3};
    float bx[9];
    int32_t by[3];
    kd_dataset_gather(&ds, idx, 3, bx, by);
    float ex[9] = {30, 31, 32, 0, 1, 2, 30, 31, 32};
    assert_memory_equal(bx, ex, sizeof ex);
    assert_int_equal(by[0], 3);
    assert_int_equal(by[1], 0);
}

/* Random corruption of valid files (flipped, truncated, extended): every outcome is OK or
 * an error code, never a crash or a sanitizer report. */
static void test_random_corruptions_never_crash(void **state)
{
    (void)state;
    write_valid_pair("base.gz", "lab", 1);
    write_valid_pair("base", "lab", 0);
    kd_rng r;
    kd_rng_seed(&r, 2024);
    for (int gz = 0; gz <= 1; gz++) {
        FILE *f = fopen(path_of(gz ? "base.gz" : "base"), "rb");
        assert_non_null(f);
        uint8_t orig[512];
        size_t n = fread(orig, 1, sizeof orig, f);
        fclose(f);
        for (int iter = 0; iter < 300; iter++) {
            uint8_t buf[600];
            memcpy(buf, orig, n);
            size_t len = n;
            int flips = 1 + (int)kd_rng_below(&r, 4);
            for (int k = 0; k < flips; k++)
                buf[kd_rng_below(&r, len)] = (uint8_t)kd_rng_next(&r);
            uint64_t op = kd_rng_below(&r, 3);
            if (op == 1)
                len = (size_t)kd_rng_below(&r, len + 1);
            else if (op == 2)
                for (int k = 0; k < 40; k++)
                    buf[len++] = (uint8_t)kd_rng_next(&r);
            f = fopen(path_of("fuzz"), "wb");
            fwrite(buf, 1, len, f);
            fclose(f);
            kd_idx idx;
            char err[256];
            int rc = kd_idx_read(path_of("fuzz"), &idx, err, sizeof err);
            if (rc == KD_OK) {
                assert_non_null(idx.data);
                kd_idx_free(&idx);
            } else {
                assert_true(rc < 0);
                assert_true(strlen(err) > 0);
                assert_null(idx.data);
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_gzip_and_plain_files_load_exactly),
        cmocka_unit_test(test_truncated_file_is_refused),
        cmocka_unit_test(test_wrong_magic_and_dtype_are_refused),
        cmocka_unit_test(test_oversized_dimensions_are_refused_before_allocating),
        cmocka_unit_test(test_trailing_bytes_and_corrupt_gzip_are_refused),
        cmocka_unit_test(test_mismatched_image_and_label_counts),
        cmocka_unit_test(test_dataset_dir_finds_mnist_names),
        cmocka_unit_test(test_shuffle_is_a_deterministic_permutation_per_epoch),
        cmocka_unit_test(test_gather_copies_selected_samples),
        cmocka_unit_test(test_random_corruptions_never_crash),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
