/* launcher_opts: the distributed subcommands' options over the common command-line layer
 * (common/kd_cli.h), with the environment knobs that have no flag listed in each
 * command's --help. */
#include <stdlib.h>
#include <string.h>

#include "kd_error.h"
#include "launcher.h"

/* Variables read outside the option tables, by command: every knob shows in some --help. */
static const char *footer(const char *cmd)
{
    if (strcmp(cmd, "worker") == 0)
        return "other environment variables:\n"
               "  KADET_GRAD_BLOCKS       row blocks of the first layer's gradient sent as they\n"
               "                          are computed (default 8)\n"
               "  KADET_COMM_SPIN         polls before a receive sleeps (default 1000)\n"
               "  KADET_COMM_SOCKBUF      send buffer of ipc:// data connections in bytes\n"
               "                          (default 4 MiB; -1: the system's)\n"
               "  KADET_COMM_ALGO         auto (default), ring, or swap for two ranks\n"
               "  KADET_HOSTS             hosts-format file consulted before DNS\n"
               "  KADET_TERMINATION_LOG   where a fatal error is written (default\n"
               "                          /dev/termination-log in a pod)\n"
               "  OPENBLAS_CORETYPE       OpenBLAS kernels (e.g. Haswell); default: detected\n";
    if (strcmp(cmd, "run") == 0)
        return "other environment variables:\n"
               "  KADET_RUN_TCP           set: local workers use TCP instead of ipc:// sockets\n"
               "  OPENBLAS_CORETYPE       OpenBLAS kernels (e.g. Haswell); default: detected\n"
               "  the coordinator's and workers' variables (kadet coordinator --help, kadet\n"
               "  worker --help) pass through to the processes kadet run starts\n"
               "\n"
               "exit status: 0 trained, 1 failed while training, 2 bad option, manifest or\n"
               "dataset directory, 130 interrupted (Ctrl-C)\n";
    if (strcmp(cmd, "coordinator") == 0)
        return "other environment variables:\n"
               "  KADET_TERMINATION_LOG   where a fatal error is written (default\n"
               "                          /dev/termination-log in a pod)\n"
               "\n"
               "exit status: 0 training finished, 1 failed or terminated early, 2 bad usage\n";
    return NULL;
}

/* The value's name in --help, by option name; others get N, NUM or VALUE by type. */
static const char *metavar(const char *name)
{
    static const char *const names[][2] = {
        {"job", "FILE|YAML"}, {"bind", "ENDPOINT"}, {"metrics-bind", "ENDPOINT"},
        {"endpoint-file", "FILE"}, {"data", "DIR"}, {"lr-scaling", "linear|sqrt|none"},
        {"checkpoint-dir", "DIR"}, {"checkpoint-interval", "SECONDS"},
        {"comm-timeout-ms", "MS"}, {"coordinator-timeout-ms", "MS"}, {"initial-wait", "SECONDS"},
        {"start-warmup-epochs", "EPOCHS"}, {"warmup-steps", "STEPS"},
        {"summary-json", "FILE"}, {"range-log", "FILE"}, {"sample-log", "FILE"},
        {"sample-log-dir", "DIR"}, {"log-level", "LEVEL"}, {"coordinator", "ENDPOINT"},
        {"advertise", "HOST"}, {"name", "NAME"}, {"chunk-kib", "KIB"}, {"seed", "SEED"},
        {"agents-schedule", "SEC:N,..."}, {"cpu-bind", "auto|none"}, {"plot", "FILE"},
        {"max-samples", "N"}, {"batch-size", "N"}, {"epochs", "N"}, {"threads", "N"},
        {"agents", "N"}, {"initial-agents", "N"}, {"max-agents", "N"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i][0]) == 0)
            return names[i][1];
    return NULL;
}

/* The kd_cli table of a kd_opt table (new array, free()d by the caller), or NULL. */
static kd_cli_opt *cli_opts(const kd_opt *opts, int n)
{
    kd_cli_opt *c = calloc((size_t)(n > 0 ? n : 1), sizeof *c);
    if (c == NULL)
        return NULL;
    static const kd_cli_type types[] = {KD_CLI_STR, KD_CLI_INT, KD_CLI_DBL, KD_CLI_FLAG};
    for (int i = 0; i < n; i++)
        c[i] = (kd_cli_opt){.name = opts[i].name, .env = opts[i].env,
                            .type = types[opts[i].type], .target = opts[i].target,
                            .lo = opts[i].lo, .hi = opts[i].hi, .help = opts[i].help,
                            .metavar = metavar(opts[i].name)};
    return c;
}

void kd_opts_usage(FILE *out, const char *cmd, const char *args, const char *summary,
                   const kd_opt *opts, int n)
{
    char prog[64];
    snprintf(prog, sizeof prog, "kadet %s", cmd);
    kd_cli_opt *c = cli_opts(opts, n);
    kd_cli cli = {.prog = prog, .args = args, .summary = summary, .opts = c,
                  .n_opts = c != NULL ? n : 0, .footer = footer(cmd)};
    kd_cli_usage(&cli, out);
    free(c);
}

int kd_opts_parse(const char *cmd, const char *args, const char *summary, const kd_opt *opts,
                  int n, int argc, char **argv, const char **pos_out)
{
    char prog[64], err[512];
    snprintf(prog, sizeof prog, "kadet %s", cmd);
    kd_cli_opt *c = cli_opts(opts, n);
    if (c == NULL) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return 2;
    }
    kd_cli cli = {.prog = prog, .args = args, .summary = summary, .opts = c, .n_opts = n,
                  .footer = footer(cmd)};
    kd_cli_action action;
    int first;
    int rc = kd_cli_parse(&cli, argc, argv, &action, &first, err, sizeof err);
    if (rc == KD_OK && action == KD_CLI_HELP)
        kd_cli_usage(&cli, stdout);
    else if (rc == KD_OK && action == KD_CLI_VERSION)
        printf("kadet %s\n", KADET_VERSION);
    else if (rc != KD_OK)
        kd_cli_fail(&cli, err);
    free(c);
    if (rc != KD_OK)
        return 2;
    if (action != KD_CLI_RUN)
        return 1;
    if (first < argc) {
        if (pos_out == NULL || first != argc - 1) {
            fprintf(stderr, "%s: unexpected argument '%s' (see %s --help)\n", prog,
                    argv[pos_out != NULL ? first + 1 : first], prog);
            return 2;
        }
        *pos_out = argv[first];
    }
    return 0;
}
