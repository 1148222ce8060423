#!/usr/bin/env python3
"""Two kadet-operator replicas with --leader-elect against the emulator: only the leader
reconciles (creates pods, writes status); the standby, whose caches are warm, takes over
within the lease duration after the leader is killed and acts at once (kubectl scale
after the failover is carried out by it), and no pod is ever duplicated. Also: the rl
scheduler's table is written to the ConfigMap kadet-scheduler-state on shutdown."""

import json
import signal
import time

import reconcile_harness as h
from reconcile_harness import check, wait_for

LEASE = ["--leader-elect", "--lease-duration", "3s", "--scheduler-interval", "1s"]


def leader_of(ops):
    lead = [o for o in ops if o.proc.poll() is None and o.metric("kadet_leader") == 1]
    return lead[0] if len(lead) == 1 else None


def main():
    with h.Cluster(nodes=2, cpu="8") as c:
        a = c.operator("op-a", extra=LEASE)
        b = c.operator("op-b", extra=LEASE)
        a.wait_ready()
        b.wait_ready()
        leader = wait_for(lambda: leader_of([a, b]), 15, "one leader")
        standby = b if leader is a else a
        c.apply(h.sample_job("lj", agents=(1, 4), replicas=2))
        wait_for(lambda: len(c.live_pods("lj", "worker")) == 2, 15, "2 workers")
        time.sleep(1.0)
        check("created job=default/lj" in leader.log(), "the leader did not create the pods")
        check("created job=" not in standby.log(), "the standby acted:\n" + standby.log())
        check(standby.metric("kadet_reconciles_total") == 0,
              "the standby reconciled %g times" % standby.metric("kadet_reconciles_total"))

        t_kill = time.time()
        leader.stop(signal.SIGKILL)
        wait_for(lambda: standby.metric("kadet_leader") == 1, 10, "failover")
        took = time.time() - t_kill
        print("failover after SIGKILL: %.2f s (lease 3 s)" % took)
        check(took < 6.0, "failover took %.1f s" % took)
        c.kubectl("scale", "aj", "lj", "--replicas=3")
        wait_for(lambda: len(c.live_pods("lj", "worker")) == 3, 15, "the new leader scales")
        time.sleep(1.0)
        names = [p["metadata"]["name"] for p in c.pods("lj")]
        check(len(names) == len(set(names)) == 4, "pods: %r" % names)
        check("created job=default/lj" in standby.log(), "the new leader did not act")

        # rl: the learned table lands in the state ConfigMap when the leader stops.
        c.kubectl("delete", "configmap", "kadet-scheduler-state", "--ignore-not-found")
        rl = c.operator("op-rl", extra=["--scheduler-interval", "1s", "--scheduler-policy",
                                        "rl", "--lease-name", "other-lease"])
        rl.wait_ready()
        wait_for(lambda: "scheduler state loaded" in rl.log(), 10, "rl table loaded")
        rl.stop(signal.SIGTERM)
        cm = c.get_json("configmap", "kadet-scheduler-state")
        check(cm is not None and "qtable.json" in cm.get("data", {}),
              "no qtable.json in the state ConfigMap")
        table = json.loads(cm["data"]["qtable.json"])
        check(table.get("format") == "kadet-qtable", "table format %r" % table.get("format"))
    print("ok")


if __name__ == "__main__":
    main()
