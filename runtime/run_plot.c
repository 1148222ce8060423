/* run_plot: `kadet run --plot FILE`, a picture of the run from the coordinator's epoch log
 * drawn by gnuplot (run_output.h). */
#define _GNU_SOURCE /* mkdtemp */
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kd_error.h"
#include "run_output.h"

extern char **environ;

/* The gnuplot terminal for the file's extension, or NULL. */
static const char *terminal_for(const char *path)
{
    const char *dot = path != NULL ? strrchr(path, '.') : NULL;
    if (dot == NULL)
        return NULL;
    if (strcmp(dot, ".png") == 0 || strcmp(dot, ".PNG") == 0)
        return "pngcairo size 900,900 font \",10\"";
    if (strcmp(dot, ".svg") == 0 || strcmp(dot, ".SVG") == 0)
        return "svg size 900,900 dynamic font \",10\"";
    return NULL;
}

/* Whether an executable gnuplot is on PATH. */
static int have_gnuplot(void)
{
    const char *path = getenv("PATH");
    if (path == NULL)
        path = "/usr/bin:/bin";
    char dir[4096];
    while (*path != '\0') {
        size_t n = strcspn(path, ":");
        if (n > 0 && n < sizeof dir - 16) {
            snprintf(dir, sizeof dir, "%.*s/gnuplot", (int)n, path);
            if (access(dir, X_OK) == 0)
                return 1;
        }
        path += n;
        if (*path == ':')
            path++;
    }
    return 0;
}

int kd_run_plot_check(const char *path, char *err, size_t errlen)
{
    if (terminal_for(path) == NULL)
        return kd_errf(err, errlen, KD_EINVAL, "--plot %s: the file must end in .png or .svg",
                       path != NULL ? path : "");
    if (!have_gnuplot())
        return kd_errf(err, errlen, KD_ENOTFOUND,
                       "--plot needs gnuplot, which is not installed: hack/deps.sh --plot "
                       "installs it (Debian gnuplot-nox)");
    return KD_OK;
}

/* Writes a gnuplot string literal: the path between double quotes, escaped. */
static void quoted(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s != '\0'; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

int kd_run_plot(const char *path, const char *title, const json_t *epoch_log, char *err,
                size_t errlen)
{
    const char *term = terminal_for(path);
    if (term == NULL || !json_is_array(epoch_log) || json_array_size(epoch_log) == 0)
        return kd_errf(err, errlen, KD_EINVAL, "--plot: nothing to draw (no evaluated epoch)");
    char dir[] = "/tmp/kadet-plot.XXXXXX";
    if (mkdtemp(dir) == NULL)
        return kd_errf(err, errlen, KD_EIO, "--plot: mkdtemp: %s", strerror(errno));
    char data[64], script[64];
    snprintf(data, sizeof data, "%s/epochs.dat", dir);
    snprintf(script, sizeof script, "%s/plot.gp", dir);
    int rc = KD_EIO;
    FILE *d = fopen(data, "w"), *g = fopen(script, "w");
    if (d == NULL || g == NULL) {
        kd_errf(err, errlen, KD_EIO, "--plot: cannot write in %s", dir);
        goto out;
    }
    /* time loss accuracy samples/s agents, one line per evaluated epoch. */
    size_t i;
    json_t *e;
    long prev_agents = -1, max_agents = 1;
    fprintf(g, "set terminal %s\nset output ", term);
    quoted(g, path);
    fprintf(g, "\nset multiplot layout 3,1 title ");
    quoted(g, title != NULL ? title : "kadet run");
    fprintf(g, "\nset grid\nset key off\nset xlabel 'seconds'\nset xrange [0:*]\n");
    json_array_foreach(epoch_log, i, e)
    {
        double t = json_number_value(json_object_get(e, "wall_seconds"));
        long agents = (long)json_integer_value(json_object_get(e, "agents"));
        fprintf(d, "%.3f %.6f %.6f %.1f %ld\n", t,
                json_number_value(json_object_get(e, "train_loss")),
                json_number_value(json_object_get(e, "accuracy")),
                json_number_value(json_object_get(e, "samples_per_s")), agents);
        /* The agent count changed during this epoch: a dashed line in every panel (the
         * count itself is the step line of the last panel). */
        if (prev_agents >= 0 && agents != prev_agents)
            fprintf(g, "set arrow from %.3f, graph 0 to %.3f, graph 1 nohead dt 2 lc rgb "
                       "'gray50'\n", t, t);
        prev_agents = agents;
        if (agents > max_agents)
            max_agents = agents;
    }
    fprintf(g, "set ylabel 'train loss'\nplot ");
    quoted(g, data);
    fprintf(g, " using 1:2 with linespoints pt 7 ps 0.6 lc rgb '#1f77b4'\n"
               "set ylabel 'test accuracy'\nplot ");
    quoted(g, data);
    fprintf(g, " using 1:3 with linespoints pt 7 ps 0.6 lc rgb '#2ca02c'\n"
               "set ylabel 'samples/s'\nset y2label 'agents'\nset y2tics 1\n"
               "set y2range [0:%ld]\nset key top left\nplot ", max_agents + 1);
    quoted(g, data);
    fprintf(g, " using 1:4 with linespoints pt 7 ps 0.6 lc rgb '#d62728' title 'samples/s', ");
    quoted(g, data);
    fprintf(g, " using 1:5 axes x1y2 with steps lw 2 lc rgb 'gray40' title 'agents'\n"
               "unset multiplot\n");
    int bad = fclose(d) != 0;
    d = NULL;
    bad |= fclose(g) != 0;
    g = NULL;
    if (bad) {
        kd_errf(err, errlen, KD_EIO, "--plot: cannot write in %s", dir);
        goto out;
    }
    char *argv[] = {"gnuplot", script, NULL};
    pid_t pid;
    int st = 0;
    if (posix_spawnp(&pid, "gnuplot", NULL, NULL, argv, environ) != 0 ||
        waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        kd_errf(err, errlen, KD_EIO, "--plot: gnuplot failed (status %d) on %s", st, script);
        goto out;
    }
    rc = KD_OK;
out:
    if (d != NULL)
        fclose(d);
    if (g != NULL)
        fclose(g);
    unlink(data);
    unlink(script);
    rmdir(dir);
    return rc;
}
