#!/usr/bin/env python3
"""Node changes end to end (issue 16 part 7) against the API emulator with REAL kadet
processes (as operator_e2e): a job trains on two small fake nodes; a third node is added
and the scheduler grows the job onto it; then a node that holds workers but not the
coordinator is lost as a drain-gone-wrong loses it (cordoned, then NotReady: its processes
die and its pod objects stay "Running", which only the operator's reaction can fix), and
is finally deleted. The operator force-deletes the lost pods and replaces them elsewhere
within a scheduling interval; the job ends Succeeded with test accuracy >= 0.85 and no
failure counted (status.failures 0, backoffLimit 0)."""

import json
import os
import time

import reconcile_harness as h
from reconcile_harness import check, wait_for
from operator_e2e import job_from_sample, status

# Long enough that a quiet machine (4 agents, ~0.5 s an epoch) is still training when the
# node is added and when the other is lost; a loaded one takes minutes.
EPOCHS = int(os.environ.get("KADET_E2E_EPOCHS", "20"))


def workers_by_node(c, name):
    out = {}
    for p in c.live_pods(name, "worker"):
        node = p.get("spec", {}).get("nodeName")
        if node:
            out.setdefault(node, []).append(p["metadata"]["name"])
    return out


def main():
    t0 = time.time()
    # 2 nodes x 1.5 CPU: one 1-CPU agent each (plus the coordinator's 100m on one).
    with h.Cluster(nodes=2, cpu="1500m", memory="8Gi", run_pods=True) as c:
        op = c.operator(extra=["--scheduler-interval", "2s", "--scheduler-policy", "greedy"])
        op.wait_ready()
        job = job_from_sample("fm-n", c, (1, 4), EPOCHS)
        job["spec"]["runPolicy"]["backoffLimit"] = 0  # a counted loss would fail the job
        c.kubectl("apply", "-f", "-", stdin=json.dumps(job))
        wait_for(lambda: status(c, "fm-n").get("agents", {}).get("ready", 0) >= 2, 60,
                 "fm-n on both nodes")
        print("fm-n running on %r after %.1f s" % (workers_by_node(c, "fm-n"), time.time() - t0))

        # A node joins: the job grows onto it.
        c.apply({"apiVersion": "v1", "kind": "Node",
                 "metadata": {"name": "fake-node-2",
                              "labels": {"emulator.kadet.io/fake-node": "true",
                                         "kubernetes.io/hostname": "fake-node-2"}},
                 "status": {"allocatable": {"cpu": "2500m", "memory": "8Gi", "pods": "110"},
                            "capacity": {"cpu": "2500m", "memory": "8Gi", "pods": "110"}}})
        wait_for(lambda: len(workers_by_node(c, "fm-n").get("fake-node-2", [])) >= 2
                 or status(c, "fm-n").get("phase") == "Succeeded", 60,
                 "fm-n grown onto fake-node-2")
        check(status(c, "fm-n").get("phase") == "Running",
              "fm-n finished before it grew; raise KADET_E2E_EPOCHS")
        wait_for(lambda: status(c, "fm-n").get("agents", {}).get("ready", 0) >= 4, 60,
                 "fm-n 4 agents ready")
        print("fm-n grown: %r after %.1f s" % (workers_by_node(c, "fm-n"), time.time() - t0))

        # Lose a node with workers and without the coordinator.
        coord = c.live_pods("fm-n", "coordinator")
        check(len(coord) == 1, "one coordinator: %r" % coord)
        cnode = coord[0]["spec"]["nodeName"]
        victim = [n for n in ("fake-node-0", "fake-node-1") if n != cnode][0]
        lost = workers_by_node(c, "fm-n").get(victim, [])
        check(lost, "no worker on %s: %r" % (victim, workers_by_node(c, "fm-n")))
        c.kubectl("patch", "node", victim, "--type", "merge", "-p",
                  json.dumps({"spec": {"unschedulable": True}}))
        c.kubectl("annotate", "node", victim, "emulator.kadet.io/not-ready=true")
        t_lost = time.time()
        wait_for(lambda: not any(p["metadata"]["name"] in lost for p in c.pods("fm-n"))
                 or status(c, "fm-n").get("phase") == "Succeeded", 30,
                 "the pods on %s replaced" % victim)
        check(status(c, "fm-n").get("phase") == "Running",
              "fm-n finished before its node was lost; raise KADET_E2E_EPOCHS")
        print("%s lost: pods %r gone after %.1f s" % (victim, lost, time.time() - t_lost))
        check(any(e["reason"] == "NodeLost" for e in c.events("fm-n")), "a NodeLost event")
        wait_for(lambda: status(c, "fm-n").get("agents", {}).get("ready", 0) >= 1
                 and victim not in workers_by_node(c, "fm-n"), 30,
                 "fm-n training on the nodes left")
        c.kubectl("delete", "node", victim)

        st = wait_for(lambda: status(c, "fm-n").get("phase") in ("Succeeded", "Failed")
                      and status(c, "fm-n"), 600, "fm-n finished")
        check(st["phase"] == "Succeeded", "fm-n ended %s: %r" % (st["phase"], st))
        acc = st.get("progress", {}).get("accuracy", 0)
        print("fm-n Succeeded: accuracy %.4f epoch %s after %.1f s; workers were on %r"
              % (acc, st["progress"].get("epoch"), time.time() - t0, victim))
        check(acc >= 0.85, "fm-n test accuracy %.4f < 0.85" % acc)
        check(st.get("failures", 0) == 0, "failures counted: %r" % st.get("failures"))
        c.kubectl("delete", "aj", "fm-n", "--wait=false")
        wait_for(lambda: not c.pods("fm-n"), 60, "fm-n pods collected")
    print("ok: node changes in %.1f s" % (time.time() - t0))


if __name__ == "__main__":
    main()
