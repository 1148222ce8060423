/*
 * kd-yaml2json: prints the documents of a YAML file (or of stdin with "-") as one JSON
 * array, through the project's own YAML reader (common/kd_yaml). The chart tests use it
 * so that their Python checks need only the standard library, and so that every rendered
 * manifest also exercises kd_yaml the way the runtime and the operator read manifests.
 * Exit status: 0 on success, 1 on a parse error (message on stderr), 2 on bad usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_error.h"
#include "kd_yaml.h"

#define Y2J_MAX_INPUT (16u << 20)

static int read_stdin(char **data, size_t *len)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap + 1);
    if (buf == NULL)
        return KD_ENOMEM;
    for (;;) {
        size_t got = fread(buf + n, 1, cap - n, stdin);
        n += got;
        if (got == 0)
            break;
        if (n == cap) {
            if (cap >= Y2J_MAX_INPUT) {
                free(buf);
                return KD_ETOOBIG;
            }
            char *grown = realloc(buf, cap * 2 + 1);
            if (grown == NULL) {
                free(buf);
                return KD_ENOMEM;
            }
            buf = grown;
            cap *= 2;
        }
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return KD_OK;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: kd-yaml2json FILE|-\n");
        return 2;
    }
    char err[512] = "";
    json_t *docs = NULL;
    int rc;
    if (strcmp(argv[1], "-") == 0) {
        char *text = NULL;
        size_t len = 0;
        rc = read_stdin(&text, &len);
        if (rc != KD_OK) {
            fprintf(stderr, "kd-yaml2json: stdin: %s\n", kd_strerror(rc));
            return 1;
        }
        rc = kd_yaml_parse(text, len, &docs, err, sizeof err);
        free(text);
    } else {
        rc = kd_yaml_load_file(argv[1], 0, &docs, err, sizeof err);
    }
    if (rc != KD_OK) {
        fprintf(stderr, "kd-yaml2json: %s\n", err[0] ? err : kd_strerror(rc));
        return 1;
    }
    rc = json_dumpf(docs, stdout, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(docs);
    fputc('\n', stdout);
    return rc == 0 ? 0 : 1;
}
