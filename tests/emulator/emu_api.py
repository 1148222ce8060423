"""Request semantics of the Kubernetes API emulator: URL routing to resource types,
discovery documents, and the verbs (get, list with pagination and selectors, watch with
bookmarks, create, update, merge/strategic/JSON patch, delete and deletecollection)
plus the status, scale, binding and log subresources and CRD registration.

Api.handle() takes a parsed request and returns a Response; watches and log follows
return a generator of chunks that the HTTP layer streams. All state lives in the Store.
"""

import base64
import json
import os
import queue
import time
import urllib.parse

import emu_crd
import emu_proto
import emu_schema
from emu_store import ResourceType, check_shape
from emu_util import (ApiError, bad_request, dumps, invalid, json_patch, merge_patch,
                      parse_field_selector, parse_label_selector, strategic_merge_patch)

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SUB_VERBS = {"status": ["get", "patch", "update"], "scale": ["get", "patch", "update"],
             "binding": ["create"], "log": ["get"]}
LOG_ANNOTATION = "emulator.kadet.io/log-file"
APPLY_TYPE = "application/apply-patch+"
# Streams yield IDLE when they have had nothing to send for IDLE_CHECK seconds: the HTTP
# layer then checks whether the client went away, so that abandoned watches end promptly.
IDLE = b""
IDLE_CHECK = 1.0


class Response:
    def __init__(self, code=200, body=b"", headers=None, stream=None):
        self.code, self.body, self.headers, self.stream = code, body, headers or {}, stream


def builtin_types():
    core = [("namespaces", "Namespace", False, ["ns"], ["status"]),
            ("pods", "Pod", True, ["po"], ["status", "binding", "log"]),
            ("services", "Service", True, ["svc"], ["status"]),
            ("endpoints", "Endpoints", True, ["ep"], []),
            ("events", "Event", True, ["ev"], []),
            ("configmaps", "ConfigMap", True, ["cm"], []),
            ("secrets", "Secret", True, [], []),
            ("serviceaccounts", "ServiceAccount", True, ["sa"], []),
            ("nodes", "Node", False, ["no"], ["status"])]
    out = [ResourceType("", ["v1"], p, k, n, s, sub, categories=["all"] if p in
                        ("pods", "services") else ()) for p, k, n, s, sub in core]
    out.append(ResourceType("coordination.k8s.io", ["v1"], "leases", "Lease", True))
    # Stored and served without controllers: enough for kubectl apply of an install
    # manifest (RBAC, the operator Deployment) and for kubectl scale on workloads.
    for plural, kind, short in (("deployments", "Deployment", ["deploy"]),
                                ("statefulsets", "StatefulSet", ["sts"]),
                                ("replicasets", "ReplicaSet", ["rs"])):
        rt = ResourceType("apps", ["v1"], plural, kind, True, short, ["status", "scale"],
                          categories=["all"])
        rt.scale = (".spec.replicas", ".status.replicas", None)
        out.append(rt)
    out.append(ResourceType("apps", ["v1"], "daemonsets", "DaemonSet", True, ["ds"], ["status"],
                            categories=["all"]))
    out.append(ResourceType("batch", ["v1"], "jobs", "Job", True, [], ["status"],
                            categories=["all"]))
    out.append(ResourceType("policy", ["v1"], "poddisruptionbudgets", "PodDisruptionBudget",
                            True, ["pdb"], ["status"]))
    # Stored only (no enforcement): the operator creates one per AgentJob.
    out.append(ResourceType("networking.k8s.io", ["v1"], "networkpolicies", "NetworkPolicy",
                            True, ["netpol"]))
    for plural, kind, namespaced in (("roles", "Role", True), ("rolebindings", "RoleBinding", True),
                                     ("clusterroles", "ClusterRole", False),
                                     ("clusterrolebindings", "ClusterRoleBinding", False)):
        out.append(ResourceType("rbac.authorization.k8s.io", ["v1"], plural, kind, namespaced))
    out.append(ResourceType("apiextensions.k8s.io", ["v1"], "customresourcedefinitions",
                            "CustomResourceDefinition", False, ["crd", "crds"], ["status"]))
    return out


def _q1(query, name, default=None):
    v = query.get(name)
    return v[-1] if v else default


def _int_param(query, name, default=0):
    v = _q1(query, name)
    if v in (None, ""):
        return default
    try:
        return int(v)
    except ValueError:
        raise bad_request("invalid value %r for %s: must be an integer" % (v, name))


class Api:
    def __init__(self, store, bookmark_interval=1.0, server_address="127.0.0.1:0"):
        self.store = store
        self.bookmark_interval = bookmark_interval
        self.server_address = server_address
        for rt in builtin_types():
            store.add_type(rt)

    # ------------------------------------------------------------ discovery

    def _groups(self):
        """{group: [versions]} of everything served, core excluded."""
        groups = {}
        with self.store.lock:
            for (g, v, _), rt in self.store.types.items():
                if g:
                    lst = groups.setdefault(g, [])
                    if v not in lst:
                        lst.append(v)
        return groups

    def _group_doc(self, g, versions):
        vs = [{"groupVersion": "%s/%s" % (g, v), "version": v} for v in versions]
        return {"name": g, "versions": vs, "preferredVersion": vs[0]}

    def discovery(self, parts):
        if parts == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                    "serverAddress": self.server_address}]}
        if parts == ["apis"]:
            return {"kind": "APIGroupList", "apiVersion": "v1",
                    "groups": [self._group_doc(g, vs) for g, vs in sorted(self._groups().items())]}
        if len(parts) == 2 and parts[0] == "apis":
            vs = self._groups().get(parts[1])
            if not vs:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            d = self._group_doc(parts[1], vs)
            d.update({"kind": "APIGroup", "apiVersion": "v1"})
            return d
        group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
        res = []
        with self.store.lock:
            rts = [rt for (g, v, _), rt in self.store.types.items() if g == group and v == version]
        if not rts:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        for rt in sorted(rts, key=lambda r: r.plural):
            r = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
                 "kind": rt.kind, "verbs": VERBS}
            if rt.short_names:
                r["shortNames"] = rt.short_names
            if rt.categories:
                r["categories"] = rt.categories
            res.append(r)
            for sub in sorted(rt.subresources):
                s = {"name": "%s/%s" % (rt.plural, sub), "singularName": "",
                     "namespaced": rt.namespaced, "kind": rt.kind, "verbs": SUB_VERBS[sub]}
                if sub == "scale":
                    s.update({"group": "autoscaling", "version": "v1", "kind": "Scale"})
                elif sub == "binding":
                    s["kind"] = "Binding"
                elif sub == "log":
                    s["kind"] = "Pod"
                res.append(s)
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": rt.api_version(version), "resources": res}

    # ------------------------------------------------------------ OpenAPI v3

    def openapi_v3(self, parts):
        """Just enough OpenAPI v3 for kubectl: each group-version lists the PATCH
        operation of its resources with the fieldValidation parameter, so kubectl
        relies on server-side field validation instead of client-side schemas; custom
        resources also carry their CRD's schema (named as the API server names it, with
        its group-version-kind), which is what `kubectl explain` reads."""
        with self.store.lock:
            gvs = {}
            for (g, v, _), rt in self.store.types.items():
                gvs.setdefault("api/v1" if not g else "apis/%s/%s" % (g, v), []).append((v, rt))
        if parts == ["openapi", "v3"]:
            return {"paths": {gv: {"serverRelativeURL": "/openapi/v3/%s?hash=%d"
                                   % (gv, self.store.rv)} for gv in sorted(gvs)}}
        key = "/".join(parts[2:])
        if key not in gvs:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        paths, schemas = {}, {}
        for v, rt in gvs[key]:
            sch = rt.schemas.get(v) if rt.crd_name else None
            if isinstance(sch, dict):
                sch = json.loads(json.dumps(sch))
                sch["x-kubernetes-group-version-kind"] = [
                    {"group": rt.group, "version": v, "kind": rt.kind}]
                rev = ".".join(reversed(rt.group.split(".")))
                schemas["%s.%s.%s" % (rev, v, rt.kind)] = sch
            base = "/" + key + ("/namespaces/{namespace}" if rt.namespaced else "")
            paths["%s/%s/{name}" % (base, rt.plural)] = {"patch": {
                "x-kubernetes-group-version-kind": {"group": rt.group, "version": v,
                                                    "kind": rt.kind},
                "x-kubernetes-action": "patch",
                "parameters": [{"name": "fieldValidation", "in": "query",
                                "schema": {"type": "string", "uniqueItems": True}},
                               {"name": "dryRun", "in": "query",
                                "schema": {"type": "string", "uniqueItems": True}}],
                "requestBody": {"content": {"application/merge-patch+json": {"schema": {}},
                                            "application/json-patch+json": {"schema": {}}}},
                "responses": {"200": {"description": "OK"}}}}
        return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"},
                "paths": paths, "components": {"schemas": schemas}}

    # ------------------------------------------------------------ routing

    def route(self, parts):
        """(rt, version, ns, name, sub, watch) for a resource URL, or None."""
        if parts[0] == "api" and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        watch = False
        if rest[0] == "watch":
            watch, rest = True, rest[1:]
            if not rest:
                return None
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            ns, rest = rest[1], rest[2:]
        rt = self.store.lookup(group, version, rest[0])
        if rt is None:
            return None
        if ns is not None and not rt.namespaced:
            return None
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if len(rest) > 3 or (sub and sub not in rt.subresources and
                             not (rt.plural == "namespaces" and sub == "finalize")):
            return None
        return rt, version, ns, name, sub, watch

    def handle(self, method, path, query, headers, body):
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/") if p]
        if not parts:
            return self.json(200, {"paths": ["/api", "/api/v1", "/apis", "/healthz",
                                             "/readyz", "/livez", "/version"]})
        if method == "GET" and (parts in (["api"], ["apis"]) or
                                (parts[0] == "api" and len(parts) == 2) or
                                (parts[0] == "apis" and len(parts) in (2, 3))):
            return self.json(200, self.discovery(parts))
        if method == "GET" and parts[:2] == ["openapi", "v3"]:
            return self.json(200, self.openapi_v3(parts))
        r = self.route(parts)
        if r is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rt, version, ns, name, sub, watch = r
        accept = headers.get("Accept", "") or ""
        table = "as=Table" in accept
        if method == "GET":
            if name is None or watch:
                if watch or _q1(query, "watch") in ("1", "true", "True"):
                    return self.watch(rt, version, ns, name, query, table)
                return self.list(rt, version, ns, query, table)
            if sub == "scale":
                return self.json(200, self.scale_get(rt, ns, name))
            if sub == "log":
                return self.log(ns, name, query)
            obj, raw = self.store.get(rt, ns, name)
            if table:
                return self.json(200, emu_schema.to_table(
                    rt, version, [self.convert(rt, version, obj)], _q1(query, "includeObject"),
                    {"resourceVersion": obj["metadata"]["resourceVersion"]}))
            return self.raw(200, self.out_raw(rt, version, obj, raw))
        dry = "All" in query.get("dryRun", [])
        ctype = headers.get("Content-Type")
        if method == "POST":
            if name is None and ns is None and rt.namespaced:
                raise ApiError(405, "MethodNotAllowed", "POST on a namespaced resource needs a "
                               "namespace in the URL")
            if sub == "binding":
                return self.bind(ns, name, self.body_json(body, ctype))
            if name is not None:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method "
                               "on the requested resource")
            return self.create(rt, version, ns, self.body_json(body, ctype), query, dry)
        if method in ("PUT", "PATCH"):
            if name is None:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method "
                               "on the requested resource")
            if method == "PUT":
                newobj = self.body_json(body, ctype)
            else:
                newobj = None
            if sub == "scale":
                return self.scale_write(rt, ns, name, method, newobj, body, headers)
            if method == "PATCH":
                return self.patch(rt, version, ns, name, sub, body, headers, query, dry)
            return self.update(rt, version, ns, name, sub, newobj, query, dry)
        if method == "DELETE":
            opts = self.delete_options(body, query)
            if name is None:
                return self.delete_collection(rt, version, ns, query, opts, dry)
            obj, raw, done = self.store.delete(rt, ns, name, opts, dry)
            return self.raw(200 if done or dry else 202, self.out_raw(rt, version, obj, raw))
        raise ApiError(405, "MethodNotAllowed", "method %s is not supported" % method)

    # ------------------------------------------------------------ helpers

    @staticmethod
    def json(code, obj, headers=None):
        return Response(code, dumps(obj), headers)

    @staticmethod
    def raw(code, raw):
        return Response(code, raw)

    @staticmethod
    def body_json(body, ctype="application/json"):
        if ctype and ctype.startswith("application/vnd.kubernetes.protobuf"):
            return emu_proto.decode(body)
        if ctype and not ctype.startswith("application/json") and not ctype.startswith("*/*"):
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an "
                           "unknown format - accepted media types include: application/json "
                           "(the emulator does not decode %s)" % ctype)
        try:
            v = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError) as e:
            raise bad_request("the request body is not valid JSON: %s" % e)
        if not isinstance(v, dict):
            raise bad_request("the request body must be a JSON object")
        return v

    @staticmethod
    def convert(rt, version, obj):
        if rt.versions[0] == version:
            return obj
        o = dict(obj)
        o["apiVersion"] = rt.api_version(version)
        return o

    @staticmethod
    def out_raw(rt, version, obj, raw):
        if rt.versions[0] == version:
            return raw
        return dumps(Api.convert(rt, version, obj))

    def selectors(self, query):
        return (parse_label_selector(_q1(query, "labelSelector", "")),
                parse_field_selector(_q1(query, "fieldSelector", "")))

    def validator(self, query, warnings):
        """The schema check of a write, with the request's fieldValidation mode."""
        mode = _q1(query, "fieldValidation", "Warn")

        def check(rt, version, obj, old):
            schema = rt.schemas.get(version) or rt.schemas.get(rt.versions[0])
            if not schema:
                return
            causes, pruned = [], []
            emu_schema.validate(schema, obj, "", causes, pruned)
            if causes:
                raise invalid(rt.kind, rt.group, obj["metadata"].get("name", ""), causes)
            if pruned and mode == "Strict":
                raise bad_request("strict decoding error: " + ", ".join(
                    'unknown field "%s"' % p for p in pruned))
            if pruned and mode == "Warn":
                warnings.extend('unknown field "%s"' % p for p in pruned)
        return check

    @staticmethod
    def warn_headers(warnings):
        if not warnings:
            return {}
        return {"Warning": ", ".join('299 - "%s"' % w.replace('"', "'") for w in warnings)}

    # ------------------------------------------------------------ list / watch

    def list(self, rt, version, ns, query, table):
        lsel, fsel = self.selectors(query)
        limit = _int_param(query, "limit")
        if limit < 0:
            raise bad_request("limit must be >= 0")
        cont = _q1(query, "continue")
        rv_param = _q1(query, "resourceVersion", "")
        match = _q1(query, "resourceVersionMatch", "")
        after, list_rv, snap = None, None, None
        if cont:
            try:
                tok = json.loads(base64.urlsafe_b64decode(cont.encode()))
                list_rv, after, snap = int(tok["rv"]), tuple(tok["start"]), tok.get("snap")
                if len(after) != 2 or not all(isinstance(x, str) for x in after):
                    raise ValueError("bad start key")
            except (ValueError, KeyError, TypeError, AttributeError):
                raise bad_request("invalid continue token")
            if list_rv < self.store.compacted:
                raise ApiError(410, "Expired", "The provided continue parameter is too old to "
                               "display a consistent list result. You can start a new list "
                               "without the continue parameter.")
        elif rv_param not in ("", "0"):
            try:
                want = int(rv_param)
            except ValueError:
                raise bad_request("invalid resourceVersion %r" % rv_param)
            if want > self.store.rv:
                raise ApiError(504, "Timeout", "Too large resource version: %d, current: %d"
                               % (want, self.store.rv),
                               {"causes": [{"reason": "ResourceVersionTooLarge",
                                            "message": "Too large resource version"}],
                                "retryAfterSeconds": 1})
            if match == "Exact" and want != self.store.rv:
                snap, list_rv = self.store.snapshot_at(rt, want), want
        items, rv, next_key, remaining, snap = self.store.list(rt, ns, lsel, fsel, limit, after,
                                                               snap)
        if list_rv is not None:
            rv = list_rv
        meta = {"resourceVersion": str(rv)}
        if next_key is not None:
            meta["continue"] = base64.urlsafe_b64encode(
                dumps({"rv": rv, "start": list(next_key), "snap": snap})).decode()
            if remaining is not None:
                meta["remainingItemCount"] = remaining
        if table:
            return self.json(200, emu_schema.to_table(
                rt, version, [self.convert(rt, version, o) for o, _ in items],
                _q1(query, "includeObject"), meta))
        head = b'{"kind":"%s","apiVersion":"%s","metadata":%s,"items":[' % (
            rt.list_kind.encode(), rt.api_version(version).encode(), dumps(meta))
        body = head + b",".join(self.out_raw(rt, version, o, r) for o, r in items) + b"]}"
        return self.raw(200, body)

    def watch(self, rt, version, ns, name, query, table):
        lsel, fsel = self.selectors(query)
        rv_param = _q1(query, "resourceVersion", "")
        bookmarks = _q1(query, "allowWatchBookmarks") in ("1", "true", "True")
        timeout = _int_param(query, "timeoutSeconds", 1800)
        initial_end = _q1(query, "sendInitialEvents") in ("1", "true", "True")
        if name is not None:
            fsel = fsel + [("metadata.name", "=", name)]
        since = None
        if rv_param not in ("", "0") and not initial_end:
            try:
                since = int(rv_param)
            except ValueError:
                raise bad_request("invalid resourceVersion %r" % rv_param)
        try:
            w, initial, start_rv = self.store.register_watch(rt, ns, None, lsel, fsel, since)
        except ApiError as e:
            if e.code != 410:
                raise
            line = b'{"type":"ERROR","object":' + dumps(e.status()) + b"}\n"
            return Response(200, headers={"Content-Type": "application/json"},
                            stream=iter([line]))
        return Response(200, headers={"Content-Type": "application/json"},
                        stream=self._watch_stream(rt, version, w, initial, since, start_rv,
                                                  bookmarks, timeout, initial_end, table,
                                                  query))

    def _event_line(self, rt, version, etype, raw, table, query):
        if table:
            obj = json.loads(raw)
            t = emu_schema.to_table(rt, version, [self.convert(rt, version, obj)],
                                    _q1(query, "includeObject"),
                                    {"resourceVersion": obj["metadata"]["resourceVersion"]})
            raw = dumps(t)
        elif rt.versions[0] != version:
            raw = self.out_raw(rt, version, json.loads(raw), None)
        return b'{"type":"%s","object":%s}\n' % (etype.encode(), raw)

    def _bookmark(self, rt, version, rv, initial_end=False):
        md = {"resourceVersion": str(rv)}
        if initial_end:
            md["annotations"] = {"k8s.io/initial-events-end": "true"}
        return b'{"type":"BOOKMARK","object":' + dumps(
            {"kind": rt.kind, "apiVersion": rt.api_version(version), "metadata": md}) + b"}\n"

    def _watch_stream(self, rt, version, w, initial, since, start_rv, bookmarks, timeout,
                      initial_end, table, query):
        store = self.store
        deadline = time.monotonic() + max(1, timeout)
        try:
            for etype, raw, _ in initial:
                yield self._event_line(rt, version, etype, raw, table, query)
            if initial_end and bookmarks:
                yield self._bookmark(rt, version, start_rv, True)
            next_bm = time.monotonic() + self.bookmark_interval
            while True:
                now = time.monotonic()
                if now >= deadline:
                    return
                wait = min(deadline, next_bm if bookmarks else deadline, now + IDLE_CHECK) - now
                try:
                    item = w.q.get(timeout=max(0.001, wait))
                except queue.Empty:
                    item = False
                if item is None or w.dropped:
                    raise ConnectionAbortedError("watch dropped by fault injection")
                if item:
                    etype, raw, rv = item
                    if since is not None and rv <= since:
                        continue   # a watch from a version not reached yet starts there
                    yield self._event_line(rt, version, etype, raw, table, query)
                    continue
                if bookmarks and time.monotonic() >= next_bm:
                    with store.lock:
                        rv = store.rv if w.q.empty() else None
                    if rv is not None:
                        yield self._bookmark(rt, version, rv)
                    next_bm = time.monotonic() + self.bookmark_interval
                else:
                    yield IDLE
        finally:
            store.unregister_watch(w)

    # ------------------------------------------------------------ writes

    def create(self, rt, version, ns, obj, query, dry):
        warnings = []
        if rt.gr == ("apiextensions.k8s.io", "customresourcedefinitions"):
            emu_crd.check_crd(self.store, obj)
        o, raw = self.store.create(rt, ns, obj, version, self.validator(query, warnings), dry)
        if rt.gr == ("apiextensions.k8s.io", "customresourcedefinitions") and not dry:
            o, raw = emu_crd.establish_crd(self.store, o)
        return Response(201, self.out_raw(rt, version, o, raw), self.warn_headers(warnings))

    def update(self, rt, version, ns, name, sub, newobj, query, dry):
        warnings = []
        if rt.gr == ("apiextensions.k8s.io", "customresourcedefinitions") and sub is None:
            emu_crd.check_crd(self.store, newobj)
        o, raw = self.store.update(rt, ns, name, newobj, version,
                                   "status" if sub == "status" else "main",
                                   self.validator(query, warnings), True, dry)
        if rt.gr == ("apiextensions.k8s.io", "customresourcedefinitions") and not dry \
                and sub is None:
            o, raw = emu_crd.establish_crd(self.store, o)
        return Response(200, self.out_raw(rt, version, o, raw), self.warn_headers(warnings))

    def apply_patch(self, current, body, ctype):
        try:
            patch = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError) as e:
            if ctype.startswith(APPLY_TYPE):
                raise ApiError(415, "UnsupportedMediaType", "the emulator reads server-side "
                               "apply configurations written as JSON only: %s" % e)
            raise bad_request("the patch is not valid JSON: %s" % e)
        if ctype.startswith(APPLY_TYPE):
            # Server-side apply without field ownership: the applied configuration is
            # merged like a strategic merge patch (fields it omits are kept).
            if not isinstance(patch, dict):
                raise bad_request("an apply configuration must be a JSON object")
            return strategic_merge_patch(current, patch), patch
        if ctype.startswith("application/merge-patch+json"):
            if not isinstance(patch, dict):
                raise bad_request("a merge patch must be a JSON object")
            return merge_patch(current, patch), patch
        if ctype.startswith("application/strategic-merge-patch+json"):
            if not isinstance(patch, dict):
                raise bad_request("a strategic merge patch must be a JSON object")
            return strategic_merge_patch(current, patch), patch
        if ctype.startswith("application/json-patch+json"):
            return json_patch(current, patch), None
        raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown "
                       "format - accepted media types include: application/json-patch+json, "
                       "application/merge-patch+json, application/strategic-merge-patch+json, "
                       "application/apply-patch+yaml")

    def patch(self, rt, version, ns, name, sub, body, headers, query, dry):
        ctype = headers.get("Content-Type", "") or ""
        if ctype.startswith(APPLY_TYPE):
            if not _q1(query, "fieldManager"):
                raise bad_request("PATCH requests with an apply content type need a "
                                  "fieldManager")
            if sub is None:
                try:
                    self.store.get(rt, ns, name)
                except ApiError as e:
                    if e.code != 404:
                        raise
                    obj = self.body_json(body)
                    md = obj.setdefault("metadata", {})
                    if isinstance(md, dict) and not md.get("name"):
                        md["name"] = name
                    return self.create(rt, version, ns, obj, query, dry)
        for _ in range(10):
            cur, _raw = self.store.get(rt, ns, name)
            base = self.convert(rt, version, cur)
            new, patch = self.apply_patch(json.loads(dumps(base)), body, ctype)
            if not isinstance(new, dict):
                raise bad_request("the patched object is not a JSON object")
            check_shape(rt, new)
            pmd = patch.get("metadata") if isinstance(patch, dict) else None
            want = pmd.get("resourceVersion") if isinstance(pmd, dict) else None
            new.setdefault("metadata", {})["resourceVersion"] = \
                want or cur["metadata"]["resourceVersion"]
            try:
                return self.update(rt, version, ns, name, sub, new, query, dry)
            except ApiError as e:
                # A concurrent write between our read and the update: the patch did not
                # name a version, so re-apply it on the newer object, as the API server does.
                if e.code != 409 or want or e.reason != "Conflict":
                    raise
        raise ApiError(409, "Conflict", "too many concurrent writes to %s/%s" % (ns, name))

    @staticmethod
    def delete_options(body, query):
        opts = {}
        if body and bytes(body[:4]) == emu_proto.MAGIC:
            opts = emu_proto.decode(bytes(body))
            if opts.get("kind") != "DeleteOptions":
                raise bad_request("the body of a DELETE must be DeleteOptions, not %s"
                                  % opts.get("kind"))
            opts.pop("apiVersion", None)
            opts.pop("kind", None)
        elif body:
            try:
                opts = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                raise bad_request("DeleteOptions is not valid JSON (or a protobuf envelope)")
            if not isinstance(opts, dict):
                raise bad_request("DeleteOptions must be a JSON object")
        if _q1(query, "propagationPolicy"):
            opts["propagationPolicy"] = _q1(query, "propagationPolicy")
        if _q1(query, "gracePeriodSeconds") is not None:
            opts["gracePeriodSeconds"] = _int_param(query, "gracePeriodSeconds")
        pol = opts.get("propagationPolicy")
        if pol not in (None, "Orphan", "Background", "Foreground"):
            raise bad_request("propagationPolicy %r is not one of Orphan, Background, "
                              "Foreground" % pol)
        pre = opts.get("preconditions")
        if pre is not None and not (isinstance(pre, dict) and all(
                isinstance(pre.get(k), (str, type(None))) for k in ("uid", "resourceVersion"))):
            raise bad_request("preconditions must be {uid, resourceVersion} strings")
        g = opts.get("gracePeriodSeconds")
        if g is not None and (not isinstance(g, int) or isinstance(g, bool)):
            raise bad_request("gracePeriodSeconds must be an integer")
        return opts

    def delete_collection(self, rt, version, ns, query, opts, dry):
        lsel, fsel = self.selectors(query)
        items, rv, _, _, _ = self.store.list(rt, ns, lsel, fsel)
        out = []
        for o, _ in items:
            try:
                d, raw, _done = self.store.delete(rt, o["metadata"].get("namespace"),
                                                  o["metadata"]["name"], opts, dry)
                out.append(self.out_raw(rt, version, d, raw))
            except ApiError as e:
                if e.code != 404:
                    raise
        head = b'{"kind":"%s","apiVersion":"%s","metadata":{"resourceVersion":"%d"},"items":[' % (
            rt.list_kind.encode(), rt.api_version(version).encode(), self.store.rv)
        return self.raw(200, head + b",".join(out) + b"]}")

    # ------------------------------------------------------------ subresources

    def _scale_paths(self, rt):
        if "scale" not in rt.subresources or not rt.scale:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return rt.scale

    @staticmethod
    def _dig(obj, path):
        cur = obj
        for p in [p for p in (path or "").split(".") if p]:
            if not isinstance(cur, dict):
                return None
            cur = cur.get(p)
        return cur

    def scale_get(self, rt, ns, name):
        spec_p, status_p, sel_p = self._scale_paths(rt)
        obj, _ = self.store.get(rt, ns, name)
        md = obj["metadata"]
        scale = {"kind": "Scale", "apiVersion": "autoscaling/v1",
                 "metadata": {"name": md["name"], "uid": md["uid"],
                              "resourceVersion": md["resourceVersion"],
                              "creationTimestamp": md["creationTimestamp"]},
                 "spec": {}, "status": {"replicas": self._dig(obj, status_p) or 0}}
        if rt.namespaced:
            scale["metadata"]["namespace"] = md["namespace"]
        replicas = self._dig(obj, spec_p)
        scale["spec"]["replicas"] = replicas if replicas is not None else 0
        sel = self._dig(obj, sel_p) if sel_p else None
        if sel:
            scale["status"]["selector"] = sel
        return scale

    def scale_write(self, rt, ns, name, method, newobj, body, headers):
        spec_p, _, _ = self._scale_paths(rt)
        for _ in range(10):
            cur = self.scale_get(rt, ns, name)
            if method == "PUT":
                new = newobj
            else:
                new, _ = self.apply_patch(cur, body, headers.get("Content-Type", "") or "")
            replicas = self._dig(new, "spec.replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise ApiError(422, "Invalid", 'Scale.autoscaling "%s" is invalid: '
                               "spec.replicas: Invalid value: %r: must be greater than or equal "
                               "to 0" % (name, replicas),
                               {"name": name, "group": "autoscaling", "kind": "Scale",
                                "causes": [{"reason": "FieldValueInvalid",
                                            "field": "spec.replicas",
                                            "message": "must be greater than or equal to 0"}]})
            want = self._dig(new, "metadata.resourceVersion")
            obj, _ = self.store.get(rt, ns, name)
            target = json.loads(dumps(obj))
            if want:
                target["metadata"]["resourceVersion"] = want
            parts = [p for p in spec_p.split(".") if p]
            cur_d = target
            for p in parts[:-1]:
                cur_d = cur_d.setdefault(p, {})
            cur_d[parts[-1]] = replicas
            try:
                self.store.update(rt, ns, name, target, rt.versions[0], "main",
                                  self.validator({}, []))
            except ApiError as e:
                if e.code == 409 and not want:
                    continue
                raise
            return self.json(200, self.scale_get(rt, ns, name))
        raise ApiError(409, "Conflict", "too many concurrent writes to %s/%s" % (ns, name))

    def bind(self, ns, name, binding):
        pods = self.store.types_gr[("", "pods")]
        target = binding.get("target") or {}
        node = target.get("name")
        if not node:
            raise ApiError(422, "Invalid", 'Binding "%s" is invalid: target.name: Required '
                           "value" % name)
        with self.store.lock:
            obj, raw = self.store.get(pods, ns, name)
            if obj.get("spec", {}).get("nodeName"):
                raise ApiError(409, "Conflict", 'Operation cannot be fulfilled on pods/binding '
                               '"%s": pod %s is already assigned to node "%s"'
                               % (name, name, obj["spec"]["nodeName"]))
            if obj["metadata"].get("deletionTimestamp"):
                raise ApiError(409, "Conflict", 'Operation cannot be fulfilled on pods/binding '
                               '"%s": pod %s is being deleted, cannot be assigned to a host'
                               % (name, name))
            new = json.loads(raw)
            new["spec"]["nodeName"] = node
            conds = [c for c in new.setdefault("status", {}).get("conditions", [])
                     if c.get("type") != "PodScheduled"]
            conds.append({"type": "PodScheduled", "status": "True",
                          "lastTransitionTime": new["metadata"]["creationTimestamp"]})
            new["status"]["conditions"] = conds
            self.store._commit(pods, (ns, name), "MODIFIED", obj, new)
        return self.json(201, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                               "status": "Success", "code": 201})

    def log(self, ns, name, query):
        pods = self.store.types_gr[("", "pods")]
        obj, _ = self.store.get(pods, ns, name)
        path = (obj["metadata"].get("annotations") or {}).get(LOG_ANNOTATION)
        if not path or not os.path.isfile(path):
            raise ApiError(400, "BadRequest", 'container "%s" in pod "%s" is waiting to start: '
                           "no log available" % (_q1(query, "container", ""), name))
        with open(path, "rb") as f:
            data = f.read()
        tail = _q1(query, "tailLines")
        if tail is not None:
            try:
                n = int(tail)
            except ValueError:
                raise bad_request("tailLines must be an integer")
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-n:]) if n > 0 else b""
        follow = _q1(query, "follow") in ("1", "true", "True")
        if not follow:
            return Response(200, data, {"Content-Type": "text/plain"})
        return Response(200, headers={"Content-Type": "text/plain"},
                        stream=self._follow(pods, ns, name, path, data))

    def _follow(self, pods, ns, name, path, first):
        yield first
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            while True:
                chunk = f.read(65536)
                if chunk:
                    yield chunk
                    continue
                try:
                    obj, _ = self.store.get(pods, ns, name)
                except ApiError:
                    return
                if obj.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                    rest = f.read()
                    if rest:
                        yield rest
                    return
                time.sleep(0.2)
                yield IDLE
