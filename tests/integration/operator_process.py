#!/usr/bin/env python3
"""kadet-operator as a process: --help documents every setting the chart's Deployment
passes, bad flags and variables exit 2 with a message, a missing cluster configuration
exits 1 with a message, the HTTP endpoints answer over loopback with valid Prometheus
text, /readyz stays 503 while the informers cannot sync, a taken port is a clean error, and SIGTERM shuts it down with exit status 0 and SIGINT with 130.
The cluster here is a kubeconfig pointing at a closed port: the informers and leader
election keep retrying, which must not block shutdown. Standard library only."""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reconcile_harness as h  # noqa: E402

TOP, BIN, fail, check = h.TOP, h.BIN, h.fail, h.check
OPERATOR = os.path.join(BIN, "kadet-operator")
SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})?'
                    r' (-?[0-9.e+]+|NaN|[+-]Inf)$')


KUBECONFIG_TEXT = """apiVersion: v1
kind: Config
clusters:
- name: closed
  cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: not-a-secret}
contexts:
- name: closed
  context: {cluster: closed, user: u, namespace: default}
current-context: closed
"""
KUBECONFIG = None


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KADET_") or k in ("KADET_SOURCE_DIR", "KADET_BIN_DIR")}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    env["KUBECONFIG"] = KUBECONFIG
    env.update(extra)
    return env


def run(args, **env):
    return subprocess.run([OPERATOR, *args], capture_output=True, text=True, timeout=20,
                          env=clean_env(**env))


def deployment_env_names():
    tool = os.path.join(BIN, "kd-yaml2json")
    path = os.path.join(TOP, "manifests", "operator", "deployment.yaml")
    out = subprocess.run([tool, path], capture_output=True, text=True, timeout=20)
    check(out.returncode == 0, "cannot read %s: %s" % (path, out.stderr))
    dep = [d for d in json.loads(out.stdout) if d][0]
    return [e["name"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]]


def test_cli():
    r = run(["--help"])
    check(r.returncode == 0, "--help exit %d" % r.returncode)
    for name in deployment_env_names():
        check("[%s]" % name in r.stdout, "--help does not document %s, which the chart sets"
              % name)
    h = run(["-h"])
    check(h.returncode == 0 and h.stdout == r.stdout, "-h is --help: exit %d" % h.returncode)
    r = run(["--wokers=2"])
    check(r.returncode == 2 and "unknown option '--wokers' (did you mean --workers?)"
          in r.stderr, "misspelt flag: exit %d, %r" % (r.returncode, r.stderr))
    r = run(["--workers=0"])
    check(r.returncode == 2 and "--workers: workers: '0' is not an integer in [1, 64]"
          in r.stderr, "--opt=value out of range: exit %d, %r" % (r.returncode, r.stderr))
    r = run(["--version"])
    check(r.returncode == 0 and r.stdout.strip() == "kadet-operator 0.1.0",
          "--version printed %r" % r.stdout)
    r = run(["--scheduler-policy", "magic"])
    check(r.returncode == 2, "bad flag exit %d" % r.returncode)
    check("--scheduler-policy: scheduler-policy: 'magic' is not one of" in r.stderr,
          "bad flag message %r" % r.stderr)
    r = run([], KADET_METRICS_ADDR="nonsense")
    check(r.returncode == 2 and "environment KADET_METRICS_ADDR" in r.stderr,
          "bad variable: exit %d, %r" % (r.returncode, r.stderr))
    r = run(["--metrics-addr", "127.0.0.1:0"], KUBECONFIG="/nonexistent/kubeconfig")
    check(r.returncode == 1 and "cluster configuration failed" in r.stderr and
          "/nonexistent/kubeconfig" in r.stderr, "missing kubeconfig: exit %d, %r"
          % (r.returncode, r.stderr))


class Operator:
    """A running kadet-operator whose log is read until it reports its port."""

    def __init__(self, *args, **env):
        self.proc = subprocess.Popen([OPERATOR, "--metrics-addr", "127.0.0.1:0", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=clean_env(**env))
        self.log = []
        self.port = None
        deadline = time.time() + 15
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"serving .* port=(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        check(self.port, "operator did not report its port; log:\n" + "".join(self.log))

    def get(self, path):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.port, path),
                                        timeout=5) as r:
                return r.status, r.headers.get("Content-Type"), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Content-Type"), e.read().decode()

    def stop(self, sig):
        start = time.time()
        self.proc.send_signal(sig)
        rest = self.proc.communicate(timeout=10)[1]
        self.log.append(rest)
        return self.proc.returncode, time.time() - start


def test_endpoints_and_shutdown():
    op = Operator(KADET_LOG_LEVEL="debug", KADET_SCHEDULER_POLICY="fair")
    try:
        status, _, body = op.get("/healthz")
        check(status == 200 and body == "ok\n", "/healthz %d %r" % (status, body))
        # Not ready while starting; then, the API being unreachable, the informers never
        # sync: alive but not ready.
        deadline = time.time() + 10
        status, _, body = op.get("/readyz")
        while "[-]startup failed: starting" in body and time.time() < deadline:
            check(status == 503, "/readyz %d while starting" % status)
            time.sleep(0.05)
            status, _, body = op.get("/readyz")
        check(status == 503 and "[-]informers failed: agentjobs not synced" in body,
              "/readyz %d %r" % (status, body))
        status, ctype, body = op.get("/metrics")
        check(status == 200, "/metrics %d" % status)
        check(ctype.startswith("text/plain; version=0.0.4"), "/metrics content type %r" % ctype)
        families = set()
        for line in body.splitlines():
            if line.startswith("# TYPE "):
                families.add(line.split()[2])
                if line.split()[3] == "histogram":  # its samples carry suffixes
                    families.update(line.split()[2] + s for s in ("_bucket", "_sum", "_count"))
            elif not line.startswith("# HELP "):
                check(SAMPLE.match(line), "not a Prometheus sample line: %r" % line)
                name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
                check(name in families, "sample %r before its # TYPE" % line)
        check("# TYPE kadet_reconcile_duration_seconds histogram" in body and
              'kadet_reconcile_duration_seconds_bucket{le="+Inf"} ' in body,
              "the reconcile histogram is served")
        for fam in ("kadet_reconciles_total", "kadet_errors_total", "kadet_workqueue_depth",
                    "kadet_watch_restarts_total", "kadet_scheduling_decisions_total",
                    "kadet_scheduling_reward_sum", "kadet_jobs", "kadet_leader",
                    "kadet_build_info", "process_start_time_seconds"):
            check(fam in families, "/metrics lacks %s" % fam)
        check("kadet_leader 1\n" in body, "without election the replica acts: kadet_leader 1")
        status, _, _ = op.get("/nope")
        check(status == 404, "/nope %d" % status)
        # A second operator on the same port fails cleanly.
        r = run(["--metrics-addr", "127.0.0.1:%d" % op.port])
        check(r.returncode == 1 and "cannot listen on 127.0.0.1:%d" % op.port in r.stderr,
              "port clash: exit %d %r" % (r.returncode, r.stderr))
        code, took = op.stop(signal.SIGTERM)
        log = "".join(op.log)
        check(code == 0, "exit %d after SIGTERM; log:\n%s" % (code, log))
        check(took < 2, "shutdown took %.1f s" % took)
        check("shutting down signal=SIGTERM" in log and "stopped" in log, "log:\n" + log)
        check("policy=fair" in log, "effective settings not logged:\n" + log)
        print("SIGTERM shutdown in %.3f s" % took)
    finally:
        if op.proc.poll() is None:
            op.proc.kill()
            op.proc.wait()
    op = Operator("--leader-elect", "--lease-duration", "3s")
    try:
        time.sleep(1)  # several failed attempts on the closed port
        status, _, body = op.get("/metrics")
        check("kadet_leader 0\n" in body, "without a reachable API this replica never leads")
        code, took = op.stop(signal.SIGINT)
        check(code == 130, "exit %d after SIGINT (want 130, as shells report Ctrl-C)" % code)
        check(took < 2, "shutdown with an unreachable API took %.1f s" % took)
    finally:
        if op.proc.poll() is None:
            op.proc.kill()
            op.proc.wait()


def main():
    global KUBECONFIG
    check(os.access(OPERATOR, os.X_OK), "%s not built" % OPERATOR)
    with tempfile.TemporaryDirectory() as d:
        KUBECONFIG = os.path.join(d, "kubeconfig")
        with open(KUBECONFIG, "w") as f:
            f.write(KUBECONFIG_TEXT)
        test_cli()
        test_endpoints_and_shutdown()
    print("ok operator_process")


if __name__ == "__main__":
    main()
