#!/usr/bin/env python3
"""kadet-operator memory at the issue's reference size: 100 AgentJobs and 1,000 pods in
the API emulator. Starts the operator, waits for /readyz (informer caches synced),
prints the time to ready and the resident set size, checks kadet_jobs counts the jobs,
and fails above 30 MB RSS (the issue's bound for the whole operator). Label slow: under
ASan the RSS means nothing. Usage: operator_rss.py [--jobs N] [--pods N]."""

import argparse
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

TOP = os.environ.get("KADET_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("KADET_BIN_DIR") or os.path.join(TOP, "build", "bin")
EMULATOR = os.path.join(TOP, "tests", "emulator", "kube_emulator.py")
LIMIT_KB = 30 * 1024
SKIP = 77


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def objects(sample, jobs, pods):
    out = []
    for i in range(jobs):
        j = json.loads(json.dumps(sample))
        j["metadata"] = {"name": "job-%03d" % i, "namespace": "default"}
        out.append(j)
    per_job = max(1, pods // max(1, jobs))
    for i in range(pods):
        job = "job-%03d" % (i // per_job)
        out.append({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "%s-worker-%d" % (job, i % per_job), "namespace": "default",
                         "labels": {"kadet.io/job-name": job, "kadet.io/role": "worker"}},
            "spec": {"containers": [{
                "name": "agent", "image": "kadet-runtime:latest", "command": ["kadet", "worker"],
                "env": [{"name": "KADET_COORDINATOR", "value": job + "-coordinator:5555"}],
                "resources": {"requests": {"cpu": "1", "memory": "512Mi"},
                              "limits": {"memory": "1Gi"}}}]}})
    return out


def get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return 0, ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--pods", type=int, default=1000)
    args = ap.parse_args()
    kubectl = shutil.which("kubectl")
    if kubectl is None or not os.path.exists(EMULATOR):
        print("SKIP: kubectl or the emulator missing")
        return SKIP
    state = tempfile.mkdtemp(prefix="kadet-rss-")
    emu = subprocess.Popen([sys.executable, EMULATOR, "--state-dir", state],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    op = None
    try:
        deadline = time.time() + 30
        while not os.path.exists(os.path.join(state, "ready")):
            if emu.poll() is not None or time.time() > deadline:
                fail("emulator did not start")
            time.sleep(0.1)
        kc = os.path.join(state, "kubeconfig")
        r = subprocess.run([kubectl, "--kubeconfig", kc, "apply", "-f",
                            os.path.join(TOP, "manifests", "crd", "kadet.io_agentjobs.yaml")],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            fail("CRD: " + r.stderr)
        sample = json.loads(subprocess.run(
            [os.path.join(BIN, "kd-yaml2json"),
             os.path.join(TOP, "manifests", "samples", "fashion-mnist.yaml")],
            capture_output=True, text=True, timeout=30).stdout)[0]
        ctx = ssl.create_default_context(cafile=os.path.join(state, "ca.crt"))
        with open(os.path.join(state, "token")) as f:
            token = f.read().strip()
        with open(os.path.join(state, "port")) as f:
            port = int(f.read().strip())
        deadline = time.time() + 20
        while True:  # the CRD is served once the emulator established it
            body = json.dumps({"objects": objects(sample, args.jobs, args.pods)}).encode()
            req = urllib.request.Request(
                "https://127.0.0.1:%d/_emulator/bulk" % port, data=body, method="POST",
                headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
            try:
                urllib.request.urlopen(req, context=ctx, timeout=120).read()
                break
            except urllib.error.HTTPError as e:
                if time.time() > deadline:
                    fail("bulk create: %d %s" % (e.code, e.read()[:200]))
                time.sleep(0.2)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KADET_")}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        logf = open(os.path.join(state, "operator.log"), "w")
        op = subprocess.Popen([os.path.join(BIN, "kadet-operator"), "--kubeconfig", kc,
                               "--metrics-addr", "127.0.0.1:0"], stderr=logf, env=env)
        mport = None
        t0 = time.time()
        while mport is None and time.time() < t0 + 15:
            with open(os.path.join(state, "operator.log")) as f:
                for line in f:
                    if "serving " in line and "port=" in line:
                        mport = int(line.rsplit("port=", 1)[1])
            time.sleep(0.02)
        if mport is None:
            fail("operator did not start")
        while get(mport, "/readyz")[0] != 200:
            if time.time() > t0 + 60 or op.poll() is not None:
                fail("operator not ready")
            time.sleep(0.02)
        ready_s = time.time() - t0
        want = 'kadet_jobs{phase="Pending"} %d\n' % args.jobs
        deadline = time.time() + 5
        while want not in get(mport, "/metrics")[1]:
            if time.time() > deadline:
                fail("kadet_jobs does not count %d Pending jobs" % args.jobs)
            time.sleep(0.1)
        with open("/proc/%d/status" % op.pid) as f:
            status = dict(line.split(":", 1) for line in f)
        rss_kb = int(status["VmRSS"].split()[0])
        hwm_kb = int(status["VmHWM"].split()[0])
        print("%d AgentJobs + %d pods: ready in %.2f s, RSS %.1f MB (peak %.1f MB)"
              % (args.jobs, args.pods, ready_s, rss_kb / 1024, hwm_kb / 1024))
        if hwm_kb > LIMIT_KB:
            fail("peak RSS %.1f MB above %d MB" % (hwm_kb / 1024, LIMIT_KB // 1024))
    finally:
        if op is not None and op.poll() is None:
            op.send_signal(signal.SIGTERM)
            op.wait(timeout=10)
        emu.send_signal(signal.SIGTERM)
        try:
            emu.wait(timeout=10)
        except subprocess.TimeoutExpired:
            emu.kill()
        shutil.rmtree(state, ignore_errors=True)
    print("ok operator_rss")
    return 0


if __name__ == "__main__":
    sys.exit(main())
