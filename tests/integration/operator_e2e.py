#!/usr/bin/env python3
"""End to end against the Kubernetes API emulator with REAL kadet processes: the fake
kubelet runs each pod's `kadet coordinator` / `kadet worker` from the build's bin/ as
local processes (each on its own loopback address, Service names through KADET_HOSTS).

Steps (the same as hack/e2e-kind.sh): kubectl apply a short copy of the sample (the
sample's model and optimizer, fewer epochs, checkpoints in a temp dir); the job reaches
Running; the scheduler scales it up while the fake nodes have room (a Scaled event);
a second job arrives and the first is scaled down to make room (a Scaled event "to a
smaller count"); both reach Succeeded with test accuracy >= 0.85 in status.progress, the
second with a checkpoint directory that cannot be created (CheckpointFailing True and one
Warning event; the first's condition is False); then the CNN sample
(manifests/samples/fashion-mnist-cnn.yaml, declared layers) trains one epoch to Succeeded
with test accuracy >= 0.80; kubectl delete; every pod and Service is collected."""

import json
import os
import time

import reconcile_harness as h
from reconcile_harness import check, wait_for

TOP = h.TOP
EPOCHS = int(os.environ.get("KADET_E2E_EPOCHS", "3"))


def job_from_sample(name, cluster, agents, epochs, policy="greedy", sample="fashion-mnist.yaml"):
    conv = os.path.join(h.BIN, "kd-yaml2json")
    import subprocess
    out = subprocess.run([conv, os.path.join(TOP, "manifests", "samples", sample)],
                         capture_output=True, text=True, timeout=30)
    check(out.returncode == 0, "kd-yaml2json: " + out.stderr)
    j = json.loads(out.stdout)[0]
    j["metadata"]["name"] = name
    j["spec"]["agents"] = {"min": agents[0], "max": agents[1]}
    j["spec"]["training"]["epochs"] = epochs
    j["spec"]["checkpoint"] = {"path": os.path.join(cluster.dir, "ckpt-" + name),
                               "intervalSeconds": 30}
    # Short runs: no deadline/TTL surprises while the test looks at the finished job.
    j["spec"]["runPolicy"] = {"backoffLimit": 3, "cleanPodPolicy": "Running"}
    j["spec"]["scheduling"] = {"policy": policy, "weights": {"time": 1.0, "cost": 0.1}}
    return j


def status(c, name):
    return (c.job(name) or {}).get("status") or {}


def scaled(c, name):
    out = []
    for e in c.events(name):
        if e["reason"] == "Scaled":
            parts = e["message"].split()
            out.append((int(parts[2]), int(parts[4])))
    return out


def main():
    t0 = time.time()
    # 2 nodes x 2.5 CPU: four 1-CPU agents plus the coordinators (100m each).
    with h.Cluster(nodes=2, cpu="2500m", memory="8Gi", run_pods=True) as c:
        op = c.operator(extra=["--scheduler-interval", "1s", "--scheduler-policy", "greedy"])
        op.wait_ready()
        c.kubectl("apply", "-f", "-", stdin=json.dumps(job_from_sample("fm-a", c, (1, 4),
                                                                        EPOCHS)))
        wait_for(lambda: status(c, "fm-a").get("phase") == "Running", 30, "fm-a Running")
        wait_for(lambda: any(t > f and t >= 3 for f, t in scaled(c, "fm-a")), 30,
                 "fm-a scaled up to the free room")
        wait_for(lambda: status(c, "fm-a").get("agents", {}).get("ready", 0) >= 3, 30,
                 "fm-a agents ready")
        print("fm-a scaled up: %r after %.1f s" % (scaled(c, "fm-a"), time.time() - t0))
        check(status(c, "fm-a").get("phase") == "Running",
              "fm-a finished before the second job arrived; raise KADET_E2E_EPOCHS")
        downs = sum(1 for f, t in scaled(c, "fm-a") if t < f)
        # fm-b asks for another policy than the cluster's: it is scheduled by greedy like
        # every job, and its Valid condition says so.
        # fm-b's checkpoint directory cannot be created (its parent is a file): it trains
        # and succeeds, with CheckpointFailing True and one Warning event.
        blocker = os.path.join(c.dir, "not-a-directory")
        open(blocker, "w").close()
        fm_b = job_from_sample("fm-b", c, (2, 4), EPOCHS, "rl")
        fm_b["spec"]["checkpoint"]["path"] = os.path.join(blocker, "ckpt-fm-b")
        c.kubectl("apply", "-f", "-", stdin=json.dumps(fm_b))
        wait_for(lambda: sum(1 for f, t in scaled(c, "fm-a") if t < f) > downs
                 or status(c, "fm-a").get("phase") == "Succeeded", 40,
                 "fm-a scaled down for fm-b")
        check(sum(1 for f, t in scaled(c, "fm-a") if t < f) > downs,
              "fm-a finished before it was scaled down: %r" % scaled(c, "fm-a"))
        print("fm-a scaled down: %r after %.1f s" % (scaled(c, "fm-a"), time.time() - t0))
        wait_for(lambda: status(c, "fm-b").get("agents", {}).get("ready", 0) >= 2, 30,
                 "fm-b agents ready")
        for name in ("fm-a", "fm-b"):
            st = wait_for(lambda: status(c, name).get("phase") in ("Succeeded", "Failed")
                          and status(c, name), 120, name + " finished")
            check(st["phase"] == "Succeeded", "%s ended %s: %r" % (name, st["phase"], st))
            acc = st.get("progress", {}).get("accuracy", 0)
            print("%s Succeeded: accuracy %.4f epoch %s after %.1f s"
                  % (name, acc, st["progress"].get("epoch"), time.time() - t0))
            check(acc >= 0.85, "%s test accuracy %.4f < 0.85" % (name, acc))
            valid = [x for x in st.get("conditions", []) if x["type"] == "Valid"]
            msg = valid[0]["message"] if valid else ""
            want = ("the cluster's scheduling policy greedy decides for every job "
                    "(spec.scheduling.policy rl is used by kadet run)")
            check((want in msg) == (name == "fm-b"),
                  "%s Valid condition: %r" % (name, msg))
            ph = [x for x in st.get("conditions", []) if x["type"] == "PolicyHonored"]
            check(ph and ph[0]["status"] == ("False" if name == "fm-b" else "True")
                  and ph[0]["reason"] == "ClusterPolicy",
                  "%s PolicyHonored condition %r" % (name, ph))
            check(st["progress"].get("batchSize") == 64,
                  "%s status.progress.batchSize %r is the sample's per-agent batch"
                  % (name, st["progress"].get("batchSize")))
            check(st.get("completionTime"), name + " completionTime")
            ck = [x for x in st.get("conditions", []) if x["type"] == "CheckpointFailing"]
            check(ck and ck[0]["status"] == ("True" if name == "fm-b" else "False"),
                  "%s CheckpointFailing condition %r" % (name, ck))
            warned = [e for e in c.events(name) if e["reason"] == "CheckpointFailing"]
            if name == "fm-b":
                check(ck[0]["reason"] == "CheckpointWriteFailed" and
                      "Not a directory" in ck[0]["message"], "fm-b condition %r" % ck[0])
                check(len(warned) == 1 and warned[0]["type"] == "Warning",
                      "fm-b CheckpointFailing events %r" % warned)
            else:
                check(not warned, "%s: CheckpointFailing event %r" % (name, warned))
            check(any(e["reason"] == "Succeeded" for e in c.events(name)),
                  name + " Succeeded event")
        # The CNN sample, one epoch (compute-bound: about 16x the MLP's work per sample).
        c.kubectl("apply", "-f", "-", stdin=json.dumps(job_from_sample(
            "fm-cnn", c, (1, 2), 1, sample="fashion-mnist-cnn.yaml")))
        st = wait_for(lambda: status(c, "fm-cnn").get("phase") in ("Succeeded", "Failed")
                      and status(c, "fm-cnn"), 240, "fm-cnn finished")
        check(st["phase"] == "Succeeded", "fm-cnn ended %s: %r" % (st["phase"], st))
        acc = st.get("progress", {}).get("accuracy", 0)
        print("fm-cnn Succeeded: accuracy %.4f after %.1f s" % (acc, time.time() - t0))
        check(acc >= 0.80, "fm-cnn test accuracy %.4f < 0.80 after one epoch" % acc)
        c.kubectl("delete", "aj", "fm-a", "fm-b", "fm-cnn", "--wait=false")
        for name in ("fm-a", "fm-b", "fm-cnn"):
            wait_for(lambda: not c.pods(name)
                     and c.get_json("service", name + "-coordinator") is None, 30,
                     name + " pods and Service collected")
        left = c.get_json("pods", "-A")["items"]
        check(not left, "pods left: %r" % [p["metadata"]["name"] for p in left])
        svcs = [s["metadata"]["name"] for s in c.get_json("services", "-A")["items"]
                if s["metadata"].get("labels", {}).get("kadet.io/job-name")]
        check(not svcs, "services left: %r" % svcs)
    print("ok: end to end in %.1f s" % (time.time() - t0))


if __name__ == "__main__":
    main()
