#!/usr/bin/env python3
"""Co-adaptation in the cluster (issue 16 part 5) against the API emulator with real kadet
processes (the fake kubelet runs the pods), the operator's policy pollux:

1. A job that must wait (one agent needs 3 CPUs, the only node has 2.2) gets no pod at
   all: a watch on the pods sees none of it over several scheduling rounds (before the
   fix, a worker pod was created and deleted 20 ms later), its Running condition says
   WaitingForCapacity, and status.agents.desired is 0.
2. A job with an adaptive batch (training.batchSize 32, adaptive.maxBatchSize 256): its
   coordinator's metrics carry the noise scale and the throughput per configuration
   (status.progress.noiseScale), the scheduler chooses a batch with the agent count
   (status.agents.desiredBatchSize), the operator sends it to the coordinator over the
   control plane (CURVE, the operator's key; the coordinator logs "decided by the
   operator's scheduler"), and the running world takes it (status.progress.batchSize
   equals the decision); the job finishes with its accuracy."""

import json
import os
import subprocess
import time

import reconcile_harness as h
from operator_e2e import job_from_sample, status
from reconcile_harness import check, wait_for

EPOCHS = int(os.environ.get("KADET_COADAPT_EPOCHS", "8"))


def main():
    t0 = time.time()
    with h.Cluster(nodes=1, cpu="2200m", memory="8Gi", run_pods=True) as c:
        op = c.operator(extra=["--scheduler-interval", "1s", "--scheduler-policy", "pollux"])
        op.wait_ready()
        # Every pod the API server ever shows, from a watch started before the job.
        seen_path = os.path.join(c.dir, "pods-seen.txt")
        watch = subprocess.Popen([c.kubectl_bin, "--kubeconfig", c.kubeconfig, "get", "pods",
                                  "-w", "-o", "name"], stdout=open(seen_path, "w"),
                                 stderr=subprocess.DEVNULL)
        try:
            big = job_from_sample("big", c, (1, 1), 1)
            big["spec"]["template"]["spec"]["containers"][0]["resources"] = {
                "requests": {"cpu": "3", "memory": "256Mi"}}
            c.kubectl("apply", "-f", "-", stdin=json.dumps(big))
            cond = wait_for(lambda: c.condition("big", "Running") and
                            c.condition("big", "Running").get("reason") == "WaitingForCapacity"
                            and c.condition("big", "Running"), 30, "big waits for capacity")
            print("big: %s after %.1f s" % (cond.get("message"), time.time() - t0))
            time.sleep(5)  # five scheduling rounds
            check(status(c, "big").get("agents", {}).get("desired") == 0,
                  "big status.agents %r" % status(c, "big").get("agents"))
            check(not c.pods("big"), "big has pods: %r" % c.pods("big"))
            c.kubectl("delete", "aj", "big", "--wait=false")

            job = job_from_sample("ca", c, (1, 2), EPOCHS)
            job["spec"]["training"]["batchSize"] = 32
            job["spec"]["training"]["adaptive"] = {"learningRate": True, "batchSize": True,
                                                   "maxBatchSize": 256}
            c.kubectl("apply", "-f", "-", stdin=json.dumps(job))
            wait_for(lambda: status(c, "ca").get("phase") == "Running", 60, "ca Running")
            st = wait_for(lambda: status(c, "ca").get("progress", {}).get("noiseScale")
                          and status(c, "ca"), 120, "ca's noise scale in status.progress")
            print("ca: noise scale %.1f after %.1f s" % (st["progress"]["noiseScale"],
                                                        time.time() - t0))
            st = wait_for(lambda: status(c, "ca").get("agents", {}).get("desiredBatchSize")
                          and status(c, "ca"), 60, "a batch chosen by pollux")
            want = st["agents"]["desiredBatchSize"]
            print("ca: pollux chose %d agents at batch %d after %.1f s"
                  % (st["agents"]["desired"], want, time.time() - t0))
            check(32 <= want <= 256, "desiredBatchSize %d outside [32, 256]" % want)
            # Until the end: whenever the decision and the running batch differ for a
            # while, the operator must have sent the decision and the coordinator taken
            # it (its log). They may also agree from the start (the coordinator's own
            # adaptive batch reached the same value first): then nothing is sent.
            coord = [p["metadata"]["name"] for p in c.live_pods("ca", "coordinator")]
            check(coord, "ca has no coordinator pod")
            apart, took, deadline = 0, [], time.time() + 300
            while status(c, "ca").get("phase") not in ("Succeeded", "Failed"):
                check(time.time() < deadline, "ca did not finish in 300 s")
                st = status(c, "ca")
                d, r = (st.get("agents", {}).get("desiredBatchSize"),
                        st.get("progress", {}).get("batchSize"))
                apart = apart + 1 if d and r and d != r else 0
                if apart >= 8 and not took:
                    logs = c.kubectl("logs", coord[0], check_rc=False).stdout
                    took = [x.strip() for x in logs.splitlines()
                            if "decided by the operator's scheduler" in x]
                    check(took or apart < 20,
                          "decision %s, running %s for 20 s, and the coordinator took no "
                          "batch from the operator" % (d, r))
                time.sleep(1)
            logs = c.kubectl("logs", coord[0], check_rc=False).stdout
            took = [x.strip() for x in logs.splitlines() if "operator's scheduler" in x]
            print("ca coordinator:\n  " + "\n  ".join(took))
            check(not any("refused batch" in x for x in logs.splitlines()),
                  "the coordinator refused a batch of the operator")
            st = wait_for(lambda: status(c, "ca").get("phase") in ("Succeeded", "Failed")
                          and status(c, "ca"), 300, "ca finished")
            check(st["phase"] == "Succeeded", "ca ended %s: %r" % (st["phase"], st))
            acc = st.get("progress", {}).get("accuracy", 0)
            final = st.get("progress", {}).get("batchSize")
            print("ca Succeeded: accuracy %.4f batch %s (decided %s) after %.1f s"
                  % (acc, final, st["agents"].get("desiredBatchSize"), time.time() - t0))
            check(acc >= 0.80, "ca test accuracy %.4f < 0.80" % acc)
            # (The last decision may come after the last epoch: the coordinator starts no
            # new world then, so the final batch may be an earlier decision's.)
            check(32 <= final <= 256, "ca's final batch %r outside its bounds" % final)
        finally:
            watch.terminate()
            watch.wait(10)
        seen = open(seen_path).read().split()
        print("pods seen: %s" % " ".join(sorted(set(seen))))
        check(any(s.startswith("pod/ca-") for s in seen), "the pod watch saw nothing: %r" % seen)
        check(not any(s.startswith("pod/big-") for s in seen),
              "a pod of the waiting job was created: %r" % [s for s in seen if "big-" in s])
    print("ok: co-adaptation in %.1f s" % (time.time() - t0))


if __name__ == "__main__":
    main()
