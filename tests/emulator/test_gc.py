"""Emulator deletion semantics: finalizers keep an object (with deletionTimestamp) until
they are removed; owner-reference garbage collection in background, foreground and
orphan modes; graceful deletion of bound pods; namespace deletion removes its content."""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emulator import Emulator  # noqa: E402

NS = "/api/v1/namespaces/default"


def cm(name, owner=None, finalizers=None):
    md = {"name": name}
    if owner:
        md["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap",
                                  "name": owner["metadata"]["name"],
                                  "uid": owner["metadata"]["uid"], "controller": True,
                                  "blockOwnerDeletion": True}]
    if finalizers:
        md["finalizers"] = finalizers
    return {"metadata": md, "data": {}}


class GcTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.emu = Emulator().start()

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()

    def req(self, *a, **kw):
        return self.emu.request(*a, **kw)

    def gone(self, path, timeout=5):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.req("GET", path)[0] == 404:
                return True
            time.sleep(0.05)
        return False

    def test_finalizers_hold_the_object_until_removed(self):
        self.req("POST", NS + "/configmaps", cm("fin", finalizers=["example.com/hold"]))
        code, body = self.req("DELETE", NS + "/configmaps/fin")
        self.assertEqual(code, 202)
        self.assertIn("deletionTimestamp", body["metadata"])
        code, body = self.req("GET", NS + "/configmaps/fin")
        self.assertEqual(code, 200)
        self.assertTrue(body["metadata"]["deletionTimestamp"])
        code, body = self.req("PATCH", NS + "/configmaps/fin",
                              {"metadata": {"finalizers": ["example.com/hold", "other/x"]}},
                              "application/merge-patch+json")
        self.assertEqual(code, 422, "no new finalizers while deleting")
        code, body = self.req("PATCH", NS + "/configmaps/fin", {"metadata": {"finalizers": None}},
                              "application/merge-patch+json")
        self.assertEqual(code, 200)
        self.assertEqual(self.req("GET", NS + "/configmaps/fin")[0], 404)

    def test_background_deletes_dependents_after_owner(self):
        code, owner = self.req("POST", NS + "/configmaps", cm("bg-owner"))
        self.req("POST", NS + "/configmaps", cm("bg-dep1", owner))
        self.req("POST", NS + "/configmaps", cm("bg-dep2", owner))
        code, _ = self.req("DELETE", NS + "/configmaps/bg-owner",
                           {"propagationPolicy": "Background"})
        self.assertEqual(code, 200)
        self.assertEqual(self.req("GET", NS + "/configmaps/bg-owner")[0], 404)
        self.assertTrue(self.gone(NS + "/configmaps/bg-dep1"))
        self.assertTrue(self.gone(NS + "/configmaps/bg-dep2"))

    def test_foreground_keeps_owner_until_dependents_are_gone(self):
        code, owner = self.req("POST", NS + "/configmaps", cm("fg-owner"))
        self.req("POST", NS + "/configmaps", cm("fg-dep", owner, ["example.com/slow"]))
        code, body = self.req("DELETE", NS + "/configmaps/fg-owner?propagationPolicy=Foreground")
        self.assertEqual(code, 202)
        self.assertIn("foregroundDeletion", body["metadata"]["finalizers"])
        deadline = time.time() + 5
        while time.time() < deadline:
            dep = self.req("GET", NS + "/configmaps/fg-dep")[1]
            if dep["metadata"].get("deletionTimestamp"):
                break
            time.sleep(0.05)
        self.assertTrue(dep["metadata"].get("deletionTimestamp"))
        time.sleep(0.5)
        self.assertEqual(self.req("GET", NS + "/configmaps/fg-owner")[0], 200,
                         "owner waits for its dependent")
        self.req("PATCH", NS + "/configmaps/fg-dep", {"metadata": {"finalizers": None}},
                 "application/merge-patch+json")
        self.assertTrue(self.gone(NS + "/configmaps/fg-owner"))

    def test_orphan_keeps_dependents_without_owner_reference(self):
        code, owner = self.req("POST", NS + "/configmaps", cm("or-owner"))
        self.req("POST", NS + "/configmaps", cm("or-dep", owner))
        self.req("DELETE", NS + "/configmaps/or-owner", {"propagationPolicy": "Orphan"})
        self.assertTrue(self.gone(NS + "/configmaps/or-owner"))
        time.sleep(0.3)
        code, dep = self.req("GET", NS + "/configmaps/or-dep")
        self.assertEqual(code, 200)
        self.assertNotIn("ownerReferences", dep["metadata"])

    def test_bound_pod_deletion_is_graceful(self):
        pod = {"metadata": {"name": "grace"},
               "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 20,
                        "containers": [{"name": "c", "image": "x"}]}}
        self.req("POST", NS + "/pods", pod)
        code, body = self.req("DELETE", NS + "/pods/grace")
        self.assertEqual(code, 202)
        self.assertEqual(body["metadata"]["deletionGracePeriodSeconds"], 20)
        self.assertEqual(self.req("GET", NS + "/pods/grace")[0], 200)
        code, body = self.req("DELETE", NS + "/pods/grace", {"gracePeriodSeconds": 0,
                                                             "preconditions": {"uid": "nope"}})
        self.assertEqual(code, 409)
        code, body = self.req("DELETE", NS + "/pods/grace?gracePeriodSeconds=0")
        self.assertEqual(code, 200)
        self.assertEqual(self.req("GET", NS + "/pods/grace")[0], 404)
        # An unbound pod goes at once.
        pod["metadata"]["name"] = "unbound"
        del pod["spec"]["nodeName"]
        self.req("POST", NS + "/pods", pod)
        self.assertEqual(self.req("DELETE", NS + "/pods/unbound")[0], 200)

    def test_namespace_deletion_removes_its_content(self):
        self.req("POST", "/api/v1/namespaces", {"metadata": {"name": "doomed"}})
        self.req("POST", "/api/v1/namespaces/doomed/configmaps", cm("a"))
        self.req("POST", "/api/v1/namespaces/doomed/configmaps", cm("b", finalizers=["x/y"]))
        self.assertEqual(self.req("DELETE", "/api/v1/namespaces/doomed")[0], 202)
        deadline = time.time() + 5
        while time.time() < deadline:
            ns = self.req("GET", "/api/v1/namespaces/doomed")[1]
            if ns.get("status", {}).get("phase") == "Terminating":
                break
            time.sleep(0.05)
        self.assertEqual(ns["status"]["phase"], "Terminating")
        code, body = self.req("POST", "/api/v1/namespaces/doomed/configmaps", cm("c"))
        self.assertEqual(code, 403)
        self.assertTrue(self.gone("/api/v1/namespaces/doomed/configmaps/a"))
        self.req("PATCH", "/api/v1/namespaces/doomed/configmaps/b",
                 {"metadata": {"finalizers": None}}, "application/merge-patch+json")
        self.assertTrue(self.gone("/api/v1/namespaces/doomed"))

    def test_delete_collection_with_selector(self):
        for i in range(3):
            obj = cm("dc-%d" % i)
            obj["metadata"]["labels"] = {"dc": "yes" if i < 2 else "no"}
            self.req("POST", NS + "/configmaps", obj)
        code, body = self.req("DELETE", NS + "/configmaps?labelSelector=dc%3Dyes")
        self.assertEqual(code, 200)
        self.assertEqual(len(body["items"]), 2)
        code, body = self.req("GET", NS + "/configmaps?labelSelector=dc")
        self.assertEqual([c["metadata"]["name"] for c in body["items"]], ["dc-2"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
