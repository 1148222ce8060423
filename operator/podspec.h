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
/* The job's CURVE keys (docs/security-pods.md, key contract): a Secret "<job>-keys"
 * mounted read-only here in every agent pod, named by KADET_KEYS_DIR. */
#define PODSPEC_KEYS_VOLUME "kadet-keys"
#define PODSPEC_KEYS_DIR "/var/run/kadet/keys"
#define PODSPEC_KEYS_MODE 0440 /* root-owned files, readable through fsGroup */
#define PODSPEC_KEY_MAX 64     /* longest key text (Z85 keys are 40 characters) */
#define PODSPEC_DEFAULT_UID 65532 /* the kadet images' user (runtime/Dockerfile) */

typedef struct podspec_options {
    const char *image;       /* image when the template's first container names none */
    const char *pull_policy; /* imagePullPolicy when the template sets none; NULL = omit */
    int allow_privileged;    /* administrator: accept templates beyond the restricted
                                profile (--allow-privileged-pods) */
    int keys;                /* mount the job's key Secret and set KADET_KEYS_DIR */
    int network_policy;      /* create a NetworkPolicy per job (--network-policy) */
    const char *operator_namespace; /* where the operator runs (NetworkPolicy source) */
    const char *operator_labels;    /* its pods' labels, "k=v,k=v" */
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

/* --- podspec_policy.c: pod security ---------------------------------------------------- */

/* Refuses (KD_EINVALID_OBJECT, the message naming the field) a template asking for more
 * than the restricted Pod Security Standard: privileged or escalating containers, host
 * namespaces, host ports, hostPath volumes, added capabilities (NET_BIND_SERVICE aside),
 * root, unconfined seccomp or proc mount, a service account other than "default". With
 * o->allow_privileged everything passes but a volume named PODSPEC_KEYS_VOLUME. */
int podspec_check_template(const kd_agentjob *spec, const podspec_options *o, char *err,
                           size_t errlen);
/* Fills the restricted profile into a pod spec where the template says nothing (a
 * stricter template keeps its values): runAsNonRoot, runAsUser/Group and fsGroup 65532,
 * seccompProfile RuntimeDefault, no service account token; per container
 * allowPrivilegeEscalation false and capabilities drop ALL. Modifies pspec. */
void podspec_restrict(json_t *pspec);

int podspec_keys_secret_name(const char *job, char *out, size_t len);
int podspec_network_policy_name(const char *job, char *out, size_t len);
/* The Secret "<job>-keys" (owned by the job) with agent.pub, agent.key and, when
 * operator_pub is not NULL or empty, operator.pub. */
int podspec_keys_secret(const json_t *job, const kd_agentjob *spec, const char *agent_pub,
                        const char *agent_key, const char *operator_pub, json_t **out,
                        char *err, size_t errlen);
/* The NetworkPolicy "<job>-agents" (owned by the job): ingress to the job's pods only from
 * its own pods (control, metrics and data ports) and from the operator's pods
 * (o->operator_labels in o->operator_namespace; metrics port). */
int podspec_network_policy(const json_t *job, const kd_agentjob *spec, const podspec_options *o,
                           json_t **out, char *err, size_t errlen);

#endif
