/* kd_csv: numeric CSV files load with the label column where the caller says (first,
 * last), an optional header line and CRLF endings; malformed files (non-numeric
 * feature, bad or negative label, ragged row, no rows, missing file) give an error
 * naming the line and column instead of a crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "kd_data.h"
#include "kd_error.h"

static char path[256];

static int setup(void **state)
{
    (void)state;
    snprintf(path, sizeof path, "/tmp/kd_test_csv.XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    return 0;
}

static void write_text(const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_label_first_with_header_and_crlf(void **state)
{
    (void)state;
    write_text("label,a,b\r\n1, 0.5 ,2\r\n0,-1e-3,4\r\n\r\n3,7,8\r\n");
    kd_dataset ds;
    char err[256];
    assert_int_equal(kd_csv_load(path, 0, &ds, err, sizeof err), KD_OK);
    assert_int_equal(ds.n, 3);
    assert_int_equal(ds.dim, 2);
    assert_int_equal(ds.n_classes, 4);
    assert_int_equal(ds.y[0], 1);
    assert_int_equal(ds.y[2], 3);
    assert_true(ds.x[0] == 0.5f);
    assert_true(ds.x[2] == -1e-3f);
    assert_true(ds.x[5] == 8.0f);
    kd_dataset_free(&ds);
}

static void test_label_last_without_header(void **state)
{
    (void)state;
    write_text("0.1,0.2,1\n0.3,0.4,0");
    kd_dataset ds;
    char err[256];
    assert_int_equal(kd_csv_load(path, -1, &ds, err, sizeof err), KD_OK);
    assert_int_equal(ds.n, 2);
    assert_int_equal(ds.dim, 2);
    assert_int_equal(ds.y[0], 1);
    assert_int_equal(ds.y[1], 0);
    assert_true(ds.x[3] == 0.4f);
    assert_int_equal(ds.n_classes, 2);
    kd_dataset_free(&ds);
}

static void expect_error(const char *text, int label_col, int code, const char *fragment)
{
    write_text(text);
    kd_dataset ds;
    char err[256] = "";
    int rc = kd_csv_load(path, label_col, &ds, err, sizeof err);
    if (rc != code)
        fail_msg("got %d (%s), expected %d", rc, err, code);
    if (!strstr(err, fragment))
        fail_msg("message \"%s\" lacks \"%s\"", err, fragment);
    assert_null(ds.x);
}

static void test_bad_files_name_line_and_column(void **state)
{
    (void)state;
    expect_error("1,2,3\n0,abc,3\n", 0, KD_EPARSE, ":2 column 2: expected a number, got \"abc\"");
    expect_error("1,2,3\n0.5,2,3\n", 0, KD_EPARSE, ":2 column 1: label must be an integer");
    expect_error("1,2,3\n-1,2,3\n", 0, KD_EPARSE, "got \"-1\"");
    expect_error("1,2,3\n0,2\n", 0, KD_EPARSE, ":2: 2 fields, expected 3");
    expect_error("a,b,c\n", 0, KD_EFORMAT, "no data rows");
    expect_error("\n\n", 0, KD_EFORMAT, "no data rows");
    expect_error("5\n6\n", 0, KD_EFORMAT, "at least one feature");
    expect_error("1,2,3\n", 7, KD_EINVAL, "label column 7");
    expect_error("1,2,3\n0,2,nan\n", 0, KD_EPARSE, "column 3: expected a number");
    kd_dataset ds;
    char err[256];
    assert_int_equal(kd_csv_load("/nonexistent/kadet.csv", 0, &ds, err, sizeof err), KD_ENOTFOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_label_first_with_header_and_crlf),
        cmocka_unit_test(test_label_last_without_header),
        cmocka_unit_test(test_bad_files_name_line_and_column),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
