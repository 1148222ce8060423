"""Shared helpers of the AgentJob reconciler tests: a Cluster with the Kubernetes API
emulator (tests/emulator), the AgentJob CRD applied with kubectl, the fake kubelet
(simulated pods, or real processes with run_pods=True) and kadet-operator processes.
Standard library only; kubectl drives the objects the way a user would."""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

TOP = os.environ.get("KADET_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("KADET_BIN_DIR") or os.path.join(TOP, "build", "bin")
sys.path.insert(0, os.path.join(TOP, "tests", "emulator"))
from emulator import Emulator  # noqa: E402

SKIP = 77


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def wait_for(pred, timeout, what, interval=0.1):
    """Polls pred() until it returns a true value (returned) or fails after timeout."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    fail("timed out after %.0f s waiting for %s (last: %r)" % (timeout, what, last))


class Operator:
    def __init__(self, cluster, name, extra=()):
        self.name = name
        self.logpath = os.path.join(cluster.dir, name + ".log")
        env = {k: v for k, v in os.environ.items() if not k.startswith("KADET_")}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        args = [os.path.join(BIN, "kadet-operator"), "--kubeconfig", cluster.kubeconfig,
                "--metrics-addr", "127.0.0.1:0", "--operator-namespace", "default",
                "--identity", name, "--default-qtable",
                os.path.join(TOP, "operator", "scheduler", "qtable-default.json")]
        self.proc = subprocess.Popen(args + list(extra), stdout=subprocess.DEVNULL,
                                     stderr=open(self.logpath, "w"), env=env)
        self.port = None
        deadline = time.time() + 15
        while self.port is None and time.time() < deadline:
            m = re.search(r"serving .* port=(\d+)", self.log())
            if m:
                self.port = int(m.group(1))
            elif self.proc.poll() is not None:
                break
            else:
                time.sleep(0.05)
        check(self.port, "%s did not start:\n%s" % (name, self.log()))

    def log(self):
        with open(self.logpath) as f:
            return f.read()

    def get(self, path):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.port, path),
                                        timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError as e:
            return 0, str(e)

    def metric(self, name):
        """Sum of every series of a metric family (0 when absent)."""
        total = 0.0
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_ready(self, timeout=20):
        wait_for(lambda: self.get("/readyz")[0] == 200, timeout, self.name + " ready")

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Cluster:
    """Emulator + CRD + fake kubelet. Use as a context manager."""

    def __init__(self, nodes=2, cpu="4", memory="8Gi", run_pods=False, kubelet_args=()):
        self.kubectl_bin = shutil.which("kubectl") or "/usr/bin/kubectl"
        self.nodes, self.cpu, self.memory = nodes, cpu, memory
        self.run_pods = run_pods
        self.kubelet_args = list(kubelet_args)
        self.operators = []
        self.kubelet = None
        self.emu = None
        self.dir = tempfile.mkdtemp(prefix="kadet-recon-")

    def __enter__(self):
        if not os.path.exists(self.kubectl_bin):
            print("SKIP: kubectl missing")
            sys.exit(SKIP)
        self.emu = Emulator(bookmark_interval=1.0).start()
        self.kubeconfig = self.emu.kubeconfig
        self.kubectl("apply", "-f", os.path.join(TOP, "manifests", "crd",
                                                   "kadet.io_agentjobs.yaml"))
        wait_for(lambda: self.kubectl("get", "agentjobs", check_rc=False).returncode == 0,
                 20, "the AgentJob CRD to be served")
        ready = os.path.join(self.dir, "kubelet.ready")
        args = [sys.executable, os.path.join(TOP, "tests", "emulator", "fake_kubelet.py"),
                "--kubeconfig", self.kubeconfig, "--nodes", str(self.nodes), "--cpu", self.cpu,
                "--memory", self.memory, "--work-dir", os.path.join(self.dir, "kubelet"),
                "--ready-file", ready, "--heartbeat", "5",
                # Pods bind their own loopback addresses: tests running at the same time
                # (ctest -j, a release and an ASan pass) must not share them.
                "--ip-prefix", "127.%d" % random.randint(20, 250)]
        if self.run_pods:
            args += ["--run-pods", "--path-prefix", BIN]
        self.kubelet = subprocess.Popen(args + self.kubelet_args, stdout=subprocess.DEVNULL,
                                        stderr=open(os.path.join(self.dir, "kubelet.log"), "w"))
        wait_for(lambda: os.path.exists(ready) or self.kubelet.poll() is not None, 20,
                 "the fake kubelet")
        check(self.kubelet.poll() is None, "fake kubelet exited:\n" + self.read("kubelet.log"))
        return self

    def __exit__(self, *exc):
        for op in self.operators:
            op.stop()
        if self.kubelet is not None and self.kubelet.poll() is None:
            self.kubelet.send_signal(signal.SIGTERM)
            try:
                self.kubelet.wait(15)
            except subprocess.TimeoutExpired:
                self.kubelet.kill()
                self.kubelet.wait()
        if self.emu is not None:
            self.emu.stop()
        if exc[0] is None and os.environ.get("KADET_KEEP_TEST_DIR") is None:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print("logs kept in " + self.dir, file=sys.stderr)

    def read(self, name):
        try:
            with open(os.path.join(self.dir, name)) as f:
                return f.read()
        except OSError:
            return ""

    def operator(self, name="op-0", extra=()):
        op = Operator(self, name, extra)
        self.operators.append(op)
        return op

    def kubectl(self, *args, check_rc=True, stdin=None, timeout=30):
        r = subprocess.run([self.kubectl_bin, "--kubeconfig", self.kubeconfig] + list(args),
                           capture_output=True, text=True, input=stdin, timeout=timeout)
        if check_rc and r.returncode != 0:
            fail("kubectl %s: %s" % (" ".join(args), r.stderr))
        return r

    def apply(self, obj):
        return self.kubectl("apply", "-f", "-", stdin=json.dumps(obj))

    def get_json(self, *args):
        r = self.kubectl("get", *args, "-o", "json", check_rc=False)
        if r.returncode != 0:
            return None
        return json.loads(r.stdout)

    def job(self, name, ns="default"):
        return self.get_json("agentjob", name, "-n", ns)

    def pods(self, job, ns="default"):
        lst = self.get_json("pods", "-n", ns, "-l", "kadet.io/job-name=" + job)
        return lst["items"] if lst else []

    def live_pods(self, job, role=None, ns="default"):
        out = []
        for p in self.pods(job, ns):
            if p["metadata"].get("deletionTimestamp"):
                continue
            if p.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                continue
            if role and p["metadata"]["labels"].get("kadet.io/role") != role:
                continue
            out.append(p)
        return out

    def events(self, job, ns="default"):
        lst = self.get_json("events", "-n", ns, "--field-selector",
                            "involvedObject.name=" + job)
        if lst is None:  # field selectors on events may be unsupported: filter here
            lst = self.get_json("events", "-n", ns) or {"items": []}
        return [e for e in lst["items"] if e.get("involvedObject", {}).get("name") == job]

    def condition(self, job, ctype, ns="default"):
        j = self.job(job, ns)
        for c in ((j or {}).get("status") or {}).get("conditions", []):
            if c.get("type") == ctype:
                return c
        return None


def sample_job(name, agents=(1, 4), replicas=None, epochs=1, annotations=None, cpu="1",
               run_policy=None, ns="default", extra_spec=None):
    """An AgentJob like manifests/samples/fashion-mnist.yaml, as a dict."""
    template = {"spec": {"containers": [{
        "name": "agent", "image": "kadet-runtime:latest",
        "resources": {"requests": {"cpu": cpu, "memory": "256Mi"}}}]}}
    if annotations:
        template["metadata"] = {"annotations": annotations}
    spec = {
        "agents": {"min": agents[0], "max": agents[1]},
        "template": template,
        "training": {"dataset": {"format": "idx", "path": "/usr/share/datasets/fashion-mnist"},
                     "model": {"type": "mlp", "hidden": [64]}, "epochs": epochs,
                     "batchSize": 64,
                     "optimizer": {"type": "sgd", "learningRate": 0.05, "momentum": 0.9}},
        "scheduling": {"policy": "greedy"},
        "runPolicy": run_policy or {"backoffLimit": 3, "cleanPodPolicy": "Running"},
    }
    if replicas is not None:
        spec["replicas"] = replicas
    if extra_spec:
        spec.update(extra_spec)
    return {"apiVersion": "kadet.io/v1alpha1", "kind": "AgentJob",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}
