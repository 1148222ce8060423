"""Emulator API semantics: auth, discovery, CRUD, resourceVersion, optimistic
concurrency, patches, selectors, pagination, generation, status subresource, bindings
and fault injection. One emulator for the whole file; each test uses its own names."""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emulator import Emulator  # noqa: E402

NS = "/api/v1/namespaces/default"


def cm(name, labels=None, data=None):
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels or {}}, "data": data or {"k": "v"}}


def pod(name, labels=None, node=None):
    p = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
         "spec": {"containers": [{"name": "c", "image": "x", "command": ["true"]}]}}
    if node:
        p["spec"]["nodeName"] = node
    return p


class ApiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.emu = Emulator().start()

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()

    def req(self, *a, **kw):
        return self.emu.request(*a, **kw)

    def test_state_dir_files_and_kubeconfig(self):
        for f in ("port", "ca.crt", "token", "kubeconfig", "ready"):
            self.assertTrue(os.path.exists(os.path.join(self.emu.state_dir, f)), f)
        with open(os.path.join(self.emu.state_dir, "kubeconfig")) as f:
            text = f.read()
        self.assertIn("server: https://127.0.0.1:%d" % self.emu.port, text)
        self.assertIn("current-context: emulator", text)
        self.assertIn("token: " + self.emu.token, text)

    def test_token_required(self):
        code, body = self.req("GET", "/api/v1/namespaces", token="wrong")
        self.assertEqual(code, 401)
        self.assertEqual(body["reason"], "Unauthorized")
        self.assertEqual(self.req("GET", "/healthz", token="wrong")[0], 200)

    def test_discovery(self):
        code, body = self.req("GET", "/api")
        self.assertEqual((code, body["versions"]), (200, ["v1"]))
        code, body = self.req("GET", "/api/v1")
        names = {r["name"]: r for r in body["resources"]}
        self.assertTrue(names["pods"]["namespaced"])
        self.assertFalse(names["nodes"]["namespaced"])
        self.assertIn("po", names["pods"]["shortNames"])
        self.assertIn("pods/status", names)
        self.assertIn("pods/binding", names)
        self.assertIn("watch", names["configmaps"]["verbs"])
        code, body = self.req("GET", "/apis")
        groups = [g["name"] for g in body["groups"]]
        self.assertIn("coordination.k8s.io", groups)
        self.assertIn("apiextensions.k8s.io", groups)
        code, body = self.req("GET", "/apis/coordination.k8s.io/v1")
        self.assertEqual(body["resources"][0]["kind"], "Lease")
        self.assertEqual(self.req("GET", "/version")[1]["major"], "1")

    def test_crud_and_monotonic_resource_version(self):
        code, a = self.req("POST", NS + "/configmaps", cm("crud-a"))
        self.assertEqual(code, 201)
        self.assertTrue(a["metadata"]["uid"])
        self.assertTrue(a["metadata"]["creationTimestamp"].endswith("Z"))
        code, b = self.req("POST", NS + "/configmaps", cm("crud-b"))
        self.assertGreater(int(b["metadata"]["resourceVersion"]),
                           int(a["metadata"]["resourceVersion"]))
        code, lst = self.req("GET", NS + "/configmaps")
        self.assertEqual(lst["kind"], "ConfigMapList")
        self.assertGreaterEqual(int(lst["metadata"]["resourceVersion"]),
                                int(b["metadata"]["resourceVersion"]))
        code, got = self.req("GET", NS + "/configmaps/crud-a")
        self.assertEqual((code, got["data"]), (200, {"k": "v"}))
        got["data"] = {"k": "w"}
        code, upd = self.req("PUT", NS + "/configmaps/crud-a", got)
        self.assertEqual(code, 200)
        self.assertGreater(int(upd["metadata"]["resourceVersion"]),
                           int(b["metadata"]["resourceVersion"]))
        code, _ = self.req("DELETE", NS + "/configmaps/crud-a")
        self.assertEqual(code, 200)
        code, body = self.req("GET", NS + "/configmaps/crud-a")
        self.assertEqual((code, body["reason"]), (404, "NotFound"))
        self.assertEqual(body["details"]["name"], "crud-a")

    def test_conflicts(self):
        code, a = self.req("POST", NS + "/configmaps", cm("conf"))
        code, body = self.req("POST", NS + "/configmaps", cm("conf"))
        self.assertEqual((code, body["reason"]), (409, "AlreadyExists"))
        stale = dict(a)
        a["data"] = {"k": "1"}
        self.assertEqual(self.req("PUT", NS + "/configmaps/conf", a)[0], 200)
        stale["data"] = {"k": "2"}
        code, body = self.req("PUT", NS + "/configmaps/conf", stale)
        self.assertEqual((code, body["reason"]), (409, "Conflict"))
        self.assertIn("the object has been modified", body["message"])
        code, body = self.req("PATCH", NS + "/configmaps/conf",
                              {"metadata": {"resourceVersion": "1"}, "data": {"k": "3"}},
                              "application/merge-patch+json")
        self.assertEqual(code, 409)

    def test_exact_list_shows_an_older_version(self):
        code, a = self.req("POST", NS + "/configmaps", cm("ex-a", {"ex": "1"}, {"v": "old"}))
        at = a["metadata"]["resourceVersion"]
        self.req("PATCH", NS + "/configmaps/ex-a", {"data": {"v": "new"}},
                 "application/merge-patch+json")
        self.req("POST", NS + "/configmaps", cm("ex-b", {"ex": "1"}))
        code, body = self.req("GET", NS + "/configmaps?labelSelector=ex&resourceVersion=%s"
                              "&resourceVersionMatch=Exact" % at)
        self.assertEqual(code, 200)
        self.assertEqual(body["metadata"]["resourceVersion"], at)
        self.assertEqual([(c["metadata"]["name"], c["data"]["v"]) for c in body["items"]],
                         [("ex-a", "old")])
        code, body = self.req("GET", NS + "/configmaps?labelSelector=ex&resourceVersion=%s"
                              % at)
        self.assertEqual(len(body["items"]), 2, "NotOlderThan serves the current state")

    def test_generate_name_and_namespace_errors(self):
        obj = cm("")
        obj["metadata"] = {"generateName": "gen-"}
        code, body = self.req("POST", NS + "/configmaps", obj)
        self.assertEqual(code, 201)
        self.assertTrue(body["metadata"]["name"].startswith("gen-"))
        code, body = self.req("POST", "/api/v1/namespaces/nope/configmaps", cm("x"))
        self.assertEqual(code, 404)
        code, body = self.req("POST", NS + "/configmaps", cm("Bad_Name"))
        self.assertEqual((code, body["reason"]), (422, "Invalid"))
        code, body = self.req("POST", NS + "/configmaps", b"{not json")
        self.assertEqual((code, body["reason"]), (400, "BadRequest"))

    def test_merge_patch_and_strategic_merge_patch(self):
        self.req("POST", NS + "/configmaps", cm("mp", {"a": "1", "b": "2"}, {"x": "1", "y": "2"}))
        code, body = self.req("PATCH", NS + "/configmaps/mp",
                              {"metadata": {"labels": {"a": None, "c": "3"}}, "data": {"y": "9"}},
                              "application/merge-patch+json")
        self.assertEqual(code, 200)
        self.assertEqual(body["metadata"]["labels"], {"b": "2", "c": "3"})
        self.assertEqual(body["data"], {"x": "1", "y": "9"})
        self.req("POST", NS + "/pods", pod("smp"))
        code, body = self.req("PATCH", NS + "/pods/smp",
                              {"spec": {"containers": [{"name": "c", "image": "y"}]}},
                              "application/strategic-merge-patch+json")
        self.assertEqual(code, 200)
        self.assertEqual(body["spec"]["containers"][0]["image"], "y")
        self.assertEqual(body["spec"]["containers"][0]["command"], ["true"])
        code, body = self.req("PATCH", NS + "/configmaps/mp",
                              [{"op": "replace", "path": "/data/x", "value": "7"}],
                              "application/json-patch+json")
        self.assertEqual((code, body["data"]["x"]), (200, "7"))
        code, body = self.req("PATCH", NS + "/configmaps/mp", {}, "application/x-unknown")
        self.assertEqual(code, 415)

    def test_server_side_apply_creates_then_merges(self):
        ssa = "application/apply-patch+yaml"
        path = NS + "/configmaps/ssa?fieldManager=test"
        code, body = self.req("PATCH", path, cm("ssa", {"a": "1"}, {"x": "1"}), ssa)
        self.assertEqual((code, body["data"]), (201, {"x": "1"}))
        code, body = self.req("PATCH", path, cm("ssa", {"b": "2"}, {"y": "2"}), ssa)
        self.assertEqual(code, 200)
        self.assertEqual(body["data"], {"x": "1", "y": "2"})
        self.assertEqual(body["metadata"]["labels"], {"a": "1", "b": "2"})
        code, body = self.req("PATCH", NS + "/configmaps/ssa", cm("ssa"), ssa)
        self.assertEqual(code, 400, "fieldManager is required")
        code, body = self.req("PATCH", path, b"data:\n  x: 1\n", ssa)
        self.assertEqual(code, 415, "YAML apply bodies are not read")

    def test_label_and_field_selectors(self):
        for i, (env, tier) in enumerate([("prod", "web"), ("dev", "web"), ("prod", "db")]):
            self.req("POST", NS + "/pods", pod("sel-%d" % i, {"sel": "yes", "env": env,
                                                             "tier": tier},
                                               node="n1" if i == 0 else None))

        def names(q):
            code, body = self.req("GET", NS + "/pods?" + q)
            self.assertEqual(code, 200, body)
            return sorted(p["metadata"]["name"] for p in body["items"])
        self.assertEqual(names("labelSelector=sel,env%3Dprod"), ["sel-0", "sel-2"])
        self.assertEqual(names("labelSelector=sel,env!%3Dprod"), ["sel-1"])
        self.assertEqual(names("labelSelector=sel,tier+in+(db,cache)"), ["sel-2"])
        self.assertEqual(names("labelSelector=sel,tier+notin+(db)"), ["sel-0", "sel-1"])
        self.assertEqual(names("labelSelector=sel,!missing"), ["sel-0", "sel-1", "sel-2"])
        self.assertEqual(names("labelSelector=sel,env%3D%3Ddev"), ["sel-1"])
        self.assertEqual(names("labelSelector=sel&fieldSelector=spec.nodeName%3Dn1"), ["sel-0"])
        self.assertEqual(names("labelSelector=sel&fieldSelector=metadata.name%3Dsel-1"),
                         ["sel-1"])
        self.assertEqual(names("labelSelector=sel&fieldSelector=status.phase%3DPending,"
                               "spec.nodeName%3D"), ["sel-1", "sel-2"])
        code, body = self.req("GET", NS + "/pods?labelSelector=a+in+(b")
        self.assertEqual(code, 400)

    def test_pagination(self):
        for i in range(7):
            self.req("POST", NS + "/configmaps", cm("page-%d" % i, {"page": "1"}))
        seen, cont, rvs = [], "", set()
        while True:
            q = "labelSelector=page&limit=3" + ("&continue=" + cont if cont else "")
            code, body = self.req("GET", NS + "/configmaps?" + q)
            self.assertEqual(code, 200)
            self.assertLessEqual(len(body["items"]), 3)
            seen += [c["metadata"]["name"] for c in body["items"]]
            rvs.add(body["metadata"]["resourceVersion"])
            cont = body["metadata"].get("continue")
            if not cont:
                break
        self.assertEqual(seen, ["page-%d" % i for i in range(7)])
        self.assertEqual(len(rvs), 1)
        # Later pages show the state of the first page's version, as etcd does.
        code, first = self.req("GET", NS + "/configmaps?labelSelector=page&limit=3")
        self.req("DELETE", NS + "/configmaps/page-5")
        self.req("POST", NS + "/configmaps", cm("page-55", {"page": "1"}))
        code, rest = self.req("GET", NS + "/configmaps?labelSelector=page&limit=10&continue="
                              + first["metadata"]["continue"])
        self.assertEqual([c["metadata"]["name"] for c in rest["items"]],
                         ["page-3", "page-4", "page-5", "page-6"])
        code, body = self.req("GET", NS + "/configmaps?limit=1&continue=bm90LWpzb24=")
        self.assertEqual(code, 400)

    def test_generation_and_status_subresource(self):
        self.req("POST", NS + "/pods", pod("gen"))
        code, p = self.req("GET", NS + "/pods/gen")
        self.assertEqual(p["metadata"]["generation"], 1)
        p["metadata"]["labels"] = {"x": "y"}
        p["status"] = {"phase": "Running"}
        code, p = self.req("PUT", NS + "/pods/gen", p)
        self.assertEqual(p["metadata"]["generation"], 1, "metadata change keeps generation")
        self.assertEqual(p["status"]["phase"], "Pending", "main endpoint ignores status")
        code, p = self.req("PATCH", NS + "/pods/gen/status", {"status": {"phase": "Running"},
                                                               "spec": {"nodeName": "zz"}},
                           "application/merge-patch+json")
        self.assertEqual((code, p["status"]["phase"]), (200, "Running"))
        self.assertNotIn("nodeName", p["spec"], "status endpoint ignores spec")
        self.assertEqual(p["metadata"]["generation"], 1)
        code, p = self.req("PATCH", NS + "/pods/gen", {"spec": {"activeDeadlineSeconds": 5}},
                           "application/merge-patch+json")
        self.assertEqual(p["metadata"]["generation"], 2, "spec change bumps generation")

    def test_binding(self):
        self.req("POST", NS + "/pods", pod("bind"))
        code, body = self.req("POST", NS + "/pods/bind/binding",
                              {"apiVersion": "v1", "kind": "Binding",
                               "metadata": {"name": "bind"},
                               "target": {"kind": "Node", "name": "node-a"}})
        self.assertEqual(code, 201, body)
        self.assertEqual(self.req("GET", NS + "/pods/bind")[1]["spec"]["nodeName"], "node-a")
        code, body = self.req("POST", NS + "/pods/bind/binding",
                              {"target": {"kind": "Node", "name": "node-b"}})
        self.assertEqual(code, 409)

    def test_services_get_cluster_ip(self):
        code, s = self.req("POST", NS + "/services", {
            "metadata": {"name": "svc"}, "spec": {"selector": {"app": "x"},
                                                  "ports": [{"port": 80}]}})
        self.assertEqual(code, 201)
        self.assertTrue(s["spec"]["clusterIP"].startswith("10.96."))
        self.assertEqual(s["spec"]["ports"][0]["targetPort"], 80)

    def test_table_output(self):
        self.req("POST", NS + "/pods", pod("tbl"))
        code, t = self.req("GET", NS + "/pods",
                           headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
        self.assertEqual(t["kind"], "Table")
        self.assertEqual([c["name"] for c in t["columnDefinitions"]][:3],
                         ["Name", "Ready", "Status"])
        self.assertIn("tbl", [r["cells"][0] for r in t["rows"]])

    def test_faults_fail_next_and_delay(self):
        self.emu.fault(failNext=2, code=429, retryAfter=3)
        code, body = self.req("GET", NS + "/configmaps")
        self.assertEqual((code, body["reason"]), (429, "TooManyRequests"))
        self.assertEqual(self.emu.last_headers.get("Retry-After"), "3")
        self.assertEqual(body["details"]["retryAfterSeconds"], 3)
        self.assertEqual(self.req("GET", NS + "/configmaps")[0], 429)
        self.assertEqual(self.req("GET", NS + "/configmaps")[0], 200)
        self.emu.fault(failNext=1, code=500)
        code, body = self.req("GET", NS + "/configmaps")
        self.assertEqual((code, body["reason"]), (500, "InternalError"))
        self.emu.fault(delayMs=300)
        t0 = time.monotonic()
        self.req("GET", NS + "/configmaps")
        self.assertGreaterEqual(time.monotonic() - t0, 0.3)
        self.emu.fault(delayMs=0)
        st = self.emu.state()
        self.assertGreater(st["requests"], 0)
        self.assertGreater(st["resourceVersion"], 1)

    def test_token_rotation(self):
        self.emu.fault(tokens=[self.emu.token, "second-token"])
        self.assertEqual(self.req("GET", "/api", token="second-token")[0], 200)
        self.emu.fault(tokens=[self.emu.token])
        self.assertEqual(self.req("GET", "/api", token="second-token")[0], 401)

    def test_malformed_bodies_are_client_errors(self):
        cases = [("POST", NS + "/configmaps", {"metadata": 5}),
                 ("POST", NS + "/configmaps", {"metadata": {"name": "m1", "labels": [1]}}),
                 ("POST", NS + "/configmaps", {"metadata": {"name": "m2"}, "data": {"a": 1}}),
                 ("POST", NS + "/pods", {"metadata": {"name": "m3"}, "spec": []}),
                 ("POST", NS + "/pods", {"metadata": {"name": "m4", "finalizers": "x"}}),
                 ("POST", NS + "/pods", {"metadata": {"name": "m5", "ownerReferences": [{}]}}),
                 ("POST", "/api/v1/namespaces", [1, 2]),
                 ("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                  {"metadata": {"name": "a.b"}, "spec": {"group": "b", "scope": "Cluster",
                   "names": {"plural": "a", "kind": "A"},
                   "versions": [{"name": "v1", "storage": True, "schema": {
                       "openAPIV3Schema": {"type": "object", "properties": 3}}}]}}),
                 ("DELETE", NS + "/configmaps/x", {"preconditions": "x"}),
                 ("DELETE", NS + "/configmaps/x", {"propagationPolicy": "Sometimes"})]
        self.req("POST", NS + "/configmaps", cm("x"))
        for method, path, body in cases:
            code, resp = self.req(method, path, body)
            self.assertIn(code, (400, 422), (method, path, body, resp))
            self.assertEqual(resp["kind"], "Status")
        code, resp = self.req("PATCH", NS + "/configmaps/x", {"metadata": 1},
                              "application/merge-patch+json")
        self.assertEqual(code, 400)
        self.assertEqual(self.req("GET", NS + "/configmaps/x")[0], 200)
        huge = cm("huge", data={"blob": "x" * (4 << 20)})
        code, resp = self.req("POST", NS + "/configmaps", huge)
        self.assertEqual((code, resp["reason"]), (413, "RequestEntityTooLarge"))

    def test_bulk_and_large_list(self):
        objs = [{"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "bulk-%05d" % i, "namespace": "bulk",
                              "labels": {"bulk": "1"}},
                 "spec": {"containers": [{"name": "c", "image": "x"}]}} for i in range(10000)]
        self.req("POST", "/api/v1/namespaces", {"metadata": {"name": "bulk"}})
        code, body = self.req("POST", "/_emulator/bulk", {"objects": objs})
        self.assertEqual((code, body["created"]), (200, 10000))
        t0 = time.monotonic()
        code, body = self.req("GET", "/api/v1/namespaces/bulk/pods")
        elapsed = time.monotonic() - t0
        self.assertEqual(len(body["items"]), 10000)
        self.assertLess(elapsed, 2.0, "list of 10,000 pods took %.2fs" % elapsed)


if __name__ == "__main__":
    unittest.main(verbosity=2)
