/* kd_spec: the sample manifest decodes to the values it states; a minimal AgentJob gets
 * every documented default; each kind of bad value yields KD_EINVALID_OBJECT with the
 * exact path-naming message; unknown fields become warnings with their path;
 * adaptive.maxBatchSize defaults, bounds and warnings; Kubernetes quantities parse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kd_error.h"
#include "kd_spec.h"
#include "kd_yaml.h"

static json_t *parse(const char *text)
{
    json_t *docs = NULL;
    char err[256] = "";
    if (kd_yaml_parse(text, strlen(text), &docs, err, sizeof err) != KD_OK)
        fail_msg("yaml: %s", err);
    json_t *d = json_incref(json_array_get(docs, 0));
    json_decref(docs);
    return d;
}

#define HEAD "apiVersion: kadet.io/v1alpha1\nkind: AgentJob\nmetadata: {name: j}\n"

/* Decodes one manifest text that must be accepted; the caller frees *j. */
static void decode_ok(const char *text, kd_agentjob *j)
{
    json_t *d = parse(text);
    char err[256];
    int rc = kd_agentjob_decode(d, j, err, sizeof err);
    json_decref(d);
    if (rc != KD_OK)
        fail_msg("%s", err);
}

/* The sample manifest's path, under KADET_SOURCE_DIR when set. */
static void sample_path(char *path, size_t len)
{
    const char *src = getenv("KADET_SOURCE_DIR");
    snprintf(path, len, "%s/manifests/samples/fashion-mnist.yaml", src ? src : ".");
}

static void test_sample_manifest_decodes(void **state)
{
    (void)state;
    char path[1024];
    sample_path(path, sizeof path);
    json_t *docs = NULL;
    char err[256];
    assert_int_equal(kd_yaml_load_file(path, 0, &docs, err, sizeof err), KD_OK);
    kd_agentjob j;
    int rc = kd_agentjob_decode(json_array_get(docs, 0), &j, err, sizeof err);
    if (rc != KD_OK)
        fail_msg("%s", err);
    json_decref(docs);
    assert_int_equal(j.n_warnings, 0);
    assert_string_equal(j.name, "fashion-mnist");
    assert_string_equal(j.namespace_, "default");
    assert_int_equal(j.agents_min, 1);
    assert_int_equal(j.agents_max, 4);
    assert_int_equal(j.replicas, -1);
    assert_int_equal(j.n_hidden, 2);
    assert_int_equal(j.hidden[0], 256);
    assert_int_equal(j.hidden[1], 128);
    assert_int_equal(j.batch_size, 64);
    assert_int_equal(j.epochs, 10);
    assert_int_equal(j.optimizer, KD_SPEC_OPT_SGD);
    assert_true(j.learning_rate == 0.05);
    assert_true(j.momentum == 0.9);
    assert_int_equal(j.schedule, KD_SPEC_SCHED_COSINE);
    assert_int_equal(j.agent_cpu_millis, 1000);
    assert_int_equal(j.agent_memory_bytes, 512ll * 1024 * 1024);
    assert_non_null(j.template_);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(json_object_get(j.template_, "spec"),
                                                           "containers"), 0), "image")),
                        "kadet-runtime:latest");
    assert_string_equal(j.checkpoint_path, "/checkpoints/fashion-mnist");
    assert_int_equal(j.policy, KD_SPEC_POLICY_RL);
    assert_int_equal(j.clean_pod_policy, KD_SPEC_CLEAN_RUNNING);
    kd_agentjob_free(&j);
    kd_agentjob_free(&j); /* idempotent on a zeroed job */
}

static void test_minimal_job_gets_defaults(void **state)
{
    (void)state;
    kd_agentjob j;
    decode_ok(HEAD "spec: {}\n", &j);
    assert_int_equal(j.agents_min, 1);
    assert_int_equal(j.agents_max, 1);
    assert_string_equal(j.dataset_format, "idx");
    assert_string_equal(j.dataset_path, KD_SPEC_DEFAULT_DATA);
    assert_int_equal(j.epochs, 10);
    assert_int_equal(j.batch_size, 64);
    assert_true(j.learning_rate == 0.05);
    assert_true(j.momentum == 0.0);
    assert_int_equal(j.schedule, KD_SPEC_SCHED_CONSTANT);
    assert_int_equal(j.sync_mode, KD_SPEC_SYNC_ALLREDUCE);
    assert_int_equal(j.sync_period, 1);
    assert_int_equal(j.sync_exchange, KD_SPEC_EXCHANGE_AUTO);
    assert_int_equal(j.sync_compression, KD_SPEC_COMPRESSION_NONE);
    assert_int_equal(j.adaptive_lr, 1);
    assert_int_equal(j.adaptive_batch, 0);
    assert_int_equal(j.max_batch_size, 64); /* no adaptation: the batch is its own ceiling */
    assert_true(j.target_accuracy == 0.0);
    assert_null(j.checkpoint_path);
    assert_int_equal(j.checkpoint_interval, 60);
    assert_true(j.weight_time == 1.0);
    assert_true(j.weight_cost == 0.1);
    assert_int_equal(j.backoff_limit, 3);
    assert_int_equal(j.ttl_after_finished, -1);
    assert_int_equal(j.suspend, 0);
    assert_null(j.template_);
    kd_agentjob_free(&j);
}

static void test_full_options_decode(void **state)
{
    (void)state;
    json_t *d = parse(HEAD
                      "spec:\n"
                      "  agents: {min: 2, max: 6}\n"
                      "  replicas: 3\n"
                      "  training:\n"
                      "    dataset: {format: csv, path: /data/x, labelColumn: -1}\n"
                      "    optimizer: {type: adam, weightDecay: 0.01,\n"
                      "                schedule: {type: step, stepEpochs: 3, gamma: 0.5,\n"
                      "                           warmupEpochs: 1}}\n"
                      "    sync: {mode: local-sgd, period: 4}\n"
                      "    adaptive: {learningRate: false, batchSize: true}\n"
                      "    targetAccuracy: 0.9\n"
                      "  scheduling: {policy: greedy, weights: {time: 2, cost: 0}, priority: -5}\n"
                      "  runPolicy: {cleanPodPolicy: All, suspend: true, backoffLimit: 0}\n"
                      "status: {phase: Running}\n");
    kd_agentjob j;
    char err[256];
    int rc = kd_agentjob_decode(d, &j, err, sizeof err);
    if (rc != KD_OK)
        fail_msg("%s", err);
    json_decref(d);
    /* adaptive.batchSize is supported, but measures the noise on every step's gradients */
    assert_int_equal(j.n_warnings, 1);
    assert_string_equal(j.warnings[0], "spec.training.adaptive.batchSize: needs sync.mode "
                                       "allreduce: with local-sgd every agent keeps "
                                       "training.batchSize");
    assert_int_equal(j.replicas, 3);
    assert_string_equal(j.dataset_format, "csv");
    assert_int_equal(j.dataset_label_column, -1);
    assert_int_equal(j.optimizer, KD_SPEC_OPT_ADAM);
    assert_true(j.learning_rate == 0.001); /* adam's default */
    assert_int_equal(j.schedule, KD_SPEC_SCHED_STEP);
    assert_true(j.step_epochs == 3.0);
    assert_true(j.warmup_epochs == 1.0);
    assert_int_equal(j.sync_mode, KD_SPEC_SYNC_LOCAL_SGD);
    assert_int_equal(j.sync_period, 4);
    assert_int_equal(j.adaptive_lr, 0);
    assert_int_equal(j.adaptive_batch, 1);
    assert_int_equal(j.max_batch_size, 4 * 64); /* default ceiling: 4 x batchSize */
    assert_true(j.target_accuracy == 0.9);
    assert_int_equal(j.policy, KD_SPEC_POLICY_GREEDY);
    assert_int_equal(j.priority, -5);
    assert_int_equal(j.clean_pod_policy, KD_SPEC_CLEAN_ALL);
    assert_int_equal(j.suspend, 1);
    assert_int_equal(j.backoff_limit, 0);
    kd_agentjob_free(&j);
}

static void expect_error(const char *yaml, const char *message)
{
    json_t *d = parse(yaml);
    kd_agentjob j;
    char err[256] = "";
    int rc = kd_agentjob_decode(d, &j, err, sizeof err);
    json_decref(d);
    if (rc != KD_EINVALID_OBJECT)
        fail_msg("decode returned %d (%s) for:\n%s", rc, err, yaml);
    if (strcmp(err, message) != 0)
        fail_msg("message\n  \"%s\"\nexpected\n  \"%s\"", err, message);
    assert_null(j.name);
    assert_null(j.warnings);
}

static void test_errors_name_the_path_and_value(void **state)
{
    (void)state;
    expect_error(HEAD "spec: {training: {batchSize: abc}}\n",
                 "spec.training.batchSize: expected a positive integer, got \"abc\"");
    expect_error(HEAD "spec: {training: {batchSize: 0}}\n",
                 "spec.training.batchSize: expected a positive integer, got 0");
    expect_error(HEAD "spec: {training: {batchSize: 100000}}\n",
                 "spec.training.batchSize: expected an integer in [1, 65536], got 100000");
    expect_error(HEAD "spec: {training: {epochs: 2.5}}\n",
                 "spec.training.epochs: expected a positive integer, got 2.5");
    expect_error(HEAD "spec: {training: {optimizer: {type: rmsprop}}}\n",
                 "spec.training.optimizer.type: expected one of sgd, adam, got \"rmsprop\"");
    expect_error(HEAD "spec: {training: {optimizer: {learningRate: -1}}}\n",
                 "spec.training.optimizer.learningRate: expected a positive number, got -1");
    expect_error(HEAD "spec: {training: {optimizer: {momentum: 1.5}}}\n",
                 "spec.training.optimizer.momentum: expected a number in [0, 1), got 1.5");
    expect_error(HEAD "spec: {training: {optimizer: {schedule: linear}}}\n",
                 "spec.training.optimizer.schedule: expected one of constant, cosine, step, "
                 "got \"linear\"");
    expect_error(HEAD "spec: {training: {model: {hidden: [256, x]}}}\n",
                 "spec.training.model.hidden[1]: expected an integer in [1, 65536], got \"x\"");
    expect_error(HEAD "spec: {training: {model: {type: cnn}}}\n",
                 "spec.training.model.type: expected one of mlp, sequential, got \"cnn\"");
    expect_error(HEAD "spec: {training: {dataset: {format: parquet}}}\n",
                 "spec.training.dataset.format: expected one of idx, csv, got \"parquet\"");
    expect_error(HEAD "spec: {training: {sync: {mode: ring}}}\n",
                 "spec.training.sync.mode: expected one of allreduce, local-sgd, got \"ring\"");
    expect_error(HEAD "spec: {training: {sync: {exchange: compressed}}}\n",
                 "spec.training.sync.exchange: expected one of auto, gradients, factors, got "
                 "\"compressed\"");
    expect_error(HEAD "spec: {training: {sync: {compression: fp16}}}\n",
                 "spec.training.sync.compression: expected one of none, bf16, got \"fp16\"");
    expect_error(HEAD "spec: {training: {adaptive: {batchSize: yes}}}\n",
                 "spec.training.adaptive.batchSize: expected true or false, got \"yes\"");
    expect_error(HEAD "spec: {training: {targetAccuracy: 1.5}}\n",
                 "spec.training.targetAccuracy: expected a number in (0, 1], got 1.5");
    expect_error(HEAD "spec: {training: [1]}\n", "spec.training: expected an object, got [1]");
    expect_error(HEAD "spec: {agents: {min: 4, max: 2}}\n",
                 "spec.agents.max: 2 is below spec.agents.min 4");
    expect_error(HEAD "spec: {agents: {min: 0}}\n",
                 "spec.agents.min: expected a positive integer, got 0");
    expect_error(HEAD "spec: {agents: {min: 1, max: 4}, replicas: 9}\n",
                 "spec.replicas: 9 is outside spec.agents [1, 4]");
    expect_error(HEAD "spec: {scheduling: {policy: random}}\n",
                 "spec.scheduling.policy: expected one of static, fair, greedy, rl, got "
                 "\"random\"");
    expect_error(HEAD "spec: {runPolicy: {cleanPodPolicy: running}}\n",
                 "spec.runPolicy.cleanPodPolicy: expected one of Running, All, None, got "
                 "\"running\"");
    expect_error(HEAD "spec: {checkpoint: {intervalSeconds: -3}}\n",
                 "spec.checkpoint.intervalSeconds: expected a positive integer, got -3");
    expect_error(HEAD "spec: {template: {spec: {containers: [{resources: {requests: "
                      "{cpu: lots}}}]}}}\n",
                 "spec.template.spec.containers[0].resources.requests.cpu: expected a CPU "
                 "quantity such as 1, 0.5 or 500m, got \"lots\"");
    expect_error("apiVersion: v1\nkind: AgentJob\nmetadata: {name: j}\nspec: {}\n",
                 "apiVersion: expected \"kadet.io/v1alpha1\", got \"v1\"");
    expect_error("apiVersion: kadet.io/v1alpha1\nkind: Pod\nmetadata: {name: j}\nspec: {}\n",
                 "kind: expected \"AgentJob\", got \"Pod\"");
    expect_error("apiVersion: kadet.io/v1alpha1\nkind: AgentJob\nmetadata: {name: Bad_Name}\n"
                 "spec: {}\n",
                 "metadata.name: expected a name of at most 63 lowercase letters, digits and "
                 "'-', got \"Bad_Name\"");
    expect_error(HEAD, "spec: required");
    expect_error("- 1\n", "document: expected an AgentJob object, got [1]");
}

/* sync.FIELD: VALUE with mode local-sgd decodes with exactly one warning: ignored. */
static void expect_ignored_with_local_sgd(const char *field, const char *value)
{
    char doc[256], want[128];
    snprintf(doc, sizeof doc, HEAD "spec: {training: {sync: {mode: local-sgd, %s: %s}}}\n",
             field, value);
    snprintf(want, sizeof want,
             "spec.training.sync.%s: ignored with mode local-sgd (parameters are averaged)",
             field);
    kd_agentjob j;
    decode_ok(doc, &j);
    assert_int_equal(j.n_warnings, 1);
    assert_string_equal(j.warnings[0], want);
    kd_agentjob_free(&j);
}

/* sync.exchange: decoded with its name; set with local-sgd it warns that it is ignored. */
static void test_sync_exchange(void **state)
{
    (void)state;
    kd_agentjob j;
    expect_ignored_with_local_sgd("exchange", "factors");
    decode_ok(HEAD "spec: {training: {sync: {exchange: factors}}}\n", &j);
    assert_int_equal(j.sync_exchange, KD_SPEC_EXCHANGE_FACTORS);
    assert_string_equal(kd_spec_exchange_name(j.sync_exchange), "factors");
    kd_agentjob_free(&j);
}

/* sync.compression: none by default, bf16 decoded with its name; set with local-sgd it
 * warns that it is ignored (parameters are averaged there, uncompressed). */
static void test_sync_compression(void **state)
{
    (void)state;
    kd_agentjob j;
    decode_ok(HEAD "spec: {training: {sync: {mode: allreduce}}}\n", &j);
    assert_int_equal(j.sync_compression, KD_SPEC_COMPRESSION_NONE);
    assert_string_equal(kd_spec_compression_name(j.sync_compression), "none");
    assert_int_equal(j.n_warnings, 0);
    kd_agentjob_free(&j);
    decode_ok(HEAD "spec: {training: {sync: {compression: bf16}}}\n", &j);
    assert_int_equal(j.sync_compression, KD_SPEC_COMPRESSION_BF16);
    assert_string_equal(kd_spec_compression_name(j.sync_compression), "bf16");
    assert_int_equal(j.n_warnings, 0);
    kd_agentjob_free(&j);
    expect_ignored_with_local_sgd("compression", "bf16");
    /* none is the default, so saying it with local-sgd is not worth a warning. */
    decode_ok(HEAD "spec: {training: {sync: {mode: local-sgd, compression: none}}}\n", &j);
    assert_int_equal(j.n_warnings, 0);
    kd_agentjob_free(&j);
}

/* Decodes HEAD + spec text that must be accepted, checks the batch and its ceiling and
 * the number of warnings, and frees the job. */
static void expect_batch(const char *spec, int batch, int max, size_t n_warnings)
{
    char text[512];
    snprintf(text, sizeof text, "%s%s", HEAD, spec);
    kd_agentjob j;
    decode_ok(text, &j);
    if (j.batch_size != batch || j.max_batch_size != max || j.n_warnings != n_warnings)
        fail_msg("batch %d max %d warnings %zu, expected %d %d %zu for:\n%s", j.batch_size,
                 j.max_batch_size, j.n_warnings, batch, max, n_warnings, spec);
    kd_agentjob_free(&j);
}

/* adaptive.maxBatchSize: the per-agent ceiling of the adapted batch. Without adaptation
 * it equals batchSize whatever is written; with it, it defaults to 4 x batchSize (capped
 * at 65536) and may not be below batchSize. */
/* The ceiling the coordinator adapts within and every worker sizes its buffers for: the
 * running batch unless the batch adapts, then maxBatchSize (an override of the batch
 * beyond it is its own ceiling). */
static void test_batch_ceiling(void **state)
{
    (void)state;
    kd_agentjob j;
    decode_ok(HEAD "spec: {training: {adaptive: {batchSize: true, maxBatchSize: 256}}}\n", &j);
    assert_int_equal(kd_spec_batch_ceiling(&j, 64), 256);
    assert_int_equal(kd_spec_batch_ceiling(&j, 512), 512);
    kd_agentjob_free(&j);
    decode_ok(HEAD "spec: {training: {batchSize: 64}}\n", &j);
    assert_int_equal(kd_spec_batch_ceiling(&j, 64), 64);
    assert_int_equal(kd_spec_batch_ceiling(&j, 128), 128);
    kd_agentjob_free(&j);
}

static void test_adaptive_max_batch_size(void **state)
{
    (void)state;
    /* Adaptation off: the ceiling is the batch, however the batch was set. */
    expect_batch("spec: {}\n", 64, 64, 0);
    expect_batch("spec: {training: {batchSize: 100}}\n", 100, 100, 0);
    expect_batch("spec: {training: {batchSize: 100, adaptive: {learningRate: true}}}\n", 100,
                 100, 0);
    expect_batch("spec: {training: {batchSize: 100, adaptive: {batchSize: false}}}\n", 100,
                 100, 0);
    /* Adaptation on: default 4x, capped at the batchSize bound. */
    expect_batch("spec: {training: {adaptive: {batchSize: true}}}\n", 64, 256, 0);
    expect_batch("spec: {training: {batchSize: 100, adaptive: {batchSize: true}}}\n", 100,
                 400, 0);
    expect_batch("spec: {training: {batchSize: 16384, adaptive: {batchSize: true}}}\n",
                 16384, 65536, 0);
    expect_batch("spec: {training: {batchSize: 20000, adaptive: {batchSize: true}}}\n",
                 20000, 65536, 0);
    expect_batch("spec: {training: {batchSize: 65536, adaptive: {batchSize: true}}}\n",
                 65536, 65536, 0);
    /* Explicit values, including the bounds and equal to batchSize; key order in the
     * manifest does not matter. */
    expect_batch("spec: {training: {batchSize: 32, adaptive: {batchSize: true, "
                 "maxBatchSize: 1000}}}\n",
                 32, 1000, 0);
    expect_batch("spec: {training: {adaptive: {maxBatchSize: 64, batchSize: true}, "
                 "batchSize: 64}}\n",
                 64, 64, 0);
    expect_batch("spec: {training: {batchSize: 1, adaptive: {batchSize: true, "
                 "maxBatchSize: 65536}}}\n",
                 1, 65536, 0);
    expect_batch("spec: {training: {batchSize: 1, adaptive: {batchSize: true, "
                 "maxBatchSize: 1}}}\n",
                 1, 1, 0);
    expect_batch("spec: {training: {adaptive: {batchSize: true, maxBatchSize: 512.0}}}\n",
                 64, 512, 0);
    expect_batch("spec: {training: {adaptive: {batchSize: true, maxBatchSize: ~}}}\n", 64,
                 256, 0); /* null is absent */

    /* Given while adaptation is off: warned about and ignored. */
    kd_agentjob j;
    decode_ok(HEAD "spec: {training: {batchSize: 128, adaptive: {maxBatchSize: 512}}}\n", &j);
    assert_int_equal(j.adaptive_batch, 0);
    assert_int_equal(j.batch_size, 128);
    assert_int_equal(j.max_batch_size, 128);
    assert_int_equal(j.n_warnings, 1);
    assert_string_equal(j.warnings[0], "spec.training.adaptive.maxBatchSize: ignored unless "
                                       "adaptive.batchSize is true");
    kd_agentjob_free(&j);
    decode_ok(HEAD "spec: {training: {adaptive: {batchSize: false, maxBatchSize: 8}}}\n", &j);
    assert_int_equal(j.max_batch_size, 64); /* below batchSize, but ignored: no error */
    assert_int_equal(j.n_warnings, 1);
    assert_string_equal(j.warnings[0], "spec.training.adaptive.maxBatchSize: ignored unless "
                                       "adaptive.batchSize is true");
    kd_agentjob_free(&j);

    /* Errors. */
    expect_error(HEAD "spec: {training: {batchSize: 64, adaptive: {batchSize: true, "
                      "maxBatchSize: 32}}}\n",
                 "spec.training.adaptive.maxBatchSize: must be >= training.batchSize (64), "
                 "got 32");
    expect_error(HEAD "spec: {training: {adaptive: {maxBatchSize: 32, batchSize: true}, "
                      "batchSize: 100}}\n",
                 "spec.training.adaptive.maxBatchSize: must be >= training.batchSize (100), "
                 "got 32");
    expect_error(HEAD "spec: {training: {adaptive: {batchSize: true, maxBatchSize: abc}}}\n",
                 "spec.training.adaptive.maxBatchSize: expected a positive integer, got "
                 "\"abc\"");
    expect_error(HEAD "spec: {training: {adaptive: {batchSize: true, maxBatchSize: 0}}}\n",
                 "spec.training.adaptive.maxBatchSize: expected a positive integer, got 0");
    expect_error(HEAD "spec: {training: {adaptive: {batchSize: true, maxBatchSize: -4}}}\n",
                 "spec.training.adaptive.maxBatchSize: expected a positive integer, got -4");
    expect_error(HEAD "spec: {training: {adaptive: {batchSize: true, maxBatchSize: 70000}}}\n",
                 "spec.training.adaptive.maxBatchSize: expected an integer in [1, 65536], "
                 "got 70000");
    expect_error(HEAD "spec: {training: {adaptive: {batchSize: true, maxBatchSize: 96.5}}}\n",
                 "spec.training.adaptive.maxBatchSize: expected a positive integer, got 96.5");
    /* A malformed value is an error even while adaptation is off: the user meant something. */
    expect_error(HEAD "spec: {training: {adaptive: {maxBatchSize: 70000}}}\n",
                 "spec.training.adaptive.maxBatchSize: expected an integer in [1, 65536], "
                 "got 70000");
}

static void test_unknown_fields_warn_with_path(void **state)
{
    (void)state;
    json_t *d = parse(HEAD "spec:\n  replica: 3\n  training:\n    optimiser: {type: sgd}\n"
                           "    optimizer: {type: adam, momentum: 0.9}\n"
                           "    sync: {period: 4}\n"
                           "extra: 1\n");
    kd_agentjob j;
    char err[256];
    assert_int_equal(kd_agentjob_decode(d, &j, err, sizeof err), KD_OK);
    json_decref(d);
    assert_int_equal(j.n_warnings, 5);
    const char *expect[] = {
        "extra: unknown field (ignored)",
        "spec.replica: unknown field (ignored; did you mean \"replicas\"?)",
        "spec.training.optimiser: unknown field (ignored; did you mean \"optimizer\"?)",
        "spec.training.optimizer.momentum: ignored by the adam optimizer (use beta1)",
        "spec.training.sync.period: ignored with mode allreduce (every step is averaged)",
    };
    for (int i = 0; i < 5; i++) {
        int found = 0;
        for (size_t k = 0; k < j.n_warnings; k++)
            found |= strcmp(j.warnings[k], expect[i]) == 0;
        if (!found)
            fail_msg("missing warning \"%s\"", expect[i]);
    }
    /* Two of them under spec ("extra" is top-level): kadet run refuses those. */
    assert_int_equal(j.n_unknown_spec, 2);
    kd_agentjob_free(&j);
}

static void test_quantities(void **state)
{
    (void)state;
    int64_t v;
    assert_int_equal(kd_quantity_cpu_millis("2", &v), KD_OK);
    assert_int_equal(v, 2000);
    assert_int_equal(kd_quantity_cpu_millis("500m", &v), KD_OK);
    assert_int_equal(v, 500);
    assert_int_equal(kd_quantity_cpu_millis("0.25", &v), KD_OK);
    assert_int_equal(v, 250);
    assert_int_equal(kd_quantity_bytes("512Mi", &v), KD_OK);
    assert_int_equal(v, 536870912);
    assert_int_equal(kd_quantity_bytes("1G", &v), KD_OK);
    assert_int_equal(v, 1000000000);
    assert_int_equal(kd_quantity_bytes("1e3", &v), KD_OK);
    assert_int_equal(v, 1000);
    assert_int_equal(kd_quantity_bytes("12Qi", &v), KD_EINVAL);
    assert_int_equal(kd_quantity_bytes("", &v), KD_EINVAL);
    assert_int_equal(kd_quantity_cpu_millis("-1", &v), KD_EINVAL);
    assert_string_equal(kd_spec_sync_name(KD_SPEC_SYNC_LOCAL_SGD), "local-sgd");
    assert_string_equal(kd_spec_clean_pod_name(KD_SPEC_CLEAN_NONE), "None");
}

/* Random edits of the sample manifest: every outcome is a decoded job (freed cleanly) or
 * an error message, never a crash or a sanitizer report. */
static void test_random_manifest_edits_never_crash(void **state)
{
    (void)state;
    char path[1024];
    sample_path(path, sizeof path);
    char *text = NULL;
    size_t len = 0;
    char err[256];
    assert_int_equal(kd_read_file(path, 0, &text, &len, err, sizeof err), KD_OK);
    static const char *const tokens[] = {"-1", "0", "abc", "[1, 2]", "{}", "~", "1e999",
                                         "true", "\"x\"", "99999999999999999999", "0.5"};
    uint64_t s = 88172645463325252ull;
    int decoded = 0, rejected = 0;
    for (int iter = 0; iter < 400; iter++) {
        char buf[8192];
        size_t n = len < sizeof buf - 64 ? len : sizeof buf - 64;
        memcpy(buf, text, n);
        buf[n] = '\0';
        /* xorshift: replace the value after a random ':' with a random token */
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        size_t at = (size_t)(s % n);
        char *colon = strchr(buf + at, ':');
        if (colon) {
            char *eol = strchr(colon, '\n');
            char rest[8192];
            snprintf(rest, sizeof rest, "%s", eol ? eol : "");
            snprintf(colon + 1, sizeof buf - (size_t)(colon + 1 - buf), " %s%s",
                     tokens[(s >> 32) % (sizeof tokens / sizeof tokens[0])], rest);
        }
        json_t *docs = NULL;
        if (kd_yaml_parse(buf, strlen(buf), &docs, err, sizeof err) != KD_OK) {
            rejected++;
            continue;
        }
        kd_agentjob j;
        int rc = kd_agentjob_decode(json_array_get(docs, 0), &j, err, sizeof err);
        if (rc == KD_OK) {
            decoded++;
            assert_true(j.agents_max >= j.agents_min && j.batch_size >= 1);
            assert_true(j.max_batch_size >= j.batch_size && j.max_batch_size <= 65536);
            if (!j.adaptive_batch)
                assert_int_equal(j.max_batch_size, j.batch_size);
            kd_agentjob_free(&j);
        } else {
            rejected++;
            assert_int_equal(rc, KD_EINVALID_OBJECT);
            assert_non_null(strchr(err, ':'));
        }
        json_decref(docs);
    }
    print_message("%d decoded, %d rejected\n", decoded, rejected);
    assert_true(decoded > 0 && rejected > 0);
    free(text);
}

#define LAYERS(list) HEAD "spec: {training: {model: {layers: " list "}}}\n"

/* model.layers: the CNN sample decodes with its shapes; errors name layer and field. */
static void test_layers_decode_and_shapes_are_checked(void **state)
{
    (void)state;
    char path[1024];
    const char *src = getenv("KADET_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/manifests/samples/fashion-mnist-cnn.yaml", src ? src : ".");
    json_t *docs = NULL;
    char err[256];
    assert_int_equal(kd_yaml_load_file(path, 0, &docs, err, sizeof err), KD_OK);
    kd_agentjob j;
    if (kd_agentjob_decode(json_array_get(docs, 0), &j, err, sizeof err) != KD_OK)
        fail_msg("%s", err);
    json_decref(docs);
    assert_int_equal(j.n_layers, 10);
    assert_string_equal(j.model_type, "sequential");
    assert_int_equal(j.layers[0].type, KD_LAYER_CONV2D);
    assert_int_equal(j.layers[0].units, 32);
    assert_int_equal(j.layers[0].kernel, 3);
    assert_int_equal(j.layers[0].stride, 1);
    assert_int_equal(j.layers[2].type, KD_LAYER_MAXPOOL2D);
    assert_int_equal(j.layers[2].stride, 2);
    assert_int_equal(j.layers[9].units, 10);
    assert_int_equal(j.input_shape.c, 1);
    assert_int_equal(j.input_shape.h, 28);
    kd_spec_shape out[KD_SPEC_MAX_LAYERS];
    assert_int_equal(kd_spec_layer_shapes(j.layers, j.n_layers, j.input_shape, out, "l", err,
                                          sizeof err), KD_OK);
    assert_int_equal(out[5].c, 64);
    assert_int_equal(out[5].h, 5);
    assert_int_equal(out[6].c, 1600);
    assert_false(kd_spec_layers_as_mlp(&j, NULL, NULL));
    uint64_t h_cnn = kd_spec_model_hash(&j);
    j.layers[3].kernel = 2; /* another architecture */
    assert_true(kd_spec_model_hash(&j) != h_cnn);
    kd_agentjob_free(&j);

    /* A list of dense layers is an MLP (the runtime trains it as one). */
    decode_ok(LAYERS("[{type: flatten}, {type: dense, units: 64}, {type: relu}, "
                     "{type: dense, units: 10}]"), &j);
    int hidden[KD_SPEC_MAX_HIDDEN], nh = 0;
    assert_true(kd_spec_layers_as_mlp(&j, hidden, &nh));
    assert_int_equal(nh, 1);
    assert_int_equal(hidden[0], 64);
    kd_agentjob_free(&j);
    /* The mlp shorthand still decodes as before. */
    decode_ok(HEAD "spec: {training: {model: {type: mlp, hidden: [32]}}}\n", &j);
    assert_int_equal(j.n_layers, 0);
    assert_int_equal(j.n_hidden, 1);
    kd_agentjob_free(&j);
    /* csv with an input shape. */
    decode_ok(HEAD "spec: {training: {dataset: {format: csv}, model: {inputShape: [2, 4, 4], "
                   "layers: [{type: conv2d, filters: 3, kernel: 3, padding: 1}, "
                   "{type: avgpool2d, size: 2}, {type: dropout, rate: 0.5}, "
                   "{type: dense, units: 3}]}}}\n", &j);
    assert_int_equal(j.input_shape.c, 2);
    assert_true(j.layers[2].rate == 0.5);
    kd_agentjob_free(&j);

    expect_error(LAYERS("[{type: conv2d, filters: 8, kernel: 3}, {type: maxpool2d, size: 4}, "
                        "{type: conv2d, filters: 8, kernel: 7}, {type: dense, units: 10}]"),
                 "spec.training.model.layers[2].kernel: 7 is larger than its 6x6 input");
    expect_error(LAYERS("[{type: conv2d, filters: 8, kernel: 31, padding: 1}, "
                        "{type: dense, units: 10}]"),
                 "spec.training.model.layers[0].kernel: 31 is larger than its 28x28 input "
                 "(30x30 padded)");
    expect_error(LAYERS("[{type: maxpool2d, size: 29}, {type: dense, units: 10}]"),
                 "spec.training.model.layers[0].size: 29 is larger than its 28x28 input");
    expect_error(LAYERS("[{type: dense, units: 10}, {type: relu}]"),
                 "spec.training.model.layers[1].type: the last layer must be dense (its "
                 "units are the classes), got relu");
    expect_error(LAYERS("[{type: conv2d, filters: 8}, {type: dense, units: 10}]"),
                 "spec.training.model.layers[0].kernel: required");
    expect_error(LAYERS("[{type: dense, units: 10, kernel: 3}]"),
                 "spec.training.model.layers[0].kernel: not a field of a dense layer");
    expect_error(LAYERS("[{type: conv2d, filters: 8, kernel: 3, stride: 0}, "
                        "{type: dense, units: 10}]"),
                 "spec.training.model.layers[0].stride: expected an integer in [1, 255], "
                 "got 0");
    expect_error(LAYERS("[{type: dropout, rate: 1}, {type: dense, units: 10}]"),
                 "spec.training.model.layers[0].rate: expected a number in [0, 1), got 1");
    expect_error(LAYERS("[{type: lstm}]"),
                 "spec.training.model.layers[0].type: expected one of dense, conv2d, "
                 "maxpool2d, avgpool2d, flatten, relu, dropout, batchnorm, got \"lstm\"");
    expect_error(LAYERS("[{type: batchnorm}, {type: dense, units: 10}]"),
                 "spec.training.model.layers[0].type: batchnorm is not supported yet (its "
                 "batch statistics would differ between agent counts; docs/training.md)");
    expect_error(LAYERS("[]"),
                 "spec.training.model.layers: expected a list of 1 to 32 layers, got []");
    expect_error(LAYERS("[{type: dense, units: 1}]"),
                 "spec.training.model.layers[0].units: the last layer's units are the "
                 "classes, at least 2, got 1");
    expect_error(HEAD "spec: {training: {model: {type: mlp, layers: [{type: dense, units: "
                      "10}]}}}\n",
                 "spec.training.model.layers: type mlp takes hidden, not layers (drop type, "
                 "or use type: sequential)");
    expect_error(HEAD "spec: {training: {model: {hidden: [3], layers: [{type: dense, units: "
                      "10}]}}}\n",
                 "spec.training.model.hidden: a sequential model takes layers, not hidden");
    expect_error(HEAD "spec: {training: {dataset: {format: csv}, model: {layers: "
                      "[{type: conv2d, filters: 3, kernel: 3}, {type: dense, units: 3}]}}}\n",
                 "spec.training.model.layers[0]: conv2d needs an image input, but the "
                 "dataset's samples are flat vectors (set spec.training.model.inputShape)");
    expect_error(HEAD "spec: {training: {model: {inputShape: [1, 0, 3], layers: "
                      "[{type: dense, units: 3}]}}}\n",
                 "spec.training.model.inputShape: expected [channels, height, width] or "
                 "[features], at most 65536 values in all, got [1,0,3]");
    expect_error(HEAD "spec: {training: {model: {layers: [{type: conv2d, filters: 3, kernel: "
                      "3}, {type: dense, units: 3}]}, sync: {exchange: factors}}}\n",
                 "spec.training.sync.exchange: factors applies to a model of dense layers "
                 "only (layers[0] is conv2d); use gradients or auto");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sample_manifest_decodes),
        cmocka_unit_test(test_minimal_job_gets_defaults),
        cmocka_unit_test(test_full_options_decode),
        cmocka_unit_test(test_errors_name_the_path_and_value),
        cmocka_unit_test(test_unknown_fields_warn_with_path),
        cmocka_unit_test(test_sync_exchange),
        cmocka_unit_test(test_sync_compression),
        cmocka_unit_test(test_adaptive_max_batch_size),
        cmocka_unit_test(test_batch_ceiling),
        cmocka_unit_test(test_quantities),
        cmocka_unit_test(test_random_manifest_edits_never_crash),
        cmocka_unit_test(test_layers_decode_and_shapes_are_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
