/* run_output: progress lines and the log file of `kadet run` (run_output.h). */
#include "run_output.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void kd_run_line_print(FILE *out, const kd_run_line *l)
{
    int width = l->epochs >= 100 ? 3 : 2;
    fprintf(out, "[%6.1fs] epoch %*d/%d  agents %d  batch %d", l->t, width, l->epoch,
            l->epochs, l->agents, l->batch);
    if (l->lr >= 0)
        fprintf(out, "  lr %.5f", l->lr);
    fprintf(out, "  loss %.4f", l->loss);
    if (l->evaluated)
        fprintf(out, "  test_acc %.4f", l->test_acc);
    else
        fprintf(out, "  test_acc -");
    fprintf(out, "  samples/s %.0f%s\n", l->samples_per_s, l->in_progress ? "  (running)" : "");
    fflush(out);
}

int kd_run_log_open(const char *name, char *path, size_t n)
{
    char safe[64];
    size_t k = 0;
    for (const char *p = name != NULL ? name : ""; *p != '\0' && k < sizeof safe - 1; p++) {
        char ch = *p;
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                 (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
        safe[k++] = ok ? ch : '_';
    }
    safe[k] = '\0';
    int w = snprintf(path, n, "/tmp/kadet-run-%s%sXXXXXX.log", safe, k > 0 ? "-" : "");
    if (w < 0 || (size_t)w >= n)
        return -1;
    return mkstemps(path, 4);
}

/* Whether two log lines say the same thing: equal once the time stamp (the first word)
 * and every digit are skipped (pids, exit statuses), so that the same failure of every
 * replacement worker is shown once. */
static int same_text(const char *a, const char *b)
{
    a = strchr(a, ' ');
    b = strchr(b, ' ');
    if (a == NULL || b == NULL)
        return 0;
    for (;;) {
        while (*a >= '0' && *a <= '9')
            a++;
        while (*b >= '0' && *b <= '9')
            b++;
        if (*a != *b)
            return 0;
        if (*a == '\0')
            return 1;
        a++;
        b++;
    }
}

int kd_run_log_show_errors(const char *path, FILE *out, int max)
{
    FILE *f = path != NULL ? fopen(path, "r") : NULL;
    if (f == NULL || max <= 0) {
        if (f != NULL)
            fclose(f);
        return 0;
    }
    /* A ring of the last max matching lines; each line bounded (kd_log writes at most
     * 2 KiB per entry, a longer one is cut). */
    enum { LINE = 2048 };
    char *ring = calloc((size_t)max, LINE);
    if (ring == NULL) {
        fclose(f);
        return 0;
    }
    char line[LINE];
    int seen = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strchr(line, '\n') == NULL) {
            int ch;
            while ((ch = fgetc(f)) != EOF && ch != '\n') {
            }
        }
        if (strstr(line, " warn ") == NULL && strstr(line, " error ") == NULL)
            continue;
        int dup = 0;
        for (int i = seen > max ? seen - max : 0; i < seen && !dup; i++)
            dup = same_text(ring + (size_t)(i % max) * LINE, line);
        if (dup)
            continue;
        snprintf(ring + (size_t)(seen % max) * LINE, LINE, "%s", line);
        seen++;
    }
    fclose(f);
    int shown = seen < max ? seen : max;
    for (int i = seen - shown; i < seen; i++) {
        const char *s = ring + (size_t)(i % max) * LINE;
        fprintf(out, "  %s%s", s, strchr(s, '\n') != NULL ? "" : "\n");
    }
    free(ring);
    return shown;
}
