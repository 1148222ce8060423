/*
 * `kadet version`: the version and the math library in use, for bug reports.
 */
#include <stdio.h>
#include <string.h>

#include "kd_cmd.h"
#include "kd_train.h"

int kd_cmd_version(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: kadet version\n\nPrints the kadet version and the BLAS build.\n");
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "kadet version: unexpected argument \"%s\"\n", argv[1]);
        return 2;
    }
    printf("kadet %s (%s)\n", KADET_VERSION, kd_blas_info());
    return 0;
}
