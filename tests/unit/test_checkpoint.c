/* checkpoint: what is saved loads back bit-exactly; the previous checkpoint is kept;
 * truncated, bit-flipped and foreign files are detected and the previous checkpoint is
 * used instead; nothing at all is reported as not found. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "checkpoint.h"
#include "kd_error.h"

static char dir[256];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/kd_ckpt_test.XXXXXX");
    return mkdtemp(dir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void save_one(uint64_t step, float base)
{
    float p[5], s[10];
    for (int i = 0; i < 5; i++)
        p[i] = base + (float)i * 0.25f;
    for (int i = 0; i < 10; i++)
        s[i] = -base - (float)i;
    kd_ckpt c = {.fingerprint = 42, .generation = 3, .epoch = 2, .cursor = 640,
                 .step = step, .optim_t = step, .seed = 7, .n_params = 5, .n_state = 10,
                 .params = p, .state = s};
    char err[256];
    assert_int_equal(kd_ckpt_save(dir, &c, err, sizeof err), KD_OK);
}

static void path_of(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", dir, name);
}

static void test_saved_state_loads_back_exactly(void **state)
{
    (void)state;
    char err[256];
    kd_ckpt c;
    const char *which = NULL;
    assert_int_equal(kd_ckpt_load(dir, 42, &c, &which, err, sizeof err), KD_ENOTFOUND);
    save_one(100, 1.5f);
    assert_int_equal(kd_ckpt_load(dir, 42, &c, &which, err, sizeof err), KD_OK);
    assert_string_equal(which, KD_CKPT_FILE);
    assert_int_equal(c.generation, 3);
    assert_int_equal(c.epoch, 2);
    assert_int_equal(c.cursor, 640);
    assert_int_equal(c.step, 100);
    assert_int_equal(c.seed, 7);
    assert_int_equal(c.n_params, 5);
    assert_int_equal(c.n_state, 10);
    assert_true(c.params[4] == 2.5f);
    assert_true(c.state[9] == -10.5f);
    kd_ckpt_free(&c);
    kd_ckpt_free(&c);
    /* Another job's or model's checkpoint is refused. */
    assert_int_equal(kd_ckpt_load(dir, 43, &c, &which, err, sizeof err), KD_ECONFLICT);
    assert_non_null(strstr(err, "another job"));
}

static void corrupt(const char *name, long at, int truncate_to)
{
    char p[400];
    path_of(p, sizeof p, name);
    if (truncate_to >= 0) {
        assert_int_equal(truncate(p, truncate_to), 0);
        return;
    }
    FILE *f = fopen(p, "r+b");
    assert_non_null(f);
    fseek(f, at, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, at, SEEK_SET);
    fputc(ch ^ 0x10, f);
    fclose(f);
}

static void test_damaged_latest_falls_back_to_previous(void **state)
{
    (void)state;
    char err[256];
    kd_ckpt c;
    const char *which = NULL;
    save_one(100, 1.0f);
    save_one(200, 2.0f);
    assert_int_equal(kd_ckpt_load(dir, 42, &c, &which, err, sizeof err), KD_OK);
    assert_int_equal(c.step, 200);
    kd_ckpt_free(&c);

    corrupt(KD_CKPT_FILE, 90, -1); /* one flipped bit inside the parameters */
    char p[400];
    path_of(p, sizeof p, KD_CKPT_FILE);
    assert_int_equal(kd_ckpt_load_file(p, 42, &c, err, sizeof err), KD_ECHECKSUM);
    assert_int_equal(kd_ckpt_load(dir, 42, &c, &which, err, sizeof err), KD_OK);
    assert_string_equal(which, KD_CKPT_PREV);
    assert_int_equal(c.step, 100);
    assert_true(c.params[0] == 1.0f);
    kd_ckpt_free(&c);

    save_one(300, 3.0f); /* the damaged one becomes "previous" */
    save_one(400, 4.0f);
    corrupt(KD_CKPT_FILE, 0, 100); /* truncated mid-write by a full disk */
    assert_int_equal(kd_ckpt_load_file(p, 42, &c, err, sizeof err), KD_ETRUNCATED);
    assert_int_equal(kd_ckpt_load(dir, 42, &c, &which, err, sizeof err), KD_OK);
    assert_int_equal(c.step, 300);
    kd_ckpt_free(&c);

    corrupt(KD_CKPT_PREV, 3, -1); /* and now the magic of the previous one as well */
    assert_int_equal(kd_ckpt_load(dir, 42, &c, &which, err, sizeof err), KD_EFORMAT);
    assert_non_null(strstr(err, "not a kadet checkpoint"));
    assert_null(c.params);
}

static void test_garbage_file_is_rejected_not_trusted(void **state)
{
    (void)state;
    char p[400], err[256];
    path_of(p, sizeof p, "garbage.kdc");
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    unsigned char hdr[80] = {'K', 'D', 'C', 'K', 'P', 'T', 0, 1};
    memset(hdr + 56, 0xff, 16); /* absurd sizes that would overflow an allocation */
    fwrite(hdr, 1, sizeof hdr, f);
    fclose(f);
    kd_ckpt c;
    assert_int_equal(kd_ckpt_load_file(p, 0, &c, err, sizeof err), KD_EFORMAT);
    assert_non_null(strstr(err, "absurd"));
    assert_int_equal(kd_ckpt_save("/proc/no/such/dir", &(kd_ckpt){0}, err, sizeof err),
                     KD_EIO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_saved_state_loads_back_exactly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_latest_falls_back_to_previous, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_garbage_file_is_rejected_not_trusted, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
