/* launcher_cmd: option handling of the distributed `kadet run` (the default), which
 * keeps the single-agent options (--epochs, --seed, --data, --summary-json with the same
 * keys, ...) and adds the elastic ones. `kadet run --in-process` keeps the single-agent
 * in-process trainer of cmd_run.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kd_data.h"
#include "kd_error.h"
#include "kd_log.h"
#include "kd_train.h"
#include "kd_yaml.h"
#include "launcher.h"
#include "run_output.h"

int kd_launch_in_process(int *argc, char **argv)
{
    for (int i = 1; i < *argc; i++)
        if (strcmp(argv[i], "--in-process") == 0) {
            memmove(&argv[i], &argv[i + 1], (size_t)(*argc - i) * sizeof *argv);
            (*argc)--;
            return 1;
        }
    return 0;
}

int kd_launch_load_job(const char *file, int allow_unknown, kd_agentjob *job)
{
    char err[512];
    json_t *docs = NULL;
    if (kd_yaml_load_file(file, 0, &docs, err, sizeof err) != KD_OK) {
        fprintf(stderr, "kadet run: %s\n", err);
        return 2;
    }
    if (json_array_size(docs) != 1) {
        fprintf(stderr, "kadet run: %s: expected one AgentJob document, found %zu documents\n",
                file, json_array_size(docs));
        json_decref(docs);
        return 2;
    }
    int rc = kd_agentjob_decode(json_array_get(docs, 0), job, err, sizeof err);
    json_decref(docs);
    if (rc != KD_OK) {
        fprintf(stderr, "kadet run: %s: %s\n", file, err);
        return 2;
    }
    if (job->n_unknown_spec > 0 && !allow_unknown) {
        /* A misspelt field would otherwise train the defaults and exit 0. */
        for (size_t i = 0; i < job->n_warnings; i++) {
            const char *w = job->warnings[i];
            if (strncmp(w, "spec", 4) != 0 || strstr(w, ": unknown field (ignored") == NULL)
                continue;
            const char *tail = strstr(w, ": unknown field (ignored");
            const char *hint = strstr(tail, "; did you mean ");
            fprintf(stderr, "kadet run: %s: %.*s: unknown field%s%s\n", file,
                    (int)(tail - w), w, hint != NULL ? " (" : "", hint != NULL ? hint + 2 : "");
        }
        fprintf(stderr, "kadet run: %s: %zu unknown field%s under spec; fix %s, or "
                        "--allow-unknown-fields to train without %s\n", file,
                job->n_unknown_spec, job->n_unknown_spec == 1 ? "" : "s",
                job->n_unknown_spec == 1 ? "it" : "them", job->n_unknown_spec == 1 ? "it" : "them");
        kd_agentjob_free(job);
        return 2;
    }
    for (size_t i = 0; i < job->n_warnings; i++)
        fprintf(stderr, "kadet run: warning: %s: %s\n", file, job->warnings[i]);
    return 0;
}

int kd_launch_check_data(const kd_agentjob *job, const char *data)
{
    char err[512];
    if (kd_dataset_check_dir(job->dataset_format, data ? data : job->dataset_path, err,
                             sizeof err) == KD_OK)
        return 0;
    fprintf(stderr, "kadet run: %s (%s)\n", err,
            data ? "from --data" : "spec.training.dataset.path; --data overrides it");
    return 2;
}

/* The summary's checkpoint record: a job that keeps checkpoints but has none (or whose
 * last write failed) says so, since a later resume would start over. */
static void warn_checkpoint(const json_t *ck)
{
    if (!json_is_object(ck) || !json_is_string(json_object_get(ck, "dir")))
        return;
    const char *why = json_string_value(json_object_get(ck, "error"));
    if (!json_is_true(json_object_get(ck, "saved")))
        fprintf(stderr, "kadet run: warning: the job has no checkpoint in %s (%s)\n",
                json_string_value(json_object_get(ck, "dir")),
                why != NULL ? why : "none was written");
    else if (json_is_true(json_object_get(ck, "failing")))
        fprintf(stderr,
                "kadet run: warning: the last checkpoint write failed (%s); the checkpoint "
                "in %s is from step %lld\n",
                why != NULL ? why : "no detail", json_string_value(json_object_get(ck, "dir")),
                (long long)json_integer_value(json_object_get(ck, "step")));
}

static int write_summary(const char *path, json_t *s)
{
    /* Same keys as the single-agent summary, plus the distributed extras. */
    char tmp[4096];
    int w = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (w <= 0 || (size_t)w >= sizeof tmp ||
        json_dump_file(s, tmp, JSON_INDENT(2) | JSON_REAL_PRECISION(6)) != 0)
        return -1;
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

int kd_launch_cmd_run(int argc, char **argv)
{
    kd_launch_opts o;
    memset(&o, 0, sizeof o);
    long long agents = 0, epochs = 0, seed = 1, threads = 1, maxs = 0, batch = 0;
    const char *summary_json = NULL, *cpu_bind = "auto", *plot = NULL;
    int allow_unknown = 0;
    const kd_opt opts[] = {
        {"agents", NULL, KD_OPT_INT, &agents, 1, 64,
         "pin the agent count, within spec.agents.min..max (default: the job's "
         "scheduling policy decides)"},
        {"agents-schedule", NULL, KD_OPT_STR, &o.schedule, 0, 0,
         "force agent counts over time, \"sec:count,...\" e.g. \"0:2,30:4,60:1\", "
         "counts within spec.agents.min..max"},
        {"epochs", NULL, KD_OPT_INT, &epochs, 1, 100000, "override spec.training.epochs"},
        {"batch-size", NULL, KD_OPT_INT, &batch, 1, 1 << 20, "override the per-agent batch"},
        {"seed", NULL, KD_OPT_INT, &seed, 0, 9.2e18, "initialisation and shuffle seed (1)"},
        {"data", NULL, KD_OPT_STR, &o.data, 0, 0, "dataset directory (overrides the spec)"},
        {"threads", NULL, KD_OPT_INT, &threads, 1, 256, "math threads per agent (default 1)"},
        {"max-samples", NULL, KD_OPT_INT, &maxs, 1, 1e12, "train on the first N samples only"},
        {"lr-scaling", NULL, KD_OPT_STR, &o.lr_scaling, 0, 0,
         "linear (default, with warm-up), sqrt or none"},
        {"checkpoint-dir", NULL, KD_OPT_STR, &o.checkpoint_dir, 0, 0,
         "override spec.checkpoint.path"},
        {"summary-json", NULL, KD_OPT_STR, &summary_json, 0, 0,
         "write {test_accuracy, train_loss, epochs, agents, samples_per_second, "
         "wall_seconds, ...} here"},
        {"quiet", NULL, KD_OPT_FLAG, &o.quiet, 0, 0,
         "no per-epoch lines: agent-count changes and the summary only"},
        {"sample-log-dir", NULL, KD_OPT_STR, &o.sample_log_dir, 0, 0,
         "debug: each worker logs the sample ids it trains into this directory"},
        {"range-log", NULL, KD_OPT_STR, &o.range_log, 0, 0,
         "debug: the coordinator logs the cursor ranges trained"},
        {"log-level", NULL, KD_OPT_STR, &o.log_level, 0, 0,
         "show the coordinator's and workers' logs here at this level (debug, info, warn, "
         "error); default: they go to a file at info, named in the first line"},
        {"plot", NULL, KD_OPT_STR, &plot, 0, 0,
         "draw loss, test accuracy and samples/s against time, agent changes marked, "
         "into FILE (.png or .svg; needs gnuplot)"},
        {"allow-unknown-fields", NULL, KD_OPT_FLAG, &allow_unknown, 0, 0,
         "train a manifest with unknown fields under spec (warnings; default: refused)"},
        {"cpu-bind", "KADET_RUN_CPU_BIND", KD_OPT_STR, &cpu_bind, 0, 0,
         "auto (default): while the workers' --threads fit this machine's CPUs, bind "
         "each to CPUs of its own; none: leave placement to the kernel"},
    };
    const char *file = NULL;
    int st = kd_opts_parse("run", "FILE", "Trains the AgentJob manifest FILE locally: one `kadet "
                           "coordinator` and N `kadet worker`\nprocesses on loopback; N changes "
                           "while training. --in-process trains one agent in this\nprocess "
                           "instead (see kadet run --in-process --help).",
                           opts, (int)(sizeof opts / sizeof opts[0]), argc, argv, &file);
    if (st != 0)
        return st == 1 ? 0 : st;
    if (file == NULL) {
        fprintf(stderr, "kadet run: missing manifest FILE\n");
        return 2;
    }
    if (strcmp(cpu_bind, "auto") != 0 && strcmp(cpu_bind, "none") != 0) {
        fprintf(stderr, "kadet run: --cpu-bind: expected auto or none, got \"%s\"\n",
                cpu_bind);
        return 2;
    }
    o.cpu_bind = strcmp(cpu_bind, "auto") == 0;
    char perr[256];
    if (plot != NULL && kd_run_plot_check(plot, perr, sizeof perr) != KD_OK) {
        fprintf(stderr, "kadet run: %s\n", perr);
        return 2;
    }
    if (o.log_level != NULL && kd_log_parse_level(o.log_level) < 0) {
        fprintf(stderr, "kadet run: --log-level: expected debug, info, warn or error, got "
                        "\"%s\"\n", o.log_level);
        return 2;
    }
    kd_log_set_component("run");
    kd_agentjob job;
    if ((st = kd_launch_load_job(file, allow_unknown, &job)) != 0)
        return st;
    if (o.schedule != NULL && kd_launch_schedule_valid(o.schedule, 1, 64) != 0) {
        fprintf(stderr, "kadet run: --agents-schedule: expected \"sec:count,...\" with "
                        "increasing times and counts in 1..64, got \"%s\"\n", o.schedule);
        kd_agentjob_free(&job);
        return 2;
    }
    /* The manifest's range is the job's contract (the operator never leaves it either):
     * a count outside it is a mistake to point out, not something to quietly change. */
    if (agents > 0 && (agents < job.agents_min || agents > job.agents_max)) {
        fprintf(stderr, "kadet run: --agents %lld is outside the job's agent range %d..%d "
                        "(spec.agents.min..max in %s); pick a count inside it or widen the "
                        "range\n", agents, job.agents_min, job.agents_max, file);
        kd_agentjob_free(&job);
        return 2;
    }
    if (o.schedule != NULL &&
        kd_launch_schedule_valid(o.schedule, job.agents_min, job.agents_max) != 0) {
        fprintf(stderr, "kadet run: --agents-schedule \"%s\": every count must be inside the "
                        "job's agent range %d..%d (spec.agents.min..max in %s)\n", o.schedule,
                        job.agents_min, job.agents_max, file);
        kd_agentjob_free(&job);
        return 2;
    }
    if (agents > 0 && o.schedule != NULL) {
        fprintf(stderr, "kadet run: --agents pins the count and --agents-schedule changes it "
                        "over time: give one of them\n");
        kd_agentjob_free(&job);
        return 2;
    }
    /* The local workers read the dataset where this process does: a wrong path is one
     * clear error now, not a line from every worker the launcher would start. */
    if ((st = kd_launch_check_data(&job, o.data)) != 0) {
        kd_agentjob_free(&job);
        return st;
    }
    o.file = file;
    o.job = &job;
    o.agents = (int)agents;
    o.epochs = (int)epochs;
    o.batch = (int)batch;
    o.seed = (unsigned long long)seed;
    o.threads = (int)threads;
    o.max_samples = (long)maxs;
    o.log_fd = -1;
    char log_path[256];
    if (o.log_level == NULL) {
        o.log_fd = kd_run_log_open(job.name, log_path, sizeof log_path);
        if (o.log_fd < 0) {
            fprintf(stderr, "kadet run: cannot create a log file in /tmp: %s\n",
                    strerror(errno));
            kd_agentjob_free(&job);
            return 1;
        }
        o.log_path = log_path;
        printf("kadet run: logs of the coordinator and workers in %s (--log-level info shows "
               "them here)\n", log_path);
        /* This process's own log lines (a worker that died) go there too. */
        int fd = dup(o.log_fd);
        FILE *f = fd >= 0 ? fdopen(fd, "a") : NULL;
        if (f != NULL)
            kd_log_set_stream(f);
        else if (fd >= 0)
            close(fd);
    }
    char model_desc[512];
    kd_train_model_desc(&job, model_desc, sizeof model_desc);
    printf("job %s/%s: %s %s, %s", job.namespace_, job.name, job.dataset_format,
           o.data ? o.data : job.dataset_path, model_desc);
    int per_agent = o.batch ? o.batch : job.batch_size;
    int ceiling = kd_spec_batch_ceiling(&job, per_agent);
    printf(", batch %d per agent", per_agent);
    if (ceiling > per_agent)
        printf(" (adaptive up to %d)", ceiling);
    int n_epochs = o.epochs ? o.epochs : job.epochs;
    printf(", %s lr %g, %d epoch%s, agents %d..%d%s, sync %s, seed %llu, OpenBLAS %s "
           "kernels\n",
           kd_spec_optimizer_name(job.optimizer),
           job.learning_rate, n_epochs, n_epochs == 1 ? "" : "s", job.agents_min,
           job.agents_max, o.agents ? " (pinned)" : "", kd_spec_sync_name(job.sync_mode),
           o.seed, kd_blas_kernels());
    fflush(stdout);
    json_t *summary = NULL;
    st = kd_launch_run(&o, &summary);
    if (st == 0) {
        printf("done: job %s/%s  epochs %lld  test_accuracy %.4f  train_loss %.4f  "
               "samples/s %.0f  agents %lld  wall %.1fs\n",
               job.namespace_, job.name,
               (long long)json_integer_value(json_object_get(summary, "epochs")),
               json_number_value(json_object_get(summary, "test_accuracy")),
               json_number_value(json_object_get(summary, "train_loss")),
               json_number_value(json_object_get(summary, "samples_per_second")),
               (long long)json_integer_value(json_object_get(summary, "agents")),
               json_number_value(json_object_get(summary, "wall_seconds")));
        if (job.adaptive_batch)
            printf("      final batch %lld per agent, gradient noise scale %.0f\n",
                   (long long)json_integer_value(json_object_get(summary, "batch")),
                   json_number_value(json_object_get(summary, "noise_scale")));
        warn_checkpoint(json_object_get(summary, "checkpoint"));
        if (plot != NULL) {
            char title[300];
            snprintf(title, sizeof title, "%s/%s", job.namespace_, job.name);
            if (kd_run_plot(plot, title, json_object_get(summary, "epoch_log"), perr,
                            sizeof perr) != KD_OK) {
                fprintf(stderr, "kadet run: %s\n", perr);
                st = 1;
            } else {
                printf("plot: %s\n", plot);
            }
        }
        if (summary_json != NULL && write_summary(summary_json, summary) != 0) {
            fprintf(stderr, "kadet run: cannot write %s: %s\n", summary_json, strerror(errno));
            st = 1;
        }
    }
    json_decref(summary);
    kd_agentjob_free(&job);
    if (o.log_fd >= 0)
        close(o.log_fd);
    return st;
}
