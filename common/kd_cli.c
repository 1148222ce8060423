/* kd_cli: one command-line convention over getopt_long (kd_cli.h). */
#define _GNU_SOURCE /* getopt_long */
#include "kd_cli.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kd_error.h"

#define CLI_HELP_ID 'h'
#define CLI_VERSION_ID 1
#define CLI_FIRST_ID 256

static const char *real_getenv(const char *name) { return getenv(name); }

/* Booleans take no value or an attached one (--flag=false), never the next argument. */
static int is_flag(const kd_cli_opt *o)
{
    return o->type == KD_CLI_FLAG || o->type == KD_CLI_FUNC_FLAG;
}

static const char *type_metavar(const kd_cli_opt *o)
{
    if (o->metavar != NULL)
        return o->metavar;
    switch (o->type) {
    case KD_CLI_INT:
        return "N";
    case KD_CLI_DBL:
        return "NUM";
    case KD_CLI_FLAG:
    case KD_CLI_FUNC_FLAG:
        return "";
    default:
        return "VALUE";
    }
}

/* A range as the user types numbers: integers without exponent. */
static void range_text(const kd_cli_opt *o, char *buf, size_t n)
{
    if (o->type == KD_CLI_INT)
        snprintf(buf, n, "%.0f..%.0f", o->lo, o->hi);
    else
        snprintf(buf, n, "%g..%g", o->lo, o->hi);
}

static int parse_bool(const char *v, int *out)
{
    static const char *yes[] = {"1", "true", "yes", "on"};
    static const char *no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = 1;
            return KD_OK;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = 0;
            return KD_OK;
        }
    }
    return KD_EINVAL;
}

/* Applies one value; on error writes "WHAT: detail" (WHAT: --name or the variable). */
static int apply(const kd_cli_opt *o, const char *v, const char *what, char *err, size_t n)
{
    char range[96];
    char *end = NULL;
    errno = 0;
    switch (o->type) {
    case KD_CLI_STR:
        *(const char **)o->target = v;
        return KD_OK;
    case KD_CLI_FLAG: {
        int b;
        if (parse_bool(v, &b) != KD_OK)
            return kd_errf(err, n, KD_EINVAL, "%s: expected true or false, got \"%s\"", what,
                           v);
        *(int *)o->target = b;
        return KD_OK;
    }
    case KD_CLI_INT: {
        long long x = strtoll(v, &end, 10);
        range_text(o, range, sizeof range);
        if (end == v || *end != '\0' || errno != 0)
            return kd_errf(err, n, KD_EINVAL, "%s: expected an integer in %s, got \"%s\"", what,
                           range, v);
        if ((double)x < o->lo || (double)x > o->hi)
            return kd_errf(err, n, KD_ERANGE, "%s: %s is outside %s", what, v, range);
        *(long long *)o->target = x;
        return KD_OK;
    }
    case KD_CLI_DBL: {
        double x = strtod(v, &end);
        range_text(o, range, sizeof range);
        if (end == v || *end != '\0' || errno != 0 || !isfinite(x))
            return kd_errf(err, n, KD_EINVAL, "%s: expected a number in %s, got \"%s\"", what,
                           range, v);
        if (x < o->lo || x > o->hi)
            return kd_errf(err, n, KD_ERANGE, "%s: %s is outside %s", what, v, range);
        *(double *)o->target = x;
        return KD_OK;
    }
    case KD_CLI_FUNC:
    case KD_CLI_FUNC_FLAG: {
        char detail[384] = "";
        int rc = o->set != NULL ? o->set(o->target, v, detail, sizeof detail) : KD_EINVAL;
        if (rc != KD_OK)
            return kd_errf(err, n, rc, "%s: %s", what, detail[0] ? detail : "invalid value");
        return KD_OK;
    }
    }
    return kd_errf(err, n, KD_EINVAL, "%s: unknown option type", what);
}

/* Optimal string alignment distance (a transposition counts 1), capped at cap + 1. */
static size_t edit_distance(const char *a, const char *b, size_t cap)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return cap + 1;
    size_t d[64][64];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < best)
                best = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[la][lb] > cap ? cap + 1 : d[la][lb];
}

const char *kd_cli_nearest(const char *word, const char *const *candidates, size_t n)
{
    if (word == NULL || word[0] == '\0')
        return NULL;
    size_t len = strlen(word);
    size_t cap = len <= 3 ? 1 : len <= 8 ? 2 : 3;
    const char *best = NULL;
    size_t best_d = cap + 1;
    for (size_t i = 0; i < n; i++) {
        if (candidates[i] == NULL)
            continue;
        size_t d = edit_distance(word, candidates[i], cap);
        if (d < best_d) {
            best_d = d;
            best = candidates[i];
        }
    }
    if (best != NULL)
        return best;
    for (size_t i = 0; i < n; i++)
        if (candidates[i] != NULL && len >= 3 && strncmp(candidates[i], word, len) == 0)
            return candidates[i];
    return NULL;
}

/* "unknown option '--x'" with the nearest option, for what getopt_long refused. */
static int unknown_option(const kd_cli *cli, const char *arg, char *err, size_t n)
{
    if (strncmp(arg, "--", 2) != 0)
        return kd_errf(err, n, KD_EINVAL, "unknown option '%s'", arg);
    char name[64];
    const char *eq = strchr(arg + 2, '=');
    size_t len = eq != NULL ? (size_t)(eq - arg - 2) : strlen(arg + 2);
    snprintf(name, sizeof name, "%.*s", (int)len, arg + 2);
    const char *names[130];
    size_t k = 0;
    for (int i = 0; i < cli->n_opts && k < 128; i++)
        names[k++] = cli->opts[i].name;
    names[k++] = "help";
    names[k++] = "version";
    const char *near = kd_cli_nearest(name, names, k);
    if (near != NULL && strcmp(near, name) == 0) {
        /* A known name that getopt_long refused: a value given to a flag. */
        return kd_errf(err, n, KD_EINVAL, "--%s takes no value", name);
    }
    if (near != NULL)
        return kd_errf(err, n, KD_EINVAL, "unknown option '--%s' (did you mean --%s?)", name,
                       near);
    return kd_errf(err, n, KD_EINVAL, "unknown option '--%s'", name);
}

int kd_cli_parse(const kd_cli *cli, int argc, char **argv, kd_cli_action *action,
                 int *first_arg, char *err, size_t errlen)
{
    if (cli == NULL || action == NULL || first_arg == NULL || cli->n_opts < 0)
        return kd_errf(err, errlen, KD_EINVAL, "kd_cli_parse: bad arguments");
    *action = KD_CLI_RUN;
    *first_arg = argc;
    const char *(*env)(const char *) = cli->getenv_fn != NULL ? cli->getenv_fn : real_getenv;
    for (int i = 0; i < cli->n_opts; i++) {
        const kd_cli_opt *o = &cli->opts[i];
        const char *v = o->env != NULL ? env(o->env) : NULL;
        if (v == NULL || v[0] == '\0')
            continue;
        char what[96];
        snprintf(what, sizeof what, "environment %s", o->env);
        int rc = apply(o, v, what, err, errlen);
        if (rc != KD_OK)
            return rc;
    }
    struct option *lo = calloc((size_t)cli->n_opts + 3, sizeof *lo);
    if (lo == NULL)
        return kd_errf(err, errlen, KD_ENOMEM, "out of memory");
    for (int i = 0; i < cli->n_opts; i++)
        lo[i] = (struct option){cli->opts[i].name,
                                is_flag(&cli->opts[i]) ? optional_argument
                                                       : required_argument,
                                NULL, CLI_FIRST_ID + i};
    lo[cli->n_opts] = (struct option){"help", no_argument, NULL, CLI_HELP_ID};
    lo[cli->n_opts + 1] = (struct option){"version", no_argument, NULL, CLI_VERSION_ID};
    optind = 0; /* 0, not 1: getopt_long re-initialises (several parses per process) */
    opterr = 0;
    int rc = KD_OK;
    for (;;) {
        int c = getopt_long(argc, argv, ":h", lo, NULL);
        if (c == -1)
            break;
        if (c == CLI_HELP_ID || c == CLI_VERSION_ID) {
            *action = c == CLI_HELP_ID ? KD_CLI_HELP : KD_CLI_VERSION;
            break;
        }
        if (c == ':') {
            const char *arg = argv[optind - 1];
            const char *m = "VALUE";
            for (int i = 0; i < cli->n_opts; i++)
                if (strcmp(arg + 2, cli->opts[i].name) == 0)
                    m = type_metavar(&cli->opts[i]);
            rc = kd_errf(err, errlen, KD_EINVAL, "%s needs a value (%s)", arg, m);
            break;
        }
        if (c == '?' || c < CLI_FIRST_ID || c >= CLI_FIRST_ID + cli->n_opts) {
            rc = unknown_option(cli, argv[optind - 1], err, errlen);
            break;
        }
        const kd_cli_opt *o = &cli->opts[c - CLI_FIRST_ID];
        char what[80];
        snprintf(what, sizeof what, "--%s", o->name);
        const char *v = optarg != NULL ? optarg : is_flag(o) ? "true" : "";
        if ((rc = apply(o, v, what, err, errlen)) != KD_OK)
            break;
    }
    free(lo);
    if (rc == KD_OK)
        *first_arg = optind;
    return rc;
}

void kd_cli_usage(const kd_cli *cli, FILE *out)
{
    fprintf(out, "usage: %s [options]%s%s\n\n%s\n\noptions (environment variable in brackets):\n",
            cli->prog, cli->args[0] != '\0' ? " " : "", cli->args, cli->summary);
    fprintf(out, "  %-28s %s\n", "-h, --help", "print this help and exit");
    fprintf(out, "  %-28s %s\n", "--version", "print the version and exit");
    for (int i = 0; i < cli->n_opts; i++) {
        const kd_cli_opt *o = &cli->opts[i];
        char left[96];
        snprintf(left, sizeof left, "--%s%s%s", o->name, is_flag(o) ? "" : " ",
                 type_metavar(o));
        fprintf(out, "  %-28s %s", left, o->help);
        if (o->type == KD_CLI_INT || o->type == KD_CLI_DBL) {
            char range[96];
            range_text(o, range, sizeof range);
            fprintf(out, " (%s)", range);
        }
        if (o->def != NULL && o->def[0] != '\0')
            fprintf(out, " (default %s)", o->def);
        if (o->env != NULL)
            fprintf(out, " [%s]", o->env);
        fprintf(out, "\n");
    }
    if (cli->footer != NULL)
        fprintf(out, "\n%s", cli->footer);
}

int kd_cli_fail(const kd_cli *cli, const char *message)
{
    fprintf(stderr, "%s: %s (see %s --help)\n", cli->prog, message, cli->prog);
    return 2;
}
