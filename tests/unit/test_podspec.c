/* podspec: the coordinator Service and the agent pods built from an AgentJob carry what
 * the runtime and garbage collection rely on: owner reference (controller), labels,
 * KADET_* environment, ports, restartPolicy Never, the template's image, requests,
 * annotations and env, and a checkpoint emptyDir unless the template mounts one; the
 * restricted security profile, the template policy, the key Secret and its mount, and the
 * job's NetworkPolicy (docs/security-pods.md). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_error.h"
#include "kd_spec.h"
#include "podspec.h"

static const char *JOB =
    "{\"apiVersion\": \"kadet.io/v1alpha1\", \"kind\": \"AgentJob\","
    " \"metadata\": {\"name\": \"fm\", \"namespace\": \"team\", \"uid\": \"u-1\", \"generation\": 2},"
    " \"spec\": {\"agents\": {\"min\": 1, \"max\": 4},"
    "  \"template\": {\"metadata\": {\"labels\": {\"app\": \"x\"},"
    "                               \"annotations\": {\"emulator.kadet.io/run-seconds\": \"5\"}},"
    "   \"spec\": {\"nodeSelector\": {\"pool\": \"gpu\"}, \"restartPolicy\": \"Always\","
    "    \"containers\": [{\"name\": \"agent\", \"image\": \"img:1\", \"command\": [\"sh\"],"
    "      \"args\": [\"-c\", \"x\"],"
    "      \"env\": [{\"name\": \"FOO\", \"value\": \"bar\"}, {\"name\": \"KADET_BIND\", \"value\": \"no\"}],"
    "      \"resources\": {\"requests\": {\"cpu\": \"2\", \"memory\": \"1Gi\"}}}]}},"
    "  \"training\": {\"epochs\": 1},"
    "  \"checkpoint\": {\"path\": \"/ckpt/fm\", \"intervalSeconds\": 30}}}";

typedef struct fixture {
    json_t *job;
    kd_agentjob spec;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    json_error_t je;
    f->job = json_loads(JOB, 0, &je);
    char err[256];
    if (f->job == NULL || kd_agentjob_decode(f->job, &f->spec, err, sizeof err) != KD_OK) {
        fprintf(stderr, "fixture: %s %s\n", je.text, err);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    kd_agentjob_free(&f->spec);
    json_decref(f->job);
    free(f);
    return 0;
}

static const char *str_at(const json_t *o, const char *a, const char *b)
{
    const json_t *x = json_object_get(o, a);
    return json_string_value(b != NULL ? json_object_get(x, b) : x);
}

/* The env entry named `name` of the first container, or NULL. */
static const json_t *env_of(const json_t *pod, const char *name)
{
    const json_t *c = json_array_get(json_object_get(json_object_get(pod, "spec"), "containers"), 0);
    size_t i;
    json_t *e;
    const json_t *found = NULL;
    int count = 0;
    json_array_foreach(json_object_get(c, "env"), i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "name")), name) == 0) {
            found = e;
            count++;
        }
    }
    assert_true(count <= 1); /* no duplicate names: ours replace the template's */
    return found;
}

static void assert_owned(const json_t *obj, const char *role)
{
    const json_t *md = json_object_get(obj, "metadata");
    assert_string_equal(str_at(md, "namespace", NULL), "team");
    const json_t *refs = json_object_get(md, "ownerReferences");
    assert_int_equal(json_array_size(refs), 1);
    const json_t *r = json_array_get(refs, 0);
    assert_string_equal(str_at(r, "kind", NULL), "AgentJob");
    assert_string_equal(str_at(r, "apiVersion", NULL), "kadet.io/v1alpha1");
    assert_string_equal(str_at(r, "name", NULL), "fm");
    assert_string_equal(str_at(r, "uid", NULL), "u-1");
    assert_true(json_is_true(json_object_get(r, "controller")));
    assert_true(json_is_true(json_object_get(r, "blockOwnerDeletion")));
    assert_string_equal(str_at(md, "labels", "kadet.io/job-name"), "fm");
    assert_string_equal(str_at(md, "labels", "kadet.io/role"), role);
}

static void test_service_selects_the_coordinator_with_both_ports(void **state)
{
    fixture *f = *state;
    json_t *svc = NULL;
    char err[256];
    assert_int_equal(podspec_service(f->job, &f->spec, &svc, err, sizeof err), KD_OK);
    assert_string_equal(str_at(svc, "kind", NULL), "Service");
    assert_string_equal(str_at(svc, "metadata", "name"), "fm-coordinator");
    assert_owned(svc, "coordinator");
    const json_t *spec = json_object_get(svc, "spec");
    assert_string_equal(str_at(spec, "selector", "kadet.io/job-name"), "fm");
    assert_string_equal(str_at(spec, "selector", "kadet.io/role"), "coordinator");
    const json_t *ports = json_object_get(spec, "ports");
    assert_int_equal(json_array_size(ports), 2);
    assert_string_equal(str_at(json_array_get(ports, 0), "name", NULL), "control");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(ports, 0), "port")), 7070);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(ports, 0), "targetPort")), 7070);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(ports, 1), "port")), 7071);
    assert_null(json_object_get(json_object_get(svc, "metadata"), "annotations"));
    json_decref(svc);
}

static void test_worker_pod_has_contract_env_labels_and_template(void **state)
{
    fixture *f = *state;
    json_t *pod = NULL;
    char err[256];
    podspec_options o = {.image = "fallback:0", .pull_policy = "IfNotPresent"};
    assert_int_equal(podspec_worker_pod(f->job, &f->spec, &o, 7, &pod, err, sizeof err), KD_OK);
    assert_string_equal(str_at(pod, "metadata", "name"), "fm-worker-7");
    assert_owned(pod, "worker");
    const json_t *md = json_object_get(pod, "metadata");
    assert_string_equal(str_at(md, "labels", "app"), "x");
    assert_string_equal(str_at(md, "annotations", "emulator.kadet.io/run-seconds"), "5");
    const json_t *spec = json_object_get(pod, "spec");
    assert_string_equal(str_at(spec, "restartPolicy", NULL), "Never");
    assert_string_equal(str_at(spec, "nodeSelector", "pool"), "gpu");
    const json_t *c = json_array_get(json_object_get(spec, "containers"), 0);
    assert_string_equal(str_at(c, "image", NULL), "img:1");
    assert_string_equal(str_at(c, "imagePullPolicy", NULL), "IfNotPresent");
    assert_string_equal(str_at(c, "terminationMessagePolicy", NULL), "FallbackToLogsOnError");
    assert_string_equal(str_at(json_object_get(c, "resources"), "requests", "cpu"), "2");
    const json_t *cmd = json_object_get(c, "command");
    assert_int_equal(json_array_size(cmd), 2);
    assert_string_equal(json_string_value(json_array_get(cmd, 0)), "kadet");
    assert_string_equal(json_string_value(json_array_get(cmd, 1)), "worker");
    assert_null(json_object_get(c, "args"));
    assert_string_equal(str_at(env_of(pod, "KADET_COORDINATOR"), "value", NULL),
                        "tcp://fm-coordinator:7070");
    assert_string_equal(str_at(env_of(pod, "KADET_BIND"), "value", NULL),
                        "tcp://$(KADET_POD_IP):7072");
    const json_t *ip = env_of(pod, "KADET_POD_IP");
    assert_string_equal(str_at(json_object_get(ip, "valueFrom"), "fieldRef", "fieldPath"),
                        "status.podIP");
    assert_string_equal(str_at(env_of(pod, "FOO"), "value", NULL), "bar");
    /* KADET_POD_IP precedes the variables that expand it ($(VAR) needs earlier entries). */
    const json_t *env = json_object_get(c, "env");
    size_t ip_at = 99, bind_at = 99, i;
    json_t *e;
    json_array_foreach(env, i, e)
    {
        if (strcmp(str_at(e, "name", NULL), "KADET_POD_IP") == 0)
            ip_at = i;
        if (strcmp(str_at(e, "name", NULL), "KADET_BIND") == 0)
            bind_at = i;
    }
    assert_true(ip_at < bind_at);
    /* Workers get no checkpoint volume: only the coordinator writes checkpoints. */
    assert_null(json_object_get(spec, "volumes"));
    json_decref(pod);
}

static void test_coordinator_pod_carries_the_job_and_a_checkpoint_volume(void **state)
{
    fixture *f = *state;
    json_t *pod = NULL;
    char err[256];
    podspec_options o = {.image = "fallback:0"};
    assert_int_equal(podspec_coordinator_pod(f->job, &f->spec, &o, &pod, err, sizeof err), KD_OK);
    assert_string_equal(str_at(pod, "metadata", "name"), "fm-coordinator");
    assert_owned(pod, "coordinator");
    const json_t *spec = json_object_get(pod, "spec");
    const json_t *c = json_array_get(json_object_get(spec, "containers"), 0);
    assert_string_equal(json_string_value(json_array_get(json_object_get(c, "command"), 1)),
                        "coordinator");
    assert_string_equal(str_at(json_object_get(c, "resources"), "requests", "cpu"), "100m");
    assert_string_equal(str_at(env_of(pod, "KADET_BIND"), "value", NULL),
                        "tcp://$(KADET_POD_IP):7070");
    assert_string_equal(str_at(env_of(pod, "KADET_METRICS_BIND"), "value", NULL),
                        "tcp://$(KADET_POD_IP):7071");
    /* KADET_JOB is the job itself (the coordinator's inline form), decodable again. */
    const char *text = str_at(env_of(pod, "KADET_JOB"), "value", NULL);
    assert_non_null(text);
    assert_int_equal(text[0], '{');
    json_error_t je;
    json_t *doc = json_loads(text, 0, &je);
    assert_non_null(doc);
    kd_agentjob again;
    assert_int_equal(kd_agentjob_decode(doc, &again, err, sizeof err), KD_OK);
    assert_string_equal(again.name, "fm");
    assert_string_equal(again.namespace_, "team");
    assert_int_equal(again.checkpoint_interval, 30);
    kd_agentjob_free(&again);
    json_decref(doc);
    const json_t *vols = json_object_get(spec, "volumes");
    assert_int_equal(json_array_size(vols), 1);
    assert_string_equal(str_at(json_array_get(vols, 0), "name", NULL), "kadet-checkpoints");
    assert_true(json_is_object(json_object_get(json_array_get(vols, 0), "emptyDir")));
    const json_t *vm = json_array_get(json_object_get(c, "volumeMounts"), 0);
    assert_string_equal(str_at(vm, "mountPath", NULL), "/ckpt/fm");
    json_decref(pod);
}

static void test_template_volume_at_the_checkpoint_path_is_kept(void **state)
{
    (void)state;
    json_error_t je;
    json_t *job = json_loads(
        "{\"apiVersion\": \"kadet.io/v1alpha1\", \"kind\": \"AgentJob\","
        " \"metadata\": {\"name\": \"j\", \"namespace\": \"default\", \"uid\": \"u\"},"
        " \"spec\": {\"agents\": {\"min\": 1, \"max\": 1}, \"template\": {\"spec\": {"
        "  \"volumes\": [{\"name\": \"pvc\", \"persistentVolumeClaim\": {\"claimName\": \"c\"}}],"
        "  \"containers\": [{\"volumeMounts\": [{\"name\": \"pvc\", \"mountPath\": \"/ckpt/\"}]}]}},"
        "  \"checkpoint\": {\"path\": \"/ckpt/j\"}}}", 0, &je);
    assert_non_null(job);
    kd_agentjob spec;
    char err[256];
    assert_int_equal(kd_agentjob_decode(job, &spec, err, sizeof err), KD_OK);
    json_t *pod = NULL;
    podspec_options o = {.image = "fallback:0"};
    assert_int_equal(podspec_coordinator_pod(job, &spec, &o, &pod, err, sizeof err), KD_OK);
    const json_t *ps = json_object_get(pod, "spec");
    assert_int_equal(json_array_size(json_object_get(ps, "volumes")), 1);
    const json_t *c = json_array_get(json_object_get(ps, "containers"), 0);
    assert_string_equal(str_at(c, "name", NULL), "agent");   /* defaulted */
    assert_string_equal(str_at(c, "image", NULL), "fallback:0"); /* --runtime-image */
    json_decref(pod);
    kd_agentjob_free(&spec);
    json_decref(job);
}

static void test_names_and_missing_identity_are_refused(void **state)
{
    fixture *f = *state;
    char buf[300], err[256];
    assert_int_equal(podspec_worker_selector("fm", buf, sizeof buf), KD_OK);
    assert_string_equal(buf, "kadet.io/job-name=fm,kadet.io/role=worker");
    char longname[260];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(podspec_coordinator_name(longname, buf, sizeof buf), KD_ETOOBIG);
    json_t *nouid = json_deep_copy(f->job);
    json_object_del(json_object_get(nouid, "metadata"), "uid");
    json_t *pod = NULL;
    podspec_options o = {.image = "x"};
    assert_int_equal(podspec_worker_pod(nouid, &f->spec, &o, 0, &pod, err, sizeof err), KD_EFORMAT);
    assert_null(pod);
    assert_non_null(strstr(err, "uid"));
    json_decref(nouid);
}

/* The job JOB with its template's pod spec replaced by `pspec` (JSON text). */
static int decode_with_pod(const char *pspec, json_t **job, kd_agentjob *spec)
{
    json_error_t je;
    *job = json_loads(JOB, 0, &je);
    assert_non_null(*job);
    json_t *ps = json_loads(pspec, 0, &je);
    if (ps == NULL)
        fprintf(stderr, "bad test JSON %s: %s\n", pspec, je.text);
    assert_non_null(ps);
    json_object_set_new(json_object_get(json_object_get(*job, "spec"), "template"), "spec", ps);
    char err[256];
    return kd_agentjob_decode(*job, spec, err, sizeof err);
}

static void test_template_policy_refuses_each_escape_naming_the_field(void **state)
{
    (void)state;
    static const struct {
        const char *pspec; /* the template's pod spec */
        const char *field; /* the path the refusal must name */
    } cases[] = {
        {"{\"containers\": [{\"securityContext\": {\"privileged\": true}}]}",
         "spec.template.spec.containers[0].securityContext.privileged"},
        {"{\"hostNetwork\": true, \"containers\": [{}]}", "spec.template.spec.hostNetwork"},
        {"{\"hostPID\": true, \"containers\": [{}]}", "spec.template.spec.hostPID"},
        {"{\"hostIPC\": true, \"containers\": [{}]}", "spec.template.spec.hostIPC"},
        {"{\"containers\": [{}], \"volumes\": [{\"name\": \"d\", \"emptyDir\": {}},"
         " {\"name\": \"root\", \"hostPath\": {\"path\": \"/\"}}]}",
         "spec.template.spec.volumes[1].hostPath"},
        {"{\"containers\": [{\"securityContext\": {\"capabilities\":"
         " {\"add\": [\"NET_BIND_SERVICE\", \"SYS_ADMIN\"]}}}]}",
         "spec.template.spec.containers[0].securityContext.capabilities.add[1]"},
        {"{\"serviceAccountName\": \"cluster-admin-sa\", \"containers\": [{}]}",
         "spec.template.spec.serviceAccountName"},
        {"{\"serviceAccount\": \"builder\", \"containers\": [{}]}",
         "spec.template.spec.serviceAccount"},
        {"{\"containers\": [{\"securityContext\": {\"allowPrivilegeEscalation\": true}}]}",
         "spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation"},
        {"{\"securityContext\": {\"runAsUser\": 0}, \"containers\": [{}]}",
         "spec.template.spec.securityContext.runAsUser"},
        {"{\"containers\": [{\"securityContext\": {\"runAsNonRoot\": false}}]}",
         "spec.template.spec.containers[0].securityContext.runAsNonRoot"},
        {"{\"securityContext\": {\"seccompProfile\": {\"type\": \"Unconfined\"}},"
         " \"containers\": [{}]}",
         "spec.template.spec.securityContext.seccompProfile.type"},
        {"{\"containers\": [{\"ports\": [{\"containerPort\": 80, \"hostPort\": 80}]}]}",
         "spec.template.spec.containers[0].ports[0].hostPort"},
        {"{\"containers\": [{}], \"initContainers\": [{\"name\": \"i\","
         " \"securityContext\": {\"privileged\": true}}]}",
         "spec.template.spec.initContainers[0].securityContext.privileged"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *job;
        kd_agentjob spec;
        assert_int_equal(decode_with_pod(cases[i].pspec, &job, &spec), KD_OK);
        char err[512] = "";
        podspec_options strict = {.image = "x"};
        assert_int_equal(podspec_check_template(&spec, &strict, err, sizeof err),
                         KD_EINVALID_OBJECT);
        if (strstr(err, cases[i].field) == NULL)
            fail_msg("case %zu: \"%s\" does not name %s", i, err, cases[i].field);
        assert_non_null(strstr(err, "--allow-privileged-pods"));
        /* An administrator's flag lets it through. */
        podspec_options admin = {.image = "x", .allow_privileged = 1};
        assert_int_equal(podspec_check_template(&spec, &admin, err, sizeof err), KD_OK);
        kd_agentjob_free(&spec);
        json_decref(job);
    }
    /* What the restricted profile allows passes without the flag. */
    const char *fine[] = {
        "{\"containers\": [{\"securityContext\": {\"capabilities\": {\"add\": [\"NET_BIND_SERVICE\"]}}}]}",
        "{\"serviceAccountName\": \"default\", \"containers\": [{}]}",
        "{\"securityContext\": {\"runAsUser\": 1000, \"runAsNonRoot\": true}, \"containers\": [{}]}",
        "{\"containers\": [{}], \"volumes\": [{\"name\": \"d\", \"emptyDir\": {}}]}",
    };
    for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
        json_t *job;
        kd_agentjob spec;
        assert_int_equal(decode_with_pod(fine[i], &job, &spec), KD_OK);
        char err[512] = "";
        podspec_options strict = {.image = "x"};
        if (podspec_check_template(&spec, &strict, err, sizeof err) != KD_OK)
            fail_msg("allowed case %zu refused: %s", i, err);
        kd_agentjob_free(&spec);
        json_decref(job);
    }
    /* The keys volume's name is reserved even for an administrator. */
    json_t *job;
    kd_agentjob spec;
    assert_int_equal(decode_with_pod("{\"containers\": [{}], \"volumes\": [{\"name\":"
                                     " \"kadet-keys\", \"emptyDir\": {}}]}",
                                     &job, &spec),
                     KD_OK);
    char err[512] = "";
    podspec_options admin = {.image = "x", .allow_privileged = 1};
    assert_int_equal(podspec_check_template(&spec, &admin, err, sizeof err), KD_EINVALID_OBJECT);
    assert_non_null(strstr(err, "spec.template.spec.volumes[0].name"));
    kd_agentjob_free(&spec);
    json_decref(job);
}

static const json_t *sc_of(const json_t *pod, int container)
{
    const json_t *spec = json_object_get(pod, "spec");
    if (container < 0)
        return json_object_get(spec, "securityContext");
    return json_object_get(json_array_get(json_object_get(spec, "containers"), (size_t)container),
                           "securityContext");
}

static void test_every_pod_gets_the_restricted_profile_unless_stricter(void **state)
{
    fixture *f = *state;
    podspec_options o = {.image = "x", .keys = 1};
    char err[256];
    json_t *pods[2] = {NULL, NULL};
    assert_int_equal(podspec_coordinator_pod(f->job, &f->spec, &o, &pods[0], err, sizeof err),
                     KD_OK);
    assert_int_equal(podspec_worker_pod(f->job, &f->spec, &o, 0, &pods[1], err, sizeof err),
                     KD_OK);
    for (int k = 0; k < 2; k++) {
        const json_t *psc = sc_of(pods[k], -1);
        assert_true(json_is_true(json_object_get(psc, "runAsNonRoot")));
        assert_int_equal(json_integer_value(json_object_get(psc, "runAsUser")), 65532);
        assert_int_equal(json_integer_value(json_object_get(psc, "fsGroup")), 65532);
        assert_string_equal(str_at(json_object_get(psc, "seccompProfile"), "type", NULL),
                            "RuntimeDefault");
        assert_true(json_is_false(
            json_object_get(json_object_get(pods[k], "spec"), "automountServiceAccountToken")));
        const json_t *csc = sc_of(pods[k], 0);
        assert_true(json_is_false(json_object_get(csc, "allowPrivilegeEscalation")));
        const json_t *drop = json_object_get(json_object_get(csc, "capabilities"), "drop");
        assert_int_equal(json_array_size(drop), 1);
        assert_string_equal(json_string_value(json_array_get(drop, 0)), "ALL");
        /* The key Secret: a read-only volume, mode 0440, named by KADET_KEYS_DIR. */
        const json_t *vols = json_object_get(json_object_get(pods[k], "spec"), "volumes");
        const json_t *kv = NULL;
        size_t i;
        json_t *v;
        json_array_foreach(vols, i, v)
        {
            if (strcmp(str_at(v, "name", NULL), "kadet-keys") == 0)
                kv = v;
        }
        assert_non_null(kv);
        assert_string_equal(str_at(json_object_get(kv, "secret"), "secretName", NULL), "fm-keys");
        assert_int_equal(json_integer_value(json_object_get(json_object_get(kv, "secret"),
                                                            "defaultMode")),
                         0440);
        const json_t *c = json_array_get(json_object_get(json_object_get(pods[k], "spec"),
                                                         "containers"), 0);
        const json_t *km = NULL;
        json_array_foreach(json_object_get(c, "volumeMounts"), i, v)
        {
            if (strcmp(str_at(v, "name", NULL), "kadet-keys") == 0)
                km = v;
        }
        assert_non_null(km);
        assert_string_equal(str_at(km, "mountPath", NULL), "/var/run/kadet/keys");
        assert_true(json_is_true(json_object_get(km, "readOnly")));
        assert_string_equal(str_at(env_of(pods[k], "KADET_KEYS_DIR"), "value", NULL),
                            "/var/run/kadet/keys");
        json_decref(pods[k]);
    }
    /* A stricter template keeps its values: its own user, read-only root, its drops. */
    json_t *job;
    kd_agentjob spec;
    assert_int_equal(
        decode_with_pod("{\"securityContext\": {\"runAsUser\": 2000, \"seccompProfile\":"
                        " {\"type\": \"Localhost\", \"localhostProfile\": \"p.json\"}},"
                        " \"containers\": [{\"name\": \"a\", \"env\": [{\"name\":"
                        " \"KADET_KEYS_DIR\", \"value\": \"/tmp/elsewhere\"}],"
                        " \"securityContext\": {\"readOnlyRootFilesystem\": true,"
                        " \"capabilities\": {\"drop\": [\"NET_RAW\"]}}}]}",
                        &job, &spec),
        KD_OK);
    json_t *pod = NULL;
    assert_int_equal(podspec_worker_pod(job, &spec, &o, 1, &pod, err, sizeof err), KD_OK);
    assert_int_equal(json_integer_value(json_object_get(sc_of(pod, -1), "runAsUser")), 2000);
    assert_string_equal(str_at(json_object_get(sc_of(pod, -1), "seccompProfile"), "type", NULL),
                        "Localhost");
    assert_true(json_is_true(json_object_get(sc_of(pod, 0), "readOnlyRootFilesystem")));
    const json_t *drop = json_object_get(json_object_get(sc_of(pod, 0), "capabilities"), "drop");
    assert_int_equal(json_array_size(drop), 2); /* NET_RAW kept, ALL added */
    assert_string_equal(json_string_value(json_array_get(drop, 1)), "ALL");
    /* The template cannot point the runtime at other keys. */
    assert_string_equal(str_at(env_of(pod, "KADET_KEYS_DIR"), "value", NULL),
                        "/var/run/kadet/keys");
    json_decref(pod);
    kd_agentjob_free(&spec);
    json_decref(job);
    /* An administrator-allowed privileged container: no allowPrivilegeEscalation false
     * (the API server refuses that pair). */
    assert_int_equal(decode_with_pod("{\"containers\": [{\"securityContext\": {\"privileged\": true}}]}",
                                     &job, &spec),
                     KD_OK);
    podspec_options admin = {.image = "x", .allow_privileged = 1};
    assert_int_equal(podspec_worker_pod(job, &spec, &admin, 1, &pod, err, sizeof err), KD_OK);
    assert_null(json_object_get(sc_of(pod, 0), "allowPrivilegeEscalation"));
    assert_true(json_is_true(json_object_get(sc_of(pod, 0), "privileged")));
    json_decref(pod);
    kd_agentjob_free(&spec);
    json_decref(job);
}

static void test_key_secret_and_network_policy_are_owned_by_the_job(void **state)
{
    fixture *f = *state;
    const char *pub = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
    const char *key = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6";
    json_t *sec = NULL;
    char err[256];
    assert_int_equal(podspec_keys_secret(f->job, &f->spec, pub, key, "x" /* operator */, &sec,
                                         err, sizeof err),
                     KD_OK);
    assert_string_equal(str_at(sec, "kind", NULL), "Secret");
    assert_string_equal(str_at(sec, "metadata", "name"), "fm-keys");
    const json_t *md = json_object_get(sec, "metadata");
    assert_string_equal(str_at(md, "namespace", NULL), "team");
    const json_t *ref = json_array_get(json_object_get(md, "ownerReferences"), 0);
    assert_string_equal(str_at(ref, "uid", NULL), "u-1");
    assert_true(json_is_true(json_object_get(ref, "controller")));
    assert_true(json_is_true(json_object_get(ref, "blockOwnerDeletion")));
    const json_t *data = json_object_get(sec, "data");
    assert_string_equal(str_at(data, "agent.pub", NULL),
                        "cnE6ck0+fVU/QExuczQ3RTEla1Iub0BuJUZjbW1zTC9Ae0g4XXlmNw==");
    assert_non_null(str_at(data, "agent.key", NULL));
    assert_string_equal(str_at(data, "operator.pub", NULL), "eA==");
    json_decref(sec);
    assert_int_equal(podspec_keys_secret(f->job, &f->spec, pub, key, NULL, &sec, err, sizeof err),
                     KD_OK);
    assert_null(json_object_get(json_object_get(sec, "data"), "operator.pub"));
    json_decref(sec);

    podspec_options o = {.image = "x", .operator_namespace = "kadet-system",
                         .operator_labels = "app.kubernetes.io/name=kadet,role=op"};
    json_t *np = NULL;
    assert_int_equal(podspec_network_policy(f->job, &f->spec, &o, &np, err, sizeof err), KD_OK);
    assert_string_equal(str_at(np, "apiVersion", NULL), "networking.k8s.io/v1");
    assert_string_equal(str_at(np, "metadata", "name"), "fm-agents");
    ref = json_array_get(json_object_get(json_object_get(np, "metadata"), "ownerReferences"), 0);
    assert_string_equal(str_at(ref, "uid", NULL), "u-1");
    const json_t *spec = json_object_get(np, "spec");
    assert_string_equal(str_at(json_object_get(spec, "podSelector"), "matchLabels",
                               "kadet.io/job-name"),
                        "fm");
    assert_string_equal(json_string_value(json_array_get(json_object_get(spec, "policyTypes"), 0)),
                        "Ingress");
    const json_t *ing = json_object_get(spec, "ingress");
    assert_int_equal(json_array_size(ing), 2);
    /* Rule 0: the job's own pods, on the three agent ports. */
    const json_t *r0 = json_array_get(ing, 0);
    assert_string_equal(str_at(json_object_get(json_array_get(json_object_get(r0, "from"), 0),
                                               "podSelector"),
                               "matchLabels", "kadet.io/job-name"),
                        "fm");
    assert_int_equal(json_array_size(json_object_get(r0, "ports")), 3);
    /* Rule 1: the operator's pods in its namespace, on the metrics port only. */
    const json_t *r1 = json_array_get(ing, 1);
    const json_t *from = json_array_get(json_object_get(r1, "from"), 0);
    assert_string_equal(str_at(json_object_get(from, "namespaceSelector"), "matchLabels",
                               "kubernetes.io/metadata.name"),
                        "kadet-system");
    assert_string_equal(str_at(json_object_get(from, "podSelector"), "matchLabels", "role"), "op");
    const json_t *ports = json_object_get(r1, "ports");
    assert_int_equal(json_array_size(ports), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(ports, 0), "port")), 7070);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(ports, 1), "port")), 7071);
    json_decref(np);
    o.operator_labels = "no-equals-sign";
    assert_int_equal(podspec_network_policy(f->job, &f->spec, &o, &np, err, sizeof err), KD_EINVAL);
    assert_non_null(strstr(err, "no-equals-sign"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_service_selects_the_coordinator_with_both_ports),
        cmocka_unit_test(test_worker_pod_has_contract_env_labels_and_template),
        cmocka_unit_test(test_coordinator_pod_carries_the_job_and_a_checkpoint_volume),
        cmocka_unit_test(test_template_volume_at_the_checkpoint_path_is_kept),
        cmocka_unit_test(test_names_and_missing_identity_are_refused),
        cmocka_unit_test(test_template_policy_refuses_each_escape_naming_the_field),
        cmocka_unit_test(test_every_pod_gets_the_restricted_profile_unless_stricter),
        cmocka_unit_test(test_key_secret_and_network_policy_are_owned_by_the_job),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
