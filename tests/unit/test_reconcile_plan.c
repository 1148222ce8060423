/* reconcile_plan: the reconciler's decisions from (spec, status, scheduler decision,
 * owned pods, time): what to create and delete, phase transitions, backoff counting,
 * deadlines, suspend/resume, cleanPodPolicy, TTL, invalid specs, and pod decoding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "kd_error.h"
#include "kd_spec.h"
#include "podspec.h"
#include "reconcile_plan.h"

#define NOW 1000000.0

static rc_input base(void)
{
    rc_input in;
    memset(&in, 0, sizeof in);
    in.valid = 1;
    in.min = 1;
    in.max = 4;
    in.pin = -1;
    in.backoff_limit = 3;
    in.ttl_s = -1;
    in.clean = RC_CLEAN_RUNNING;
    in.status_desired = -1;
    in.sched_desired = -1;
    in.now = NOW;
    return in;
}

static rc_pod pod(const char *name, int coordinator, long index, rc_pod_state st)
{
    rc_pod p;
    memset(&p, 0, sizeof p);
    snprintf(p.name, sizeof p.name, "%s", name);
    snprintf(p.uid, sizeof p.uid, "uid-%s", name);
    p.coordinator = coordinator;
    p.index = index;
    p.state = st;
    p.ready = st == RC_POD_RUNNING;
    return p;
}

static const rc_condition *cond(const rc_plan *p, const char *type)
{
    for (int i = 0; i < p->n_cond; i++)
        if (strcmp(p->cond[i].type, type) == 0)
            return &p->cond[i];
    return NULL;
}

/* 1 when the plan deletes the pod named `name` for reason `why`. */
static int deletes(const rc_plan *p, const rc_input *in, const char *name, rc_delete_why why)
{
    for (size_t i = 0; i < p->n_delete; i++)
        if (strcmp(in->pods[p->del[i]].name, name) == 0 && p->why[i] == why)
            return 1;
    return 0;
}

static void test_new_job_creates_service_coordinator_and_min_workers(void **state)
{
    (void)state;
    rc_input in = base();
    in.min = 2;
    rc_plan p;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_true(p.create_service);
    assert_true(p.create_coordinator);
    assert_int_equal(p.n_create, 2);
    assert_int_equal(p.first_index, 0);
    assert_int_equal(p.desired, 2);
    assert_true(p.set_start);
    assert_int_equal(p.phase, RC_PENDING);
    assert_int_equal(cond(&p, "Valid")->status, 1);
    assert_string_equal(cond(&p, "Running")->reason, "Starting");
    assert_int_equal(p.n_delete, 0);
    rc_plan_free(&p);
}

static void test_desired_count_pin_then_scheduler_then_status_then_min(void **state)
{
    (void)state;
    rc_input in = base();
    in.have_service = 1;
    rc_pod pods[] = {pod("j-coordinator", 1, -1, RC_POD_RUNNING)};
    in.pods = pods;
    in.n_pods = 1;
    rc_plan p;
    in.sched_desired = 3;
    in.pin = 2;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.desired, 2); /* pin wins */
    assert_int_equal(p.n_create, 2);
    rc_plan_free(&p);
    in.pin = -1;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.desired, 3); /* the scheduler's decision */
    rc_plan_free(&p);
    in.sched_desired = 9;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.desired, 4); /* clamped to max */
    rc_plan_free(&p);
    in.sched_desired = -1;
    in.status_desired = 3;          /* a restarted operator keeps its last decision */
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.desired, 3);
    assert_false(p.create_coordinator);
    assert_false(p.create_service);
    rc_plan_free(&p);
}

static void test_scheduler_zero_waits_for_capacity(void **state)
{
    (void)state;
    rc_input in = base();
    in.sched_desired = 0;
    rc_plan p;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.desired, 0);
    assert_int_equal(p.n_create, 0);
    assert_int_equal(p.phase, RC_PENDING);
    assert_string_equal(cond(&p, "Running")->reason, "WaitingForCapacity");
    assert_false(p.create_coordinator); /* a queued job gets no pod at all */
    rc_plan_free(&p);
}

/* With a scheduler host, a new job creates nothing before the first decision (issue 16:
 * no worker created and deleted 20 ms later), then what was decided; should no decision
 * come, it starts at agents.min after RC_SCHED_WAIT_S. */
static void test_new_job_waits_for_the_first_decision(void **state)
{
    (void)state;
    rc_input in = base();
    in.await_sched = 1;
    in.created_time = NOW - 1;
    rc_plan p;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_true(p.awaiting);
    assert_false(p.create_coordinator);
    assert_int_equal(p.n_create, 0);
    assert_false(p.set_start);
    assert_int_equal(p.phase, RC_PENDING);
    assert_string_equal(cond(&p, "Running")->reason, "AwaitingScheduler");
    assert_true(p.requeue_s > 0 && p.requeue_s <= RC_SCHED_WAIT_S);
    rc_plan_free(&p);
    in.sched_desired = 0; /* decided: wait for capacity, still no pod */
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_false(p.awaiting);
    assert_false(p.create_coordinator);
    assert_int_equal(p.n_create, 0);
    assert_string_equal(cond(&p, "Running")->reason, "WaitingForCapacity");
    rc_plan_free(&p);
    in.sched_desired = 3; /* decided: the pods */
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_true(p.create_coordinator);
    assert_int_equal(p.n_create, 3);
    rc_plan_free(&p);
    in.sched_desired = -1; /* no decision for too long: agents.min */
    in.created_time = NOW - RC_SCHED_WAIT_S - 1;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_false(p.awaiting);
    assert_int_equal(p.n_create, 1);
    rc_plan_free(&p);
    /* spec.replicas pins the count: nothing to wait for, the pods at once. */
    in.created_time = NOW - 1;
    in.pin = 2;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_false(p.awaiting);
    assert_true(p.create_coordinator);
    assert_int_equal(p.n_create, 2);
    rc_plan_free(&p);
}

static void test_scale_up_numbers_after_the_highest_index_ever_seen(void **state)
{
    (void)state;
    rc_input in = base();
    in.have_service = 1;
    in.sched_desired = 3;
    rc_pod pods[] = {pod("j-coordinator", 1, -1, RC_POD_RUNNING),
                     pod("j-worker-4", 0, 4, RC_POD_RUNNING),
                     pod("j-worker-6", 0, 6, RC_POD_RUNNING)};
    pods[2].deleting = 1; /* going away, but its number is not reused */
    in.pods = pods;
    in.n_pods = 3;
    rc_plan p;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.n_create, 2);
    assert_int_equal(p.first_index, 7);
    assert_int_equal(p.n_delete, 0);
    assert_int_equal(p.phase, RC_RUNNING);
    assert_int_equal(p.ready, 1);
    rc_plan_free(&p);
}

static void test_scale_down_deletes_the_newest_workers(void **state)
{
    (void)state;
    rc_input in = base();
    in.have_service = 1;
    in.sched_desired = 1;
    in.status_desired = 3;
    rc_pod pods[] = {pod("j-worker-2", 0, 2, RC_POD_RUNNING),
                     pod("j-coordinator", 1, -1, RC_POD_RUNNING),
                     pod("j-worker-10", 0, 10, RC_POD_PENDING),
                     pod("j-worker-9", 0, 9, RC_POD_RUNNING)};
    in.pods = pods;
    in.n_pods = 4;
    rc_plan p;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.n_delete, 2);
    assert_true(deletes(&p, &in, "j-worker-10", RC_DEL_SCALE_DOWN));
    assert_true(deletes(&p, &in, "j-worker-9", RC_DEL_SCALE_DOWN));
    assert_int_equal(p.n_create, 0);
    assert_int_equal(p.desired, 1);
    assert_int_equal(p.ready, 1);
    rc_plan_free(&p);
    /* Pods already being deleted are not deleted again. */
    pods[2].deleting = 1;
    pods[3].deleting = 1;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.n_delete, 0);
    assert_int_equal(p.n_create, 0);
    rc_plan_free(&p);
}

/* 1 when the plan counts the pod named `name` as a new failure. */
static int counts(const rc_plan *p, const rc_input *in, const char *name)
{
    for (int i = 0; i < p->new_failures; i++)
        if (strcmp(in->pods[p->counted[i]].name, name) == 0)
            return 1;
    return 0;
}

static void test_failed_worker_is_counted_once_kept_and_replaced(void **state)
{
    (void)state;
    rc_input in = base();
    in.have_service = 1;
    in.sched_desired = 2;
    in.failures = 1;
    rc_pod pods[] = {pod("j-coordinator", 1, -1, RC_POD_RUNNING),
                     pod("j-worker-0", 0, 0, RC_POD_RUNNING),
                     pod("j-worker-1", 0, 1, RC_POD_FAILED)};
    in.pods = pods;
    in.n_pods = 3;
    rc_plan p;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_true(counts(&p, &in, "j-worker-1"));
    assert_int_equal(p.n_delete, 0); /* it stays, for kubectl logs */
    assert_int_equal(p.new_failures, 1);
    assert_int_equal(p.failures, 2);
    /* The replacement backs off: 20 s after the second failure. */
    assert_true(p.backoff);
    assert_int_equal(p.n_create, 0);
    assert_true(p.requeue_s > 19.9 && p.requeue_s <= 20.0);
    assert_int_equal(p.phase, RC_RUNNING); /* the others train on */
    assert_int_equal(p.ready, 1);
    rc_plan_free(&p);
    /* The next syncs: the failed pod is still there, counted (status.failedPods). */
    pods[2].counted = 1;
    in.failures = 2;
    in.last_failure_time = NOW;
    in.now = NOW + 19;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.new_failures, 0);
    assert_int_equal(p.failures, 2);
    assert_int_equal(p.n_create, 0);
    assert_int_equal(p.n_delete, 0);
    assert_true(p.requeue_s > 0.9 && p.requeue_s <= 1.0);
    rc_plan_free(&p);
    in.now = NOW + 20;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_false(p.backoff);
    assert_int_equal(p.failures, 2);
    assert_int_equal(p.n_delete, 0);
    /* One replacement (the failed pod is not an agent), under a new name: j-worker-2. */
    assert_int_equal(p.n_create, 1);
    assert_int_equal(p.first_index, 2);
    rc_plan_free(&p);
    /* With the replacement running, the failed pod is neither an agent nor a candidate
     * for scaling down: 2 desired, 2 live, nothing to do; down to 1, the newest live goes. */
    rc_pod three[] = {pod("j-coordinator", 1, -1, RC_POD_RUNNING),
                      pod("j-worker-0", 0, 0, RC_POD_RUNNING),
                      pod("j-worker-1", 0, 1, RC_POD_FAILED),
                      pod("j-worker-2", 0, 2, RC_POD_RUNNING)};
    three[2].counted = 1;
    in.pods = three;
    in.n_pods = 4;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.n_create, 0);
    assert_int_equal(p.n_delete, 0);
    assert_int_equal(p.ready, 2);
    assert_int_equal(p.phase, RC_RUNNING);
    rc_plan_free(&p);
    in.sched_desired = 1;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.n_delete, 1);
    assert_true(deletes(&p, &in, "j-worker-2", RC_DEL_SCALE_DOWN));
    rc_plan_free(&p);
    /* A pod we deleted (scale down) that reports Failed while it stops is no failure. */
    three[3].state = RC_POD_FAILED;
    three[3].deleting = 1;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.new_failures, 0);
    assert_int_equal(p.failures, 2);
    rc_plan_free(&p);
}

static void test_failed_coordinator_stays_through_its_backoff(void **state)
{
    (void)state;
    rc_input in = base();
    in.have_service = 1;
    in.has_phase = 1;
    in.phase = RC_RUNNING;
    in.sched_desired = 1;
    rc_pod pods[] = {pod("j-coordinator", 1, -1, RC_POD_FAILED),
                     pod("j-worker-0", 0, 0, RC_POD_RUNNING)};
    in.pods = pods;
    in.n_pods = 2;
    rc_plan p;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_true(counts(&p, &in, "j-coordinator"));
    assert_int_equal(p.failures, 1);
    assert_int_equal(p.n_delete, 0);
    assert_false(p.create_coordinator);
    assert_int_equal(p.phase, RC_PENDING);
    assert_string_equal(cond(&p, "Running")->reason, "BackOff");
    rc_plan_free(&p);
    /* Its backoff over, it is deleted (its name is its replacement's), counted once. */
    pods[0].counted = 1;
    in.failures = 1;
    in.last_failure_time = NOW;
    in.now = NOW + 10;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.new_failures, 0);
    assert_int_equal(p.failures, 1);
    assert_true(deletes(&p, &in, "j-coordinator", RC_DEL_FAILED));
    assert_false(p.create_coordinator); /* the sync that sees it gone creates it */
    rc_plan_free(&p);
    pods[0].deleting = 1;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.n_delete, 0);
    assert_false(p.create_coordinator);
    rc_plan_free(&p);
    in.pods = &pods[1];
    in.n_pods = 1;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_true(p.create_coordinator);
    rc_plan_free(&p);
}

/* Pods whose node is gone or NotReady are deleted at once and replaced, failed or not,
 * and never counted against backoffLimit (issue 16 part 7). */
static void test_pods_on_a_lost_node_are_replaced_without_counting(void **state)
{
    (void)state;
    rc_input in = base();
    in.have_service = 1;
    in.sched_desired = 3;
    in.backoff_limit = 0;
    rc_pod pods[] = {pod("j-coordinator", 1, -1, RC_POD_RUNNING),
                     pod("j-worker-0", 0, 0, RC_POD_RUNNING),
                     pod("j-worker-1", 0, 1, RC_POD_RUNNING),
                     pod("j-worker-2", 0, 2, RC_POD_FAILED)};
    pods[2].node_lost = 1;
    pods[3].node_lost = 1;
    in.pods = pods;
    in.n_pods = 4;
    rc_plan p;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_true(deletes(&p, &in, "j-worker-1", RC_DEL_NODE_LOST));
    assert_true(deletes(&p, &in, "j-worker-2", RC_DEL_NODE_LOST));
    assert_int_equal(p.n_delete, 2);
    assert_int_equal(p.new_failures, 0);
    assert_int_equal(p.failures, 0);
    assert_false(p.backoff);
    assert_int_equal(p.phase, RC_RUNNING); /* backoffLimit 0 and still running */
    assert_int_equal(p.n_create, 2);       /* replacements now, numbered after 2 */
    assert_int_equal(p.first_index, 3);
    assert_int_equal(p.ready, 1);
    assert_string_equal(rc_delete_why_name(RC_DEL_NODE_LOST), "node lost");
    rc_plan_free(&p);
    /* A lost coordinator is deleted; the new one waits until the old object is gone. */
    rc_pod lost_coord[] = {pod("j-coordinator", 1, -1, RC_POD_RUNNING),
                           pod("j-worker-0", 0, 0, RC_POD_RUNNING)};
    lost_coord[0].node_lost = 1;
    in.pods = lost_coord;
    in.n_pods = 2;
    in.sched_desired = 1;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_true(deletes(&p, &in, "j-coordinator", RC_DEL_NODE_LOST));
    assert_int_equal(p.failures, 0);
    assert_false(p.create_coordinator);
    assert_int_equal(p.phase, RC_PENDING);
    rc_plan_free(&p);
}

static void test_node_lost_reads_the_ready_condition(void **state)
{
    (void)state;
    assert_true(rc_node_lost(NULL));
    json_t *n = json_loads("{\"spec\":{\"unschedulable\":true},\"status\":{\"conditions\":["
                           "{\"type\":\"MemoryPressure\",\"status\":\"False\"},"
                           "{\"type\":\"Ready\",\"status\":\"True\"}]}}", 0, NULL);
    assert_non_null(n);
    assert_false(rc_node_lost(n)); /* cordoned: its pods keep running */
    json_t *ready = json_array_get(json_object_get(json_object_get(n, "status"), "conditions"), 1);
    json_object_set_new(ready, "status", json_string("Unknown"));
    assert_true(rc_node_lost(n));
    json_object_set_new(ready, "status", json_string("False"));
    assert_true(rc_node_lost(n));
    json_array_remove(json_object_get(json_object_get(n, "status"), "conditions"), 1);
    assert_true(rc_node_lost(n)); /* no Ready condition at all */
    json_decref(n);
}

/* PolicyHonored says whether the job's own policy decides (issue 16 part 6). */
static void test_policy_honored_condition(void **state)
{
    (void)state;
    rc_input in = base();
    in.have_service = 1;
    in.sched_desired = 1;
    rc_pod pods[] = {pod("j-coordinator", 1, -1, RC_POD_RUNNING),
                     pod("j-worker-0", 0, 0, RC_POD_RUNNING)};
    in.pods = pods;
    in.n_pods = 2;
    rc_plan p;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_null(cond(&p, "PolicyHonored")); /* no choice made, no decision yet */
    rc_plan_free(&p);
    in.spec_policy = "rl";
    in.sched_policy = "greedy";
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    const rc_condition *c = cond(&p, "PolicyHonored");
    assert_non_null(c);
    assert_int_equal(c->status, 0);
    assert_string_equal(c->reason, "ClusterPolicy");
    assert_non_null(strstr(c->message, "spec.scheduling.policy rl is ignored"));
    assert_non_null(strstr(c->message, "greedy"));
    rc_plan_free(&p);
    in.spec_policy = "greedy";
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    c = cond(&p, "PolicyHonored");
    assert_non_null(c);
    assert_int_equal(c->status, 1);
    rc_plan_free(&p);
}

static void test_backoff_doubles_and_is_capped(void **state)
{
    (void)state;
    assert_true(rc_backoff_delay(0) == 0);
    assert_true(rc_backoff_delay(1) == 10);
    assert_true(rc_backoff_delay(2) == 20);
    assert_true(rc_backoff_delay(3) == 40);
    assert_true(rc_backoff_delay(6) == 320);
    assert_true(rc_backoff_delay(7) == 360);
    assert_true(rc_backoff_delay(1000) == 360);
    /* A lost coordinator waits too, and the condition says why and for how long. */
    rc_input in = base();
    in.have_service = 1;
    in.has_phase = 1;
    in.phase = RC_RUNNING;
    in.failures = 1;
    in.last_failure_time = NOW - 4;
    rc_plan p;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_false(p.create_coordinator);
    assert_int_equal(p.n_create, 0);
    assert_int_equal(p.phase, RC_PENDING);
    assert_string_equal(cond(&p, "Running")->reason, "BackOff");
    assert_non_null(strstr(cond(&p, "Running")->message, "in 6 s"));
    rc_plan_free(&p);
    in.now = NOW + 6;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_true(p.create_coordinator);
    assert_int_equal(p.n_create, 1);
    rc_plan_free(&p);
}

static void test_failed_condition_quotes_the_last_failure(void **state)
{
    (void)state;
    rc_input in = base();
    in.have_service = 1;
    in.has_phase = 1;
    in.phase = RC_PENDING;
    in.failures = 3;
    rc_pod pods[] = {pod("j-coordinator", 1, -1, RC_POD_RUNNING),
                     pod("j-worker-3", 0, 3, RC_POD_FAILED)};
    pods[1].exit_code = 1;
    snprintf(pods[1].message, sizeof pods[1].message,
             "dataset /nope: no train split (looked for /nope/train-images-idx3-ubyte.gz)");
    in.pods = pods;
    in.n_pods = 2;
    rc_plan p;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.phase, RC_FAILED);
    const rc_condition *f = cond(&p, "Failed");
    assert_string_equal(f->reason, "BackoffLimitExceeded");
    assert_non_null(strstr(f->message, "4 agent pod failures exceed backoffLimit 3"));
    assert_non_null(strstr(f->message, "pod j-worker-3 (exit code 1): dataset /nope: no "
                                       "train split"));
    assert_non_null(strstr(p.event_message, "no train split"));
    rc_plan_free(&p);
    /* The pod that failed last was deleted in an earlier sync: status.lastFailure. */
    pods[1].state = RC_POD_RUNNING;
    in.failures = 4;
    in.last_failure = "pod j-worker-3 exited 1: dataset /nope: no train split";
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_non_null(strstr(cond(&p, "Failed")->message, "the last: pod j-worker-3"));
    rc_plan_free(&p);
}

static void test_valid_condition_names_unknown_fields(void **state)
{
    (void)state;
    rc_input in = base();
    in.unknown_fields = "spec.template.spec.containers[0].resouces (did you mean \"resources\"?)";
    rc_plan p;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    const rc_condition *v = cond(&p, "Valid");
    assert_int_equal(v->status, 1);
    assert_string_equal(v->message, "the spec is valid; unknown fields ignored: "
                                    "spec.template.spec.containers[0].resouces (did you mean "
                                    "\"resources\"?)");
    rc_plan_free(&p);
}

static void test_termination_message_keeps_its_last_line(void **state)
{
    (void)state;
    char out[16];
    rc_message_line("first line\nthe\treason\n\n", out, sizeof out);
    assert_string_equal(out, "the reason");
    rc_message_line(NULL, out, sizeof out);
    assert_string_equal(out, "");
    rc_message_line("0123456789abcdefghij", out, sizeof out);
    assert_string_equal(out, "0123456789abcde");
    /* Never half a UTF-8 character: "\xc3\xa9" is one. */
    rc_message_line("0123456789abcd\xc3\xa9", out, sizeof out);
    assert_string_equal(out, "0123456789abcd");
}

static void test_failures_past_backoff_limit_fail_the_job_and_clean_up(void **state)
{
    (void)state;
    rc_input in = base();
    in.have_service = 1;
    in.has_phase = 1;
    in.phase = RC_RUNNING;
    in.failures = 3; /* == backoffLimit: still allowed */
    in.start_time = NOW - 60;
    rc_pod pods[] = {pod("j-coordinator", 1, -1, RC_POD_RUNNING),
                     pod("j-worker-0", 0, 0, RC_POD_RUNNING),
                     pod("j-worker-1", 0, 1, RC_POD_FAILED)};
    in.pods = pods;
    in.n_pods = 3;
    rc_plan p;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.failures, 4);
    assert_int_equal(p.phase, RC_FAILED);
    assert_string_equal(cond(&p, "Failed")->reason, "BackoffLimitExceeded");
    assert_int_equal(cond(&p, "Failed")->status, 1);
    assert_int_equal(cond(&p, "Running")->status, 0);
    assert_true(p.set_completion);
    assert_string_equal(p.event_reason, "Failed");
    assert_true(p.event_warning);
    assert_non_null(strstr(p.event_message, "backoffLimit 3"));
    /* The failure that pushed it over is counted; cleanPodPolicy Running: the running
     * pods go, the failed one stays (kubectl logs). */
    assert_true(counts(&p, &in, "j-worker-1"));
    assert_int_equal(p.n_delete, 2);
    assert_true(deletes(&p, &in, "j-coordinator", RC_DEL_CLEANUP));
    assert_true(deletes(&p, &in, "j-worker-0", RC_DEL_CLEANUP));
    assert_false(deletes(&p, &in, "j-worker-1", RC_DEL_CLEANUP));
    assert_int_equal(p.n_create, 0);
    assert_false(p.create_coordinator);
    rc_plan_free(&p);
    /* cleanPodPolicy All: every pod, the failed one too (once). */
    in.clean = RC_CLEAN_ALL;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.n_delete, 3);
    assert_true(deletes(&p, &in, "j-worker-1", RC_DEL_CLEANUP));
    rc_plan_free(&p);
    /* cleanPodPolicy None: nothing. */
    in.clean = RC_CLEAN_NONE;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.n_delete, 0);
    rc_plan_free(&p);
    /* The job Failed (later syncs): the counted failed pods are kept or removed per
     * cleanPodPolicy, never counted again. */
    pods[2].counted = 1;
    pods[0].state = RC_POD_FAILED;
    pods[1].deleting = 1;
    pods[0].counted = 0; /* the coordinator failed after the job did: not counted */
    in.phase = RC_FAILED;
    in.failures = 4;
    in.completion_time = NOW;
    for (int pol = RC_CLEAN_RUNNING; pol <= RC_CLEAN_NONE; pol++) {
        in.clean = (rc_clean)pol;
        assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
        assert_int_equal(p.new_failures, 0);
        assert_int_equal(p.failures, 4);
        assert_int_equal(p.n_delete, pol == RC_CLEAN_ALL ? 2 : 0);
        assert_int_equal(deletes(&p, &in, "j-worker-1", RC_DEL_CLEANUP), pol == RC_CLEAN_ALL);
        assert_int_equal(deletes(&p, &in, "j-coordinator", RC_DEL_CLEANUP),
                         pol == RC_CLEAN_ALL);
        rc_plan_free(&p);
    }
    pods[0].state = RC_POD_RUNNING;
    pods[1].deleting = 0;
    pods[2].counted = 0;
    in.phase = RC_RUNNING;
    in.completion_time = 0;
    in.clean = RC_CLEAN_RUNNING;
    /* Exactly at the limit the job goes on. */
    in.failures = 2;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.failures, 3);
    assert_int_not_equal(p.phase, RC_FAILED);
    rc_plan_free(&p);
}

static void test_coordinator_exit_zero_succeeds_with_each_clean_policy(void **state)
{
    (void)state;
    rc_input in = base();
    in.have_service = 1;
    in.has_phase = 1;
    in.phase = RC_RUNNING;
    in.start_time = NOW - 100;
    rc_pod pods[] = {pod("j-coordinator", 1, -1, RC_POD_SUCCEEDED),
                     pod("j-worker-0", 0, 0, RC_POD_SUCCEEDED),
                     pod("j-worker-1", 0, 1, RC_POD_RUNNING)};
    in.pods = pods;
    in.n_pods = 3;
    rc_plan p;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.phase, RC_SUCCEEDED);
    assert_string_equal(p.event_reason, "Succeeded");
    assert_false(p.event_warning);
    assert_int_equal(cond(&p, "Succeeded")->status, 1);
    assert_true(p.set_completion);
    assert_int_equal(p.n_delete, 1); /* Running: only the running worker */
    assert_true(deletes(&p, &in, "j-worker-1", RC_DEL_CLEANUP));
    rc_plan_free(&p);
    in.clean = RC_CLEAN_ALL;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.n_delete, 3);
    rc_plan_free(&p);
    in.clean = RC_CLEAN_NONE;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.n_delete, 0);
    rc_plan_free(&p);
    /* Once recorded, the transition is not announced again. */
    in.phase = RC_SUCCEEDED;
    in.completion_time = NOW - 1;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_string_equal(p.event_reason, "");
    assert_false(p.set_completion);
    assert_int_equal(p.phase, RC_SUCCEEDED);
    rc_plan_free(&p);
}

static void test_worker_done_means_no_replacements(void **state)
{
    (void)state;
    rc_input in = base();
    in.have_service = 1;
    in.sched_desired = 2;
    rc_pod pods[] = {pod("j-coordinator", 1, -1, RC_POD_RUNNING),
                     pod("j-worker-0", 0, 0, RC_POD_SUCCEEDED),
                     pod("j-worker-1", 0, 1, RC_POD_RUNNING)};
    in.pods = pods;
    in.n_pods = 3;
    rc_plan p;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.n_create, 0);
    assert_int_equal(p.n_delete, 0);
    rc_plan_free(&p);
}

static void test_active_deadline(void **state)
{
    (void)state;
    rc_input in = base();
    in.have_service = 1;
    in.has_phase = 1;
    in.phase = RC_RUNNING;
    in.active_deadline_s = 100;
    in.start_time = NOW - 40;
    rc_pod pods[] = {pod("j-coordinator", 1, -1, RC_POD_RUNNING),
                     pod("j-worker-0", 0, 0, RC_POD_RUNNING)};
    in.pods = pods;
    in.n_pods = 2;
    rc_plan p;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.phase, RC_RUNNING);
    assert_true(p.requeue_s > 59.9 && p.requeue_s < 60.1);
    rc_plan_free(&p);
    in.start_time = NOW - 100;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.phase, RC_FAILED);
    assert_string_equal(cond(&p, "Failed")->reason, "DeadlineExceeded");
    assert_int_equal(p.n_delete, 2);
    rc_plan_free(&p);
}

static void test_ttl_after_finished_deletes_the_job(void **state)
{
    (void)state;
    rc_input in = base();
    in.has_phase = 1;
    in.phase = RC_SUCCEEDED;
    in.completion_time = NOW - 10;
    rc_plan p;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_false(p.delete_job); /* ttl -1: never */
    assert_true(p.requeue_s == 0);
    rc_plan_free(&p);
    in.ttl_s = 30;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_false(p.delete_job);
    assert_true(p.requeue_s > 19.9 && p.requeue_s < 20.1);
    rc_plan_free(&p);
    in.ttl_s = 10;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_true(p.delete_job);
    rc_plan_free(&p);
    in.phase = RC_FAILED;
    in.ttl_s = 0;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_true(p.delete_job);
    rc_plan_free(&p);
}

static void test_invalid_spec_reports_without_acting(void **state)
{
    (void)state;
    rc_input in = base();
    in.valid = 0;
    in.invalid_msg = "spec.replicas: 9 is outside agents [1, 4]";
    rc_plan p;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_false(p.act);
    assert_int_equal(p.phase, RC_FAILED);
    assert_int_equal(cond(&p, "Valid")->status, 0);
    assert_string_equal(cond(&p, "Valid")->reason, "InvalidSpec");
    assert_string_equal(cond(&p, "Valid")->message, in.invalid_msg);
    assert_string_equal(p.event_reason, "InvalidSpec");
    assert_true(p.event_warning);
    assert_false(p.create_coordinator);
    assert_int_equal(p.n_create, 0);
    assert_true(p.requeue_s == 0); /* a terminal user error: no retry loop */
    rc_plan_free(&p);
    /* A job that ran keeps its phase and pods when an edit makes the spec invalid. */
    rc_pod pods[] = {pod("j-coordinator", 1, -1, RC_POD_RUNNING)};
    in.pods = pods;
    in.n_pods = 1;
    in.has_phase = 1;
    in.phase = RC_RUNNING;
    in.start_time = NOW - 5;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.phase, RC_RUNNING);
    assert_int_equal(p.n_delete, 0);
    rc_plan_free(&p);
    /* Fixing the spec of a job Failed as invalid starts it. */
    in.valid = 1;
    in.phase = RC_FAILED;
    in.failed_invalid = 1;
    in.start_time = 0;
    in.n_pods = 0;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_true(p.create_coordinator);
    assert_int_equal(p.phase, RC_PENDING);
    assert_int_equal(cond(&p, "Failed")->status, 0);
    rc_plan_free(&p);
}

static void test_suspend_deletes_workers_then_coordinator_and_resume_restarts(void **state)
{
    (void)state;
    rc_input in = base();
    in.have_service = 1;
    in.has_phase = 1;
    in.phase = RC_RUNNING;
    in.suspend = 1;
    rc_pod pods[] = {pod("j-coordinator", 1, -1, RC_POD_RUNNING),
                     pod("j-worker-0", 0, 0, RC_POD_RUNNING),
                     pod("j-worker-1", 0, 1, RC_POD_PENDING)};
    in.pods = pods;
    in.n_pods = 3;
    rc_plan p;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_int_equal(p.phase, RC_SUSPENDED);
    assert_int_equal(p.n_delete, 2);
    assert_false(deletes(&p, &in, "j-coordinator", RC_DEL_SUSPEND)); /* workers first */
    assert_string_equal(p.event_reason, "Suspended");
    assert_int_equal(cond(&p, "Suspended")->status, 1);
    assert_int_equal(p.desired, 0);
    rc_plan_free(&p);
    /* Workers gone: the coordinator goes (it checkpoints on SIGTERM). */
    in.phase = RC_SUSPENDED;
    in.n_pods = 1;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_true(deletes(&p, &in, "j-coordinator", RC_DEL_SUSPEND));
    assert_string_equal(p.event_reason, "");
    rc_plan_free(&p);
    /* Resume. */
    in.suspend = 0;
    in.n_pods = 0;
    in.status_desired = 0;
    assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
    assert_string_equal(p.event_reason, "Resumed");
    assert_int_equal(cond(&p, "Suspended")->status, 0);
    assert_true(p.create_coordinator);
    assert_int_equal(p.n_create, 1);
    rc_plan_free(&p);
}

static void test_pod_decoding(void **state)
{
    (void)state;
    json_error_t je;
    json_t *j = json_loads(
        "{\"metadata\": {\"name\": \"fm-worker-12\", \"uid\": \"u\","
        "  \"labels\": {\"kadet.io/job-name\": \"fm\", \"kadet.io/role\": \"worker\"}},"
        " \"status\": {\"phase\": \"Running\", \"podIP\": \"127.10.0.3\","
        "  \"conditions\": [{\"type\": \"Ready\", \"status\": \"False\"}]}}", 0, &je);
    rc_pod p;
    assert_int_equal(rc_pod_from_json(j, "fm", &p), 1);
    assert_int_equal(p.index, 12);
    assert_int_equal(p.state, RC_POD_RUNNING);
    assert_false(p.ready);
    assert_false(p.coordinator);
    assert_string_equal(p.ip, "127.10.0.3");
    assert_int_equal(rc_pod_from_json(j, "other", &p), 0);
    json_decref(j);
    j = json_loads(
        "{\"metadata\": {\"name\": \"fm-coordinator\", \"deletionTimestamp\": \"2026-01-01T00:00:00Z\","
        "  \"labels\": {\"kadet.io/job-name\": \"fm\", \"kadet.io/role\": \"coordinator\"}},"
        " \"status\": {\"phase\": \"Failed\", \"containerStatuses\": [{\"state\":"
        "  {\"terminated\": {\"exitCode\": 3, \"message\": \"log line\\nno train split\\n\"}}}]}}",
        0, &je);
    assert_int_equal(rc_pod_from_json(j, "fm", &p), 1);
    assert_true(p.coordinator);
    assert_true(p.deleting);
    assert_int_equal(p.state, RC_POD_FAILED);
    assert_int_equal(p.exit_code, 3);
    assert_string_equal(p.message, "no train split");
    json_decref(j);
    j = json_loads("{\"metadata\": {\"name\": \"x\", \"labels\": {\"kadet.io/job-name\": \"fm\","
                   " \"kadet.io/role\": \"sidecar\"}}}", 0, &je);
    assert_int_equal(rc_pod_from_json(j, "fm", &p), 0);
    json_decref(j);
    assert_int_equal(rc_phase_parse("Suspended"), RC_SUSPENDED);
    assert_int_equal(rc_phase_parse("Bogus"), -1);
    assert_string_equal(rc_phase_name(RC_FAILED), "Failed");
}

/* A pod template beyond the restricted profile: the policy's refusal is the spec's
 * invalidity, so the plan reports Valid=False naming the field and creates nothing; an
 * administrator's --allow-privileged-pods makes the same job start. */
static void test_pod_template_policy_makes_the_spec_invalid(void **state)
{
    (void)state;
    json_error_t je;
    json_t *job = json_loads(
        "{\"apiVersion\": \"kadet.io/v1alpha1\", \"kind\": \"AgentJob\","
        " \"metadata\": {\"name\": \"p\", \"namespace\": \"ns\", \"uid\": \"u\"},"
        " \"spec\": {\"agents\": {\"min\": 1, \"max\": 2},"
        "  \"template\": {\"spec\": {\"hostNetwork\": true, \"containers\": [{\"name\": \"a\"}]}},"
        "  \"training\": {\"epochs\": 1}}}",
        0, &je);
    assert_non_null(job);
    kd_agentjob spec;
    char err[512] = "";
    assert_int_equal(kd_agentjob_decode(job, &spec, err, sizeof err), KD_OK);
    for (int admin = 0; admin < 2; admin++) {
        podspec_options o = {.image = "x", .allow_privileged = admin};
        rc_input in = base();
        in.valid = podspec_check_template(&spec, &o, err, sizeof err) == KD_OK;
        in.invalid_msg = err;
        rc_plan p;
        assert_int_equal(rc_plan_compute(&in, &p), KD_OK);
        if (!admin) {
            assert_false(p.act);
            assert_int_equal(cond(&p, "Valid")->status, 0);
            assert_non_null(strstr(cond(&p, "Valid")->message, "spec.template.spec.hostNetwork"));
            assert_string_equal(p.event_reason, "InvalidSpec");
            assert_false(p.create_coordinator);
            assert_false(p.create_service);
            assert_int_equal(p.n_create, 0);
        } else {
            assert_int_equal(cond(&p, "Valid")->status, 1);
            assert_true(p.create_coordinator);
        }
        rc_plan_free(&p);
    }
    kd_agentjob_free(&spec);
    json_decref(job);
}

static void test_checkpoint_failing_condition(void **state)
{
    (void)state;
    rc_condition c;
    int warn = 1;
    /* Metrics that say nothing (no checkpoints, or an older coordinator): no condition. */
    assert_int_equal(rc_plan_checkpoint(RC_CKPT_UNKNOWN, NULL, 0, &c, &warn), 0);
    assert_false(warn);
    assert_int_equal(rc_plan_checkpoint(RC_CKPT_NONE, NULL, 1, &c, &warn), 0);
    /* Failing: True with the coordinator's error, one Warning on the transition only. */
    const char *e = "checkpoint: mkdir /checkpoints/fm: No such file or directory";
    assert_int_equal(rc_plan_checkpoint(RC_CKPT_FAILING, e, 0, &c, &warn), 1);
    assert_string_equal(c.type, "CheckpointFailing");
    assert_int_equal(c.status, 1);
    assert_string_equal(c.reason, "CheckpointWriteFailed");
    assert_non_null(strstr(c.message, e));
    assert_non_null(strstr(c.message, "epoch 0"));
    assert_true(warn);
    assert_int_equal(rc_plan_checkpoint(RC_CKPT_FAILING, e, 1, &c, &warn), 1);
    assert_false(warn);
    /* Written again: False. */
    assert_int_equal(rc_plan_checkpoint(RC_CKPT_OK, NULL, 1, &c, &warn), 1);
    assert_int_equal(c.status, 0);
    assert_string_equal(c.message, "checkpoints are written again");
    assert_false(warn);
    assert_int_equal(rc_ckpt_parse("failing"), RC_CKPT_FAILING);
    assert_int_equal(rc_ckpt_parse("ok"), RC_CKPT_OK);
    assert_int_equal(rc_ckpt_parse("none"), RC_CKPT_NONE);
    assert_int_equal(rc_ckpt_parse("FAILING"), RC_CKPT_UNKNOWN);
    assert_int_equal(rc_ckpt_parse(NULL), RC_CKPT_UNKNOWN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_job_creates_service_coordinator_and_min_workers),
        cmocka_unit_test(test_desired_count_pin_then_scheduler_then_status_then_min),
        cmocka_unit_test(test_scheduler_zero_waits_for_capacity),
        cmocka_unit_test(test_new_job_waits_for_the_first_decision),
        cmocka_unit_test(test_scale_up_numbers_after_the_highest_index_ever_seen),
        cmocka_unit_test(test_scale_down_deletes_the_newest_workers),
        cmocka_unit_test(test_failed_worker_is_counted_once_kept_and_replaced),
        cmocka_unit_test(test_failed_coordinator_stays_through_its_backoff),
        cmocka_unit_test(test_failures_past_backoff_limit_fail_the_job_and_clean_up),
        cmocka_unit_test(test_coordinator_exit_zero_succeeds_with_each_clean_policy),
        cmocka_unit_test(test_worker_done_means_no_replacements),
        cmocka_unit_test(test_active_deadline),
        cmocka_unit_test(test_ttl_after_finished_deletes_the_job),
        cmocka_unit_test(test_invalid_spec_reports_without_acting),
        cmocka_unit_test(test_suspend_deletes_workers_then_coordinator_and_resume_restarts),
        cmocka_unit_test(test_pod_decoding),
        cmocka_unit_test(test_pod_template_policy_makes_the_spec_invalid),
        cmocka_unit_test(test_checkpoint_failing_condition),
        cmocka_unit_test(test_backoff_doubles_and_is_capped),
        cmocka_unit_test(test_failed_condition_quotes_the_last_failure),
        cmocka_unit_test(test_termination_message_keeps_its_last_line),
        cmocka_unit_test(test_valid_condition_names_unknown_fields),
        cmocka_unit_test(test_pods_on_a_lost_node_are_replaced_without_counting),
        cmocka_unit_test(test_node_lost_reads_the_ready_condition),
        cmocka_unit_test(test_policy_honored_condition),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
