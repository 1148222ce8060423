"""The object store of the Kubernetes API emulator: resource types (built-in and from
CustomResourceDefinitions), objects kept both as dicts and pre-serialised JSON, one
monotonically increasing resourceVersion across everything, an event log bounded by a
window (older versions are "expired": 410 Gone), watchers fed under the store lock so
that no event is missed or duplicated between a list and a watch, and the object
lifecycle rules of the API server (generation, status subresource, finalizers,
deletionTimestamp, graceful pod deletion, owner-reference garbage collection, namespace
and CRD cleanup).

One re-entrant lock guards everything. Handlers hold it only to read or commit; the
serialisation of lists is a join of cached bytes, so 10,000 pods list in milliseconds.
"""

import bisect
import collections
import json
import queue
import random
import re
import threading
import time
import traceback
import uuid

from emu_util import (ApiError, bad_request, conflict, dumps, invalid, labels_match,
                      fields_match, not_found, now_rfc3339, parse_rfc3339)

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _str_map(v):
    return isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str)
                                       for k, x in v.items())


# Top-level fields that must be JSON objects, lists or string maps for built-in kinds;
# the API server's decoder rejects other types with 400 before anything else runs.
_SHAPES = {"spec": dict, "status": dict, "data": "strmap", "stringData": "strmap",
           "binaryData": "strmap", "involvedObject": dict, "target": dict}
_SPEC_LISTS = ("containers", "initContainers", "ports", "volumes", "finalizers")


def check_shape(rt, obj):
    """400 BadRequest when an object's metadata or well-known fields have the wrong JSON
    types, so that later code can rely on them."""
    def bad(field, want):
        raise bad_request("%s in body has the wrong type: %s must be %s"
                          % (rt.kind, field, want))
    if not isinstance(obj, dict):
        bad("the object", "a JSON object")
    md = obj.get("metadata")
    if not isinstance(md, dict):
        bad("metadata", "an object")
    for f in ("name", "generateName", "namespace", "resourceVersion", "uid"):
        if md.get(f) is not None and not isinstance(md[f], str):
            bad("metadata." + f, "a string")
    for f in ("labels", "annotations"):
        if md.get(f) is not None and not _str_map(md[f]):
            bad("metadata." + f, "an object of strings")
    fins = md.get("finalizers")
    if fins is not None and not (isinstance(fins, list) and all(isinstance(x, str) for x in fins)):
        bad("metadata.finalizers", "a list of strings")
    refs = md.get("ownerReferences")
    if refs is not None:
        if not isinstance(refs, list) or not all(
                isinstance(r, dict) and all(isinstance(r.get(k), str) and r.get(k)
                                            for k in ("apiVersion", "kind", "name", "uid"))
                for r in refs):
            bad("metadata.ownerReferences", "a list of {apiVersion, kind, name, uid}")
    if rt.crd_name:
        return
    for f, want in _SHAPES.items():
        if obj.get(f) is None:
            continue
        if want == "strmap" and not _str_map(obj[f]):
            bad(f, "an object of strings")
        if want is dict and not isinstance(obj[f], dict):
            bad(f, "an object")
    spec = obj.get("spec")
    if isinstance(spec, dict):
        for f in _SPEC_LISTS:
            v = spec.get(f)
            if v is not None and not (isinstance(v, list) and all(
                    isinstance(x, (dict, str)) for x in v)):
                bad("spec." + f, "a list")
        for f in ("selector", "nodeSelector"):
            if spec.get(f) is not None and not isinstance(spec[f], dict):
                bad("spec." + f, "an object")


MAX_SNAPSHOTS = 64   # paginated lists in progress; the oldest is dropped beyond this


class ResourceType:
    """One servable resource (group + plural), possibly at several versions."""

    def __init__(self, group, versions, plural, kind, namespaced, short_names=(),
                 subresources=(), singular=None, categories=(), crd_name=None):
        self.group = group                      # "" for core
        self.versions = list(versions)          # served versions, storage version first
        self.plural = plural
        self.kind = kind
        self.list_kind = kind + "List"
        self.namespaced = namespaced
        self.short_names = list(short_names)
        self.subresources = set(subresources)   # status, scale, binding, log
        self.singular = singular or kind.lower()
        self.categories = list(categories)
        self.crd_name = crd_name                # set for custom resources
        self.schemas = {}                       # version -> openAPIV3Schema
        self.columns = {}                       # version -> additionalPrinterColumns
        self.scale = None                       # (specReplicasPath, statusReplicasPath, selectorPath)

    @property
    def gr(self):
        return (self.group, self.plural)

    def api_version(self, version):
        return version if not self.group else "%s/%s" % (self.group, version)


class Event:
    __slots__ = ("rv", "etype", "gr", "ns", "old", "new", "raw")

    def __init__(self, rv, etype, gr, ns, old, new, raw):
        self.rv, self.etype, self.gr, self.ns = rv, etype, gr, ns
        self.old, self.new, self.raw = old, new, raw


class Watcher:
    """A registered watch: events matching its filters are queued for its handler."""

    def __init__(self, gr, ns, name, lsel, fsel):
        self.gr, self.ns, self.name, self.lsel, self.fsel = gr, ns, name, lsel, fsel
        self.q = queue.SimpleQueue()
        self.dropped = False

    def matches(self, obj):
        if obj is None:
            return False
        md = obj.get("metadata", {})
        if self.ns is not None and md.get("namespace") != self.ns:
            return False
        if self.name is not None and md.get("name") != self.name:
            return False
        return labels_match(self.lsel, md.get("labels")) and fields_match(self.fsel, obj)

    def translate(self, ev):
        """The event type this watcher sees: a change moving an object out of the
        selector is a DELETED, into it an ADDED, as the API server's cacher does."""
        if ev.gr != self.gr:
            return None
        if ev.etype == "DELETED":
            return "DELETED" if self.matches(ev.new) else None
        was, now = self.matches(ev.old), self.matches(ev.new)
        if now:
            return "MODIFIED" if was else "ADDED"
        return "DELETED" if was else None


def _rand_suffix(n=5):
    return "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(n))


class Store:
    def __init__(self, rv_window=1000):
        self.lock = threading.RLock()
        self.rv = 1
        self.compacted = 0           # watch/list from rv < compacted -> 410
        self.window = max(1, rv_window)
        self.events = collections.deque()
        self.objects = collections.defaultdict(dict)   # gr -> {(ns, name): (obj, raw)}
        self.by_uid = {}                                # uid -> (gr, key)
        self.sorted_keys = {}                           # gr -> sorted keys, rebuilt lazily
        self.snapshots = collections.OrderedDict()      # id -> (gr, keys, objects) of a paged list
        self.next_snapshot = 0
        self.types = {}                                 # (group, version, plural) -> ResourceType
        self.types_gr = {}                              # (group, plural) -> ResourceType
        self.watchers = set()
        self.gc_wake = threading.Event()
        self.terminating = set()                        # (gr, key) with deletionTimestamp
        self.gc_dirty = True
        self.next_cluster_ip = 10
        self.pod_force_delete_slack = 10.0
        self.stopping = False

    # ------------------------------------------------------------ types

    def add_type(self, rt):
        with self.lock:
            for v in rt.versions:
                self.types[(rt.group, v, rt.plural)] = rt
            self.types_gr[rt.gr] = rt

    def remove_type(self, rt):
        with self.lock:
            for k in [k for k, v in self.types.items() if v is rt]:
                del self.types[k]
            if self.types_gr.get(rt.gr) is rt:
                del self.types_gr[rt.gr]

    def lookup(self, group, version, plural):
        return self.types.get((group, version, plural))

    # ------------------------------------------------------------ commit

    def _commit(self, rt, key, etype, old, new):
        """Store new (or delete for DELETED) with the next resourceVersion and publish the
        event. new is owned by the store afterwards. Caller holds the lock."""
        self.rv += 1
        new["metadata"]["resourceVersion"] = str(self.rv)
        raw = dumps(new)
        objs = self.objects[rt.gr]
        uid = new["metadata"].get("uid")
        md = new["metadata"]
        if etype == "DELETED":
            objs.pop(key, None)
            self.sorted_keys.pop(rt.gr, None)
            self.by_uid.pop(uid, None)
            self.terminating.discard((rt.gr, key))
            self.gc_dirty = True
            self.gc_wake.set()
        else:
            if key not in objs:
                self.sorted_keys.pop(rt.gr, None)
            objs[key] = (new, raw)
            self.by_uid[uid] = (rt.gr, key)
            if md.get("deletionTimestamp"):
                self.terminating.add((rt.gr, key))
                self.gc_wake.set()
            # Only a new or changed owner reference can leave a dependent without owner;
            # status updates of the many owned pods need no collection pass.
            refs = md.get("ownerReferences")
            if refs and (old is None or old["metadata"].get("ownerReferences") != refs):
                self.gc_dirty = True
                self.gc_wake.set()
        ev = Event(self.rv, etype, rt.gr, key[0], old, new, raw)
        self.events.append(ev)
        while len(self.events) > self.window:
            self.compacted = self.events.popleft().rv
        for w in self.watchers:
            t = w.translate(ev)
            if t:
                w.q.put((t, ev.raw, ev.rv))
        return new, raw

    def expire_now(self):
        """Every version a client has seen becomes expired: the version moves on by one
        (as writes to other resources move etcd's revision) and the log is dropped."""
        with self.lock:
            self.rv += 1
            self.events.clear()
            self.compacted = self.rv

    def check_rv_fresh(self, rv):
        """410 Expired when rv is older than the event log reaches back."""
        if rv < self.compacted:
            raise ApiError(410, "Expired", "too old resource version: %d (%d)"
                           % (rv, self.compacted))

    # ------------------------------------------------------------ reads

    def get(self, rt, ns, name):
        with self.lock:
            ent = self.objects[rt.gr].get((ns or "", name))
        if ent is None:
            raise not_found(rt.plural, rt.group, name)
        return ent

    def _sorted_keys(self, gr):
        keys = self.sorted_keys.get(gr)
        if keys is None:
            keys = self.sorted_keys[gr] = sorted(self.objects[gr].keys())
        return keys

    def list(self, rt, ns, lsel, fsel, limit=0, after=None, snapshot=None):
        """(entries, rv, next_key, remaining, snapshot) of matching objects sorted by
        namespace and name, starting after the key `after`. remaining counts the objects
        after this page when there are no selectors (as remainingItemCount), else None.
        A paginated list reads one frozen state, as etcd serves every page at the first
        page's revision: the first page takes a snapshot, later pages pass its id."""
        with self.lock:
            snap = self.snapshots.get(snapshot) if snapshot is not None else None
            if snap is not None and snap[0] == rt.gr:
                _, keys, objs = snap
            else:
                snapshot = None
                objs = self.objects[rt.gr]
                keys = self._sorted_keys(rt.gr)
            rv = self.rv
            start = 0
            if after is not None:
                start = bisect.bisect_right(keys, after)
            if ns is not None:
                start = max(start, bisect.bisect_left(keys, (ns, "")))
            end = bisect.bisect_left(keys, (ns + "\x00", "")) if ns is not None else len(keys)
            out = []
            next_key = None
            i = start
            while i < end:
                k = keys[i]
                obj, raw = objs[k]
                i += 1
                if lsel and not labels_match(lsel, obj["metadata"].get("labels")):
                    continue
                if fsel and not fields_match(fsel, obj):
                    continue
                out.append((obj, raw))
                if limit and len(out) >= limit:
                    if i < end:
                        next_key = k
                    break
            remaining = end - i if next_key is not None and not lsel and not fsel else None
            if next_key is not None and snapshot is None:
                # The sorted key list is replaced, never modified, on changes; the dict
                # is copied (references only).
                self.next_snapshot += 1
                snapshot = self.next_snapshot
                self.snapshots[snapshot] = (rt.gr, keys, dict(objs))
                while len(self.snapshots) > MAX_SNAPSHOTS:
                    self.snapshots.popitem(last=False)
        return out, rv, next_key, remaining, snapshot

    def snapshot_at(self, rt, rv):
        """The id of a frozen list state of rt at version rv, rebuilt by undoing the
        logged events after rv (410 when the log does not reach back that far)."""
        with self.lock:
            self.check_rv_fresh(rv)
            objs = dict(self.objects[rt.gr])
            for ev in reversed(self.events):
                if ev.rv <= rv:
                    break
                if ev.gr != rt.gr:
                    continue
                key = (ev.ns, ev.new["metadata"]["name"])
                if ev.etype == "ADDED":
                    objs.pop(key, None)
                else:
                    objs[key] = (ev.old, dumps(ev.old))
            self.next_snapshot += 1
            self.snapshots[self.next_snapshot] = (rt.gr, sorted(objs), objs)
            while len(self.snapshots) > MAX_SNAPSHOTS:
                self.snapshots.popitem(last=False)
            return self.next_snapshot

    def register_watch(self, rt, ns, name, lsel, fsel, since):
        """Register a watcher and return it with the initial events: the current state
        as ADDED when since is None, else the logged events after since."""
        with self.lock:
            w = Watcher(rt.gr, ns, name, lsel, fsel)
            initial = []
            if since is None:
                for k in sorted(self.objects[rt.gr].keys()):
                    obj, raw = self.objects[rt.gr][k]
                    if w.matches(obj):
                        initial.append(("ADDED", raw, int(obj["metadata"]["resourceVersion"])))
            else:
                self.check_rv_fresh(since)
                for ev in self.events:
                    if ev.rv > since:
                        t = w.translate(ev)
                        if t:
                            initial.append((t, ev.raw, ev.rv))
            self.watchers.add(w)
            return w, initial, self.rv

    def unregister_watch(self, w):
        with self.lock:
            self.watchers.discard(w)

    def drop_watches(self):
        with self.lock:
            for w in self.watchers:
                w.dropped = True
                w.q.put(None)

    # ------------------------------------------------------------ writes

    def _check_namespace(self, rt, ns):
        if not rt.namespaced:
            return
        ent = self.objects[("", "namespaces")].get(("", ns))
        if ent is None:
            raise not_found("namespaces", "", ns)
        if ent[0]["metadata"].get("deletionTimestamp"):
            raise ApiError(403, "Forbidden", '%s "%s" is forbidden: unable to create new '
                           'content in namespace %s because it is being terminated'
                           % (rt.plural, "", ns))

    def create(self, rt, ns, obj, version, validator=None, dry_run=False):
        if isinstance(obj, dict):
            obj.setdefault("metadata", {})
        check_shape(rt, obj)
        md = obj["metadata"]
        if rt.namespaced:
            if md.get("namespace") and ns and md["namespace"] != ns:
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            ns = ns or md.get("namespace") or "default"
            md["namespace"] = ns
        else:
            md.pop("namespace", None)
            ns = ""
        with self.lock:
            if not md.get("name") and md.get("generateName"):
                for _ in range(20):
                    name = md["generateName"] + _rand_suffix()
                    if (ns, name) not in self.objects[rt.gr]:
                        md["name"] = name
                        break
            name = md.get("name")
            if not name:
                raise invalid(rt.kind, rt.group, "", [("FieldValueRequired", "metadata.name",
                                                       "Required value: name or generateName "
                                                       "is required")])
            if not _NAME_RE.match(name) or len(name) > 253:
                raise invalid(rt.kind, rt.group, name, [
                    ("FieldValueInvalid", "metadata.name", "Invalid value: \"%s\": a lowercase "
                     "RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                     "'-' or '.', and must start and end with an alphanumeric character" % name)])
            self._check_namespace(rt, ns)
            if (ns, name) in self.objects[rt.gr]:
                qual = rt.plural if not rt.group else "%s.%s" % (rt.plural, rt.group)
                raise ApiError(409, "AlreadyExists", '%s "%s" already exists' % (qual, name),
                               {"name": name, "group": rt.group, "kind": rt.plural})
            obj["apiVersion"] = rt.api_version(rt.versions[0])
            obj["kind"] = rt.kind
            for f in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion",
                      "managedFields"):
                md.pop(f, None)
            md["uid"] = str(uuid.uuid4())
            md["creationTimestamp"] = now_rfc3339()
            md["generation"] = 1
            if "status" in rt.subresources and rt.crd_name:
                obj.pop("status", None)
            self._defaults_on_create(rt, obj)
            if validator:
                validator(rt, version, obj, None)
            if dry_run:
                obj["metadata"]["resourceVersion"] = str(self.rv)
                return obj, dumps(obj)
            return self._commit(rt, (ns, name), "ADDED", None, obj)

    def _defaults_on_create(self, rt, obj):
        if rt.gr == ("", "pods"):
            spec = obj.setdefault("spec", {})
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("serviceAccountName", "default")
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        elif rt.gr == ("", "services"):
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            if not spec.get("clusterIP"):
                n = self.next_cluster_ip
                self.next_cluster_ip += 1
                spec["clusterIP"] = "10.96.%d.%d" % (n // 254, n % 254 + 1)
            if spec["clusterIP"] != "None":
                spec["clusterIPs"] = [spec["clusterIP"]]
            for p in spec.get("ports", []) or []:
                if isinstance(p, dict):
                    p.setdefault("protocol", "TCP")
                    p.setdefault("targetPort", p.get("port"))
            obj.setdefault("status", {"loadBalancer": {}})
        elif rt.gr == ("", "namespaces"):
            obj.setdefault("spec", {})["finalizers"] = ["kubernetes"]
            obj["status"] = {"phase": "Active"}
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = \
                obj["metadata"]["name"]
        elif rt.gr == ("apiextensions.k8s.io", "customresourcedefinitions"):
            fins = obj["metadata"].setdefault("finalizers", [])
            if "customresourcecleanup.apiextensions.k8s.io" not in fins:
                fins.append("customresourcecleanup.apiextensions.k8s.io")
        elif rt.gr in (("apps", "deployments"), ("apps", "statefulsets"), ("apps", "replicasets")):
            obj.setdefault("spec", {}).setdefault("replicas", 1)
            obj["status"] = {"replicas": 0, "observedGeneration": 1}
        elif rt.gr == ("", "secrets"):
            obj.setdefault("type", "Opaque")

    @staticmethod
    def _spec_part(obj):
        return {k: v for k, v in obj.items() if k not in ("metadata", "status")}

    def update(self, rt, ns, name, new, version, mode="main", validator=None,
               check_rv=True, dry_run=False):
        """Replace an object. mode 'main' ignores status when the type has a status
        subresource; mode 'status' takes only status. A resourceVersion in new must match
        the stored one (409 otherwise)."""
        if isinstance(new, dict):
            new.setdefault("metadata", {})
        check_shape(rt, new)
        ns = ns or ""
        with self.lock:
            ent = self.objects[rt.gr].get((ns, name))
            if ent is None:
                raise not_found(rt.plural, rt.group, name)
            old = ent[0]
            nmd = new.setdefault("metadata", {})
            if nmd.get("name") not in (None, name):
                raise bad_request("the name of the object (%s) does not match the name on the "
                                  "URL (%s)" % (nmd.get("name"), name))
            want = nmd.get("resourceVersion")
            if check_rv and want not in (None, "") and want != old["metadata"]["resourceVersion"]:
                raise conflict(rt.plural, rt.group, name, "the object has been modified; please "
                               "apply your changes to the latest version and try again")
            if nmd.get("uid") not in (None, "", old["metadata"]["uid"]):
                raise conflict(rt.plural, rt.group, name, "Precondition failed: UID in "
                               "precondition: %s, UID in object meta: %s"
                               % (nmd.get("uid"), old["metadata"]["uid"]))
            omd = old["metadata"]
            if mode == "status":
                merged = json.loads(dumps(old))
                if "status" in new:
                    merged["status"] = new["status"]
                else:
                    merged.pop("status", None)
                new = merged
            else:
                if "status" in rt.subresources:
                    if "status" in old:
                        new["status"] = json.loads(dumps(old["status"]))
                    else:
                        new.pop("status", None)
                md = new["metadata"]
                for f in ("uid", "creationTimestamp", "deletionTimestamp",
                          "deletionGracePeriodSeconds", "generation"):
                    if f in omd:
                        md[f] = omd[f]
                    else:
                        md.pop(f, None)
                md["name"] = name
                if rt.namespaced:
                    md["namespace"] = ns
                else:
                    md.pop("namespace", None)
                md.pop("managedFields", None)
                if omd.get("deletionTimestamp"):
                    added = set(md.get("finalizers") or []) - set(omd.get("finalizers") or [])
                    if added:
                        raise invalid(rt.kind, rt.group, name, [
                            ("FieldValueForbidden", "metadata.finalizers",
                             "Forbidden: no new finalizers can be added if the object is being "
                             "deleted, found new finalizers %s" % sorted(added))])
            new["apiVersion"] = rt.api_version(rt.versions[0])
            new["kind"] = rt.kind
            if self._spec_part(new) != self._spec_part(old):
                new["metadata"]["generation"] = omd.get("generation", 1) + 1
            if rt.gr == ("", "services"):
                spec = new.setdefault("spec", {})
                spec.setdefault("clusterIP", old.get("spec", {}).get("clusterIP"))
            if validator:
                validator(rt, version, new, old)
            new["metadata"]["resourceVersion"] = omd["resourceVersion"]
            if new == old:
                return ent
            if dry_run:
                return new, dumps(new)
            if new["metadata"].get("deletionTimestamp") and not self._held(rt, new):
                return self._commit(rt, (ns, name), "DELETED", old, new)
            return self._commit(rt, (ns, name), "MODIFIED", old, new)

    def _held(self, rt, obj):
        """Whether an object being deleted must stay: finalizers, a namespace's own
        spec.finalizers (its content is being removed), or a pod awaiting its kubelet."""
        if obj["metadata"].get("finalizers"):
            return True
        if rt.gr == ("", "namespaces") and obj.get("spec", {}).get("finalizers"):
            return True
        return self._pod_awaits_kubelet(rt, obj)

    def _pod_awaits_kubelet(self, rt, obj):
        """A bound, not yet terminated pod is deleted gracefully: it stays (with
        deletionTimestamp) until its kubelet confirms with a zero grace period."""
        if rt.gr != ("", "pods"):
            return False
        md = obj["metadata"]
        return bool(obj.get("spec", {}).get("nodeName")) and \
            obj.get("status", {}).get("phase") not in ("Succeeded", "Failed") and \
            md.get("deletionGracePeriodSeconds", 0) > 0

    def delete(self, rt, ns, name, opts, dry_run=False):
        """Delete with DeleteOptions opts (propagationPolicy, gracePeriodSeconds,
        preconditions). Returns (obj, raw, finished)."""
        ns = ns or ""
        with self.lock:
            ent = self.objects[rt.gr].get((ns, name))
            if ent is None:
                raise not_found(rt.plural, rt.group, name)
            old = ent[0]
            pre = opts.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
                raise conflict(rt.plural, rt.group, name, "Precondition failed: UID in "
                               "precondition: %s, UID in object meta: %s"
                               % (pre["uid"], old["metadata"]["uid"]))
            if pre.get("resourceVersion") and pre["resourceVersion"] != \
                    old["metadata"]["resourceVersion"]:
                raise conflict(rt.plural, rt.group, name, "Precondition failed: "
                               "ResourceVersion in precondition: %s, ResourceVersion in "
                               "object meta: %s" % (pre["resourceVersion"],
                                                    old["metadata"]["resourceVersion"]))
            new = json.loads(ent[1])
            md = new["metadata"]
            policy = opts.get("propagationPolicy")
            if policy is None and opts.get("orphanDependents") is True:
                policy = "Orphan"
            fins = list(md.get("finalizers") or [])
            if policy == "Foreground" and "foregroundDeletion" not in fins:
                fins.append("foregroundDeletion")
            elif policy == "Orphan" and "orphan" not in fins:
                fins.append("orphan")
            grace = opts.get("gracePeriodSeconds")
            if rt.gr == ("", "pods"):
                if grace is None:
                    grace = md.get("deletionGracePeriodSeconds",
                                   new.get("spec", {}).get("terminationGracePeriodSeconds", 30))
                if md.get("deletionGracePeriodSeconds") is not None:
                    grace = min(grace, md["deletionGracePeriodSeconds"])
            else:
                grace = 0
            if fins:
                md["finalizers"] = fins
            if not md.get("deletionTimestamp"):
                md["deletionTimestamp"] = now_rfc3339(time.time() + max(0, grace))
            elif grace == 0:
                md["deletionTimestamp"] = now_rfc3339()
            md["deletionGracePeriodSeconds"] = max(0, int(grace))
            if dry_run:
                return new, dumps(new), False
            if self._held(rt, new):
                if new == old:
                    return ent[0], ent[1], False
                o, raw = self._commit(rt, (ns, name), "MODIFIED", old, new)
                return o, raw, False
            o, raw = self._commit(rt, (ns, name), "DELETED", old, new)
            return o, raw, True

    # ------------------------------------------------------------ garbage collection

    def gc_pass(self):
        """One pass of the controllers the emulator stands in for: garbage collector
        (orphan, foreground, background), namespace and CRD cleanup, and the forced
        removal of pods whose kubelet never confirmed their deletion."""
        with self.lock:
            now = time.time()
            dirty = self.gc_dirty
            if not dirty and not self.terminating:
                return
            self.gc_dirty = False
            live = set(self.by_uid)
            deps = collections.defaultdict(list)   # owner uid -> [(rt, key)]
            todo = []
            for gr, objs in list(self.objects.items()):
                rt = self.types_gr.get(gr)
                if rt is None:
                    continue
                for key, (obj, _) in list(objs.items()):
                    md = obj["metadata"]
                    for ref in md.get("ownerReferences") or []:
                        deps[ref.get("uid")].append((rt, key))
                    if md.get("deletionTimestamp"):
                        todo.append((rt, key))
            for rt, key in todo:
                ent = self.objects[rt.gr].get(key)
                if ent is None:
                    continue
                obj = ent[0]
                md = obj["metadata"]
                uid = md["uid"]
                fins = md.get("finalizers") or []
                if "orphan" in fins:
                    for drt, dkey in deps.get(uid, []):
                        self._strip_owner(drt, dkey, uid)
                    self._remove_finalizer(rt, key, "orphan")
                elif "foregroundDeletion" in fins:
                    alive = [(d, k) for d, k in deps.get(uid, []) if k in self.objects[d.gr]]
                    for drt, dkey in alive:
                        dobj = self.objects[drt.gr][dkey][0]
                        if not dobj["metadata"].get("deletionTimestamp"):
                            self.delete(drt, dkey[0], dkey[1], {"propagationPolicy": "Foreground"})
                    if not [1 for d, k in alive if k in self.objects[d.gr]]:
                        self._remove_finalizer(rt, key, "foregroundDeletion")
                elif rt.gr == ("", "namespaces"):
                    self._finish_namespace(obj)
                elif rt.gr == ("apiextensions.k8s.io", "customresourcedefinitions"):
                    self._finish_crd(obj)
                elif rt.gr == ("", "pods") and not fins:
                    due = parse_rfc3339(md["deletionTimestamp"]) or 0
                    if now > due + self.pod_force_delete_slack:
                        self.delete(rt, key[0], key[1], {"gracePeriodSeconds": 0})
            if dirty:
                for uid, lst in deps.items():
                    if uid in live:
                        continue
                    for rt, key in lst:
                        ent = self.objects[rt.gr].get(key)
                        if ent is None or ent[0]["metadata"].get("deletionTimestamp"):
                            continue
                        refs = ent[0]["metadata"].get("ownerReferences") or []
                        if all(r.get("uid") not in self.by_uid for r in refs):
                            self.delete(rt, key[0], key[1], {"propagationPolicy": "Background"})

    def _strip_owner(self, rt, key, uid):
        ent = self.objects[rt.gr].get(key)
        if ent is None:
            return
        new = json.loads(ent[1])
        refs = [r for r in new["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
        if refs:
            new["metadata"]["ownerReferences"] = refs
        else:
            new["metadata"].pop("ownerReferences", None)
        self._commit(rt, key, "MODIFIED", ent[0], new)

    def _remove_finalizer(self, rt, key, fin):
        ent = self.objects[rt.gr].get(key)
        if ent is None:
            return
        new = json.loads(ent[1])
        new["metadata"]["finalizers"] = [f for f in new["metadata"].get("finalizers", [])
                                         if f != fin]
        if not new["metadata"]["finalizers"]:
            del new["metadata"]["finalizers"]
            if not self._held(rt, new):
                self._commit(rt, key, "DELETED", ent[0], new)
                return
        self._commit(rt, key, "MODIFIED", ent[0], new)

    def _finish_namespace(self, ns_obj):
        ns = ns_obj["metadata"]["name"]
        if not ns_obj.get("spec", {}).get("finalizers"):
            return
        remaining = 0
        for gr, objs in list(self.objects.items()):
            rt = self.types_gr.get(gr)
            if rt is None or not rt.namespaced:
                continue
            for key, (obj, _) in list(objs.items()):
                if key[0] != ns:
                    continue
                remaining += 1
                if not obj["metadata"].get("deletionTimestamp"):
                    self.delete(rt, key[0], key[1], {"propagationPolicy": "Background"})
        if remaining == 0:
            rt = self.types_gr[("", "namespaces")]
            ent = self.objects[rt.gr].get(("", ns))
            if ent is not None:
                new = json.loads(ent[1])
                new.setdefault("spec", {})["finalizers"] = []
                self._commit(rt, ("", ns), "MODIFIED" if self._held(rt, new) else "DELETED",
                             ent[0], new)
        elif ns_obj.get("status", {}).get("phase") != "Terminating":
            new = json.loads(dumps(ns_obj))
            new["status"] = {"phase": "Terminating"}
            self._commit(self.types_gr[("", "namespaces")], ("", ns), "MODIFIED", ns_obj, new)

    def _finish_crd(self, crd):
        spec = crd.get("spec", {})
        gr = (spec.get("group", ""), spec.get("names", {}).get("plural", ""))
        rt = self.types_gr.get(gr)
        if rt is not None and rt.crd_name == crd["metadata"]["name"]:
            objs = self.objects[gr]
            for key, (obj, _) in list(objs.items()):
                if not obj["metadata"].get("deletionTimestamp"):
                    self.delete(rt, key[0], key[1], {"propagationPolicy": "Background"})
            if objs:
                return
            self.remove_type(rt)
        crt = self.types_gr[("apiextensions.k8s.io", "customresourcedefinitions")]
        self._remove_finalizer(crt, ("", crd["metadata"]["name"]),
                               "customresourcecleanup.apiextensions.k8s.io")

    def gc_loop(self):
        while not self.stopping:
            self.gc_wake.wait(0.5)
            self.gc_wake.clear()
            try:
                self.gc_pass()
            except Exception:  # keep collecting: one bad object must not stop the GC
                traceback.print_exc()
                self.gc_dirty = True
                time.sleep(0.5)

