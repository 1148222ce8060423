#!/usr/bin/env python3
"""The chart's objects and the AgentJob CRD against the Kubernetes API emulator, with the
real kubectl.

Usage: emulator_apply.py agentjobs | install

  agentjobs  apply the CRD, then the sample manifests and tests/charts/good (accepted),
             tests/charts/bad (each refused by the server with the error text its first
             line expects, the same text tests/charts/crd_schema.py produces), then
             `kubectl get aj` (printer columns), `kubectl scale`, `kubectl delete`.
  install    apply every object of manifests/install.yaml and read each back. Exits 77
             (skipped), naming them, when the emulator does not serve some of the kinds.

The emulator contract (tests/emulator): kube_emulator.py --state-dir DIR writes
DIR/kubeconfig and then DIR/ready. Standard library only.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import time

TOP = os.environ.get("KADET_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("KADET_BIN_DIR") or os.path.join(TOP, "build", "bin")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(TOP, "tests", "emulator"))
import emulator  # noqa: E402
SKIP = 77


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


class Emulator(emulator.Emulator):
    """The shared emulator process (tests/emulator/emulator.py), with kubectl."""

    def __init__(self):
        super().__init__()
        try:
            self.start(timeout=30)
        except RuntimeError as e:
            self.stop()
            fail("emulator did not start: %s" % e)

    def kubectl(self, *args, stdin=None):
        return subprocess.run([KUBECTL, "--kubeconfig", self.kubeconfig, *args], input=stdin,
                              capture_output=True, text=True, timeout=30)

    def close(self):
        self.stop()


def yaml_docs(path):
    out = subprocess.run([os.path.join(BIN, "kd-yaml2json"), path], capture_output=True,
                         text=True, timeout=30)
    check(out.returncode == 0, "cannot read %s: %s" % (path, out.stderr))
    return [d for d in json.loads(out.stdout) if d]


def apply_ok(emu, path):
    r = emu.kubectl("apply", "-f", path)
    check(r.returncode == 0, "kubectl apply -f %s failed:\n%s%s"
          % (os.path.relpath(path, TOP), r.stdout, r.stderr))
    return r.stdout


def wait_established(emu):
    deadline = time.time() + 20
    while time.time() < deadline:
        r = emu.kubectl("get", "agentjobs")
        if r.returncode == 0:
            return
        time.sleep(0.2)
    fail("AgentJob resource not served after the CRD was applied: %s" % r.stderr)


def check_agentjobs(emu):
    apply_ok(emu, os.path.join(TOP, "manifests", "crd", "kadet.io_agentjobs.yaml"))
    wait_established(emu)
    good = sorted(glob.glob(os.path.join(TOP, "manifests", "samples", "*.yaml")) +
                  glob.glob(os.path.join(HERE, "good", "*.yaml")))
    names = []
    for path in good:
        jobs = [d for d in yaml_docs(path) if d.get("kind") == "AgentJob"]
        if jobs:
            apply_ok(emu, path)
            names += [j["metadata"]["name"] for j in jobs]
    check("fashion-mnist" in names, "the sample fashion-mnist was not applied")
    r = emu.kubectl("get", "aj", "-A")
    check(r.returncode == 0, "kubectl get aj: %s" % r.stderr)
    header = r.stdout.splitlines()[0].split()
    check(header == ["NAMESPACE", "NAME", "PHASE", "DESIRED", "READY", "EPOCH", "ACCURACY",
                     "AGE"], "kubectl get aj columns: %s" % header)
    for n in names:
        check(n in r.stdout, "%s missing from kubectl get aj:\n%s" % (n, r.stdout))
    r = emu.kubectl("scale", "agentjob", "fashion-mnist", "--replicas=3")
    check(r.returncode == 0, "kubectl scale: %s" % r.stderr)
    r = emu.kubectl("get", "aj", "fashion-mnist", "-o", "jsonpath={.spec.replicas}")
    check(r.stdout == "3", "spec.replicas after kubectl scale: %r" % r.stdout)
    bad = sorted(glob.glob(os.path.join(HERE, "bad", "*.yaml")))
    for path in bad:
        with open(path) as f:
            expect = f.readline()[len("# expect: "):].rstrip("\n")
        r = emu.kubectl("apply", "-f", path)
        check(r.returncode != 0, "%s accepted by the API" % os.path.basename(path))
        check(expect in r.stderr, "%s: server said %r, expected %r"
              % (os.path.basename(path), r.stderr.strip(), expect))
    r = emu.kubectl("delete", "aj", "fashion-mnist", "--wait=true")
    check(r.returncode == 0, "kubectl delete aj: %s" % r.stderr)
    r = emu.kubectl("get", "aj", "fashion-mnist")
    check(r.returncode != 0 and "NotFound" in r.stderr, "fashion-mnist not deleted: %s"
          % r.stdout)
    print("accepted %d AgentJobs, rejected %d bad ones with the expected messages"
          % (len(names), len(bad)))


def served_kinds(emu):
    """(apiVersion, kind) pairs from discovery. Columns: NAME [SHORTNAMES] APIVERSION
    NAMESPACED KIND, so the last three are fixed whatever the short names."""
    r = emu.kubectl("api-resources", "--no-headers")
    check(r.returncode == 0, "kubectl api-resources: %s" % r.stderr)
    return {(cols[-3], cols[-1]) for cols in (l.split() for l in r.stdout.splitlines())
            if len(cols) >= 4}


def check_install(emu):
    path = os.path.join(TOP, "manifests", "install.yaml")
    objs = yaml_docs(path)
    served = served_kinds(emu)
    missing = sorted({"%s %s" % (o["apiVersion"], o["kind"]) for o in objs
                      if (o["apiVersion"], o["kind"]) not in served})
    if missing:
        print("SKIP: the emulator does not serve %s" % ", ".join(missing))
        sys.exit(SKIP)
    apply_ok(emu, path)
    for o in objs:
        meta = o["metadata"]
        group = o["apiVersion"].rpartition("/")[0]
        resource = o["kind"].lower() + ("." + group if group else "")
        args = ["get", resource, meta["name"], "-o", "name"]
        if meta.get("namespace"):
            args += ["-n", meta["namespace"]]
        r = emu.kubectl(*args)
        check(r.returncode == 0, "%s %s not readable after apply: %s"
              % (o["kind"], meta["name"], r.stderr))
    wait_established(emu)
    apply_ok(emu, os.path.join(TOP, "manifests", "samples", "fashion-mnist.yaml"))
    r = emu.kubectl("get", "aj")
    check(r.returncode == 0 and "fashion-mnist" in r.stdout, "kubectl get aj: %s" % r.stderr)
    print("applied %d objects of manifests/install.yaml and the sample" % len(objs))


def main():
    global KUBECTL
    if len(sys.argv) != 2 or sys.argv[1] not in ("agentjobs", "install"):
        print(__doc__, file=sys.stderr)
        return 2
    KUBECTL = shutil.which("kubectl")
    if KUBECTL is None:
        print("SKIP: kubectl not installed")
        return SKIP
    if not os.path.exists(os.path.join(emulator.HERE, "kube_emulator.py")):
        print("SKIP: the emulator (tests/emulator/kube_emulator.py) is not there")
        return SKIP
    emu = Emulator()
    try:
        (check_agentjobs if sys.argv[1] == "agentjobs" else check_install)(emu)
    finally:
        emu.close()
    print("ok emulator_apply %s" % sys.argv[1])
    return 0


KUBECTL = None

if __name__ == "__main__":
    sys.exit(main())
