/* launcher_opts: table-driven options with environment fallback for the distributed
 * subcommands (see launcher.h). Numbers are parsed strictly (whole string, in range). */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "launcher.h"

void kd_opts_usage(FILE *out, const char *cmd, const char *args, const char *summary,
                   const kd_opt *opts, int n)
{
    fprintf(out, "usage: kadet %s [options]%s%s\n\n%s\n\noptions (environment in brackets):\n",
            cmd, args[0] != '\0' ? " " : "", args, summary);
    for (int i = 0; i < n; i++) {
        char left[64];
        snprintf(left, sizeof left, "--%s%s", opts[i].name,
                 opts[i].type == KD_OPT_FLAG ? "" : " V");
        fprintf(out, "  %-26s %s", left, opts[i].help);
        if (opts[i].env != NULL)
            fprintf(out, " [%s]", opts[i].env);
        fprintf(out, "\n");
    }
    fprintf(out, "  %-26s %s\n", "-h, --help", "this help");
}

static int set_value(const char *cmd, const kd_opt *o, const char *v, const char *from)
{
    char *end;
    errno = 0;
    switch (o->type) {
    case KD_OPT_STR:
        *(const char **)o->target = v;
        return 0;
    case KD_OPT_FLAG:
        *(int *)o->target = strcmp(v, "0") != 0 && strcmp(v, "false") != 0;
        return 0;
    case KD_OPT_INT: {
        long long x = strtoll(v, &end, 10);
        if (end == v || *end != '\0' || errno != 0 || x < o->lo || x > o->hi)
            break;
        *(long long *)o->target = x;
        return 0;
    }
    case KD_OPT_DBL: {
        double x = strtod(v, &end);
        if (end == v || *end != '\0' || errno != 0 || !(x >= o->lo && x <= o->hi))
            break;
        *(double *)o->target = x;
        return 0;
    }
    }
    fprintf(stderr, "kadet %s: %s %s: invalid value \"%s\" (expected %g..%g)\n", cmd, from,
            o->name, v, o->lo, o->hi);
    return 2;
}

int kd_opts_parse(const char *cmd, const char *args, const char *summary, const kd_opt *opts,
                  int n, int argc, char **argv, const char **pos_out)
{
    for (int i = 0; i < n; i++) {
        const char *v = opts[i].env != NULL ? getenv(opts[i].env) : NULL;
        if (v != NULL && v[0] != '\0' && set_value(cmd, &opts[i], v, opts[i].env) != 0)
            return 2;
    }
    struct option *lo = calloc((size_t)n + 2, sizeof *lo);
    if (lo == NULL)
        return 2;
    for (int i = 0; i < n; i++)
        lo[i] = (struct option){opts[i].name,
                                opts[i].type == KD_OPT_FLAG ? no_argument : required_argument,
                                NULL, 256 + i};
    lo[n] = (struct option){"help", no_argument, NULL, 'h'};
    optind = 1;
    opterr = 0;
    int rc = 0;
    for (;;) {
        int c = getopt_long(argc, argv, ":h", lo, NULL);
        if (c == -1)
            break;
        if (c == 'h') {
            kd_opts_usage(stdout, cmd, args, summary, opts, n);
            rc = 1;
            break;
        }
        if (c == ':' || c == '?') {
            fprintf(stderr, "kadet %s: %s \"%s\" (see kadet %s --help)\n", cmd,
                    c == ':' ? "missing value for" : "unknown option", argv[optind - 1], cmd);
            rc = 2;
            break;
        }
        const kd_opt *o = &opts[c - 256];
        if ((rc = set_value(cmd, o, o->type == KD_OPT_FLAG ? "1" : optarg, "--")) != 0)
            break;
    }
    free(lo);
    if (rc != 0)
        return rc;
    if (optind < argc) {
        if (pos_out == NULL || optind != argc - 1) {
            fprintf(stderr, "kadet %s: unexpected argument \"%s\"\n", cmd, argv[optind]);
            return 2;
        }
        *pos_out = argv[optind];
    }
    return 0;
}
