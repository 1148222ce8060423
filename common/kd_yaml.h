/*
 * kd_yaml: YAML documents (manifests, kubeconfigs) read into jansson values, so that
 * every consumer decodes one JSON-shaped tree whether it came from a file or from the
 * Kubernetes API.
 *
 * Plain scalars follow the YAML 1.2 core schema (null, true/false, integers, floats);
 * quoted scalars are always strings. Anchors and aliases are resolved; merge keys are not
 * supported. Mapping keys must be scalars.
 */
#ifndef KD_YAML_H
#define KD_YAML_H

#include <jansson.h>
#include <stddef.h>

/* Parses every document of the YAML text into *docs, a new JSON array (one element per
 * document; empty documents are skipped). On error returns a kd_err, writes a message
 * with the line and column into err and leaves *docs NULL. */
int kd_yaml_parse(const char *text, size_t len, json_t **docs, char *err, size_t errlen);

/* kd_yaml_parse on a file's contents; errors name the file. Files over max_bytes
 * (0 = 16 MiB) are refused. */
int kd_yaml_load_file(const char *path, size_t max_bytes, json_t **docs, char *err,
                      size_t errlen);

/* Reads a whole file into a new NUL-terminated buffer (caller frees). Refuses files over
 * max_bytes (0 = 16 MiB). */
int kd_read_file(const char *path, size_t max_bytes, char **data, size_t *len, char *err,
                 size_t errlen);

#endif
