/* schedhost and progress, pure parts: the node table the scheduler sees (allocatable
 * minus the requests of live pods bound to each node, agents of the snapshot's jobs and
 * finished pods excluded, NotReady and cordoned nodes left out), pod requests (limits
 * where requests are missing), and the coordinator metrics decoder refusing malformed
 * messages, other jobs' and older generations' metrics, and subscribers without the
 * operator's key (issue 17). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "kd_curve.h"
#include "kd_error.h"
#include "progress.h"
#include "reconcile_plan.h"
#include "schedhost.h"

static json_t *load(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    if (j == NULL)
        fail_msg("bad fixture: %s", je.text);
    return j;
}

static void test_pod_requests_sum_containers_and_fall_back_to_limits(void **state)
{
    (void)state;
    json_t *pod = load("{\"spec\": {\"containers\": ["
                       " {\"resources\": {\"requests\": {\"cpu\": \"250m\", \"memory\": \"1Gi\"}}},"
                       " {\"resources\": {\"limits\": {\"cpu\": \"1\", \"memory\": \"512Mi\"}}},"
                       " {\"resources\": {\"requests\": {\"cpu\": \"bogus\"}}}, {}]}}");
    double cpu, mem;
    schedhost_pod_requests(pod, &cpu, &mem);
    assert_true(fabs(cpu - 1250) < 1e-9);
    assert_true(fabs(mem - 1.5 * 1024 * 1024 * 1024) < 1);
    json_decref(pod);
}

static int agent_of_fm(void *ud, const json_t *pod)
{
    (void)ud;
    const char *job = json_string_value(json_object_get(
        json_object_get(json_object_get(pod, "metadata"), "labels"), "kadet.io/job-name"));
    return job != NULL && strcmp(job, "fm") == 0;
}

static void test_nodes_subtract_other_pods_only(void **state)
{
    (void)state;
    json_t *nodes = load(
        "[{\"metadata\": {\"name\": \"n0\"}, \"status\": {\"allocatable\": {\"cpu\": \"4\","
        "   \"memory\": \"8Gi\"}, \"conditions\": [{\"type\": \"Ready\", \"status\": \"True\"}]}},"
        " {\"metadata\": {\"name\": \"n1\"}, \"status\": {\"allocatable\": {\"cpu\": \"4\","
        "   \"memory\": \"8Gi\"}, \"conditions\": [{\"type\": \"Ready\", \"status\": \"False\"}]}},"
        " {\"metadata\": {\"name\": \"n2\"}, \"spec\": {\"unschedulable\": true},"
        "  \"status\": {\"allocatable\": {\"cpu\": \"4\"}, \"conditions\": [{\"type\": \"Ready\","
        "   \"status\": \"True\"}]}},"
        " {\"metadata\": {\"name\": \"n3\"}, \"status\": {\"allocatable\": {\"cpu\": \"2\"},"
        "   \"conditions\": [{\"type\": \"Ready\", \"status\": \"True\"}]}}]");
    json_t *pods = load(
        "[{\"metadata\": {\"labels\": {\"kadet.io/job-name\": \"other\"}},"
        "  \"spec\": {\"nodeName\": \"n0\", \"containers\": [{\"resources\": {\"requests\":"
        "   {\"cpu\": \"1500m\", \"memory\": \"2Gi\"}}}]}, \"status\": {\"phase\": \"Running\"}},"
        " {\"metadata\": {\"labels\": {\"kadet.io/job-name\": \"fm\"}},"
        "  \"spec\": {\"nodeName\": \"n0\", \"containers\": [{\"resources\": {\"requests\":"
        "   {\"cpu\": \"1\"}}}]}, \"status\": {\"phase\": \"Running\"}},"
        " {\"metadata\": {}, \"spec\": {\"nodeName\": \"n0\", \"containers\": [{\"resources\":"
        "   {\"requests\": {\"cpu\": \"2\"}}}]}, \"status\": {\"phase\": \"Succeeded\"}},"
        " {\"metadata\": {}, \"spec\": {\"containers\": [{\"resources\": {\"requests\":"
        "   {\"cpu\": \"2\"}}}]}, \"status\": {\"phase\": \"Pending\"}},"
        " {\"metadata\": {}, \"spec\": {\"nodeName\": \"n3\", \"containers\": [{\"resources\":"
        "   {\"requests\": {\"cpu\": \"3\"}}}]}}]");
    sched_node *sn = NULL;
    const char **names = NULL;
    int n = 0;
    assert_int_equal(schedhost_build_nodes(nodes, pods, agent_of_fm, NULL, &sn, &names, &n),
                     KD_OK);
    assert_int_equal(n, 2); /* n1 NotReady and n2 cordoned are not offered */
    assert_string_equal(names[0], "n0");
    assert_true(fabs(sn[0].cpu - 2.5) < 1e-9); /* 4 - 1.5 (other); fm's agent and the
                                                   finished pod are not subtracted */
    assert_true(fabs(sn[0].mem - 6.0 * 1024 * 1024 * 1024) < 1);
    assert_string_equal(names[1], "n3");
    assert_true(sn[1].cpu > 0 && sn[1].cpu < 1e-3); /* overcommitted: full, not "unlimited" */
    assert_true(sn[1].mem <= 0);                     /* memory not reported: not limiting */
    free(sn);
    free(names);
    json_decref(nodes);
    json_decref(pods);
}

static void test_progress_decoder(void **state)
{
    (void)state;
    const char *ok = "{\"job\": \"default/fm\", \"state\": \"running\", \"generation\": 3,"
                     " \"agents\": 4, \"epoch\": 2, \"step\": 480, \"samples_per_s\": 9000.5,"
                     " \"loss\": 0.41, \"accuracy\": 0.86, \"wall_seconds\": 12.0}";
    rc_progress_info pi;
    assert_int_equal(progress_decode(ok, strlen(ok), &pi), 0);
    assert_int_equal(pi.epoch, 2);
    assert_int_equal(pi.step, 480);
    assert_int_equal(pi.agents, 4);
    assert_true(fabs(pi.samples_per_s - 9000.5) < 1e-9);
    assert_true(fabs(pi.accuracy - 0.86) < 1e-12);
    assert_int_equal(pi.samples, -1);
    assert_int_equal(pi.batch, 0); /* a coordinator that does not say: unknown */
    const char *with_batch = "{\"agents\": 2, \"batch\": 112, \"step\": 9}";
    assert_int_equal(progress_decode(with_batch, strlen(with_batch), &pi), 0);
    assert_int_equal(pi.batch, 112);
    assert_int_equal(pi.checkpoint, RC_CKPT_UNKNOWN);
    const char *failing = "{\"step\": 9, \"checkpoint\": \"failing\","
                          " \"checkpoint_error\": \"checkpoint: open /c/x: No space left\"}";
    assert_int_equal(progress_decode(failing, strlen(failing), &pi), 0);
    assert_int_equal(pi.checkpoint, RC_CKPT_FAILING);
    assert_string_equal(pi.checkpoint_error, "checkpoint: open /c/x: No space left");
    const char *bad[] = {"", "[]", "{", "not json", "{\"epoch\": \"2\"}",
                         "{\"accuracy\": 1.5}", "{\"samples_per_s\": -1}", "{\"step\": -3}",
                         "{\"loss\": true}", "{\"agents\": 1e9}", "{\"batch\": -1}",
                         "{\"batch\": \"64\"}", "{\"batch\": 1e12}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(progress_decode(bad[i], strlen(bad[i]), &pi), -1);
}

static void test_progress_keeps_nothing_for_unknown_jobs(void **state)
{
    (void)state;
    progress *p = NULL;
    assert_int_equal(progress_new(NULL, &p), KD_OK);
    assert_int_equal(progress_start(p), KD_OK);
    progress_watch(p, "ns/a", "tcp://127.0.0.1:1");
    rc_progress_info pi;
    assert_int_equal(progress_get(p, "ns/a", &pi), 0);
    sched_tp tp[4];
    assert_int_equal(progress_throughput(p, "ns/a", tp, 4), 0);
    progress_forget(p, "ns/a");
    progress_forget(p, "ns/never");
    progress_free(&p);
    assert_null(p);
}

static void test_reason_kinds_have_no_numbers(void **state)
{
    (void)state;
    char k[48];
    schedhost_reason_kind("rl", "rl: greedy admission with 2 agents", k, sizeof k);
    assert_string_equal(k, "greedy_admission_with");
    schedhost_reason_kind("greedy", "in cool-down (12s since last change)", k, sizeof k);
    assert_string_equal(k, "in_cool_down");
    schedhost_reason_kind("static", "pinned to 3 but only 2 fit", k, sizeof k);
    assert_string_equal(k, "pinned_to");
    schedhost_reason_kind("fair", "Queued", k, sizeof k);
    assert_string_equal(k, "queued");
    schedhost_reason_kind("fair", "", k, sizeof k);
    assert_string_equal(k, "unspecified");
    schedhost_reason_kind("fair", "42", k, sizeof k);
    assert_string_equal(k, "unspecified");
}

static void test_progress_decoder_names_the_job(void **state)
{
    (void)state;
    rc_progress_info pi;
    long gen = -1;
    const char *a = "{\"job\": \"ns/a\", \"generation\": 4, \"epoch\": 3}";
    assert_int_equal(progress_decode_job(a, strlen(a), "ns/a", &pi, &gen), 0);
    assert_int_equal(gen, 4);
    assert_int_equal(pi.epoch, 3);
    assert_int_equal(progress_decode_job(a, strlen(a), "ns/b", &pi, &gen), -2);
    const char *bad[] = {"{\"epoch\": 3}", "{\"job\": \"ns/a\", \"epoch\": 3}",
                         "{\"job\": 1, \"generation\": 4}",
                         "{\"job\": \"ns/a\", \"generation\": -1}",
                         "{\"job\": \"ns/a\", \"generation\": \"4\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(progress_decode_job(bad[i], strlen(bad[i]), "ns/a", &pi, &gen), -1);
}

/* A coordinator's metrics PUB with the job's keys (and the operator's public key): a
 * progress with the operator keypair sees the job's metrics and only those; one without
 * the operator key is refused by the ZAP handler and sees nothing. */
static void test_progress_follows_its_job_over_curve(void **state)
{
    (void)state;
    char dir[64] = "/tmp/kd-progress-test.XXXXXX", err[256], op_pub[41], op_sec[41];
    assert_non_null(mkdtemp(dir));
    assert_int_equal(kd_curve_make(dir, err, sizeof err), KD_OK);
    assert_int_equal(zmq_curve_keypair(op_pub, op_sec), 0);
    char path[128];
    snprintf(path, sizeof path, "%s/operator.pub", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "%s\n", op_pub);
    fclose(f);
    kd_curve_keys k;
    assert_int_equal(kd_curve_load(dir, &k, err, sizeof err), KD_OK);
    void *ctx = zmq_ctx_new();
    kd_zap *z = NULL;
    assert_int_equal(kd_zap_start(&z, ctx, &k, err, sizeof err), KD_OK);
    void *pub = zmq_socket(ctx, ZMQ_PUB);
    int linger = 0;
    zmq_setsockopt(pub, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(kd_curve_server(pub, &k, KD_ZAP_METRICS, 0), 0);
    kd_zap_watch(z, pub, "metrics");
    assert_int_equal(zmq_bind(pub, "tcp://127.0.0.1:*"), 0);
    char ep[128];
    size_t l = sizeof ep;
    zmq_getsockopt(pub, ZMQ_LAST_ENDPOINT, ep, &l);
    progress_options po = {.notify_interval_s = 1, .curve_public = op_pub,
                           .curve_secret = op_sec};
    progress *p = NULL, *stranger = NULL;
    assert_int_equal(progress_new(&po, &p), KD_OK);
    assert_int_equal(progress_new(NULL, &stranger), KD_OK);
    progress_set_job_key(p, "ns/a", k.pub);
    progress_watch(p, "ns/a", ep);
    progress_watch(stranger, "ns/a", ep);
    assert_int_equal(progress_start(p), KD_OK);
    assert_int_equal(progress_start(stranger), KD_OK);
    /* The job's own reports (generation 3, epoch 2), another job's (a reused address) and
     * an older generation's: only the first counts. */
    const char *msgs[] = {
        "{\"job\": \"ns/a\", \"generation\": 3, \"epoch\": 2, \"accuracy\": 0.5}",
        "{\"job\": \"ns/b\", \"generation\": 9, \"epoch\": 7, \"accuracy\": 0.99}",
        "{\"job\": \"ns/a\", \"generation\": 1, \"epoch\": 8, \"accuracy\": 0.98}"};
    rc_progress_info pi;
    kd_zap_stats zs;
    for (int round = 0; round < 100; round++) {
        kd_zap_get_stats(z, &zs);
        if (round >= 10 && progress_foreign(p) >= 4 && zs.handshakes >= 1)
            break;
        for (int i = 0; i < 3; i++)
            zmq_send(pub, msgs[i], strlen(msgs[i]), 0);
        usleep(50 * 1000);
    }
    assert_int_equal(progress_get(p, "ns/a", &pi), 1);
    assert_int_equal(pi.epoch, 2);
    assert_true(fabs(pi.accuracy - 0.5) < 1e-12);
    assert_true(progress_foreign(p) >= 4);
    assert_int_equal(progress_get(stranger, "ns/a", &pi), 0);
    kd_zap_get_stats(z, &zs);
    assert_true(zs.handshakes >= 1); /* the subscriber without keys */
    progress_free(&p);
    progress_free(&stranger);
    zmq_close(pub);
    kd_zap_stop(&z);
    zmq_ctx_term(ctx);
    kd_curve_unmake(dir);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reason_kinds_have_no_numbers),
        cmocka_unit_test(test_pod_requests_sum_containers_and_fall_back_to_limits),
        cmocka_unit_test(test_nodes_subtract_other_pods_only),
        cmocka_unit_test(test_progress_decoder),
        cmocka_unit_test(test_progress_keeps_nothing_for_unknown_jobs),
        cmocka_unit_test(test_progress_decoder_names_the_job),
        cmocka_unit_test(test_progress_follows_its_job_over_curve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
