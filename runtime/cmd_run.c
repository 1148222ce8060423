/*
 * `kadet run FILE`: reads an AgentJob manifest and trains it locally, printing one
 * progress line per epoch and a final summary (optionally also as JSON).
 *
 * Exit status: 0 trained, 1 failed while running (missing data, divergence), 2 usage or
 * manifest error, in which case nothing is trained. One agent trains in-process; the
 * multi-process launcher replaces that part, not the option handling.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "kd_cmd.h"
#include "kd_error.h"
#include "kd_log.h"
#include "kd_spec.h"
#include "kd_train.h"
#include "launcher.h"

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
} run_args;

static void run_usage(FILE *out)
{
    fprintf(out,
            "usage: kadet run [options] FILE\n"
            "\n"
            "Trains the AgentJob manifest FILE (YAML) locally and prints one line per epoch\n"
            "and a summary.\n"
            "\n"
            "options:\n"
            "  --agents N          agents to train with (only 1 in-process)\n"
            "  --epochs N          override spec.training.epochs\n"
            "  --seed S            initialisation and shuffle seed (default 1)\n"
            "  --data DIR          dataset directory, overrides spec.training.dataset.path\n"
            "                      (default %s)\n"
            "  --threads N         math threads per agent (default: the template's cpu\n"
            "                      request, rounded down, at least 1)\n"
            "  --max-samples N     train on the first N training samples only\n"
            "  --summary-json PATH write {test_accuracy, train_loss, epochs, agents,\n"
            "                      samples_per_second, wall_seconds} to PATH\n"
            "  --quiet             no per-epoch progress lines\n"
            "  -h, --help          this help\n"
            "\n"
            "exit status: 0 trained, 1 failed while training, 2 bad usage or manifest\n",
            KD_SPEC_DEFAULT_DATA);
}

/* Strict decimal parse into [lo, hi]; 0 on success. */
static int parse_ll(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || errno == ERANGE || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, run_args *a)
{
    enum { O_AGENTS = 256, O_EPOCHS, O_SEED, O_DATA, O_SUMMARY, O_THREADS, O_MAX, O_QUIET };
    static const struct option opts[] = {
        {"agents", required_argument, NULL, O_AGENTS},
        {"epochs", required_argument, NULL, O_EPOCHS},
        {"seed", required_argument, NULL, O_SEED},
        {"data", required_argument, NULL, O_DATA},
        {"summary-json", required_argument, NULL, O_SUMMARY},
        {"threads", required_argument, NULL, O_THREADS},
        {"max-samples", required_argument, NULL, O_MAX},
        {"quiet", no_argument, NULL, O_QUIET},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(a, 0, sizeof *a);
    a->seed = 1;
    optind = 1;
    opterr = 0;
    for (;;) {
        int li = 0;
        int c = getopt_long(argc, argv, ":h", opts, &li);
        if (c == -1)
            break;
        long long v;
        switch (c) {
        case 'h':
            run_usage(stdout);
            return 1;
        case O_AGENTS:
            if (parse_ll(optarg, 1, 100000, &v) != 0)
                goto bad_value;
            a->agents = (int)v;
            break;
        case O_EPOCHS:
            if (parse_ll(optarg, 1, 100000, &v) != 0)
                goto bad_value;
            a->epochs = (int)v;
            break;
        case O_SEED:
            if (parse_ll(optarg, 0, LLONG_MAX, &v) != 0)
                goto bad_value;
            a->seed = (unsigned long long)v;
            break;
        case O_DATA:
            a->data = optarg;
            break;
        case O_SUMMARY:
            a->summary_json = optarg;
            break;
        case O_THREADS:
            if (parse_ll(optarg, 1, 256, &v) != 0)
                goto bad_value;
            a->threads = (int)v;
            break;
        case O_MAX:
            if (parse_ll(optarg, 1, LONG_MAX, &v) != 0)
                goto bad_value;
            a->max_samples = (long)v;
            break;
        case O_QUIET:
            a->quiet = 1;
            break;
        case ':':
            fprintf(stderr, "kadet run: %s needs a value\n", argv[optind - 1]);
            return 2;
        default:
            fprintf(stderr, "kadet run: unknown option \"%s\" (see kadet run --help)\n",
                    argv[optind - 1]);
            return 2;
        }
        continue;
    bad_value:
        fprintf(stderr, "kadet run: --%s: invalid value \"%s\"\n", opts[li].name, optarg);
        return 2;
    }
    if (optind != argc - 1) {
        fprintf(stderr, optind >= argc ? "kadet run: missing manifest FILE\n"
                                       : "kadet run: expected one manifest FILE\n");
        run_usage(stderr);
        return 2;
    }
    a->file = argv[optind];
    return 0;
}

static void print_epoch(void *arg, const kd_epoch_report *r)
{
    (void)arg;
    printf("epoch %2d/%d  lr %.5f  train_loss %.4f  test_acc %.4f  samples/s %.0f  agents %d"
           "  time %.2fs\n",
           r->epoch, r->epochs, (double)r->lr, r->train_loss, r->test_accuracy,
           r->samples_per_second, r->agents, r->wall_seconds);
    fflush(stdout);
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
    if (a.agents > 1) {
        fprintf(stderr, "kadet run: --agents %d: the in-process trainer runs only 1 agent "
                        "(drop --in-process to train with several)\n", a.agents);
        return 2;
    }
    kd_log_set_component("run");
    kd_agentjob job;
    st = kd_launch_load_job(a.file, &job);
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

    char model_desc[512];
    kd_train_model_desc(&job, model_desc, sizeof model_desc);
    printf("job %s/%s: %s %s, %s", job.namespace_, job.name, job.dataset_format,
           a.data ? a.data : job.dataset_path, model_desc);
    printf(", batch %d, %s lr %g (%s), %d epochs, agents 1, threads %d, seed %llu\n",
           job.batch_size, kd_spec_optimizer_name(job.optimizer), job.learning_rate,
           kd_spec_schedule_name(job.schedule), a.epochs ? a.epochs : job.epochs, threads,
           a.seed);
    fflush(stdout);

    kd_train_options opt = {
        .job = &job,
        .data_dir = a.data,
        .epochs = a.epochs,
        .seed = a.seed,
        .threads = threads,
        .max_train_samples = (size_t)a.max_samples,
        .on_epoch = a.quiet ? NULL : print_epoch,
    };
    kd_train_result res;
    char err[512];
    int rc = kd_train_single(&opt, &res, err, sizeof err);
    if (rc != KD_OK) {
        fprintf(stderr, "kadet run: %s\n", err);
        kd_agentjob_free(&job);
        return 1;
    }
    printf("done: job %s/%s  epochs %d  test_accuracy %.4f  train_loss %.4f  samples/s %.0f"
           "  agents %d  wall %.1fs\n",
           job.namespace_, job.name, res.epochs, res.test_accuracy, res.train_loss,
           res.samples_per_second, res.agents, res.wall_seconds);
    st = 0;
    if (a.summary_json && write_summary(a.summary_json, &res) != 0) {
        fprintf(stderr, "kadet run: cannot write %s: %s\n", a.summary_json, strerror(errno));
        st = 1;
    }
    kd_agentjob_free(&job);
    return st;
}
