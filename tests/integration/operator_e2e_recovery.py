#!/usr/bin/env python3
"""Recovery end to end with REAL kadet processes in the emulator (companion of
operator_e2e.py): while a job trains,
1. the coordinator pod is deleted: the operator creates a new one (a new pod IP), it
   resumes from its checkpoint (the epoch does not go back to 1), the workers follow the
   Service name to it, and the job ends Succeeded with test accuracy >= 0.85;
2. the operator is killed with SIGKILL and restarted: the job goes on with the same
   pods (no duplicate, no restart) and ends Succeeded."""

import signal
import time

import operator_e2e as e2e
import reconcile_harness as h
from reconcile_harness import check, wait_for


def pod_uids(c, name):
    return sorted(p["metadata"]["uid"] for p in c.live_pods(name))


def main():
    t0 = time.time()
    with h.Cluster(nodes=2, cpu="2500m", memory="8Gi", run_pods=True) as c:
        op = c.operator(extra=["--scheduler-interval", "2s", "--scheduler-policy", "greedy"])
        op.wait_ready()
        # The deletion must come before the job ends (a finished job gets no new
        # coordinator), and the status shows epoch 2 up to a few seconds late while an
        # epoch takes under a second here: 8 epochs leave that margin. A deletion that
        # does land at the very end is fine: the successor finds the final checkpoint and
        # reports the result at once (dist_final_checkpoint).
        j = e2e.job_from_sample("rec", c, (2, 2), 8)
        j["spec"]["checkpoint"]["intervalSeconds"] = 2
        c.kubectl("apply", "-f", "-", stdin=__import__("json").dumps(j))
        wait_for(lambda: e2e.status(c, "rec").get("progress", {}).get("epoch", 0) >= 2, 90,
                 "epoch 2")
        ip0 = c.get_json("pod", "rec-coordinator")["status"]["podIP"]
        c.kubectl("delete", "pod", "rec-coordinator", "--wait=false")
        wait_for(lambda: (c.get_json("pod", "rec-coordinator") or {}).get("status", {})
                 .get("podIP") not in (None, ip0), 30, "a new coordinator pod")
        print("coordinator replaced after %.1f s" % (time.time() - t0))
        st = wait_for(lambda: e2e.status(c, "rec").get("phase") in ("Succeeded", "Failed")
                      and e2e.status(c, "rec"), 120, "rec finished")
        check(st["phase"] == "Succeeded", "rec ended %r" % st)
        check(st["progress"]["accuracy"] >= 0.85, "accuracy %r" % st["progress"])
        logs = c.kubectl("logs", "rec-coordinator").stdout
        check("resuming from checkpoint" in logs, "the new coordinator did not resume:\n"
              + logs[-2000:])
        print("rec Succeeded after the coordinator restart: accuracy %.4f (%.1f s)"
              % (st["progress"]["accuracy"], time.time() - t0))

        j = e2e.job_from_sample("kill", c, (2, 2), 4)
        c.kubectl("apply", "-f", "-", stdin=__import__("json").dumps(j))
        wait_for(lambda: e2e.status(c, "kill").get("phase") == "Running", 60, "kill Running")
        before = pod_uids(c, "kill")
        op.stop(signal.SIGKILL)
        op2 = c.operator("op-again", extra=["--scheduler-interval", "2s",
                                            "--scheduler-policy", "greedy"])
        op2.wait_ready()
        st = wait_for(lambda: e2e.status(c, "kill").get("phase") in ("Succeeded", "Failed")
                      and e2e.status(c, "kill"), 120, "kill finished")
        check(st["phase"] == "Succeeded", "kill ended %r" % st)
        names = [p["metadata"]["name"] for p in c.pods("kill")]
        check(len(names) == len(set(names)), "duplicate pods: %r" % names)
        created = [ln for ln in op2.log().splitlines() if "created job=default/kill" in ln]
        check(not created, "the restarted operator recreated pods: %r (before: %r)"
              % (created, before))
        print("kill Succeeded across an operator SIGKILL: accuracy %.4f (%.1f s)"
              % (st["progress"]["accuracy"], time.time() - t0))
    print("ok")


if __name__ == "__main__":
    main()
