"""Pure helpers of the emulator: selectors, patches, JSONPath, CEL subset, schema
validation and ages, checked without a server."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import emu_proto  # noqa: E402
import emu_schema  # noqa: E402
from emu_api import Api  # noqa: E402
from emu_util import (ApiError, human_age, json_patch, jsonpath, labels_match,  # noqa: E402
                      merge_patch, parse_label_selector, strategic_merge_patch)
from kubelet_pods import expand, parse_cpu, parse_memory, pod_requests  # noqa: E402


class UnitTest(unittest.TestCase):
    def test_label_selector_grammar(self):
        reqs = parse_label_selector("a=b, c!=d,e in (x, y),f notin (z),g,!h,i==j")
        self.assertEqual([r[1] for r in reqs], ["=", "!=", "in", "notin", "exists", "!", "="])
        self.assertTrue(labels_match(reqs, {"a": "b", "e": "y", "g": "", "i": "j"}))
        self.assertFalse(labels_match(reqs, {"a": "b", "e": "y", "g": "", "i": "j", "h": "1"}))
        for bad in ("a in (b", "=b", "a=b,,", "a b"):
            with self.assertRaises(ApiError, msg=bad):
                parse_label_selector(bad)

    def test_merge_patch_rfc7386(self):
        self.assertEqual(merge_patch({"a": {"b": 1, "c": 2}, "l": [1]},
                                     {"a": {"b": None, "d": 3}, "l": [2]}),
                         {"a": {"c": 2, "d": 3}, "l": [2]})

    def test_strategic_merge_patch_directives(self):
        cur = {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}],
               "finalizers": ["x", "y"], "m": {"k": 1, "j": 2}}
        out = strategic_merge_patch(cur, {
            "containers": [{"name": "b", "image": "3"}, {"name": "c", "image": "4"}],
            "$setElementOrder/containers": [{"name": "c"}, {"name": "b"}, {"name": "a"}],
            "$deleteFromPrimitiveList/finalizers": ["x"],
            "m": {"$retainKeys": ["k"], "k": 5}})
        self.assertEqual([(c["name"], c["image"]) for c in out["containers"]],
                         [("c", "4"), ("b", "3"), ("a", "1")])
        self.assertEqual(out["finalizers"], ["y"])
        self.assertEqual(out["m"], {"k": 5})
        out = strategic_merge_patch(cur, {"containers": [{"name": "a", "$patch": "delete"}]})
        self.assertEqual([c["name"] for c in out["containers"]], ["b"])

    def test_json_patch(self):
        doc = {"a": [1, 2], "b": {"c": 1}}
        out = json_patch(doc, [{"op": "add", "path": "/a/-", "value": 3},
                               {"op": "remove", "path": "/b/c"},
                               {"op": "copy", "from": "/a/0", "path": "/b/x"}])
        self.assertEqual(out, {"a": [1, 2, 3], "b": {"x": 1}})
        with self.assertRaises(ApiError):
            json_patch(doc, [{"op": "replace", "path": "/nope", "value": 1}])

    def test_jsonpath_subset(self):
        obj = {"status": {"conditions": [{"type": "A", "status": "False"},
                                         {"type": "Ready", "status": "True"}]}}
        self.assertEqual(jsonpath(obj, '.status.conditions[?(@.type=="Ready")].status'), "True")
        self.assertEqual(jsonpath(obj, ".status.conditions[0].type"), "A")
        self.assertIsNone(jsonpath(obj, ".spec.missing"))

    def test_cel_subset(self):
        self.assertTrue(emu_schema.cel_eval("self.max >= self.min", {"min": 1, "max": 2}))
        self.assertFalse(emu_schema.cel_eval("self.max >= self.min && size(self.n) > 0",
                                             {"min": 3, "max": 2, "n": "x"}))
        self.assertTrue(emu_schema.cel_eval("!has(self.replicas) || self.replicas <= self.max",
                                            {"max": 2}))
        self.assertIsNone(emu_schema.cel_eval("self.all(x, x > 0)", [1]),
                          "unsupported rules are not enforced")

    def test_schema_defaults_pruning_and_causes(self):
        schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "n": {"type": "integer", "default": 3, "minimum": 1},
            "s": {"type": "string", "enum": ["a", "b"]},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}
        obj = {"spec": {"s": "c", "extra": 1, "free": {"anything": [1]}}}
        causes, pruned = [], []
        emu_schema.validate(schema, obj, "", causes, pruned)
        self.assertEqual(obj["spec"]["n"], 3)
        self.assertEqual(pruned, ["spec.extra"])
        self.assertEqual(obj["spec"]["free"], {"anything": [1]})
        self.assertEqual([(c[0], c[1]) for c in causes], [("FieldValueNotSupported", "spec.s")])

    def test_quantities_and_requests(self):
        self.assertEqual(parse_cpu("500m"), 500)
        self.assertEqual(parse_cpu("2"), 2000)
        self.assertEqual(parse_cpu("0.25"), 250)
        self.assertEqual(parse_memory("1Gi"), 1 << 30)
        self.assertEqual(parse_memory("1G"), 10 ** 9)
        with self.assertRaises(ValueError):
            parse_cpu("lots")
        pod = {"spec": {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Mi"}}},
                                       {"resources": {"requests": {"cpu": "100m"}}}]}}
        self.assertEqual(pod_requests(pod), (1100, 1 << 20))

    def test_env_expansion(self):
        env = {"A": "x"}
        self.assertEqual(expand("$(A)-$(B)-$$(A)", env), "x-$(B)-$(A)")

    def test_human_age(self):
        self.assertEqual([human_age(s) for s in (5, 119, 150, 3600 * 3, 86400 * 3)],
                         ["5s", "119s", "2m30s", "3h", "3d"])


if __name__ == "__main__":
    unittest.main(verbosity=2)


def _pb_field(num, wt, payload):
    def varint(v):
        out = b""
        while True:
            b = v & 0x7F
            v >>= 7
            if v:
                out += bytes([b | 0x80])
            else:
                return out + bytes([b])
    key = varint(num << 3 | wt)
    if wt == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


class DeleteOptionsProtobufTest(unittest.TestCase):
    """helm uninstall deletes its release Secret with DeleteOptions as protobuf."""

    def envelope(self, api_version, kind, raw):
        tm = _pb_field(1, 2, api_version.encode()) + _pb_field(2, 2, kind.encode())
        return emu_proto.MAGIC + _pb_field(1, 2, tm) + _pb_field(2, 2, raw)

    def test_decoded_like_json(self):
        raw = (_pb_field(1, 0, 30) + _pb_field(2, 2, _pb_field(1, 2, b"u-1")) +
               _pb_field(4, 2, b"Background") + _pb_field(5, 2, b"All"))
        opts = Api.delete_options(self.envelope("v1", "DeleteOptions", raw), {})
        self.assertEqual(opts, {"gracePeriodSeconds": 30, "preconditions": {"uid": "u-1"},
                                "propagationPolicy": "Background", "dryRun": ["All"]})
        opts = Api.delete_options(self.envelope("meta.k8s.io/v1", "DeleteOptions", b""), {})
        self.assertEqual(opts, {})

    def test_other_kinds_and_garbage_are_refused(self):
        with self.assertRaises(ApiError) as e:
            Api.delete_options(self.envelope("v1", "ConfigMap", b""), {})
        self.assertEqual(e.exception.code, 400)
        with self.assertRaises(ApiError) as e:
            Api.delete_options(emu_proto.MAGIC + b"\xff\xff", {})
        self.assertEqual(e.exception.code, 400)
        with self.assertRaises(ApiError) as e:
            Api.delete_options(b"{not json", {})
        self.assertIn("not valid JSON", e.exception.message)
