/* `kadet coordinator`: loads the AgentJob (file or inline text) and runs the job's
 * coordinator; options and environment map onto kd_coord_config (coordinator.h). */
#include <stdlib.h>
#include <string.h>

#include "coordinator.h"
#include "kd_curve.h"
#include "kd_error.h"
#include "kd_log.h"
#include "kd_yaml.h"
#include "launcher.h"

/* KADET_JOB / --job is a manifest path, or the manifest itself (JSON or YAML text) when
 * it contains a newline or starts with '{', as an operator may pass it in the env. */
static json_t *load_doc(const char *job)
{
    char err[512];
    json_t *docs = NULL;
    int inline_text = job[0] == '{' || strchr(job, '\n') != NULL;
    int rc = inline_text ? kd_yaml_parse(job, strlen(job), &docs, err, sizeof err)
                         : kd_yaml_load_file(job, 0, &docs, err, sizeof err);
    if (rc != KD_OK) {
        fprintf(stderr, "kadet coordinator: %s\n", err);
        return NULL;
    }
    if (json_array_size(docs) != 1) {
        fprintf(stderr, "kadet coordinator: expected one AgentJob document, found %zu\n",
                json_array_size(docs));
        json_decref(docs);
        return NULL;
    }
    json_t *doc = json_incref(json_array_get(docs, 0));
    json_decref(docs);
    return doc;
}

int kd_cmd_coordinator(int argc, char **argv)
{
    kd_coord_config cfg;
    kd_coord_config_default(&cfg);
    const char *job = NULL, *scaling = NULL, *level = "info", *keys_dir = NULL;
    long long epochs = 0, batch = 0, seed = 1, maxs = 0, initial = 1, maxa = 0,
              warm = cfg.warmup_steps, interval = 0, timeout = cfg.comm_timeout_ms;
    double wait = cfg.initial_wait_s, start_warm = cfg.start_warmup_epochs;
    const kd_opt opts[] = {
        {"job", "KADET_JOB", KD_OPT_STR, &job, 0, 0,
         "AgentJob manifest: a file, or the document itself (required)"},
        {"bind", "KADET_BIND", KD_OPT_STR, &cfg.bind, 0, 0,
         "control endpoint (default tcp://0.0.0.0:7070)"},
        {"metrics-bind", "KADET_METRICS_BIND", KD_OPT_STR, &cfg.metrics_bind, 0, 0,
         "metrics PUB endpoint (default tcp://0.0.0.0:7071)"},
        {"endpoint-file", "KADET_ENDPOINT_FILE", KD_OPT_STR, &cfg.endpoint_file, 0, 0,
         "write the bound endpoints to this file"},
        {"data", "KADET_DATA", KD_OPT_STR, &cfg.data, 0, 0,
         "dataset directory for the workers (default: the spec's)"},
        {"epochs", "KADET_EPOCHS", KD_OPT_INT, &epochs, 1, 100000, "override spec epochs"},
        {"batch-size", "KADET_BATCH_SIZE", KD_OPT_INT, &batch, 1, 1 << 20,
         "override the per-agent batch size"},
        {"seed", "KADET_SEED", KD_OPT_INT, &seed, 0, 9.2e18, "shuffle and init seed (default 1)"},
        {"max-samples", "KADET_MAX_SAMPLES", KD_OPT_INT, &maxs, 0, 1e12,
         "train on the first N samples only"},
        {"initial-agents", "KADET_INITIAL_AGENTS", KD_OPT_INT, &initial, 1, 256,
         "wait for this many workers before the first step (default 1)"},
        {"initial-wait", "KADET_INITIAL_WAIT", KD_OPT_DBL, &wait, 0, 3600,
         "... but at most this many seconds after the first (default 10)"},
        {"max-agents", "KADET_MAX_AGENTS", KD_OPT_INT, &maxa, 1, 256,
         "admit at most this many workers (default spec agents.max)"},
        {"lr-scaling", "KADET_LR_SCALING", KD_OPT_STR, &scaling, 0, 0,
         "linear, sqrt or none: learning rate vs agent count (default linear, none "
         "when spec adaptive.learningRate is false)"},
        {"warmup-steps", "KADET_WARMUP_STEPS", KD_OPT_INT, &warm, 0, 1e9,
         "steps to ramp the learning rate after a change (default 200)"},
        {"start-warmup-epochs", "KADET_START_WARMUP_EPOCHS", KD_OPT_DBL, &start_warm, 0, 1e6,
         "epochs over which the first world ramps up from one agent's learning rate, at "
         "most a fifth of the job (default 2, 0 = none)"},
        {"checkpoint-dir", "KADET_CHECKPOINT_DIR", KD_OPT_STR, &cfg.checkpoint_dir, 0, 0,
         "override spec.checkpoint.path"},
        {"checkpoint-interval", "KADET_CHECKPOINT_INTERVAL", KD_OPT_INT, &interval, 1, 1e7,
         "override spec.checkpoint.intervalSeconds"},
        {"comm-timeout-ms", "KADET_COMM_TIMEOUT_MS", KD_OPT_INT, &timeout, 50, 600000,
         "the workers' peer timeout (default 1500)"},
        {"summary-json", "KADET_SUMMARY_JSON", KD_OPT_STR, &cfg.summary_json, 0, 0,
         "write the final summary (JSON) here"},
        {"range-log", "KADET_RANGE_LOG", KD_OPT_STR, &cfg.range_log, 0, 0,
         "debug: log every world and the cursor ranges it trained"},
        {"keys-dir", "KADET_KEYS_DIR", KD_OPT_STR, &keys_dir, 0, 0,
         "the job's CURVE keys (agent.pub, agent.key, operator.pub; docs/security.md); "
         "none = unauthenticated"},
        {"log-level", "KADET_LOG_LEVEL", KD_OPT_STR, &level, 0, 0,
         "debug, info, warn or error (default info)"},
    };
    int n = (int)(sizeof opts / sizeof opts[0]);
    const char *pos = NULL;
    int st = kd_opts_parse("coordinator", "[JOB]", "Coordinates one distributed kadet job: membership, "
                           "the global sample cursor,\ncheckpoints and metrics. The job may "
                           "also be given as the only argument.",
                           opts, n, argc, argv, &pos);
    if (st != 0)
        return st == 1 ? 0 : st;
    if (pos != NULL)
        job = pos;
    int lv = kd_log_parse_level(level);
    if (scaling != NULL)
        cfg.lr_scaling_set = 1;
    if (job == NULL || lv < 0 ||
        (scaling != NULL && kd_lr_scaling_parse(scaling, &cfg.lr_scaling) != 0)) {
        fprintf(stderr, "kadet coordinator: %s\n",
                job == NULL ? "--job (or KADET_JOB) is required"
                            : lv < 0 ? "invalid --log-level"
                                     : "--lr-scaling must be linear, sqrt or none");
        return 2;
    }
    kd_log_set_level((kd_log_level)lv);
    kd_log_set_component("coordinator");
    static kd_curve_keys keys;
    char kerr[600];
    if (kd_curve_load(keys_dir, &keys, kerr, sizeof kerr) != KD_OK) {
        fprintf(stderr, "kadet coordinator: %s\n", kerr);
        return 2;
    }
    cfg.keys = &keys;
    json_t *doc = load_doc(job);
    if (doc == NULL)
        return 2;
    cfg.job_doc = doc;
    cfg.epochs = (int)epochs;
    cfg.batch = (int)batch;
    cfg.seed = (uint64_t)seed;
    cfg.max_samples = (long)maxs;
    cfg.initial_agents = (int)initial;
    cfg.initial_wait_s = wait;
    cfg.max_agents = (int)maxa;
    cfg.warmup_steps = (int)warm;
    cfg.start_warmup_epochs = start_warm;
    cfg.checkpoint_interval = (int)interval;
    cfg.comm_timeout_ms = (int)timeout;
    st = kd_coord_run(&cfg);
    json_decref(doc);
    return st;
}
