/*
 * `kadet keys DIR`: makes a job keypair (docs/security.md) for processes started by hand:
 * DIR/agent.pub and DIR/agent.key, mode 0600 in a directory created 0700 if missing. The
 * operator makes one per AgentJob in its Secret, `kadet run` one per run; both without
 * this command.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "kd_cmd.h"
#include "kd_curve.h"
#include "kd_error.h"

int kd_cmd_keys(int argc, char **argv)
{
    if (argc != 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        FILE *out = argc == 2 ? stdout : stderr;
        fprintf(out, "usage: kadet keys DIR\n\nWrites a new job keypair (CURVE, Z85) to "
                     "DIR/agent.pub and DIR/agent.key (mode 0600;\nDIR is created with mode "
                     "0700 when missing). Give DIR to every agent of the job\nwith --keys-dir "
                     "or KADET_KEYS_DIR; see docs/security.md.\n");
        return argc == 2 ? 0 : 2;
    }
    const char *dir = argv[1];
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "kadet keys: %s: %s\n", dir, strerror(errno));
        return 1;
    }
    char err[600];
    kd_curve_keys k;
    if (kd_curve_make(dir, err, sizeof err) != KD_OK ||
        kd_curve_load(dir, &k, err, sizeof err) != KD_OK) {
        fprintf(stderr, "kadet keys: %s\n", err);
        return 1;
    }
    printf("%s\n", k.pub);
    return 0;
}
