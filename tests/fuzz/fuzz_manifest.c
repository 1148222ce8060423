/* libFuzzer target for the manifest path of `kadet run` and the operator: YAML text
 * through kd_yaml_parse, then every document through kd_agentjob_decode. Any crash,
 * sanitizer report or broken promise (an error without a message, a document returned
 * with an error, a decoded job without a name) is a bug. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kd_error.h"
#include "kd_spec.h"
#include "kd_yaml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *docs = (json_t *)1;
    char err[512] = "";
    int rc = kd_yaml_parse((const char *)data, size, &docs, err, sizeof err);
    if (rc != KD_OK) {
        if (docs != NULL || (rc != KD_ENOMEM && err[0] == '\0'))
            abort();
        return 0;
    }
    size_t i;
    json_t *doc;
    json_array_foreach(docs, i, doc)
    {
        kd_agentjob job;
        char derr[512] = "";
        int drc = kd_agentjob_decode(doc, &job, derr, sizeof derr);
        if (drc == KD_OK && (job.name == NULL || job.namespace_ == NULL))
            abort();
        if (drc != KD_OK && drc != KD_ENOMEM && derr[0] == '\0')
            abort();
        kd_agentjob_free(&job);
    }
    json_decref(docs);
    return 0;
}
