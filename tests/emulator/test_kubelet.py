"""Fake kubelet against the emulator: node registration, binding by requests, pod
phases with exit codes, processes with the pod's env on their own loopback address,
restart policy, service-name files, and SIGTERM/SIGKILL on deletion."""

import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from emulator import Emulator  # noqa: E402

NS = "/api/v1/namespaces/default"


def pod(name, cmd, labels=None, cpu="100m", memory="64Mi", restart="Never", env=None,
        grace=None, annotations=None):
    p = {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}},
         "spec": {"restartPolicy": restart, "containers": [{
             "name": "main", "image": "example/image", "command": cmd,
             "resources": {"requests": {"cpu": cpu, "memory": memory}},
             "env": env or []}]}}
    if grace is not None:
        p["spec"]["terminationGracePeriodSeconds"] = grace
    return p


class KubeletTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.emu = Emulator(bookmark_interval=0.5).start()
        cls.work = tempfile.mkdtemp(prefix="kubelet-test-")
        cls.bindir = os.path.join(cls.work, "bin")
        os.makedirs(cls.bindir)
        tool = os.path.join(cls.bindir, "kadet-fake-tool")
        with open(tool, "w") as f:
            f.write("#!/bin/sh\necho tool-ran \"$@\"\n")
        os.chmod(tool, 0o755)
        ready = os.path.join(cls.work, "ready")
        cls.log = open(os.path.join(cls.work, "kubelet.log"), "wb")
        cls.kubelet = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "fake_kubelet.py"), "--kubeconfig",
             cls.emu.kubeconfig, "--nodes", "2", "--cpu", "1", "--memory", "1Gi",
             "--labels", "pool=test", "--run-pods", "--path-prefix", cls.bindir,
             "--work-dir", os.path.join(cls.work, "kl"), "--heartbeat", "1",
             "--ready-file", ready], stdout=cls.log, stderr=cls.log)
        deadline = time.time() + 20
        while not os.path.exists(ready):
            if time.time() > deadline or cls.kubelet.poll() is not None:
                raise RuntimeError("fake kubelet did not start")
            time.sleep(0.05)

    @classmethod
    def tearDownClass(cls):
        cls.kubelet.send_signal(signal.SIGTERM)
        cls.kubelet.wait(15)
        cls.log.close()
        cls.emu.stop()
        if os.environ.get("KADET_KEEP_EMULATOR_STATE") is None:
            subprocess.run(["rm", "-rf", cls.work])

    def req(self, *a, **kw):
        return self.emu.request(*a, **kw)

    def wait_pod(self, name, pred, timeout=15):
        deadline = time.time() + timeout
        p = None
        while time.time() < deadline:
            code, p = self.req("GET", NS + "/pods/" + name)
            if code == 200 and pred(p):
                return p
            if code == 404 and pred(None):
                return None
            time.sleep(0.1)
        self.fail("pod %s did not reach the expected state: %s" % (name, json.dumps(p)[:800]))

    def phase(self, want):
        return lambda p: p is not None and p.get("status", {}).get("phase") == want

    def test_nodes_registered_with_capacity_and_labels(self):
        code, nodes = self.req("GET", "/api/v1/nodes?labelSelector=pool%3Dtest")
        self.assertEqual(len(nodes["items"]), 2)
        n = nodes["items"][0]
        self.assertEqual(n["status"]["allocatable"]["cpu"], "1")
        ready = [c for c in n["status"]["conditions"] if c["type"] == "Ready"][0]
        self.assertEqual(ready["status"], "True")

    def test_pod_runs_with_env_and_succeeds(self):
        env = [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
               {"name": "POD_NS", "valueFrom": {"fieldRef":
                                                {"fieldPath": "metadata.namespace"}}},
               {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
               {"name": "GREETING", "value": "hi-$(POD_NAME)"}]
        self.req("POST", NS + "/pods", pod("envpod", [
            "sh", "-c", "echo $POD_NAME $POD_NS $POD_IP $KADET_POD_IP $GREETING"], env=env))
        p = self.wait_pod("envpod", self.phase("Succeeded"))
        ip = p["status"]["podIP"]
        self.assertRegex(ip, r"^127\.\d+\.\d+\.\d+$")
        self.assertTrue(p["spec"]["nodeName"].startswith("fake-node-"))
        term = p["status"]["containerStatuses"][0]["state"]["terminated"]
        self.assertEqual((term["exitCode"], term["reason"]), (0, "Completed"))
        code, text = self.req("GET", NS + "/pods/envpod/log")
        self.assertEqual(code, 200)
        self.assertIn("envpod default %s %s hi-envpod" % (ip, ip), text)
        # An image path that does not exist here resolves through --path-prefix.
        self.req("POST", NS + "/pods", pod("toolpod", ["/opt/image/bin/kadet-fake-tool",
                                                       "$(POD_NAME)"], env=env))
        self.wait_pod("toolpod", self.phase("Succeeded"))
        self.assertIn("tool-ran toolpod", self.req("GET", NS + "/pods/toolpod/log")[1])

    def test_missing_program_is_a_start_error(self):
        self.req("POST", NS + "/pods", pod("noprog", ["/nonexistent/program"]))
        p = self.wait_pod("noprog", self.phase("Failed"))
        term = p["status"]["containerStatuses"][0]["state"]["terminated"]
        self.assertEqual((term["exitCode"], term["reason"]), (128, "StartError"))
        self.assertIn("failed to start /nonexistent/program",
                      self.req("GET", NS + "/pods/noprog/log")[1])

    def test_failed_exit_code_and_restart_on_failure(self):
        self.req("POST", NS + "/pods", pod("fails", ["sh", "-c", "exit 3"]))
        p = self.wait_pod("fails", self.phase("Failed"))
        self.assertEqual(p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 3)
        marker = os.path.join(self.work, "second-run")
        self.req("POST", NS + "/pods", pod("retry", [
            "sh", "-c", "if [ -e %s ]; then exit 0; fi; touch %s; exit 1" % (marker, marker)],
            restart="OnFailure"))
        p = self.wait_pod("retry", self.phase("Succeeded"))
        self.assertEqual(p["status"]["containerStatuses"][0]["restartCount"], 1)

    def test_binding_respects_requests(self):
        # Two nodes with 1 CPU each: two 600m pods fit, a third waits.
        for i in range(3):
            self.req("POST", NS + "/pods", pod("big-%d" % i, ["sleep", "30"], cpu="600m",
                                               labels={"big": "1"}))
        self.wait_pod("big-0", self.phase("Running"))
        self.wait_pod("big-1", self.phase("Running"))
        p = self.wait_pod("big-2", lambda p: any(
            c.get("reason") == "Unschedulable" for c in p.get("status", {}).get("conditions", [])))
        self.assertNotIn("nodeName", p["spec"])
        nodes = {self.req("GET", NS + "/pods/big-%d" % i)[1]["spec"]["nodeName"]
                 for i in range(2)}
        self.assertEqual(len(nodes), 2)
        self.req("DELETE", NS + "/pods/big-0?gracePeriodSeconds=0")
        self.wait_pod("big-2", self.phase("Running"))
        for i in range(1, 3):
            self.req("DELETE", NS + "/pods/big-%d?gracePeriodSeconds=0" % i)

    def test_delete_sends_sigterm_then_pod_goes(self):
        self.req("POST", NS + "/pods", pod("graceful", [
            "sh", "-c", "trap 'echo got-term; exit 0' TERM; while true; do sleep 0.1; done"],
            grace=10))
        p = self.wait_pod("graceful", self.phase("Running"))
        log_path = p["metadata"]["annotations"]["emulator.kadet.io/log-file"]
        t0 = time.time()
        self.assertEqual(self.req("DELETE", NS + "/pods/graceful")[0], 202)
        self.wait_pod("graceful", lambda p: p is None)
        self.assertLess(time.time() - t0, 5, "SIGTERM handled long before the grace period")
        with open(log_path) as f:
            self.assertIn("got-term", f.read())

    def test_delete_kills_after_grace_period(self):
        self.req("POST", NS + "/pods", pod("stubborn", [
            "sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"], grace=1))
        p = self.wait_pod("stubborn", self.phase("Running"))
        pid = int(p["status"]["containerStatuses"][0]["containerID"].split("//")[1])
        t0 = time.time()
        self.req("DELETE", NS + "/pods/stubborn")
        self.wait_pod("stubborn", lambda p: p is None)
        self.assertGreaterEqual(time.time() - t0, 0.9)
        time.sleep(0.2)
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)

    def test_service_names_resolve_to_running_pod(self):
        self.req("POST", NS + "/services", {"metadata": {"name": "coord"},
                                            "spec": {"selector": {"role": "coord"},
                                                     "ports": [{"port": 7000}]}})
        self.req("POST", NS + "/pods", pod("coord-0", ["sleep", "30"], labels={"role": "coord"}))
        c = self.wait_pod("coord-0", self.phase("Running"))
        self.req("POST", NS + "/pods", pod("client", [
            "sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do grep -q coord $KADET_HOSTS && break;"
            " sleep 0.2; done; cat $KADET_HOSTS"]))
        self.wait_pod("client", self.phase("Succeeded"))
        code, text = self.req("GET", NS + "/pods/client/log")
        line = [ln for ln in text.splitlines() if " coord " in ln + " "][0].split()
        self.assertEqual(line[0], c["status"]["podIP"])
        self.assertEqual(line[1:], ["coord", "coord.default", "coord.default.svc",
                                    "coord.default.svc.cluster.local"])
        self.req("DELETE", NS + "/pods/coord-0?gracePeriodSeconds=0")

    def test_simulated_pod_without_run(self):
        # A pod without a command is simulated; run-seconds/exit-code annotations end it.
        p = pod("sim", None, annotations={"emulator.kadet.io/run-seconds": "0.5",
                                          "emulator.kadet.io/exit-code": "2"})
        del p["spec"]["containers"][0]["command"]
        self.req("POST", NS + "/pods", p)
        p = self.wait_pod("sim", self.phase("Failed"))
        self.assertEqual(p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 2)

    def test_missing_config_map_key_blocks_start(self):
        env = [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "later", "key": "x"}}}]
        self.req("POST", NS + "/pods", pod("needscm", ["sh", "-c", "echo X=$X"], env=env))
        p = self.wait_pod("needscm", lambda p: p.get("status", {}).get("containerStatuses"))
        self.assertEqual(p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
                         "CreateContainerConfigError")
        self.req("POST", NS + "/configmaps", {"metadata": {"name": "later"}, "data": {"x": "42"}})
        self.wait_pod("needscm", self.phase("Succeeded"))
        self.assertIn("X=42", self.req("GET", NS + "/pods/needscm/log")[1])

    def test_secret_volume_is_written_and_env_paths_follow_it(self):
        p = pod("keyed", ["sh", "-c", "cat $KEYS/agent.pub; echo; stat -c %a $KEYS/agent.key"],
                env=[{"name": "KEYS", "value": "/var/run/kadet/keys"}])
        p["spec"]["volumes"] = [{"name": "kadet-keys", "secret": {
            "secretName": "job-keys", "defaultMode": 0o440}}]
        p["spec"]["containers"][0]["volumeMounts"] = [{
            "name": "kadet-keys", "mountPath": "/var/run/kadet/keys", "readOnly": True}]
        self.req("POST", NS + "/pods", p)
        p = self.wait_pod("keyed", lambda p: p.get("status", {}).get("containerStatuses"))
        self.assertEqual(p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
                         "CreateContainerConfigError")   # the Secret does not exist yet
        self.req("POST", NS + "/secrets", {"metadata": {"name": "job-keys"}, "data": {
            "agent.pub": base64.b64encode(b"PUBLIC").decode(),
            "agent.key": base64.b64encode(b"SECRET").decode()}})
        self.wait_pod("keyed", self.phase("Succeeded"))
        text = self.req("GET", NS + "/pods/keyed/log")[1]
        self.assertIn("PUBLIC", text)
        self.assertIn("400", text)   # 0440 keeps its owner bits: the files are ours here


if __name__ == "__main__":
    unittest.main(verbosity=2)
