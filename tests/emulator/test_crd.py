"""Emulator CustomResourceDefinitions: CRDs make custom resources servable (discovery,
CRUD), schemas are enforced (required, types, enum, ranges, defaults, pruning, a CEL
subset) with 422 field causes, status and scale subresources, printer columns in Table
output, and deleting the CRD deletes its resources."""

import copy
import json
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from emulator import Emulator  # noqa: E402

AJ = "/apis/kadet.io/v1alpha1/namespaces/default/agentjobs"


def load(name):
    with open(os.path.join(HERE, "testdata", name)) as f:
        return json.load(f)


class CrdTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.emu = Emulator().start()
        code, body = cls.emu.request("POST", "/apis/apiextensions.k8s.io/v1/"
                                     "customresourcedefinitions", load("agentjob-crd.json"))
        assert code == 201, body
        cls.crd = body

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()

    def req(self, *a, **kw):
        return self.emu.request(*a, **kw)

    def job(self, name, **spec):
        j = load("agentjob.json")
        j["metadata"]["name"] = name
        j["spec"].update(spec)
        return j

    def test_crd_is_established_and_discoverable(self):
        conds = {c["type"]: c["status"] for c in self.crd["status"]["conditions"]}
        self.assertEqual(conds["Established"], "True")
        code, body = self.req("GET", "/apis/kadet.io/v1alpha1")
        res = {r["name"]: r for r in body["resources"]}
        self.assertEqual(res["agentjobs"]["kind"], "AgentJob")
        self.assertEqual(res["agentjobs"]["shortNames"], ["aj"])
        self.assertIn("agentjobs/status", res)
        self.assertEqual(res["agentjobs/scale"]["group"], "autoscaling")
        code, body = self.req("GET", "/apis")
        self.assertIn("kadet.io", [g["name"] for g in body["groups"]])

    def test_create_applies_defaults_and_drops_status(self):
        j = self.job("defaults")
        del j["spec"]["training"]["epochs"]
        j["status"] = {"phase": "Running"}
        code, body = self.req("POST", AJ, j)
        self.assertEqual(code, 201, body)
        self.assertEqual(body["spec"]["training"]["epochs"], 1)
        self.assertNotIn("status", body)
        self.assertEqual(body["metadata"]["generation"], 1)

    def test_schema_violations_are_422_with_causes(self):
        cases = [
            ({"agents": {"min": 0, "max": 2}}, "spec.agents.min", "FieldValueInvalid"),
            ({"agents": {"min": 1, "max": 65}}, "spec.agents.max", "FieldValueInvalid"),
            ({"agents": {"min": "one", "max": 2}}, "spec.agents.min", "FieldValueTypeInvalid"),
            ({"agents": {"min": 1}}, "spec.agents.max", "FieldValueRequired"),
            ({"training": {"sync": {"mode": "gossip"}}}, "spec.training.sync.mode",
             "FieldValueNotSupported"),
            ({"agents": {"min": 4, "max": 2}}, "spec", "FieldValueInvalid"),
        ]
        for spec, field, reason in cases:
            code, body = self.req("POST", AJ, self.job("bad", **spec))
            self.assertEqual((code, body["reason"]), (422, "Invalid"), spec)
            causes = {(c["field"], c["reason"]) for c in body["details"]["causes"]}
            self.assertIn((field, reason), causes, body)
            self.assertIn('AgentJob.kadet.io "bad" is invalid', body["message"])
        j = self.job("missing")
        del j["spec"]["training"]
        code, body = self.req("POST", AJ, j)
        self.assertEqual(body["details"]["causes"][0]["field"], "spec.training")

    def test_unknown_fields_pruned_or_rejected_by_field_validation(self):
        j = self.job("prune")
        j["spec"]["agents"]["extra"] = 1
        code, body = self.req("POST", AJ + "?fieldValidation=Strict", copy.deepcopy(j))
        self.assertEqual(code, 400)
        self.assertIn('unknown field "spec.agents.extra"', body["message"])
        code, body = self.req("POST", AJ, j)
        self.assertEqual(code, 201)
        self.assertNotIn("extra", body["spec"]["agents"])
        self.assertIn("Warning", self.emu.last_headers)

    def test_status_subresource(self):
        code, j = self.req("POST", AJ, self.job("st"))
        code, body = self.req("PATCH", AJ + "/st/status",
                              {"status": {"phase": "Running", "agents": {"ready": 2}}},
                              "application/merge-patch+json")
        self.assertEqual((code, body["status"]["phase"]), (200, "Running"))
        self.assertEqual(body["metadata"]["generation"], 1)
        body["status"]["phase"] = "Failed"
        body["spec"]["agents"]["max"] = 3
        code, body2 = self.req("PUT", AJ + "/st", body)
        self.assertEqual(body2["status"]["phase"], "Running", "main endpoint ignores status")
        self.assertEqual(body2["metadata"]["generation"], 2)
        body2["status"]["phase"] = "Succeeded"
        code, body3 = self.req("PUT", AJ + "/st/status", body2)
        self.assertEqual(body3["status"]["phase"], "Succeeded")
        body2["metadata"]["resourceVersion"] = j["metadata"]["resourceVersion"]
        self.assertEqual(self.req("PUT", AJ + "/st/status", body2)[0], 409)

    def test_scale_subresource(self):
        self.req("POST", AJ, self.job("sc"))
        self.req("PATCH", AJ + "/sc/status", {"status": {"agents": {"ready": 2},
                                                          "selector": "kadet.io/job-name=sc"}},
                 "application/merge-patch+json")
        code, s = self.req("GET", AJ + "/sc/scale")
        self.assertEqual((code, s["kind"], s["apiVersion"]), (200, "Scale", "autoscaling/v1"))
        self.assertEqual((s["spec"]["replicas"], s["status"]["replicas"]), (0, 2))
        self.assertEqual(s["status"]["selector"], "kadet.io/job-name=sc")
        code, s = self.req("PATCH", AJ + "/sc/scale", {"spec": {"replicas": 3}},
                           "application/merge-patch+json")
        self.assertEqual((code, s["spec"]["replicas"]), (200, 3))
        code, j = self.req("GET", AJ + "/sc")
        self.assertEqual((j["spec"]["replicas"], j["metadata"]["generation"]), (3, 2))
        s["spec"]["replicas"] = 5
        self.assertEqual(self.req("PUT", AJ + "/sc/scale", s)[0], 200)
        self.assertEqual(self.req("GET", AJ + "/sc")[1]["spec"]["replicas"], 5)
        self.assertEqual(self.req("PUT", AJ + "/sc/scale", s)[0], 409, "stale scale update")
        code, body = self.req("PATCH", AJ + "/sc/scale", {"spec": {"replicas": -1}},
                              "application/merge-patch+json")
        self.assertEqual(code, 422)

    def test_printer_columns(self):
        self.req("POST", AJ, self.job("cols"))
        self.req("PATCH", AJ + "/cols/status", {"status": {"phase": "Running",
                                                            "agents": {"desired": 4, "ready": 3}}},
                 "application/merge-patch+json")
        code, t = self.req("GET", AJ + "/cols", headers={
            "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"})
        self.assertEqual([c["name"] for c in t["columnDefinitions"]],
                         ["Name", "Phase", "Desired", "Ready", "Age"])
        self.assertEqual(t["rows"][0]["cells"][:4], ["cols", "Running", 4, 3])
        self.assertRegex(t["rows"][0]["cells"][4], r"^\d+s$")

    def test_deleting_the_crd_deletes_its_resources(self):
        crd = load("agentjob-crd.json")
        crd["metadata"]["name"] = "widgets.example.com"
        crd["spec"]["group"] = "example.com"
        crd["spec"]["scope"] = "Cluster"
        crd["spec"]["names"] = {"plural": "widgets", "singular": "widget", "kind": "Widget"}
        crd["spec"]["versions"][0]["name"] = "v1"
        base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        self.assertEqual(self.req("POST", base, crd)[0], 201)
        w = self.job("w1")
        w["apiVersion"] = "example.com/v1"
        w["kind"] = "Widget"
        del w["metadata"]["namespace"]
        code, body = self.req("POST", "/apis/example.com/v1/widgets", w)
        self.assertEqual(code, 201, body)
        self.assertNotIn("namespace", body["metadata"])
        self.assertEqual(self.req("DELETE", base + "/widgets.example.com")[0], 202)
        deadline = time.time() + 10
        while time.time() < deadline and \
                self.req("GET", base + "/widgets.example.com")[0] != 404:
            time.sleep(0.1)
        self.assertEqual(self.req("GET", base + "/widgets.example.com")[0], 404)
        self.assertEqual(self.req("GET", "/apis/example.com/v1/widgets")[0], 404)

    def test_invalid_crd_rejected(self):
        crd = load("agentjob-crd.json")
        crd["metadata"]["name"] = "wrong.name"
        code, body = self.req("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                              crd)
        self.assertEqual(code, 422)


if __name__ == "__main__":
    unittest.main(verbosity=2)
