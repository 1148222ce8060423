#!/usr/bin/env python3
"""AgentJob reconciler against the Kubernetes API emulator with simulated pods (the fake
kubelet runs no processes): an invalid spec becomes Valid=False with a readable message
and no retry loop; a job gets its coordinator Service and Pod and its worker pods, all
owned by the job (controller reference) and labelled; `kubectl scale` pins the agent
count; an operator killed with SIGKILL mid-job and restarted creates no duplicate pod;
deleting the job collects everything (garbage collection); suspend deletes the pods and
resume brings them back; a job whose coordinator exits 0 is Succeeded and deleted after
ttlSecondsAfterFinished; a worker that keeps failing ends the job Failed with
BackoffLimitExceeded after backoffLimit failures."""

import signal
import time

import reconcile_harness as h
from reconcile_harness import check, wait_for


def owned_by(obj, job):
    refs = obj["metadata"].get("ownerReferences", [])
    return any(r.get("kind") == "AgentJob" and r.get("name") == job["metadata"]["name"]
               and r.get("uid") == job["metadata"]["uid"] and r.get("controller")
               for r in refs)


def test_invalid_spec(c, op):
    bad = h.sample_job("bad", agents=(1, 2), replicas=5)
    c.apply(bad)
    cond = wait_for(lambda: c.condition("bad", "Valid"), 15, "Valid condition on bad")
    check(cond["status"] == "False" and cond["reason"] == "InvalidSpec",
          "Valid condition: %r" % cond)
    check("spec.replicas: 5 is outside spec.agents [1, 2]" in cond["message"],
          "unreadable message: %r" % cond["message"])
    check(c.job("bad")["status"]["phase"] == "Failed", "invalid job not Failed")
    check(not c.pods("bad"), "pods created for an invalid spec")
    wait_for(lambda: any(e["reason"] == "InvalidSpec" for e in c.events("bad")), 10,
             "InvalidSpec event")
    before = op.metric("kadet_reconciles_total")
    time.sleep(2.0)
    after = op.metric("kadet_reconciles_total")
    check(after - before <= 2, "invalid spec reconciled %d times in 2 s (hot loop)"
          % (after - before))
    # Fixing the spec starts the job.
    c.kubectl("patch", "aj", "bad", "--type", "merge", "-p", '{"spec": {"replicas": 2}}')
    wait_for(lambda: len(c.live_pods("bad", "worker")) == 2, 15, "fixed job's workers")
    check(c.condition("bad", "Valid")["status"] == "True", "Valid stays False after the fix")
    c.kubectl("delete", "aj", "bad", "--wait=false")


def test_create_scale_restart_delete(c, op):
    c.apply(h.sample_job("fm", agents=(1, 4), replicas=2))
    wait_for(lambda: len(c.live_pods("fm", "worker")) == 2, 15, "2 workers")
    job = c.job("fm")
    svc = c.get_json("service", "fm-coordinator")
    check(svc is not None and owned_by(svc, job), "coordinator Service missing or not owned")
    pods = c.live_pods("fm")
    names = sorted(p["metadata"]["name"] for p in pods)
    check(names == ["fm-coordinator", "fm-worker-0", "fm-worker-1"], "pods: %r" % names)
    for p in pods:
        check(owned_by(p, job), "%s not owned by the job" % p["metadata"]["name"])
        labels = p["metadata"]["labels"]
        check(labels.get("kadet.io/job-name") == "fm", "job label on %r" % labels)
        check(p["spec"]["restartPolicy"] == "Never", "restartPolicy")
        env = {e["name"]: e for e in p["spec"]["containers"][0]["env"]}
        if labels["kadet.io/role"] == "worker":
            check(env["KADET_COORDINATOR"]["value"] == "tcp://fm-coordinator:7070",
                  "KADET_COORDINATOR %r" % env["KADET_COORDINATOR"])
    st = wait_for(lambda: (c.job("fm").get("status") or {}).get("phase") == "Running"
                  and c.job("fm")["status"], 15, "Running")
    check(st["selector"] == "kadet.io/job-name=fm,kadet.io/role=worker", "selector")
    check(st["agents"] == {"desired": 2, "ready": 2}, "agents %r" % st["agents"])
    check(st["observedGeneration"] == job["metadata"]["generation"], "observedGeneration")
    check(st.get("startTime"), "startTime")

    # kubectl scale pins the count (scale subresource -> spec.replicas).
    c.kubectl("scale", "aj", "fm", "--replicas=3")
    wait_for(lambda: len(c.live_pods("fm", "worker")) == 3, 15, "3 workers after scale")
    ls = wait_for(lambda: c.job("fm")["status"].get("lastScheduling", {}).get("to") == 3
                  and c.job("fm")["status"]["lastScheduling"], 10, "lastScheduling to 3")
    check(ls["from"] == 2 and ls["policy"] == "pinned", "lastScheduling %r" % ls)
    wait_for(lambda: any(e["reason"] == "Scaled" and "from 2 to 3" in e["message"]
                         for e in c.events("fm")), 10, "Scaled event")
    c.kubectl("scale", "aj", "fm", "--replicas=1")
    wait_for(lambda: sorted(p["metadata"]["name"] for p in c.live_pods("fm", "worker"))
             == ["fm-worker-0"], 20, "scale down keeps the oldest worker")

    # SIGKILL mid-job, restart: same pods, no duplicates.
    before = sorted(p["metadata"]["uid"] for p in c.live_pods("fm"))
    op.stop(signal.SIGKILL)
    op2 = c.operator("op-1", extra=["--scheduler-interval", "1s"])
    op2.wait_ready()
    time.sleep(3.0)
    after = sorted(p["metadata"]["uid"] for p in c.live_pods("fm"))
    check(before == after, "pods changed across a restart: %r -> %r" % (before, after))
    check(len(c.pods("fm")) == 2, "duplicate pods: %r" % [p["metadata"]["name"]
                                                          for p in c.pods("fm")])
    c.kubectl("scale", "aj", "fm", "--replicas=2")
    wait_for(lambda: len(c.live_pods("fm", "worker")) == 2, 15, "restarted operator acts")
    names = sorted(p["metadata"]["name"] for p in c.live_pods("fm", "worker"))
    check(names[0] == "fm-worker-0" and len(set(names)) == 2, "workers: %r" % names)

    # Deletion collects everything.
    c.kubectl("delete", "aj", "fm", "--wait=false")
    wait_for(lambda: not c.pods("fm") and c.get_json("service", "fm-coordinator") is None,
             20, "pods and Service collected")
    return op2


def test_suspend_resume(c):
    c.apply(h.sample_job("sus", agents=(1, 4), replicas=2))
    wait_for(lambda: len(c.live_pods("sus", "worker")) == 2, 15, "sus workers")
    c.kubectl("patch", "aj", "sus", "--type", "merge", "-p",
              '{"spec": {"runPolicy": {"suspend": true}}}')
    wait_for(lambda: not c.live_pods("sus"), 20, "suspended job's pods deleted")
    st = wait_for(lambda: (c.job("sus").get("status") or {}).get("phase") == "Suspended"
                  and c.job("sus")["status"], 10, "phase Suspended")
    sus = [x for x in st["conditions"] if x["type"] == "Suspended"][0]
    check(sus["status"] == "True", "Suspended condition %r" % sus)
    c.kubectl("patch", "aj", "sus", "--type", "merge", "-p",
              '{"spec": {"runPolicy": {"suspend": false}}}')
    wait_for(lambda: len(c.live_pods("sus", "worker")) == 2, 15, "resumed workers")
    reasons = [e["reason"] for e in c.events("sus")]
    check("Suspended" in reasons and "Resumed" in reasons, "events %r" % reasons)
    c.kubectl("delete", "aj", "sus", "--wait=false")


def succeeded_status(job):
    """The job's status once its phase is Succeeded, else None."""
    st = (job or {}).get("status") or {}
    return st if st.get("phase") == "Succeeded" else None


def test_success_and_ttl(c):
    ann = {"emulator.kadet.io/run-seconds": "1", "emulator.kadet.io/exit-code": "0"}
    c.apply(h.sample_job("done", agents=(1, 1), annotations=ann,
                         run_policy={"ttlSecondsAfterFinished": 2, "cleanPodPolicy": "Running"}))
    # ttlSecondsAfterFinished deletes the job 2 s after it ends: read it once per poll.
    st = wait_for(lambda: succeeded_status(c.job("done")), 20, "done Succeeded")
    check(st.get("completionTime"), "completionTime")
    wait_for(lambda: c.job("done") is None, 15, "job deleted by ttlSecondsAfterFinished")
    wait_for(lambda: not c.pods("done"), 15, "finished job's pods collected")


def test_backoff(c):
    ann = {"emulator.kadet.io/run-seconds": "0.5", "emulator.kadet.io/exit-code": "3"}
    c.apply(h.sample_job("crash", agents=(1, 1), annotations=ann,
                         run_policy={"backoffLimit": 2, "cleanPodPolicy": "All"}))
    st = wait_for(lambda: (c.job("crash").get("status") or {}).get("phase") == "Failed"
                  and c.job("crash")["status"], 120, "crash job Failed")
    failed = [x for x in st["conditions"] if x["type"] == "Failed"][0]
    check(failed["reason"] == "BackoffLimitExceeded", "Failed reason %r" % failed)
    # The annotations make the coordinator fail as well: two pods can fail in one sync.
    check(3 <= st["failures"] <= 4, "failures %r (backoffLimit 2)" % st["failures"])
    check(st.get("completionTime"), "completionTime")
    evs = c.events("crash")
    check(sum(1 for e in evs if e["reason"] == "Failed" and e["type"] == "Warning") >= 3,
          "Failed events: %r" % [(e["reason"], e["message"]) for e in evs])
    wait_for(lambda: not c.live_pods("crash"), 15, "cleanPodPolicy All")


def main():
    with h.Cluster(nodes=2, cpu="8") as c:
        op = c.operator(extra=["--scheduler-interval", "1s"])
        op.wait_ready()
        test_invalid_spec(c, op)
        op = test_create_scale_restart_delete(c, op)
        test_suspend_resume(c)
        test_success_and_ttl(c)
        test_backoff(c)
        log = op.log()
        check(" error " not in log, "errors in the operator log:\n" + log)
    print("ok")


if __name__ == "__main__":
    main()
