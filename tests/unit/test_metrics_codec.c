/* Unit tests of the metrics message codec (common/kd_metrics.h): a round trip keeps every
 * field and its presence, absent fields stay absent, and hostile input (wrong types,
 * out-of-range numbers, missing required fields, huge strings and tables) is refused with
 * a line that names the field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kd_error.h"
#include "kd_metrics.h"

static void fill(kd_metrics *m)
{
    memset(m, 0, sizeof *m);
    m->has = KD_MET_JOB | KD_MET_STATE | KD_MET_GENERATION | KD_MET_AGENTS | KD_MET_EPOCH |
             KD_MET_STEP | KD_MET_SAMPLES_PER_S | KD_MET_COMPUTE_MS | KD_MET_COMM_MS |
             KD_MET_LOSS | KD_MET_ACCURACY | KD_MET_WALL_SECONDS | KD_MET_EPOCHS |
             KD_MET_BATCH | KD_MET_CHECKPOINT | KD_MET_CHECKPOINT_ERROR | KD_MET_LR |
             KD_MET_EPOCHS_DONE | KD_MET_LAST_EPOCH | KD_MET_SAMPLES | KD_MET_NOISE |
             KD_MET_CONFIGS;
    snprintf(m->job, sizeof m->job, "default/fm");
    snprintf(m->state, sizeof m->state, "running");
    m->generation = 4000000000LL;
    m->agents = 3;
    m->epoch = 2;
    m->step = 123456789012LL;
    m->samples = 5000;
    m->samples_per_s = 9000.5;
    m->compute_ms = 1.25;
    m->comm_ms = 0.5;
    m->loss = 0.41;
    m->accuracy = 0.86;
    m->wall_seconds = 12.0;
    m->epochs = 10;
    m->batch = 112;
    snprintf(m->checkpoint, sizeof m->checkpoint, "failing");
    snprintf(m->checkpoint_error, sizeof m->checkpoint_error, "open /c/x: No space left");
    m->lr = 0.05;
    m->epochs_done = 1;
    m->last_epoch = (kd_metrics_epoch){.has = KD_MET_EPOCH_LR, .epoch = 1, .accuracy = 0.8,
                                       .train_loss = 0.5, .wall_seconds = 6, .train_seconds = 5,
                                       .epoch_seconds = 4.5, .agents = 2, .batch = 64,
                                       .lr = 0.04};
    m->noise_scale = 1234.5;
    m->noise_g2 = -0.25;
    m->noise_s = 7.5;
    m->n_configs = 2;
    m->configs[0] = (kd_metrics_config){1, 64, 4000, 16, 12};
    m->configs[1] = (kd_metrics_config){3, 112, 9000.5, 37.25, 20.5};
}

static void test_round_trip_keeps_every_field(void **state)
{
    (void)state;
    kd_metrics a, b;
    fill(&a);
    size_t len = 0;
    char *text = kd_metrics_encode(&a, &len);
    assert_non_null(text);
    assert_int_equal(len, strlen(text));
    char err[256];
    assert_int_equal(kd_metrics_decode(text, len, &b, err, sizeof err), KD_OK);
    free(text);
    assert_int_equal(b.has, a.has);
    assert_string_equal(b.job, a.job);
    assert_string_equal(b.state, a.state);
    assert_true(b.generation == a.generation);
    assert_int_equal(b.agents, 3);
    assert_true(b.epoch == 2 && b.step == a.step && b.samples == 5000);
    assert_float_equal(b.samples_per_s, 9000.5, 1e-9);
    assert_float_equal(b.compute_ms, 1.25, 1e-12);
    assert_float_equal(b.loss, 0.41, 1e-9);
    assert_float_equal(b.accuracy, 0.86, 1e-9);
    assert_int_equal(b.epochs, 10);
    assert_int_equal(b.batch, 112);
    assert_string_equal(b.checkpoint, "failing");
    assert_string_equal(b.checkpoint_error, a.checkpoint_error);
    assert_float_equal(b.lr, 0.05, 1e-12);
    assert_int_equal(b.epochs_done, 1);
    assert_int_equal(b.last_epoch.has, KD_MET_EPOCH_LR);
    assert_int_equal(b.last_epoch.epoch, 1);
    assert_int_equal(b.last_epoch.batch, 64);
    assert_float_equal(b.last_epoch.lr, 0.04, 1e-12);
    assert_float_equal(b.noise_scale, 1234.5, 1e-9);
    assert_float_equal(b.noise_g2, -0.25, 1e-12);
    assert_float_equal(b.noise_s, 7.5, 1e-12);
    assert_int_equal(b.n_configs, 2);
    assert_int_equal(b.configs[1].agents, 3);
    assert_int_equal(b.configs[1].batch, 112);
    assert_float_equal(b.configs[1].samples_per_s, 9000.5, 1e-9);
    assert_float_equal(b.configs[1].step_ms, 37.25, 1e-9);
    assert_float_equal(b.configs[1].compute_ms, 20.5, 1e-9);
}

static void test_absent_fields_are_not_zero(void **state)
{
    (void)state;
    kd_metrics m;
    char err[256];
    const char *t = "{\"agents\": 0, \"future_field\": [1, 2]}";
    assert_int_equal(kd_metrics_decode(t, strlen(t), &m, err, sizeof err), KD_OK);
    assert_int_equal(m.has, KD_MET_AGENTS);
    assert_int_equal(m.agents, 0);
    /* Only what has says is written: an empty message is an empty object. */
    memset(&m, 0, sizeof m);
    char *text = kd_metrics_encode(&m, NULL);
    assert_non_null(text);
    assert_string_equal(text, "{}");
    free(text);
    /* An empty table is present and empty. */
    m.has = KD_MET_CONFIGS;
    text = kd_metrics_encode(&m, NULL);
    assert_string_equal(text, "{\"configs\":[]}");
    kd_metrics d;
    assert_int_equal(kd_metrics_decode(text, strlen(text), &d, err, sizeof err), KD_OK);
    assert_int_equal(d.has, KD_MET_CONFIGS);
    assert_int_equal(d.n_configs, 0);
    free(text);
}

/* Every bad message is refused, its detail names the offender, and nothing is kept. */
static void test_hostile_input_is_refused(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *needle;
    } bad[] = {
        {"", "not JSON"},
        {"[]", "not a JSON object"},
        {"{", "not JSON"},
        {"{\"epoch\": \"2\"}", "epoch: not a number"},
        {"{\"accuracy\": 1.5}", "accuracy: 1.5 outside"},
        {"{\"samples_per_s\": -1}", "samples_per_s"},
        {"{\"step\": -3}", "step"},
        {"{\"loss\": true}", "loss: not a number"},
        {"{\"agents\": 1e9}", "agents"},
        {"{\"batch\": 1e12}", "batch"},
        {"{\"generation\": 4294967296}", "generation"},
        {"{\"job\": 7}", "job: not a string"},
        {"{\"state\": \"runningrunningrunning\"}", "state: string of 21 bytes"},
        {"{\"noise_scale\": 3}", "all three or none"},
        {"{\"noise_scale\": -3, \"noise_g2\": 1, \"noise_s\": 1}", "noise_scale"},
        {"{\"last_epoch\": 3}", "last_epoch: not an object"},
        {"{\"last_epoch\": {\"epoch\": 1}}", "last_epoch.accuracy: missing"},
        {"{\"configs\": {}}", "configs: not an array"},
        {"{\"configs\": [1]}", "configs[0]: not an object"},
        {"{\"configs\": [{\"agents\": 0, \"batch\": 8, \"samples_per_s\": 1, \"step_ms\": 1, "
         "\"compute_ms\": 1}]}",
         "configs[0].agents"},
        {"{\"configs\": [{\"agents\": 1, \"batch\": 8, \"samples_per_s\": 1}]}",
         "configs[0].step_ms: missing"},
        {"{\"agents\": 1, \"agents\": 2}", "not JSON"},
    };
    kd_metrics m;
    char err[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&m, 0x5a, sizeof m);
        err[0] = '\0';
        int rc = kd_metrics_decode(bad[i].text, strlen(bad[i].text), &m, err, sizeof err);
        if (rc != KD_EINVAL || strstr(err, bad[i].needle) == NULL)
            fail_msg("message %zu %s: rc %d err \"%s\" (want \"%s\")", i, bad[i].text, rc, err,
                     bad[i].needle);
        assert_int_equal(m.has, 0);
        assert_int_equal(m.agents, 0);
    }
}

static void test_huge_strings_and_tables(void **state)
{
    (void)state;
    char err[256];
    kd_metrics m;
    /* A job name over the bound. */
    size_t n = KD_METRICS_JOB_MAX + 100;
    char *t = malloc(n + 32);
    assert_non_null(t);
    int k = snprintf(t, n + 32, "{\"job\": \"");
    memset(t + k, 'a', n);
    snprintf(t + k + n, 32, "\"}");
    assert_int_equal(kd_metrics_decode(t, strlen(t), &m, err, sizeof err), KD_EINVAL);
    assert_non_null(strstr(err, "job: string of"));
    free(t);
    /* More configs than the table holds. */
    char big[4096];
    size_t off = (size_t)snprintf(big, sizeof big, "{\"configs\": [");
    for (int i = 0; i <= KD_METRICS_MAX_CONFIGS; i++)
        off += (size_t)snprintf(big + off, sizeof big - off,
                                "%s{\"agents\": %d, \"batch\": 8, \"samples_per_s\": 1, "
                                "\"step_ms\": 1, \"compute_ms\": 1}", i ? "," : "", i + 1);
    snprintf(big + off, sizeof big - off, "]}");
    assert_int_equal(kd_metrics_decode(big, strlen(big), &m, err, sizeof err), KD_EINVAL);
    assert_non_null(strstr(err, "configs: 17 entries"));
    /* A message over the size bound is not even parsed. */
    size_t huge = KD_METRICS_TEXT_MAX + 1;
    char *h = malloc(huge);
    assert_non_null(h);
    memset(h, ' ', huge);
    h[0] = '{';
    h[huge - 1] = '}';
    assert_int_equal(kd_metrics_decode(h, huge, &m, err, sizeof err), KD_EINVAL);
    assert_non_null(strstr(err, "bytes (at most"));
    free(h);
    /* Deep nesting is refused by the parser (jansson's depth limit), not a crash. */
    char deep[8192];
    size_t d = 0;
    d += (size_t)snprintf(deep, sizeof deep, "{\"last_epoch\": ");
    for (int i = 0; i < 2500; i++)
        deep[d++] = '[';
    deep[d] = '\0';
    assert_int_equal(kd_metrics_decode(deep, d, &m, err, sizeof err), KD_EINVAL);
    /* The encoder clamps a table that claims more entries than it holds. */
    kd_metrics a;
    fill(&a);
    for (int i = 0; i < KD_METRICS_MAX_CONFIGS; i++)
        a.configs[i] = (kd_metrics_config){i + 1, 8, 100.0 * (i + 1), 5, 4};
    a.n_configs = 1000;
    char *text = kd_metrics_encode(&a, NULL);
    assert_non_null(text);
    assert_int_equal(kd_metrics_decode(text, strlen(text), &m, err, sizeof err), KD_OK);
    assert_int_equal(m.n_configs, KD_METRICS_MAX_CONFIGS);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_keeps_every_field),
        cmocka_unit_test(test_absent_fields_are_not_zero),
        cmocka_unit_test(test_hostile_input_is_refused),
        cmocka_unit_test(test_huge_strings_and_tables),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
