/*
 * podspec: builds the coordinator Service and the agent pods of an AgentJob from its
 * spec.template (see podspec.h). The template is a user's PodTemplateSpec: its
 * metadata (labels, annotations), pod-level fields (nodeSelector, tolerations, volumes,
 * serviceAccountName ...) and first container (image, resources, volumeMounts, env) are
 * kept; the operator sets what the runtime's contract needs (command, the KADET_*
 * environment, ports, restartPolicy Never so that every exit is seen and counted by the
 * reconciler, labels and the owner reference) and overrides the template where they
 * clash. Every pod gets the restricted security profile where the template is silent and
 * the job's key Secret (podspec_policy.c).
 */
#include "podspec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_error.h"

#define OBJ_NAME_MAX 253

int podspec_coordinator_name(const char *job, char *out, size_t len)
{
    int n = snprintf(out, len, "%s-coordinator", job);
    return n < 0 || (size_t)n >= len || n > OBJ_NAME_MAX ? KD_ETOOBIG : KD_OK;
}

int podspec_worker_name(const char *job, long index, char *out, size_t len)
{
    int n = snprintf(out, len, "%s-worker-%ld", job, index);
    return n < 0 || (size_t)n >= len || n > OBJ_NAME_MAX ? KD_ETOOBIG : KD_OK;
}

int podspec_worker_selector(const char *job, char *out, size_t len)
{
    int n = snprintf(out, len, "%s=%s,%s=%s", PODSPEC_LABEL_JOB, job, PODSPEC_LABEL_ROLE,
                     PODSPEC_ROLE_WORKER);
    return n < 0 || (size_t)n >= len ? KD_ETOOBIG : KD_OK;
}

int podspec_owner_ref(const json_t *job, json_t **out, char *err, size_t errlen)
{
    const json_t *md = json_object_get(job, "metadata");
    const char *api = json_string_value(json_object_get(job, "apiVersion"));
    const char *kind = json_string_value(json_object_get(job, "kind"));
    const char *name = json_string_value(json_object_get(md, "name"));
    const char *uid = json_string_value(json_object_get(md, "uid"));
    if (api == NULL || kind == NULL || name == NULL || uid == NULL)
        return kd_errf(err, errlen, KD_EFORMAT,
                       "the AgentJob lacks apiVersion, kind, metadata.name or metadata.uid");
    *out = json_pack("{s:s, s:s, s:s, s:s, s:b, s:b}", "apiVersion", api, "kind", kind,
                     "name", name, "uid", uid, "controller", 1, "blockOwnerDeletion", 1);
    return *out != NULL ? KD_OK : KD_ENOMEM;
}

/* metadata {name, namespace, labels (template's + ours), annotations (template's),
 * ownerReferences}. */
static int make_metadata(const json_t *job, const kd_agentjob *spec, const char *name,
                         const char *role, long index, json_t **out, char *err,
                         size_t errlen)
{
    json_t *owner = NULL;
    int rc = podspec_owner_ref(job, &owner, err, errlen);
    if (rc != KD_OK)
        return rc;
    const json_t *tmd = json_object_get(spec->template_, "metadata");
    json_t *labels = json_object();
    json_t *tl = json_object_get(tmd, "labels");
    if (labels != NULL && json_is_object(tl))
        json_object_update(labels, tl);
    json_object_set_new(labels, PODSPEC_LABEL_JOB, json_string(spec->name));
    json_object_set_new(labels, PODSPEC_LABEL_ROLE, json_string(role));
    (void)index; /* the number is the name's suffix: no label, every cached pod is smaller */
    json_t *md = json_pack("{s:s, s:s, s:o, s:[o]}", "name", name, "namespace",
                           spec->namespace_, "labels", labels, "ownerReferences", owner);
    if (md == NULL)
        return KD_ENOMEM;
    json_t *ta = json_object_get(tmd, "annotations");
    if (json_is_object(ta))
        json_object_set_new(md, "annotations", json_deep_copy(ta));
    *out = md;
    return KD_OK;
}

int podspec_service(const json_t *job, const kd_agentjob *spec, json_t **out, char *err,
                    size_t errlen)
{
    char name[PODSPEC_NAME_MAX];
    if (podspec_coordinator_name(spec->name, name, sizeof name) != KD_OK)
        return kd_errf(err, errlen, KD_ETOOBIG, "job name too long for a Service name");
    json_t *md = NULL;
    int rc = make_metadata(job, spec, name, PODSPEC_ROLE_COORDINATOR, -1, &md, err, errlen);
    if (rc != KD_OK)
        return rc;
    /* Annotations of the pod template do not belong on the Service. */
    json_object_del(md, "annotations");
    /* port == targetPort: the emulator maps the name straight to the pod (no proxy). */
    json_t *svc = json_pack(
        "{s:s, s:s, s:o, s:{s:{s:s, s:s}, s:[{s:s, s:i, s:i, s:s}, {s:s, s:i, s:i, s:s}]}}",
        "apiVersion", "v1", "kind", "Service", "metadata", md, "spec", "selector",
        PODSPEC_LABEL_JOB, spec->name, PODSPEC_LABEL_ROLE, PODSPEC_ROLE_COORDINATOR, "ports",
        "name", "control", "port", PODSPEC_CONTROL_PORT, "targetPort", PODSPEC_CONTROL_PORT,
        "protocol", "TCP", "name", "metrics", "port", PODSPEC_METRICS_PORT, "targetPort",
        PODSPEC_METRICS_PORT, "protocol", "TCP");
    if (svc == NULL)
        return KD_ENOMEM;
    *out = svc;
    return KD_OK;
}

static json_t *env_value(const char *name, const char *value)
{
    return json_pack("{s:s, s:s}", "name", name, "value", value);
}

static json_t *env_field(const char *name, const char *path)
{
    return json_pack("{s:s, s:{s:{s:s}}}", "name", name, "valueFrom", "fieldRef", "fieldPath",
                     path);
}

/* Template env without the names we set (ours win), then ours. Steals `ours`. */
static json_t *merge_env(const json_t *tenv, json_t *ours)
{
    json_t *env = json_array();
    size_t i, k;
    json_t *e, *o;
    json_array_foreach(tenv, i, e)
    {
        const char *n = json_string_value(json_object_get(e, "name"));
        int clash = 0;
        json_array_foreach(ours, k, o)
        {
            if (n != NULL && strcmp(n, json_string_value(json_object_get(o, "name"))) == 0)
                clash = 1;
        }
        if (!clash)
            json_array_append_new(env, json_deep_copy(e));
    }
    json_array_extend(env, ours);
    json_decref(ours);
    return env;
}

/* 1 when container mounts something at path (so no emptyDir is added there). */
static int mounts_path(const json_t *container, const char *path)
{
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(container, "volumeMounts"), i, m)
    {
        const char *mp = json_string_value(json_object_get(m, "mountPath"));
        size_t n = mp != NULL ? strlen(mp) : 0;
        while (n > 1 && mp[n - 1] == '/')
            n--;
        if (n > 0 && strncmp(mp, path, n) == 0 && (path[n] == '\0' || path[n] == '/'))
            return 1;
    }
    return 0;
}

/* The job's key Secret as a read-only volume of the pod, mounted in container c, and
 * KADET_KEYS_DIR naming it (docs/security-pods.md). */
static int mount_keys(const kd_agentjob *spec, json_t *pspec, json_t *c)
{
    char secret[PODSPEC_NAME_MAX];
    if (podspec_keys_secret_name(spec->name, secret, sizeof secret) != KD_OK)
        return KD_ETOOBIG;
    json_t *vols = json_object_get(pspec, "volumes");
    if (!json_is_array(vols)) {
        vols = json_array();
        json_object_set_new(pspec, "volumes", vols);
    }
    json_t *vm = json_object_get(c, "volumeMounts");
    if (!json_is_array(vm)) {
        vm = json_array();
        json_object_set_new(c, "volumeMounts", vm);
    }
    if (vols == NULL || vm == NULL)
        return KD_ENOMEM;
    if (json_array_append_new(vols, json_pack("{s:s, s:{s:s, s:i}}", "name", PODSPEC_KEYS_VOLUME,
                                              "secret", "secretName", secret, "defaultMode",
                                              PODSPEC_KEYS_MODE)) != 0 ||
        json_array_append_new(vm, json_pack("{s:s, s:s, s:b}", "name", PODSPEC_KEYS_VOLUME,
                                            "mountPath", PODSPEC_KEYS_DIR, "readOnly", 1)) != 0)
        return KD_ENOMEM;
    return KD_OK;
}

/* The pod from the template with our metadata, container and env. */
static int make_pod(const json_t *job, const kd_agentjob *spec, const podspec_options *o,
                    const char *name, const char *role, long index, json_t *ours_env,
                    json_t **out, char *err, size_t errlen)
{
    json_t *md = NULL;
    int rc = make_metadata(job, spec, name, role, index, &md, err, errlen);
    if (rc != KD_OK) {
        json_decref(ours_env);
        return rc;
    }
    const json_t *tspec = json_object_get(spec->template_, "spec");
    json_t *pspec = json_is_object(tspec) ? json_deep_copy(tspec) : json_object();
    json_t *containers = json_object_get(pspec, "containers");
    if (!json_is_array(containers) || json_array_size(containers) == 0) {
        containers = json_array();
        json_object_set_new(pspec, "containers", containers);
        json_array_append_new(containers, json_object());
    }
    json_t *c = json_array_get(containers, 0);
    if (!json_is_object(c)) {
        json_decref(md);
        json_decref(pspec);
        json_decref(ours_env);
        return kd_errf(err, errlen, KD_EFORMAT,
                       "spec.template.spec.containers[0]: expected an object");
    }
    if (!json_is_string(json_object_get(c, "name")))
        json_object_set_new(c, "name", json_string("agent"));
    if (!json_is_string(json_object_get(c, "image")))
        json_object_set_new(c, "image", json_string(o->image != NULL ? o->image : "kadet"));
    if (o->pull_policy != NULL && !json_is_string(json_object_get(c, "imagePullPolicy")))
        json_object_set_new(c, "imagePullPolicy", json_string(o->pull_policy));
    json_object_set_new(c, "command", json_pack("[s, s]", "kadet", role));
    json_object_del(c, "args");
    if (o->keys) /* ours, so that a template's KADET_KEYS_DIR cannot point elsewhere */
        json_array_append_new(ours_env, env_value("KADET_KEYS_DIR", PODSPEC_KEYS_DIR));
    json_object_set_new(c, "env", merge_env(json_object_get(c, "env"), ours_env));
    /* kadet writes its fatal error to the termination message; a crash that wrote
     * nothing still leaves the end of its log there. The operator shows either in the
     * Failed condition and the Warning Event. */
    json_object_set_new(c, "terminationMessagePolicy", json_string("FallbackToLogsOnError"));
    int coord = strcmp(role, PODSPEC_ROLE_COORDINATOR) == 0;
    if (coord) {
        /* The Service targets these; the workers' data port is reached by pod IP only. */
        json_object_set_new(c, "ports",
                            json_pack("[{s:s, s:i}, {s:s, s:i}]", "name", "control",
                                      "containerPort", PODSPEC_CONTROL_PORT, "name", "metrics",
                                      "containerPort", PODSPEC_METRICS_PORT));
        /* The coordinator only routes messages and keeps checkpoints: it must not take
         * an agent's share of a node (the scheduler counts it as other load). */
        json_object_set_new(c, "resources",
                            json_pack("{s:{s:s, s:s}}", "requests", "cpu", "100m", "memory",
                                      "128Mi"));
        if (spec->checkpoint_path != NULL && !mounts_path(c, spec->checkpoint_path)) {
            json_t *vols = json_object_get(pspec, "volumes");
            if (!json_is_array(vols)) {
                vols = json_array();
                json_object_set_new(pspec, "volumes", vols);
            }
            json_array_append_new(vols, json_pack("{s:s, s:{}}", "name", "kadet-checkpoints",
                                                  "emptyDir"));
            json_t *vm = json_object_get(c, "volumeMounts");
            if (!json_is_array(vm)) {
                vm = json_array();
                json_object_set_new(c, "volumeMounts", vm);
            }
            json_array_append_new(vm, json_pack("{s:s, s:s}", "name", "kadet-checkpoints",
                                                "mountPath", spec->checkpoint_path));
        }
    }
    if (o->keys) {
        int krc = mount_keys(spec, pspec, c);
        if (krc != KD_OK) {
            json_decref(md);
            json_decref(pspec);
            return kd_errf(err, errlen, krc, "cannot add the job's keys to the pod");
        }
    }
    podspec_restrict(pspec);
    /* Never: every exit reaches the reconciler, which counts it against backoffLimit and
     * replaces the pod itself (a kubelet restart loop would hide failures). */
    json_object_set_new(pspec, "restartPolicy", json_string("Never"));
    json_t *pod = json_pack("{s:s, s:s, s:o, s:o}", "apiVersion", "v1", "kind", "Pod",
                            "metadata", md, "spec", pspec);
    if (pod == NULL)
        return KD_ENOMEM;
    *out = pod;
    return KD_OK;
}

/* The job as the coordinator reads it from KADET_JOB: identity and spec only. */
static char *job_text(const json_t *job)
{
    const json_t *md = json_object_get(job, "metadata");
    json_t *doc = json_pack("{s:s, s:s, s:{s:O, s:O}, s:O}", "apiVersion", KD_SPEC_API_VERSION,
                            "kind", KD_SPEC_KIND, "metadata", "name",
                            json_object_get(md, "name"), "namespace",
                            json_object_get(md, "namespace"), "spec",
                            json_object_get(job, "spec"));
    char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(doc);
    return text;
}

int podspec_coordinator_pod(const json_t *job, const kd_agentjob *spec,
                            const podspec_options *o, json_t **out, char *err, size_t errlen)
{
    char name[PODSPEC_NAME_MAX];
    if (podspec_coordinator_name(spec->name, name, sizeof name) != KD_OK)
        return kd_errf(err, errlen, KD_ETOOBIG, "job name too long for a pod name");
    if (!json_is_string(json_object_get(json_object_get(job, "metadata"), "namespace")) ||
        !json_is_object(json_object_get(job, "spec")))
        return kd_errf(err, errlen, KD_EFORMAT, "the AgentJob lacks metadata.namespace or spec");
    char *text = job_text(job);
    if (text == NULL)
        return KD_ENOMEM;
    char bind[64], mbind[64];
    snprintf(bind, sizeof bind, "tcp://$(KADET_POD_IP):%d", PODSPEC_CONTROL_PORT);
    snprintf(mbind, sizeof mbind, "tcp://$(KADET_POD_IP):%d", PODSPEC_METRICS_PORT);
    json_t *env = json_pack("[o, o, o, o]", env_field("KADET_POD_IP", "status.podIP"),
                            env_value("KADET_JOB", text), env_value("KADET_BIND", bind),
                            env_value("KADET_METRICS_BIND", mbind));
    free(text);
    if (env == NULL)
        return KD_ENOMEM;
    return make_pod(job, spec, o, name, PODSPEC_ROLE_COORDINATOR, -1, env, out, err, errlen);
}

int podspec_worker_pod(const json_t *job, const kd_agentjob *spec, const podspec_options *o,
                       long index, json_t **out, char *err, size_t errlen)
{
    char name[PODSPEC_NAME_MAX], svc[PODSPEC_NAME_MAX];
    if (index < 0 || podspec_worker_name(spec->name, index, name, sizeof name) != KD_OK ||
        podspec_coordinator_name(spec->name, svc, sizeof svc) != KD_OK)
        return kd_errf(err, errlen, KD_ETOOBIG, "job name too long for a pod name");
    char coord[PODSPEC_NAME_MAX + 32], bind[64];
    snprintf(coord, sizeof coord, "tcp://%s:%d", svc, PODSPEC_CONTROL_PORT);
    snprintf(bind, sizeof bind, "tcp://$(KADET_POD_IP):%d", PODSPEC_DATA_PORT);
    /* No KADET_NAME: a worker names itself after its host name (the pod name) and pid. */
    json_t *env = json_pack("[o, o, o]", env_field("KADET_POD_IP", "status.podIP"),
                            env_value("KADET_COORDINATOR", coord), env_value("KADET_BIND", bind));
    if (env == NULL)
        return KD_ENOMEM;
    return make_pod(job, spec, o, name, PODSPEC_ROLE_WORKER, index, env, out, err, errlen);
}
