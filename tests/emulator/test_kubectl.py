"""kubectl against the emulator (with the fake kubelet running pods): get (table, json,
yaml, watch), apply -f creating then updating, scale, describe, logs and delete, for
built-in resources and a custom resource; and hack/emulator.sh up/status/down."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from emulator import Emulator  # noqa: E402

KUBECTL = os.environ.get("KUBECTL") or shutil.which("kubectl") or "/usr/bin/kubectl"
TESTDATA = os.path.join(HERE, "testdata")


@unittest.skipUnless(os.path.exists(KUBECTL), "kubectl not installed")
class KubectlTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.emu = Emulator().start()
        cls.work = tempfile.mkdtemp(prefix="kubectl-test-")
        cls.klog = open(os.path.join(cls.work, "kubelet.log"), "wb")
        cls.kubelet = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "fake_kubelet.py"), "--kubeconfig",
             cls.emu.kubeconfig, "--nodes", "1", "--run-pods", "--work-dir",
             os.path.join(cls.work, "kl")], stdout=cls.klog, stderr=cls.klog)

    @classmethod
    def tearDownClass(cls):
        cls.kubelet.terminate()
        cls.kubelet.wait(15)
        cls.klog.close()
        cls.emu.stop()
        shutil.rmtree(cls.work, ignore_errors=True)

    def kubectl(self, *args, stdin=None, check=True, timeout=30):
        cmd = [KUBECTL, "--kubeconfig", self.emu.kubeconfig, "--cache-dir",
               os.path.join(self.work, "cache")] + list(args)
        r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            self.fail("%s failed (%d): %s%s" % (" ".join(args), r.returncode, r.stdout, r.stderr))
        return r

    def load(self, name):
        with open(os.path.join(TESTDATA, name)) as f:
            return json.load(f)

    def wait_for(self, pred, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred():
                return True
            time.sleep(0.2)
        return False

    def test_1_custom_resource_lifecycle(self):
        r = self.kubectl("apply", "-f", os.path.join(TESTDATA, "agentjob-crd.json"))
        self.assertIn("customresourcedefinition.apiextensions.k8s.io/agentjobs.kadet.io created",
                      r.stdout)
        r = self.kubectl("apply", "-f", os.path.join(TESTDATA, "agentjob.json"))
        self.assertIn("agentjob.kadet.io/demo created", r.stdout)
        job = self.load("agentjob.json")
        job["spec"]["agents"]["max"] = 6
        r = self.kubectl("apply", "-f", "-", stdin=json.dumps(job))
        self.assertIn("agentjob.kadet.io/demo configured", r.stdout)
        r = self.kubectl("get", "aj", "demo", "-o", "json")
        obj = json.loads(r.stdout)
        self.assertEqual(obj["spec"]["agents"]["max"], 6)
        self.assertEqual(obj["metadata"]["generation"], 2)
        self.assertIn("kubectl.kubernetes.io/last-applied-configuration",
                      obj["metadata"]["annotations"])
        r = self.kubectl("get", "agentjobs")
        self.assertEqual(r.stdout.split("\n")[0].split(), ["NAME", "PHASE", "DESIRED", "READY",
                                                            "AGE"])
        self.assertTrue(r.stdout.split("\n")[1].startswith("demo"))
        r = self.kubectl("scale", "agentjob", "demo", "--replicas=3")
        self.assertIn("scaled", r.stdout)
        r = self.kubectl("get", "aj", "demo", "-o", "jsonpath={.spec.replicas}")
        self.assertEqual(r.stdout, "3")
        r = self.kubectl("get", "aj", "demo", "-o", "yaml")
        self.assertIn("replicas: 3", r.stdout)
        r = self.kubectl("explain", "agentjob.spec.agents")
        self.assertIn("KIND:       AgentJob", r.stdout)
        self.assertIn("min", r.stdout)
        r = self.kubectl("describe", "agentjob", "demo")
        self.assertIn("Name:         demo", r.stdout)
        self.assertIn("Replicas:  3", r.stdout)
        bad = self.load("agentjob.json")
        bad["metadata"]["name"] = "bad"
        bad["spec"]["agents"]["min"] = 0
        r = self.kubectl("apply", "-f", "-", stdin=json.dumps(bad), check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("spec.agents.min", r.stderr)
        self.assertIn("greater than or equal to 1", r.stderr)
        r = self.kubectl("delete", "agentjob", "demo")
        self.assertIn('agentjob.kadet.io "demo" deleted', r.stdout)
        r = self.kubectl("get", "aj", "--no-headers")
        self.assertEqual(r.stdout.strip(), "")

    def test_2_builtin_resources(self):
        r = self.kubectl("get", "nodes")
        self.assertIn("fake-node-0", r.stdout)
        self.assertIn("Ready", r.stdout)
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
              "data": {"a": "1"}}
        self.assertIn("created", self.kubectl("apply", "-f", "-", stdin=json.dumps(cm)).stdout)
        cm["data"] = {"a": "2", "b": "3"}
        self.assertIn("configured",
                      self.kubectl("apply", "-f", "-", stdin=json.dumps(cm)).stdout)
        r = self.kubectl("get", "cm", "settings", "-o", "jsonpath={.data.a}{.data.b}")
        self.assertEqual(r.stdout, "23")
        cm["data"] = {"c": "4"}
        r = self.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(cm))
        self.assertIn("serverside-applied", r.stdout)
        r = self.kubectl("get", "cm", "settings", "-o", "jsonpath={.data.c}")
        self.assertEqual(r.stdout, "4")
        pod = self.load("pod.json")
        pod["spec"]["restartPolicy"] = "Never"
        pod["spec"]["containers"][0]["command"] = ["sh", "-c", "echo hello-from-$A; sleep 30"]
        self.assertIn("pod/web created",
                      self.kubectl("apply", "-f", "-", stdin=json.dumps(pod)).stdout)
        # Polling goes through the API directly: a kubectl process per poll is slow.
        self.assertTrue(self.wait_for(lambda: self.emu.request(
            "GET", "/api/v1/namespaces/default/pods/web")[1].get("status", {}).get(
                "phase") == "Running"))
        self.assertIn("Running", self.kubectl("get", "pod", "web", "--no-headers").stdout)
        pod["metadata"]["labels"]["tier"] = "front"
        self.assertIn("configured", self.kubectl("apply", "-f", "-",
                                                 stdin=json.dumps(pod)).stdout)
        r = self.kubectl("get", "pods", "-l", "tier=front", "-o", "name")
        self.assertEqual(r.stdout.strip(), "pod/web")
        self.assertTrue(self.wait_for(lambda: "hello-from-1" in str(self.emu.request(
            "GET", "/api/v1/namespaces/default/pods/web/log")[1])))
        self.assertIn("hello-from-1", self.kubectl("logs", "web").stdout)
        r = self.kubectl("describe", "pod", "web")
        self.assertIn("Node:", r.stdout)
        self.assertIn("fake-node-0", r.stdout)
        r = self.kubectl("describe", "node", "fake-node-0")
        self.assertIn("default  ", r.stdout.replace("\t", "  "))
        r = self.kubectl("delete", "pod", "web", "--grace-period=1", timeout=40)
        self.assertIn('pod "web" deleted', r.stdout)
        r = self.kubectl("get", "pods", "-o", "json")
        self.assertEqual(json.loads(r.stdout)["items"], [])
        self.assertIn('configmap "settings" deleted',
                      self.kubectl("delete", "cm", "settings").stdout)

    def test_4_typed_create_commands_send_protobuf(self):
        self.assertIn("namespace/typed created", self.kubectl("create", "namespace", "typed").stdout)
        self.kubectl("create", "configmap", "cfg", "-n", "typed", "--from-literal=a=b")
        self.kubectl("create", "secret", "generic", "sec", "-n", "typed",
                     "--from-literal=pw=hunter2")
        self.kubectl("create", "service", "clusterip", "front", "-n", "typed", "--tcp=80:8080")
        r = self.kubectl("get", "cm", "cfg", "-n", "typed", "-o", "jsonpath={.data.a}")
        self.assertEqual(r.stdout, "b")
        r = self.kubectl("get", "secret", "sec", "-n", "typed", "-o",
                         "jsonpath={.type} {.data.pw}")
        self.assertEqual(r.stdout, "Opaque aHVudGVyMg==")
        svc = json.loads(self.kubectl("get", "svc", "front", "-n", "typed", "-o", "json").stdout)
        self.assertEqual(svc["spec"]["ports"][0]["targetPort"], 8080)
        self.assertEqual(svc["spec"]["selector"], {"app": "front"})
        r = self.kubectl("delete", "namespace", "typed", timeout=40)
        self.assertIn('namespace "typed" deleted', r.stdout)

    def test_3_watch(self):
        w = subprocess.Popen([KUBECTL, "--kubeconfig", self.emu.kubeconfig, "--cache-dir",
                              os.path.join(self.work, "cache"), "get", "configmaps", "-w",
                              "--request-timeout=0"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(1.5)
            self.kubectl("apply", "-f", "-", stdin=json.dumps(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "watched"}}))
            time.sleep(1.5)
        finally:
            w.terminate()
            out, err = w.communicate(timeout=10)
        self.assertIn("watched", out, err)


class EmulatorScriptTest(unittest.TestCase):
    def test_up_status_down(self):
        state = tempfile.mkdtemp(prefix="emulator-sh-")
        script = os.path.join(TOP, "hack", "emulator.sh")
        kc = os.path.join(state, "my-kubeconfig")
        try:
            r = subprocess.run([script, "up", "--nodes", "2", "--cpu", "3", "--memory", "2Gi",
                                "--state-dir", state, "--kubeconfig", kc],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout.strip(), kc)
            self.assertTrue(os.path.exists(kc))
            r = subprocess.run([script, "status", "--state-dir", state], capture_output=True,
                               text=True, timeout=30)
            self.assertEqual(r.returncode, 0)
            self.assertIn("emulator: running", r.stdout)
            self.assertIn("fake kubelet: running", r.stdout)
            if os.path.exists(KUBECTL):
                r = subprocess.run([KUBECTL, "--kubeconfig", kc, "--cache-dir",
                                    os.path.join(state, "cache"), "get", "nodes", "--no-headers"],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(len(r.stdout.strip().splitlines()), 2, r.stdout + r.stderr)
        finally:
            r = subprocess.run([script, "down", "--state-dir", state], capture_output=True,
                               text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            r = subprocess.run([script, "status", "--state-dir", state], capture_output=True,
                               text=True, timeout=30)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("emulator: stopped", r.stdout)
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
