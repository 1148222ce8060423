/* libFuzzer target for the kubeconfig loader: the input is written to a private
 * temporary file (the loader reads files, as kubectl does) and loaded with its
 * current-context, then with a context named "fuzz". Any crash, sanitizer report, or
 * an error without a message or a success without a server is a bug. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kd_error.h"
#include "kube_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void load(const char *path, const char *context)
{
    kube_config cfg;
    char err[512] = "";
    int rc = kube_config_load(path, context, &cfg, err, sizeof err);
    if (rc == KD_OK && cfg.server == NULL)
        abort();
    if (rc != KD_OK && rc != KD_ENOMEM && err[0] == '\0')
        abort();
    kube_config_clear(&cfg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[] = "/tmp/kadet-fuzz-kubeconfig-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return 0;
    size_t off = 0;
    while (off < size) {
        ssize_t n = write(fd, data + off, size - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    close(fd);
    if (off == size) {
        load(path, NULL);
        load(path, "fuzz");
    }
    unlink(path);
    return 0;
}
