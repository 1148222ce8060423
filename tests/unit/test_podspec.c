/* podspec: the coordinator Service and the agent pods built from an AgentJob carry what
 * the runtime and garbage collection rely on: owner reference (controller), labels,
 * KADET_* environment, ports, restartPolicy Never, the template's image, requests,
 * annotations and env, and a checkpoint emptyDir unless the template mounts one. */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_service_selects_the_coordinator_with_both_ports),
        cmocka_unit_test(test_worker_pod_has_contract_env_labels_and_template),
        cmocka_unit_test(test_coordinator_pod_carries_the_job_and_a_checkpoint_volume),
        cmocka_unit_test(test_template_volume_at_the_checkpoint_path_is_kept),
        cmocka_unit_test(test_names_and_missing_identity_are_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
