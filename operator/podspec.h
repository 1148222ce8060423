/*
 * podspec: the objects the operator creates for an AgentJob, built from the job's
 * spec.template: the coordinator Service, the coordinator Pod and the worker Pods
 * (docs/operator.md section 3). Pure: JSON in, JSON out, no I/O, so every field the
 * runtime depends on (labels, owner reference, env, ports, restartPolicy) is unit-tested.
 *
 * Ownership: job (the AgentJob object from the cache) and spec are borrowed and never
 * modified (the template is deep-copied); *out is a new reference the caller owns.
 */
#ifndef KD_PODSPEC_H
#define KD_PODSPEC_H

#include <jansson.h>
#include <stddef.h>

#include "kd_spec.h"

#define PODSPEC_LABEL_JOB "kadet.io/job-name"
#define PODSPEC_LABEL_ROLE "kadet.io/role"
#define PODSPEC_ROLE_COORDINATOR "coordinator"
#define PODSPEC_ROLE_WORKER "worker"
#define PODSPEC_CONTROL_PORT 7070
#define PODSPEC_METRICS_PORT 7071
#define PODSPEC_DATA_PORT 7072
#define PODSPEC_NAME_MAX 254

typedef struct podspec_options {
    const char *image;       /* image when the template's first container names none */
    const char *pull_policy; /* imagePullPolicy when the template sets none; NULL = omit */
} podspec_options;

/* "<job>-coordinator": the Service's and the coordinator pod's name. KD_ETOOBIG when
 * the result would not be a valid object name (over 253 bytes). */
int podspec_coordinator_name(const char *job, char *out, size_t len);
/* "<job>-worker-<index>". */
int podspec_worker_name(const char *job, long index, char *out, size_t len);
/* The label selector of the job's worker pods (status.selector). */
int podspec_worker_selector(const char *job, char *out, size_t len);

/* The owner reference to the AgentJob (controller and blockOwnerDeletion true). job must
 * carry apiVersion, kind, metadata.name and metadata.uid: KD_EFORMAT otherwise. */
int podspec_owner_ref(const json_t *job, json_t **out, char *err, size_t errlen);

/* The coordinator Service: ports control and metrics, selecting the coordinator pod. */
int podspec_service(const json_t *job, const kd_agentjob *spec, json_t **out, char *err,
                    size_t errlen);

/* The coordinator pod (`kadet coordinator`, KADET_JOB = the job as JSON, binds on its
 * pod IP, a checkpoint emptyDir unless the template mounts spec.checkpoint.path). */
int podspec_coordinator_pod(const json_t *job, const kd_agentjob *spec,
                            const podspec_options *o, json_t **out, char *err,
                            size_t errlen);

/* Worker pod number `index` (`kadet worker`, KADET_COORDINATOR = the Service name). */
int podspec_worker_pod(const json_t *job, const kd_agentjob *spec, const podspec_options *o,
                       long index, json_t **out, char *err, size_t errlen);

#endif
