#!/usr/bin/env python3
"""Leader election and readiness of kadet-operator against the Kubernetes API emulator:
both replicas become ready once their informers synced, leader or not, and count the
AgentJobs by phase; of two replicas exactly one leads (kadet_leader 1, Lease
holderIdentity = its identity); watches the emulator drops show in
kadet_watch_restarts_total; SIGTERM on the
leader releases the Lease and the standby takes over within the lease duration; a
leader killed with SIGKILL is replaced after the lease expires. Standard library only;
the Lease is read with kubectl."""

import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import types
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reconcile_harness as h  # noqa: E402

TOP, BIN, SKIP, fail, check = h.TOP, h.BIN, h.SKIP, h.fail, h.check
OPERATOR = os.path.join(BIN, "kadet-operator")
EMULATOR = os.path.join(TOP, "tests", "emulator", "kube_emulator.py")
LEASE_S = 3.0


class Operator(h.Operator):
    """A kadet-operator replica with leader election on a short lease."""

    def __init__(self, identity, kubeconfig, logdir):
        self.identity = identity
        super().__init__(types.SimpleNamespace(dir=logdir, kubeconfig=kubeconfig), identity,
                         ["--leader-elect", "--lease-duration", "%gs" % LEASE_S,
                          "--lease-name", "kadet-operator"])

    def leading(self):
        return "kadet_leader 1\n" in self.get("/metrics")[1]


def holder(kubectl):
    r = kubectl("get", "lease", "kadet-operator", "-n", "default", "-o", "json")
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)["spec"].get("holderIdentity", "")


def wait_single_leader(ops, limit):
    """The one operator that leads, once exactly one does; fails after limit seconds."""
    deadline = time.time() + limit
    while time.time() < deadline:
        leaders = [o for o in ops if o.leading()]
        if len(leaders) == 1:
            return leaders[0]
        check(len(leaders) < 2, "two replicas lead at once: %s" % [o.identity for o in leaders])
        time.sleep(0.05)
    fail("no leader within %.1f s; logs:\n%s" % (limit, "\n".join(o.log() for o in ops)))


def main():
    kubectl_bin = shutil.which("kubectl")
    if kubectl_bin is None or not os.path.exists(EMULATOR):
        print("SKIP: kubectl or the emulator missing")
        return SKIP
    check(os.access(OPERATOR, os.X_OK), "%s not built" % OPERATOR)
    state = tempfile.mkdtemp(prefix="kadet-leader-")
    emu = subprocess.Popen([sys.executable, EMULATOR, "--state-dir", state],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ops = []
    try:
        deadline = time.time() + 30
        while not os.path.exists(os.path.join(state, "ready")):
            check(emu.poll() is None and time.time() < deadline, "emulator did not start")
            time.sleep(0.1)
        kubeconfig = os.path.join(state, "kubeconfig")

        def kubectl(*args):
            return subprocess.run([kubectl_bin, "--kubeconfig", kubeconfig, *args],
                                  capture_output=True, text=True, timeout=30)

        for path in ("manifests/crd/kadet.io_agentjobs.yaml",
                     "manifests/samples/fashion-mnist.yaml"):
            r = kubectl("apply", "-f", os.path.join(TOP, path))
            check(r.returncode == 0, "kubectl apply %s: %s" % (path, r.stderr))
        ops = [Operator("replica-a", kubeconfig, state), Operator("replica-b", kubeconfig, state)]
        first = wait_single_leader(ops, 2 * LEASE_S)
        # Ready regardless of leadership, and the AgentJob cache is filled.
        for o in ops:
            deadline = time.time() + 20
            while o.get("/readyz")[0] != 200 and time.time() < deadline:
                time.sleep(0.1)
            status, body = o.get("/readyz")
            check(status == 200 and "[+]informers ok" in body, "%s /readyz %d %r"
                  % (o.identity, status, body))
            deadline = time.time() + 5
            while 'kadet_jobs{phase="Pending"} 1\n' not in o.get("/metrics")[1]:
                check(time.time() < deadline, "%s does not count the sample job as Pending"
                      % o.identity)
                time.sleep(0.1)
        check(holder(kubectl) == first.identity, "Lease holder %r, leader %s"
              % (holder(kubectl), first.identity))
        # Dropped watches are restarted and counted.
        ctx = ssl.create_default_context(cafile=os.path.join(state, "ca.crt"))
        with open(os.path.join(state, "token")) as f:
            token = f.read().strip()
        with open(os.path.join(state, "port")) as f:
            port = int(f.read().strip())
        req = urllib.request.Request("https://127.0.0.1:%d/_emulator/faults" % port,
                                     data=b'{"dropWatches": true}', method="POST",
                                     headers={"Authorization": "Bearer " + token,
                                              "Content-Type": "application/json"})
        urllib.request.urlopen(req, context=ctx, timeout=10).read()
        deadline = time.time() + 10
        pattern = re.compile(r'kadet_watch_restarts_total\{resource="(agentjobs|pods|nodes|'
                             r'services)"\} [1-9]')
        while not all(pattern.search(o.get("/metrics")[1]) for o in ops):
            check(time.time() < deadline, "dropped watches not counted:\n%s"
                  % ops[0].get("/metrics")[1])
            time.sleep(0.1)
        for o in ops:
            check(o.get("/readyz")[0] == 200, "%s not ready after the watches restarted"
                  % o.identity)

        # Stays single for a few renewals.
        for _ in range(10):
            check(sum(o.leading() for o in ops) == 1, "leadership not stable")
            time.sleep(LEASE_S / 10)

        # Graceful: SIGTERM releases the Lease; the standby leads within the lease duration.
        standby = [o for o in ops if o is not first][0]
        t0 = time.time()
        check(first.stop() == 0, "leader exit status %s" % first.proc.returncode)
        ops.remove(first)
        second = wait_single_leader(ops, LEASE_S)
        graceful = time.time() - t0
        check(second is standby, "the standby did not take over")
        check(holder(kubectl) == standby.identity, "Lease holder after release %r"
              % holder(kubectl))

        # Crash: SIGKILL keeps the Lease until it expires; a new replica takes over then.
        third = Operator("replica-c", kubeconfig, state)
        ops.append(third)
        time.sleep(LEASE_S / 3)
        t0 = time.time()
        second.stop(signal.SIGKILL)
        ops.remove(second)
        check(wait_single_leader(ops, 3 * LEASE_S) is third, "replica-c did not take over")
        crash = time.time() - t0
        check(crash >= LEASE_S * 0.8, "took over after %.2f s, before the lease (%.1f s) "
              "expired" % (crash, LEASE_S))
        print("failover: graceful %.2f s, after SIGKILL %.2f s (lease %.1f s)"
              % (graceful, crash, LEASE_S))
        check(third.stop() == 0, "exit status %s" % third.proc.returncode)
        ops.remove(third)
    finally:
        for o in ops:
            if o.proc.poll() is None:
                o.proc.kill()
                o.proc.wait()
        emu.send_signal(signal.SIGTERM)
        try:
            emu.wait(timeout=10)
        except subprocess.TimeoutExpired:
            emu.kill()
            emu.wait()
        shutil.rmtree(state, ignore_errors=True)
    print("ok operator_leader")
    return 0


if __name__ == "__main__":
    sys.exit(main())
