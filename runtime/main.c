/*
 * kadet: one binary for every runtime role. main() only dispatches to a subcommand from
 * the table below; each subcommand lives in its own cmd_<name>.c.
 */
#include <stdio.h>
#include <string.h>

#include "kd_cmd.h"
#include "kd_log.h"
#include "launcher.h" /* coordinator, worker (distributed runtime) */

typedef struct kd_cmd {
    const char *name;                  /* as typed after `kadet` */
    int (*fn)(int argc, char **argv);  /* argv[0] is the subcommand name */
    const char *summary;               /* one line for `kadet --help` */
} kd_cmd;

static const kd_cmd commands[] = {
    {"run", kd_cmd_run, "train an AgentJob manifest locally"},
    {"coordinator", kd_cmd_coordinator, "coordinate one distributed job (membership, checkpoints)"},
    {"worker", kd_cmd_worker, "run one agent of a distributed job"},
    {"keys", kd_cmd_keys, "make a job keypair for hand-started agents"},
    {"version", kd_cmd_version, "print the version"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: kadet <command> [options]\n\n"
                 "kadet trains AgentJob manifests: elastic data-parallel deep learning.\n\n"
                 "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n`kadet <command> --help` describes a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0)
        return kd_cmd_version(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) {
            int rc = commands[i].fn(argc - 1, argv + 1);
            /* In a pod the reason of a failure goes where `kubectl describe` and the
             * operator find it: the container's termination message. */
            if (rc != 0)
                kd_log_write_termination(NULL);
            return rc;
        }
    fprintf(stderr, "kadet: unknown command \"%s\"\n\n", argv[1]);
    usage(stderr);
    return 2;
}
