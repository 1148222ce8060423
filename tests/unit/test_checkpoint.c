/* checkpoint: what is saved loads back bit-exactly, with the last epoch's evaluation;
 * the previous checkpoint is kept; truncated, bit-flipped and foreign files are detected
 * and the previous checkpoint is used instead; nothing at all is reported as not found;
 * files of the previous formats (1: no evaluation, 2: no batch state) still load; a newer
 * format is refused by name; an adaptive batch state out of range is refused. */
#include <math.h>
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

#include "checkpoint.h"
#include "kd_error.h"
#include "kd_le.h"

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
                 .params = p, .state = s, .eval_epoch = 2, .accuracy = 0.8125,
                 .train_loss = 0.375 + (double)step, .batch = 112, .noise_g2 = 0.04,
                 .noise_s = -3.5};
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
    assert_int_equal(c.format, 3);
    assert_int_equal(c.eval_epoch, 2);
    assert_true(c.accuracy == 0.8125);
    assert_true(c.train_loss == 100.375);
    assert_int_equal(c.batch, 112);
    assert_true(c.noise_g2 == 0.04 && c.noise_s == -3.5);
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

    corrupt(KD_CKPT_FILE, 100, -1); /* one flipped bit inside the parameters */
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

/* Writes a checkpoint file byte by byte: a header of hlen bytes, two parameters, no
 * optimizer state, and a correct CRC (so that only the header's content is judged). */
static void write_raw(const char *name, unsigned char *hdr, size_t hlen)
{
    kd_le_put64(hdr + 8, 42);
    kd_le_put32(hdr + 20, 3);   /* epoch */
    kd_le_put64(hdr + 32, 77);  /* step */
    kd_le_put64(hdr + 56, 2);   /* n_params */
    unsigned char body[8];
    kd_le_put32(body, 0x3f800000u);     /* 1.0f */
    kd_le_put32(body + 4, 0xc0000000u); /* -2.0f */
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, hdr, (uInt)hlen);
    crc = crc32(crc, body, sizeof body);
    unsigned char tail[4];
    kd_le_put32(tail, (uint32_t)crc);
    char p[400];
    path_of(p, sizeof p, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(hdr, 1, hlen, f), hlen);
    assert_int_equal(fwrite(body, 1, sizeof body, f), sizeof body);
    assert_int_equal(fwrite(tail, 1, 4, f), 4);
    assert_int_equal(fclose(f), 0);
}

static void test_format_1_loads_without_evaluation(void **state)
{
    (void)state;
    unsigned char hdr[80] = {'K', 'D', 'C', 'K', 'P', 'T', 0, 1};
    write_raw(KD_CKPT_FILE, hdr, sizeof hdr);
    kd_ckpt c;
    const char *which = NULL;
    char err[256];
    assert_int_equal(kd_ckpt_load(dir, 42, &c, &which, err, sizeof err), KD_OK);
    assert_int_equal(c.format, 1);
    assert_int_equal(c.epoch, 3);
    assert_int_equal(c.step, 77);
    assert_int_equal(c.n_params, 2);
    assert_true(c.params[0] == 1.0f && c.params[1] == -2.0f);
    assert_int_equal(c.eval_epoch, 0);
    assert_true(c.accuracy == 0.0);
    kd_ckpt_free(&c);
}

static void put_f64(unsigned char *p, double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    kd_le_put64(p, u);
}

static void test_newer_or_nonsense_header_is_refused(void **state)
{
    (void)state;
    char p[400], err[256];
    kd_ckpt c;
    path_of(p, sizeof p, KD_CKPT_FILE);
    /* A format this build does not know: refused, and the message says why. */
    unsigned char v4[112] = {'K', 'D', 'C', 'K', 'P', 'T', 0, 4};
    write_raw(KD_CKPT_FILE, v4, sizeof v4);
    assert_int_equal(kd_ckpt_load_file(p, 42, &c, err, sizeof err), KD_EFORMAT);
    assert_non_null(strstr(err, "newer kadet"));
    /* Format 3: a batch beyond any the runtime takes, or a noise estimate that is not a
     * number, is refused; sane values load. */
    unsigned char v3[112] = {'K', 'D', 'C', 'K', 'P', 'T', 0, 3};
    kd_le_put32(v3 + 76, 1u << 30);
    write_raw(KD_CKPT_FILE, v3, sizeof v3);
    assert_int_equal(kd_ckpt_load_file(p, 42, &c, err, sizeof err), KD_EFORMAT);
    assert_non_null(strstr(err, "batch state out of range"));
    kd_le_put32(v3 + 76, 96);
    put_f64(v3 + 96, NAN);
    write_raw(KD_CKPT_FILE, v3, sizeof v3);
    assert_int_equal(kd_ckpt_load_file(p, 42, &c, err, sizeof err), KD_EFORMAT);
    put_f64(v3 + 96, 0.5);
    put_f64(v3 + 104, 80.0);
    write_raw(KD_CKPT_FILE, v3, sizeof v3);
    assert_int_equal(kd_ckpt_load_file(p, 42, &c, err, sizeof err), KD_OK);
    assert_int_equal(c.format, 3);
    assert_int_equal(c.batch, 96);
    assert_true(c.noise_g2 == 0.5 && c.noise_s == 80.0);
    kd_ckpt_free(&c);
    /* A checksummed format 2 header whose accuracy is not a fraction. */
    unsigned char v2[96] = {'K', 'D', 'C', 'K', 'P', 'T', 0, 2};
    kd_le_put32(v2 + 72, 3);
    put_f64(v2 + 80, 1.5);
    write_raw(KD_CKPT_FILE, v2, sizeof v2);
    assert_int_equal(kd_ckpt_load_file(p, 42, &c, err, sizeof err), KD_EFORMAT);
    assert_non_null(strstr(err, "evaluation out of range"));
    assert_null(c.params);
    /* The same with a sane accuracy loads. */
    put_f64(v2 + 80, 0.875);
    put_f64(v2 + 88, 0.25);
    write_raw(KD_CKPT_FILE, v2, sizeof v2);
    assert_int_equal(kd_ckpt_load_file(p, 42, &c, err, sizeof err), KD_OK);
    assert_int_equal(c.eval_epoch, 3);
    assert_true(c.accuracy == 0.875 && c.train_loss == 0.25);
    assert_int_equal(c.batch, 0); /* format 2 records no batch */
    kd_ckpt_free(&c);
    /* Format 2's reserved word must stay zero. */
    kd_le_put32(v2 + 76, 64);
    write_raw(KD_CKPT_FILE, v2, sizeof v2);
    assert_int_equal(kd_ckpt_load_file(p, 42, &c, err, sizeof err), KD_EFORMAT);
    kd_le_put32(v2 + 76, 0);
    write_raw(KD_CKPT_FILE, v2, sizeof v2);
    /* A format 2 file cut inside its longer header is truncated, not misread as 1. */
    assert_int_equal(truncate(p, 90), 0);
    assert_int_equal(kd_ckpt_load_file(p, 42, &c, err, sizeof err), KD_ETRUNCATED);
}

static void test_probe_reports_an_unwritable_directory(void **state)
{
    (void)state;
    char err[512] = "";
    /* Writable (the directory is created): no file is left behind. */
    char sub[320];
    snprintf(sub, sizeof sub, "%s/new", dir);
    assert_int_equal(kd_ckpt_probe(sub, err, sizeof err), KD_OK);
    char probe[400];
    snprintf(probe, sizeof probe, "%s/checkpoint.probe", sub);
    assert_int_not_equal(access(probe, F_OK), 0);
    /* Its parent is a file: an I/O error naming the path and the reason, as a save gets. */
    char file[320], bad[400];
    snprintf(file, sizeof file, "%s/afile", dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(bad, sizeof bad, "%s/ckpt", file);
    assert_int_equal(kd_ckpt_probe(bad, err, sizeof err), KD_EIO);
    assert_non_null(strstr(err, bad));
    assert_non_null(strstr(err, "Not a directory"));
    float p[1] = {1.0f};
    kd_ckpt c = {.n_params = 1, .params = p};
    char err2[512] = "";
    assert_int_equal(kd_ckpt_save(bad, &c, err2, sizeof err2), KD_EIO);
    assert_string_equal(err, err2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_saved_state_loads_back_exactly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_probe_reports_an_unwritable_directory, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_damaged_latest_falls_back_to_previous, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_garbage_file_is_rejected_not_trusted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_format_1_loads_without_evaluation, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_newer_or_nonsense_header_is_refused, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
