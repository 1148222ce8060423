/*
 * run_output: what `kadet run` shows a user, in-process and distributed alike.
 *
 * One progress line per epoch, in one format (kd_run_line_print), then the summary; the
 * coordinator's and workers' own log lines go to a file (kd_run_log_open) whose name is
 * the first thing printed, so that the terminal shows training, not plumbing. When a run
 * fails, kd_run_log_show_errors copies the file's warnings and errors to the terminal:
 * the cause of a failure is never only in the file.
 */
#ifndef KD_RUN_OUTPUT_H
#define KD_RUN_OUTPUT_H

#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

typedef struct kd_run_line {
    double t;             /* seconds since the run started */
    int epoch, epochs;    /* the epoch just evaluated (or in progress), of how many */
    int agents;           /* agents training */
    int batch;            /* per-agent batch */
    double lr;            /* learning rate of the last step; < 0 = not known */
    double loss;          /* training loss (the epoch's mean, or the running one) */
    int evaluated;        /* 0 before the first evaluation: test_acc prints "-" */
    double test_acc;      /* the latest evaluation's test accuracy */
    double samples_per_s; /* training throughput */
    int in_progress;      /* 1 = mid-epoch line (no epoch ended since the last line) */
} kd_run_line;

/* Writes one progress line, for example
 *   [   1.1s] epoch  1/10  agents 2  batch 64  lr 0.09981  loss 0.5378  test_acc 0.8363  samples/s 115688
 * and flushes out. Can't fail (a write error shows on the summary's write). */
void kd_run_line_print(FILE *out, const kd_run_line *l);

/* Creates a new log file /tmp/kadet-run-NAME-XXXXXX.log (NAME: the job's name, reduced
 * to [A-Za-z0-9._-]) and returns its descriptor, with its path in path (size n); -1 with
 * errno set when it cannot be created. */
int kd_run_log_open(const char *name, char *path, size_t n);

/* Copies the warning and error lines of the log file at path (at most max, the last
 * ones) to out, indented; returns how many. 0 when the file holds none or is gone. */
int kd_run_log_show_errors(const char *path, FILE *out, int max);

/* Whether --plot FILE can be drawn: FILE ends in .png or .svg and gnuplot is on PATH
 * (hack/deps.sh --plot installs it). KD_OK, else a kd_err with the reason in err. */
int kd_run_plot_check(const char *path, char *err, size_t errlen);

/* Draws train loss, test accuracy and samples/s against time (three panels) from the
 * summary's epoch_log (borrowed), the agent count as a step line beside the samples/s and
 * a dashed line in every panel where it changed, into path (PNG or SVG by extension)
 * with gnuplot. */
int kd_run_plot(const char *path, const char *title, const json_t *epoch_log, char *err,
                size_t errlen);

#endif
