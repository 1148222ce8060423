/*
 * kd_cli: the command-line convention of every kadet binary (kadet's subcommands,
 * kadet-operator; kadet-sim can adopt it the same way).
 *
 * One table of options drives parsing, --help and the environment: each option has a
 * long name, an optional environment variable, a type with its range, a named
 * metavariable and one line of help. On top of getopt_long it gives every program the
 * same habits:
 *
 *   -h, --help          help on stdout, exit 0          --version   the version, exit 0
 *   --opt=value         and --opt value                 --flag, --flag=false  booleans
 *   errors name the option (or variable) and the valid range or values, and suggest the
 *   nearest option for a misspelt one: "unknown option '--agnets' (did you mean --agents?)"
 *
 * Values are applied in order: the environment first (every variable, so that a broken
 * Deployment is noticed even when a flag overrides it), then the flags, so a flag wins.
 * An empty variable counts as unset. Parsing never prints or exits: it returns a kd_err
 * code and writes the message into the caller's buffer; the program prints
 * "PROG: message" and exits 2 (kd_cli_fail does both the same way everywhere).
 */
#ifndef KD_CLI_H
#define KD_CLI_H

#include <stddef.h>
#include <stdio.h>

typedef enum kd_cli_type {
    KD_CLI_STR,  /* target: const char * (borrowed from argv or the environment) */
    KD_CLI_INT,  /* target: long long, in [lo, hi] */
    KD_CLI_DBL,  /* target: double, in [lo, hi] */
    KD_CLI_FLAG, /* target: int, 1 when given (variables: 1/true/yes/on, 0/false/no/off) */
    KD_CLI_FUNC, /* set(target, value, ...) parses and checks the value itself */
    KD_CLI_FUNC_FLAG, /* the same for a boolean: --opt alone passes "true" */
} kd_cli_type;

/* Parses value into target; on error returns a kd_err code and writes a message (without
 * the option's name: kd_cli adds it) into err. */
typedef int (*kd_cli_setter)(void *target, const char *value, char *err, size_t errlen);

typedef struct kd_cli_opt {
    const char *name;    /* long option without dashes */
    const char *env;     /* environment variable, or NULL */
    kd_cli_type type;    /* how the value is parsed */
    void *target;        /* where it goes (see kd_cli_type) */
    double lo, hi;       /* accepted range of KD_CLI_INT and KD_CLI_DBL */
    const char *help;    /* one line */
    const char *metavar; /* the value's name in --help ("N", "FILE"); NULL: from the type */
    kd_cli_setter set;   /* KD_CLI_FUNC only */
    const char *def;     /* default shown in --help, or NULL */
} kd_cli_opt;

typedef struct kd_cli {
    const char *prog;     /* as the user typed it: "kadet run", "kadet-operator" */
    const char *args;     /* positional arguments in the synopsis ("FILE"), "" for none */
    const char *summary;  /* what the program does, a short paragraph */
    const kd_cli_opt *opts;
    int n_opts;
    const char *footer;   /* printed after the options (other variables, exit status), or NULL */
    const char *(*getenv_fn)(const char *name); /* NULL = getenv; tests pass a fake */
} kd_cli;

typedef enum kd_cli_action {
    KD_CLI_RUN = 0,     /* options applied: run the program */
    KD_CLI_HELP = 1,    /* -h or --help was given: print kd_cli_usage, exit 0 */
    KD_CLI_VERSION = 2, /* --version was given: print the version, exit 0 */
} kd_cli_action;

/* Applies the environment, then argv (argv[0] is the program or subcommand name). On
 * success returns KD_OK with *action set and *first_arg the index of the first
 * positional argument in argv (getopt_long moves them after the options; argc when there
 * is none). Otherwise a kd_err code with the message in err. */
int kd_cli_parse(const kd_cli *cli, int argc, char **argv, kd_cli_action *action,
                 int *first_arg, char *err, size_t errlen);

/* The --help text: synopsis, summary, every option with its metavariable, variable,
 * default and range, then the footer. */
void kd_cli_usage(const kd_cli *cli, FILE *out);

/* Prints "PROG: message (see PROG --help)" to stderr and returns 2, the exit status of
 * every usage error. */
int kd_cli_fail(const kd_cli *cli, const char *message);

/* The candidate nearest to word (edit distance at most a third of its length, at least
 * 1, or a candidate that word is a prefix of), or NULL. For "did you mean" messages. */
const char *kd_cli_nearest(const char *word, const char *const *candidates, size_t n);

#endif
