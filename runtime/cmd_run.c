/*
 * `kadet run FILE`: reads an AgentJob manifest and trains it locally, printing one
 * progress line per epoch and a final summary (optionally also as JSON).
 *
 * Exit status: 0 trained, 1 failed while running (missing data, divergence), 2 usage or
 * manifest error, in which case nothing is trained. One agent trains in-process; the
 * multi-process launcher replaces that part, not the option handling.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "kd_cli.h"
#include "kd_cmd.h"
#include "kd_error.h"
#include "kd_log.h"
#include "kd_metrics.h"
#include "kd_spec.h"
#include "kd_train.h"
#include "launcher.h"
#include "run_output.h"

typedef struct run_args {
    const char *file;         /* manifest */
    int agents;               /* --agents, 0 = manifest decides */
    int epochs;               /* --epochs, 0 = manifest */
    unsigned long long seed;  /* --seed */
    const char *data;         /* --data, NULL = manifest (whose default is the package's) */
    const char *summary_json; /* --summary-json */
    int threads;              /* --threads, 0 = from the manifest's cpu request */
    long max_samples;         /* --max-samples, 0 = all */
    int quiet;                /* --quiet: no per-epoch lines */
    int allow_unknown;        /* --allow-unknown-fields */
    const char *plot;         /* --plot FILE (.png or .svg) */
} run_args;

/* Options of `kadet run --in-process` through the common command-line layer (kd_cli.h);
 * 0 to run, 1 after --help or --version, 2 on a usage error (printed). */
static int parse_args(int argc, char **argv, run_args *a)
{
    memset(a, 0, sizeof *a);
    long long agents = 0, epochs = 0, seed = 1, threads = 0, maxs = 0;
    const kd_cli_opt opts[] = {
        {.name = "agents", .type = KD_CLI_INT, .target = &agents, .lo = 1, .hi = 1,
         .metavar = "N", .help = "agents to train with (only 1 in-process)"},
        {.name = "epochs", .type = KD_CLI_INT, .target = &epochs, .lo = 1, .hi = 100000,
         .metavar = "N", .help = "override spec.training.epochs"},
        {.name = "seed", .type = KD_CLI_INT, .target = &seed, .lo = 0, .hi = 9.2e18,
         .metavar = "SEED", .def = "1", .help = "initialisation and shuffle seed"},
        {.name = "data", .type = KD_CLI_STR, .target = &a->data, .metavar = "DIR",
         .def = KD_SPEC_DEFAULT_DATA,
         .help = "dataset directory, overrides spec.training.dataset.path"},
        {.name = "threads", .type = KD_CLI_INT, .target = &threads, .lo = 1, .hi = 256,
         .metavar = "N",
         .help = "math threads (default: the template's cpu request, at least 1)"},
        {.name = "max-samples", .type = KD_CLI_INT, .target = &maxs, .lo = 1, .hi = 1e12,
         .metavar = "N", .help = "train on the first N training samples only"},
        {.name = "summary-json", .type = KD_CLI_STR, .target = &a->summary_json,
         .metavar = "FILE",
         .help = "write {test_accuracy, train_loss, epochs, agents, samples_per_second, "
                 "wall_seconds} here"},
        {.name = "quiet", .type = KD_CLI_FLAG, .target = &a->quiet,
         .help = "no per-epoch lines, only the summary"},
        {.name = "allow-unknown-fields", .type = KD_CLI_FLAG, .target = &a->allow_unknown,
         .help = "train a manifest with unknown fields under spec (default: refused)"},
        {.name = "plot", .type = KD_CLI_STR, .target = &a->plot, .metavar = "FILE",
         .help = "draw loss, test accuracy and samples/s against time into FILE (.png or "
                 ".svg; needs gnuplot)"},
    };
    kd_cli cli = {
        .prog = "kadet run --in-process",
        .args = "FILE",
        .summary = "Trains the AgentJob manifest FILE (YAML) with one agent in this process "
                   "and prints one\nline per epoch and a summary.",
        .opts = opts,
        .n_opts = (int)(sizeof opts / sizeof opts[0]),
        .footer = "exit status: 0 trained, 1 failed while training, 2 bad usage or manifest\n",
    };
    kd_cli_action action;
    int first;
    char err[512];
    if (kd_cli_parse(&cli, argc, argv, &action, &first, err, sizeof err) != KD_OK) {
        /* --agents 2 gets its own explanation below; everything else is a usage error. */
        if (strncmp(err, "--agents: ", 10) != 0 || strstr(err, "outside") == NULL)
            return kd_cli_fail(&cli, err);
        fprintf(stderr, "kadet run: --agents: the in-process trainer runs only 1 agent "
                        "(drop --in-process to train with several)\n");
        return 2;
    }
    if (action == KD_CLI_HELP) {
        kd_cli_usage(&cli, stdout);
        return 1;
    }
    if (action == KD_CLI_VERSION) {
        printf("kadet %s\n", KADET_VERSION);
        return 1;
    }
    if (first != argc - 1) {
        fprintf(stderr, first >= argc ? "kadet run: missing manifest FILE\n"
                                      : "kadet run: expected one manifest FILE\n");
        kd_cli_usage(&cli, stderr);
        return 2;
    }
    a->file = argv[first];
    a->agents = (int)agents;
    a->epochs = (int)epochs;
    a->seed = (unsigned long long)seed;
    a->threads = (int)threads;
    a->max_samples = (long)maxs;
    return 0;
}

/* What the per-epoch callback needs: the batch for the line, whether to print it, and
 * the epoch log that --plot draws (the records the coordinator keeps, run_output.h). */
typedef struct epoch_sink {
    int batch;
    int print;
    json_t *log;      /* NULL without --plot */
    double last_wall; /* the previous epoch's end, seconds since the start */
} epoch_sink;

/* The same line as the distributed launcher's (run_output.h). */
static void on_epoch(void *arg, const kd_epoch_report *r)
{
    epoch_sink *s = arg;
    if (s->print) {
        kd_run_line line = {.t = r->wall_seconds, .epoch = r->epoch, .epochs = r->epochs,
                            .agents = r->agents, .batch = s->batch, .lr = r->lr,
                            .loss = r->train_loss, .evaluated = 1,
                            .test_acc = r->test_accuracy,
                            .samples_per_s = r->samples_per_second};
        kd_run_line_print(stdout, &line);
    }
    if (s->log != NULL) {
        /* The coordinator's epoch record (kd_metrics.h), so that one plotter reads both. */
        double since_last = r->wall_seconds - s->last_wall;
        kd_metrics_epoch e = {.has = KD_MET_EPOCH_LR | KD_MET_EPOCH_SAMPLES_PER_S,
                              .epoch = r->epoch, .accuracy = r->test_accuracy,
                              .train_loss = r->train_loss, .wall_seconds = r->wall_seconds,
                              .train_seconds = r->wall_seconds,
                              .epoch_seconds = since_last > 0 ? since_last : 0,
                              .agents = r->agents, .batch = s->batch, .lr = r->lr,
                              .samples_per_s = r->samples_per_second};
        s->last_wall = r->wall_seconds;
        json_t *o = kd_metrics_epoch_to_json(&e);
        if (o != NULL)
            json_array_append_new(s->log, o);
    }
}

/* Written to a temporary file then renamed, so readers never see half a summary. */
static int write_summary(const char *path, const kd_train_result *res)
{
    json_t *o = json_pack("{s:f, s:f, s:i, s:i, s:f, s:f}", "test_accuracy",
                          res->test_accuracy, "train_loss", res->train_loss, "epochs",
                          res->epochs, "agents", res->agents, "samples_per_second",
                          res->samples_per_second, "wall_seconds", res->wall_seconds);
    if (!o)
        return -1;
    char tmp[4096];
    int w = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int rc = -1;
    if (w > 0 && (size_t)w < sizeof tmp &&
        json_dump_file(o, tmp, JSON_INDENT(2) | JSON_REAL_PRECISION(6)) == 0) {
        rc = rename(tmp, path);
        if (rc != 0)
            unlink(tmp);
    }
    json_decref(o);
    return rc;
}

int kd_cmd_run(int argc, char **argv)
{
    /* The default run is the distributed launcher (launcher.h); --in-process keeps the
     * single-agent trainer below. */
    if (!kd_launch_in_process(&argc, argv))
        return kd_launch_cmd_run(argc, argv);
    run_args a;
    int st = parse_args(argc, argv, &a);
    if (st != 0)
        return st == 1 ? 0 : st;
    char err[512];
    if (a.plot != NULL && kd_run_plot_check(a.plot, err, sizeof err) != KD_OK) {
        fprintf(stderr, "kadet run: %s\n", err);
        return 2;
    }
    kd_log_set_component("run");
    kd_agentjob job;
    st = kd_launch_load_job(a.file, a.allow_unknown, &job);
    if (st != 0)
        return st;
    if ((st = kd_launch_check_data(&job, a.data)) != 0) {
        kd_agentjob_free(&job);
        return st;
    }

    int threads = a.threads;
    if (threads == 0)
        threads = job.agent_cpu_millis >= 2000 ? (int)(job.agent_cpu_millis / 1000) : 1;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu > 0 && threads > ncpu)
        threads = (int)ncpu;

    int n_epochs = a.epochs ? a.epochs : job.epochs;
    char model_desc[512];
    kd_train_model_desc(&job, model_desc, sizeof model_desc);
    printf("job %s/%s: %s %s, %s", job.namespace_, job.name, job.dataset_format,
           a.data ? a.data : job.dataset_path, model_desc);
    printf(", batch %d, %s lr %g (%s), %d epoch%s, agents 1, threads %d, seed %llu\n",
           job.batch_size, kd_spec_optimizer_name(job.optimizer), job.learning_rate,
           kd_spec_schedule_name(job.schedule), n_epochs, n_epochs == 1 ? "" : "s", threads,
           a.seed);
    fflush(stdout);

    kd_train_options opt = {
        .job = &job,
        .data_dir = a.data,
        .epochs = a.epochs,
        .seed = a.seed,
        .threads = threads,
        .max_train_samples = (size_t)a.max_samples,
    };
    epoch_sink sink = {.batch = job.batch_size, .print = !a.quiet,
                       .log = a.plot != NULL ? json_array() : NULL};
    if (sink.print || sink.log != NULL) {
        opt.on_epoch = on_epoch;
        opt.on_epoch_arg = &sink;
    }
    kd_train_result res;
    int rc = kd_train_single(&opt, &res, err, sizeof err);
    if (rc != KD_OK) {
        fprintf(stderr, "kadet run: %s\n", err);
        json_decref(sink.log);
        kd_agentjob_free(&job);
        return 1;
    }
    printf("done: job %s/%s  epochs %d  test_accuracy %.4f  train_loss %.4f  samples/s %.0f"
           "  agents %d  wall %.1fs\n",
           job.namespace_, job.name, res.epochs, res.test_accuracy, res.train_loss,
           res.samples_per_second, res.agents, res.wall_seconds);
    st = 0;
    if (a.plot != NULL) {
        char title[300];
        snprintf(title, sizeof title, "%s/%s", job.namespace_, job.name);
        if (kd_run_plot(a.plot, title, sink.log, err, sizeof err) != KD_OK) {
            fprintf(stderr, "kadet run: %s\n", err);
            st = 1;
        } else {
            printf("plot: %s\n", a.plot);
        }
    }
    json_decref(sink.log);
    if (a.summary_json && write_summary(a.summary_json, &res) != 0) {
        fprintf(stderr, "kadet run: cannot write %s: %s\n", a.summary_json, strerror(errno));
        st = 1;
    }
    kd_agentjob_free(&job);
    return st;
}
