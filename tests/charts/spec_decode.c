/*
 * kd-spec-decode: decodes every AgentJob in the given YAML files with the project's
 * decoder (common/kd_spec) and prints one JSON object per job:
 *   {"file": F, "name": N, "ok": true|false, "error": "...", "warnings": [...]}
 * The chart tests use it to keep the CRD schema and the decoder in step: whatever the
 * schema accepts, the decoder must know (no "unknown field" warning), and the samples
 * must decode cleanly. Exit status: 0 when every file was read, 1 otherwise.
 */
#include <stdio.h>
#include <string.h>

#include "kd_error.h"
#include "kd_spec.h"
#include "kd_yaml.h"

static void print_job(const char *file, const json_t *doc)
{
    kd_agentjob job;
    memset(&job, 0, sizeof job);
    char err[1024] = "";
    int rc = kd_agentjob_decode(doc, &job, err, sizeof err);
    const json_t *md = json_object_get(doc, "metadata");
    json_t *out = json_pack("{s:s, s:O?, s:b, s:s, s:[]}", "file", file, "name",
                            json_object_get(md, "name"), "ok", rc == KD_OK, "error",
                            rc == KD_OK ? "" : err, "warnings");
    if (out == NULL) {
        kd_agentjob_free(&job);
        return;
    }
    json_t *warnings = json_object_get(out, "warnings");
    for (size_t i = 0; rc == KD_OK && i < job.n_warnings; i++)
        json_array_append_new(warnings, json_string(job.warnings[i]));
    json_dumpf(out, stdout, JSON_COMPACT | JSON_ENSURE_ASCII);
    fputc('\n', stdout);
    json_decref(out);
    kd_agentjob_free(&job);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: kd-spec-decode FILE...\n");
        return 2;
    }
    int status = 0;
    for (int i = 1; i < argc; i++) {
        json_t *docs = NULL;
        char err[512] = "";
        if (kd_yaml_load_file(argv[i], 0, &docs, err, sizeof err) != KD_OK) {
            fprintf(stderr, "kd-spec-decode: %s\n", err);
            status = 1;
            continue;
        }
        size_t idx;
        json_t *doc;
        json_array_foreach(docs, idx, doc)
        {
            const char *kind = json_string_value(json_object_get(doc, "kind"));
            if (kind != NULL && strcmp(kind, KD_SPEC_KIND) == 0)
                print_job(argv[i], doc);
        }
        json_decref(docs);
    }
    return status;
}
