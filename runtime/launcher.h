/*
 * launcher: the distributed runtime's subcommands and what they share.
 *
 *   kadet coordinator  one per job: membership, cursor, checkpoints, metrics
 *   kadet worker       one per agent: trains its share, allreduces with its peers
 *   kadet run          local launcher: spawns one coordinator and N workers as
 *                      processes of this same binary and changes N while training
 *
 * Every option of the coordinator and the worker can also come from the environment
 * (the name in the help text), which is how the operator configures pods; a flag wins
 * over the environment. The option helper here is table driven so that --help, flags
 * and environment never disagree.
 */
#ifndef KD_LAUNCHER_H
#define KD_LAUNCHER_H

#include <stdio.h>

#include <jansson.h>

#include "kd_cli.h"
#include "kd_spec.h"

int kd_cmd_coordinator(int argc, char **argv);
int kd_cmd_worker(int argc, char **argv);
/* The distributed `kadet run` (option parsing, then kd_launch_run). */
int kd_launch_cmd_run(int argc, char **argv);
/* 1 (and removes the flag from argv) when argv asks for --in-process. */
int kd_launch_in_process(int *argc, char **argv);
/* The one AgentJob of the manifest FILE, decoded into *job, its warnings printed; prints
 * the problem ("kadet run: ...") and returns 2 otherwise. Unknown fields under spec are
 * such a problem (kubectl's strict decoding), unless allow_unknown: then warnings. */
int kd_launch_load_job(const char *file, int allow_unknown, kd_agentjob *job);
/* Whether the job's dataset directory (data, when given, overrides the spec's) holds both
 * splits' files; prints the problem and returns 2 otherwise. */
int kd_launch_check_data(const kd_agentjob *job, const char *data);
/* What `kadet run` (cmd_run.c) hands the distributed launcher. */
typedef struct kd_launch_opts {
    const char *file;           /* manifest path (the coordinator reads it) */
    const kd_agentjob *job;     /* the decoded manifest (borrowed) */
    int agents;                 /* --agents: pinned count, 0 = not pinned */
    const char *schedule;       /* --agents-schedule "sec:count,...", or NULL */
    int epochs;                 /* override, 0 = spec */
    int batch;                  /* per-agent batch override, 0 = spec */
    unsigned long long seed;    /* shuffle and init seed */
    const char *data;           /* dataset directory override, or NULL */
    int threads;                /* math threads per agent */
    long max_samples;           /* first N training samples only, 0 = all */
    int quiet;                  /* no progress lines: agent-count changes and the summary */
    const char *lr_scaling;     /* linear|sqrt|none, or NULL = coordinator default */
    const char *checkpoint_dir; /* override spec.checkpoint.path, or NULL */
    const char *sample_log_dir; /* debug: per-worker sample-id logs here, or NULL */
    const char *range_log;      /* debug: coordinator's cursor range log, or NULL */
    const char *log_level;      /* passed to the processes, or NULL */
    int cpu_bind;               /* bind workers to CPUs of their own while they fit */
    int log_fd;                 /* the processes' stdout and stderr, -1 = this terminal */
    const char *log_path;       /* its path (shown when the run fails), or NULL */
} kd_launch_opts;

/* Runs the job with a coordinator and workers as processes; on success (0) *summary is
 * the coordinator's summary (new reference: test_accuracy, train_loss, epochs, agents,
 * samples_per_second, wall_seconds, epoch_log). 1 when training failed (the log file's
 * warnings and errors are then copied to stderr), 128 + the signal when interrupted
 * (130 for SIGINT, 143 for SIGTERM). */
int kd_launch_run(const kd_launch_opts *o, json_t **summary);
/* 0 when "sec:count,..." is well formed with non-decreasing times and counts in
 * [lo, hi]. */
int kd_launch_schedule_valid(const char *sched, int lo, int hi);

typedef enum kd_opt_type { KD_OPT_STR, KD_OPT_INT, KD_OPT_DBL, KD_OPT_FLAG } kd_opt_type;

/* One option of a subcommand; kd_opts_parse hands the table to the common command-line
 * layer (common/kd_cli.h), which names the value in --help after the option (a table in
 * launcher_opts.c: --data DIR, --threads N; else by type). */
typedef struct kd_opt {
    const char *name;  /* long option without dashes */
    const char *env;   /* environment variable, or NULL */
    kd_opt_type type;  /* how the value is parsed */
    void *target;      /* const char **, long long *, double * or int * */
    double lo, hi;     /* accepted range for numbers */
    const char *help;  /* one line */
} kd_opt;

/* Applies the environment, then argv (argv[0] is the subcommand) with kd_cli; returns 0
 * on success, 1 after printing help (--help) or the version (--version), 2 on a usage
 * error (message printed). Positional arguments are refused unless pos_out is not NULL
 * (it receives the only one). args names them in the synopsis ("FILE", "" for none). */
int kd_opts_parse(const char *cmd, const char *args, const char *summary, const kd_opt *opts,
                  int n, int argc, char **argv, const char **pos_out);
void kd_opts_usage(FILE *out, const char *cmd, const char *args, const char *summary,
                   const kd_opt *opts, int n);

#endif
