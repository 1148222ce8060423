#!/usr/bin/env python3
"""fake_kubelet: nodes, scheduling and pod lifecycle for a Kubernetes API server that
has none (the kadet emulator), using nothing but the Kubernetes API, so it also works
against a real API server.

It registers --nodes fake nodes with --cpu/--memory, binds pending pods to the node with
the most free CPU that fits their requests (pods/binding), and moves each pod through
Pending -> Running -> Succeeded/Failed with the status subresource. With --run-pods it
runs the first container's command and args as a local process with the pod's env
(value, fieldRef, resourceFieldRef, configMapKeyRef, secretKeyRef, envFrom), each pod on
its own 127.x.y.z address (status.podIP, env KADET_POD_IP), output in a log file per
pod; deleting the pod sends SIGTERM, then SIGKILL after the grace period, and the pod
object goes once the process is gone. Service names resolve through a hosts-style file
(env KADET_HOSTS) mapping <svc>, <svc>.<ns>, <svc>.<ns>.svc and
<svc>.<ns>.svc.cluster.local to the IP of the oldest running pod behind the service.

Without --run-pods, pods run "forever", unless annotated with
emulator.kadet.io/run-seconds (and emulator.kadet.io/exit-code, default 0).

Node changes (docs/emulator.md "Node changes"): every Node in the API labelled
emulator.kadet.io/fake-node=true is one of this kubelet's nodes (its capacity from its own
status.allocatable; names starting with --node-prefix and a dash), so a test adds a node by creating one; a cordoned node
(spec.unschedulable) gets no new pods; a node annotated emulator.kadet.io/not-ready=true
reports Ready=False and its pods' processes die (a machine that stopped; their pod objects
stay as last written, as on a real cluster); a deleted node's processes die the same way,
and its pod objects are force-deleted --pod-gc-seconds later (the pod garbage collector).
"""

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from kube_client import Client, Informer, KubeConfig, KubeError, log, now_rfc3339  # noqa: E402,E501
import kubelet_pods  # noqa: E402

class Kubelet:
    def __init__(self, args):
        self.args = args
        self.client = Client(KubeConfig(args.kubeconfig, args.context))
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.work_dir = os.path.abspath(args.work_dir or tempfile.mkdtemp(prefix="fake-kubelet-"))
        os.makedirs(os.path.join(self.work_dir, "hosts"), exist_ok=True)
        os.makedirs(os.path.join(self.work_dir, "pods"), exist_ok=True)
        self.nodes = ["%s-%d" % (args.node_prefix, i) for i in range(args.nodes)]
        self.capacity = {}        # node -> (cpu milli, memory bytes) from its allocatable
        self.cordoned, self.down = set(), set()
        self.gone_since = {}      # node deleted from the API -> time first seen gone
        self.node_ready = {}      # node -> (ready, lastTransitionTime)
        self.cpu_milli = kubelet_pods.parse_cpu(args.cpu)
        self.mem_bytes = kubelet_pods.parse_memory(args.memory)
        self.runs = {}            # pod uid -> kubelet_pods.PodRun
        self.next_ip = 1
        self.unschedulable = set()
        self.assumed = {}         # pod uid -> node we bound it to, until the cache shows it
        self.hosts_cache = {}     # namespace -> file content last written
        self.last_heartbeat = 0.0
        self.started = now_rfc3339()
        self.ready_state, self.transition_time = None, self.started
        ns = "/namespaces/%s" % args.namespace if args.namespace else ""
        self.pods = Informer(self.client, "/api/v1%s/pods" % ns, self.wake.set, self.stop, "pods")
        self.services = Informer(self.client, "/api/v1%s/services" % ns, self.wake.set,
                                 self.stop, "services")
        self.node_informer = Informer(self.client, "/api/v1/nodes", self.wake.set, self.stop,
                                      "nodes")

    # ------------------------------------------------------------ nodes

    def node_object(self, name):
        labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64", "emulator.kadet.io/fake-node": "true"}
        for kv in self.args.labels.split(",") if self.args.labels else []:
            k, _, v = kv.partition("=")
            labels[k.strip()] = v.strip()
        res = {"cpu": self.args.cpu, "memory": self.args.memory, "pods": str(self.args.max_pods)}
        return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
                "spec": {}, "status": {"capacity": res, "allocatable": dict(res),
                                       "conditions": self.node_conditions(True),
                                       "addresses": [{"type": "InternalIP",
                                                      "address": "127.0.0.1"},
                                                     {"type": "Hostname", "address": name}],
                                       "nodeInfo": {"kubeletVersion": "v1.32.0-fake",
                                                    "operatingSystem": "linux",
                                                    "architecture": "amd64",
                                                    "containerRuntimeVersion": "fake://1"}}}

    def node_conditions(self, ready, name=None):
        t = now_rfc3339()
        if name is not None:
            prev = self.node_ready.get(name)
            if prev is None or prev[0] != ready:
                self.node_ready[name] = (ready, t)
            self.ready_state, self.transition_time = self.node_ready[name]
        elif self.ready_state != ready:
            # lastTransitionTime changes only when Ready flips, as on a real node.
            self.ready_state, self.transition_time = ready, t
        conds = [{"type": c, "status": "False", "reason": "KubeletHasSufficient" + c[:-8]
                  if c.endswith("Pressure") else "", "lastHeartbeatTime": t,
                  "lastTransitionTime": self.started}
                 for c in ("MemoryPressure", "DiskPressure", "PIDPressure")]
        conds.append({"type": "Ready", "status": "True" if ready else "False",
                      "reason": "KubeletReady" if ready else "KubeletStopped",
                      "message": "fake kubelet is posting ready status" if ready
                      else "fake kubelet stopped", "lastHeartbeatTime": t,
                      "lastTransitionTime": self.transition_time})
        return conds

    def register_nodes(self):
        for name in self.nodes:
            obj = self.node_object(name)
            try:
                self.client.request("POST", "/api/v1/nodes", obj)
                log("node registered", node=name, cpu=self.args.cpu, memory=self.args.memory)
            except KubeError as e:
                if e.code != 409:
                    raise
                self.client.merge_patch("/api/v1/nodes/%s" % name,
                                        {"metadata": {"labels": obj["metadata"]["labels"]}})
                self.client.merge_patch("/api/v1/nodes/%s/status" % name,
                                        {"status": obj["status"]})
        self.heartbeat()

    def refresh_nodes(self):
        """The node set from the API: fake nodes added, cordoned, marked not ready or
        deleted since the last pass. Returns the nodes whose Ready status must be
        written now (new, or their not-ready annotation changed)."""
        if not self.node_informer.synced.is_set():
            return []
        api = {}
        for n in self.node_informer.items():
            md = n.get("metadata", {})
            if ((md.get("labels") or {}).get("emulator.kadet.io/fake-node") == "true"
                    and md.get("name", "").startswith(self.args.node_prefix + "-")):
                api[md["name"]] = n
        now = time.time()
        for name in self.nodes:
            if name not in api and name not in self.gone_since:
                self.gone_since[name] = now
                log("node gone", node=name)
        changed = []
        for name, n in api.items():
            self.gone_since.pop(name, None)
            alloc = n.get("status", {}).get("allocatable") or {}
            try:
                cap = (kubelet_pods.parse_cpu(alloc.get("cpu", self.args.cpu)),
                       kubelet_pods.parse_memory(alloc.get("memory", self.args.memory)))
            except ValueError:
                cap = (self.cpu_milli, self.mem_bytes)
            if name not in self.nodes:
                log("node adopted", node=name, cpu_m=cap[0], memory=cap[1])
                changed.append(name)
            self.capacity[name] = cap
            if n.get("spec", {}).get("unschedulable"):
                self.cordoned.add(name)
            else:
                self.cordoned.discard(name)
            down = (n["metadata"].get("annotations") or {}).get(
                "emulator.kadet.io/not-ready") == "true"
            if down != (name in self.down):
                (self.down.add if down else self.down.discard)(name)
                log("node not ready" if down else "node ready again", node=name)
                changed.append(name)
        self.nodes = sorted(api)
        return changed

    def pod_gc(self, pods):
        """Force-deletes pods bound to nodes deleted more than --pod-gc-seconds ago."""
        now = time.time()
        for name, since in list(self.gone_since.items()):
            if now - since < self.args.pod_gc_seconds:
                continue
            for p in pods:
                if p.get("spec", {}).get("nodeName") == name:
                    self.finish_delete(p)
            del self.gone_since[name]

    def heartbeat(self, ready=True, only=None):
        """Node conditions, and the node's Lease in kube-node-lease as a real kubelet
        renews it (skipped where that namespace does not exist)."""
        now_micro = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        for name in (only if only is not None else self.nodes):
            try:
                self.client.merge_patch("/api/v1/nodes/%s/status" % name, {"status": {
                    "conditions": self.node_conditions(ready and name not in self.down, name)}})
                lease = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/" + name
                spec = {"holderIdentity": name, "leaseDurationSeconds": 40,
                        "renewTime": now_micro}
                if self.client.merge_patch(lease, {"spec": spec}, ok404=True) is None:
                    self.client.request("POST", lease.rsplit("/", 1)[0], {
                        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": name}, "spec": spec}, ok404=True)
            except KubeError as e:
                if e.code != 409:
                    log("heartbeat failed", node=name, error=e)
        if only is None:
            self.last_heartbeat = time.time()

    # ------------------------------------------------------------ scheduling

    def schedule(self, pods):
        used = {n: [0, 0, 0] for n in self.nodes}   # cpu milli, memory bytes, pods
        # Pods bound on an earlier pass that the informer's cache does not show bound yet
        # (kube-scheduler's "assumed" pods): counted on their node, not bound twice.
        live = {p["metadata"]["uid"]: p for p in pods}
        for uid in list(self.assumed):
            if uid not in live or live[uid].get("spec", {}).get("nodeName"):
                del self.assumed[uid]
        for p in pods:
            node = p.get("spec", {}).get("nodeName") or self.assumed.get(p["metadata"]["uid"])
            if node in used and p.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
                cpu, mem = kubelet_pods.pod_requests(p)
                used[node][0] += cpu
                used[node][1] += mem
                used[node][2] += 1
        labels = {}
        for n in self.node_informer.items():
            md = n.get("metadata", {})
            labels[md.get("name")] = md.get("labels") or {}
        for n in self.nodes:
            labels.setdefault(n, self.node_object(n)["metadata"]["labels"])
        cap = {n: self.capacity.get(n, (self.cpu_milli, self.mem_bytes)) for n in self.nodes}
        pending = [p for p in pods if not p.get("spec", {}).get("nodeName")
                   and p["metadata"]["uid"] not in self.assumed
                   and not p["metadata"].get("deletionTimestamp")
                   and p.get("status", {}).get("phase", "Pending") == "Pending"
                   and p.get("spec", {}).get("schedulerName", "default-scheduler")
                   == "default-scheduler"]
        pending.sort(key=lambda p: (p["metadata"].get("creationTimestamp", ""),
                                    p["metadata"]["name"]))
        for p in pending:
            cpu, mem = kubelet_pods.pod_requests(p)
            sel = p.get("spec", {}).get("nodeSelector") or {}
            fits = [n for n in self.nodes if n not in self.cordoned and n not in self.down
                    and used[n][0] + cpu <= cap[n][0] and used[n][1] + mem <= cap[n][1]
                    and used[n][2] < self.args.max_pods
                    and all(labels[n].get(k) == v for k, v in sel.items())]
            key = p["metadata"]["uid"]
            if not fits:
                # Remembered only once the condition is written: a write lost to a slow or
                # failing API call is retried on the next pass.
                if key not in self.unschedulable and self.mark_unschedulable(p, cpu, mem):
                    self.unschedulable.add(key)
                continue
            node = max(fits, key=lambda n: (cap[n][0] - used[n][0], n))
            ns, name = p["metadata"]["namespace"], p["metadata"]["name"]
            try:
                self.client.request("POST", "/api/v1/namespaces/%s/pods/%s/binding" % (ns, name),
                                    {"apiVersion": "v1", "kind": "Binding",
                                     "metadata": {"name": name, "namespace": ns},
                                     "target": {"apiVersion": "v1", "kind": "Node",
                                                "name": node}}, retries=2)
            except KubeError as e:
                if e.code not in (404, 409):
                    log("binding failed", pod="%s/%s" % (ns, name), error=e)
                continue
            self.unschedulable.discard(key)
            self.assumed[key] = node
            used[node][0] += cpu
            used[node][1] += mem
            used[node][2] += 1
            log("pod bound", pod="%s/%s" % (ns, name), node=node, cpu_m=cpu, memory=mem)

    def mark_unschedulable(self, p, cpu, mem):
        ns, name = p["metadata"]["namespace"], p["metadata"]["name"]
        msg = "0/%d nodes are available: insufficient resources (requests cpu=%dm memory=%d)" % (
            len(self.nodes), cpu, mem)
        try:
            self.client.merge_patch("/api/v1/namespaces/%s/pods/%s/status" % (ns, name), {
                "status": {"conditions": [{"type": "PodScheduled", "status": "False",
                                           "reason": "Unschedulable", "message": msg,
                                           "lastTransitionTime": now_rfc3339()}]}}, ok404=True)
            return True
        except KubeError as e:
            log("status update failed", pod="%s/%s" % (ns, name), error=e)
            return False

    # ------------------------------------------------------------ pods

    def allocate_ip(self):
        n = self.next_ip
        self.next_ip += 1
        hi, lo = divmod(n - 1, 254)
        return "%s.%d.%d" % (self.args.ip_prefix, hi % 256, lo + 1)

    def sync_pods(self, pods):
        # Pods on a node that is not ready or gone are nobody's: their processes die.
        up = set(self.nodes) - self.down
        mine = {p["metadata"]["uid"]: p for p in pods
                if p.get("spec", {}).get("nodeName") in up}
        for uid, run in list(self.runs.items()):
            if uid not in mine:
                # The pod object is gone (force deletion): stop at once.
                run.kill_now()
                del self.runs[uid]
                log("pod removed", pod=run.key)
        for uid, p in mine.items():
            run = self.runs.get(uid)
            deleting = bool(p["metadata"].get("deletionTimestamp"))
            phase = p.get("status", {}).get("phase", "Pending")
            if run is None:
                if deleting or phase in ("Succeeded", "Failed"):
                    if deleting:
                        self.finish_delete(p)
                    continue
                run = kubelet_pods.PodRun(self, p, self.allocate_ip())
                self.runs[uid] = run
                run.start()
                continue
            run.pod = p
            if deleting:
                if run.terminate(p) and self.finish_delete(p):
                    del self.runs[uid]
                continue
            run.poll()

    def finish_delete(self, p):
        ns, name = p["metadata"]["namespace"], p["metadata"]["name"]
        try:
            self.client.request("DELETE", "/api/v1/namespaces/%s/pods/%s" % (ns, name),
                                {"kind": "DeleteOptions", "apiVersion": "v1",
                                 "gracePeriodSeconds": 0,
                                 "preconditions": {"uid": p["metadata"]["uid"]}}, ok404=True)
        except KubeError as e:
            if e.code != 409:
                log("delete failed", pod="%s/%s" % (ns, name), error=e)
                return False
        log("pod deleted", pod="%s/%s" % (ns, name))
        return True

    # ------------------------------------------------------------ service names

    def sync_hosts(self, pods):
        """Rewrite the per-namespace hosts files when the service -> pod IP map changes."""
        running = [p for p in pods if p.get("status", {}).get("phase") == "Running"
                   and p.get("status", {}).get("podIP")
                   and not p["metadata"].get("deletionTimestamp")]
        running.sort(key=lambda p: (p["metadata"].get("creationTimestamp", ""),
                                    p["metadata"]["name"]))
        entries = []   # (ip, names, namespace)
        for s in self.services.items():
            sel = s.get("spec", {}).get("selector") or {}
            sns, sname = s["metadata"]["namespace"], s["metadata"]["name"]
            if not sel:
                continue
            for p in running:
                if p["metadata"]["namespace"] == sns and all(
                        (p["metadata"].get("labels") or {}).get(k) == v for k, v in sel.items()):
                    entries.append((p["status"]["podIP"], sname, sns))
                    break
        for p in running:
            spec = p.get("spec", {})
            if spec.get("hostname") and spec.get("subdomain"):
                entries.append((p["status"]["podIP"], "%s.%s" % (spec["hostname"],
                                                                   spec["subdomain"]),
                                p["metadata"]["namespace"]))
        namespaces = {p["metadata"]["namespace"] for p in pods} | {e[2] for e in entries}
        for ns in namespaces:
            lines = ["# written by fake_kubelet: service names for pods in namespace %s" % ns]
            for ip, name, ens in sorted(entries, key=lambda e: (e[2], e[1])):
                names = ["%s.%s" % (name, ens), "%s.%s.svc" % (name, ens),
                         "%s.%s.svc.cluster.local" % (name, ens)]
                if ens == ns:
                    names.insert(0, name)
                lines.append("%s %s" % (ip, " ".join(names)))
            text = "\n".join(lines) + "\n"
            if self.hosts_cache.get(ns) != text:
                path = self.hosts_path(ns)
                with open(path + ".tmp", "w") as f:
                    f.write(text)
                os.replace(path + ".tmp", path)
                self.hosts_cache[ns] = text

    def hosts_path(self, ns):
        return os.path.join(self.work_dir, "hosts", ns + ".hosts")

    # ------------------------------------------------------------ main loop

    def run(self):
        self.register_nodes()
        self.node_informer.start()
        self.node_informer.synced.wait(30)
        self.refresh_nodes()
        self.pods.start()
        self.services.start()
        self.pods.synced.wait(30)
        self.services.synced.wait(30)
        log("ready", nodes=len(self.nodes), work_dir=self.work_dir,
            run_pods=self.args.run_pods)
        if self.args.ready_file:
            with open(self.args.ready_file, "w") as f:
                f.write("%d\n" % os.getpid())
        while not self.stop.is_set():
            self.wake.wait(0.2)
            self.wake.clear()
            try:
                changed = self.refresh_nodes()
                if changed:
                    self.heartbeat(only=changed)
                pods = self.pods.items()
                self.pod_gc(pods)
                if not self.args.no_bind:
                    self.schedule(pods)
                self.sync_pods(pods)
                self.sync_hosts(self.pods.items())
                if time.time() - self.last_heartbeat >= self.args.heartbeat:
                    self.heartbeat()
            except KubeError as e:
                log("sync failed", error=e)
                time.sleep(0.5)
        self.shutdown()

    def shutdown(self):
        for run in list(self.runs.values()):
            run.kill_now()
        try:
            self.heartbeat(ready=False)
        except KubeError:
            pass
        if self.args.ready_file:
            try:
                os.unlink(self.args.ready_file)
            except FileNotFoundError:
                pass
        if not self.args.work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        log("stopped")


def main(argv=None):
    p = argparse.ArgumentParser(description="fake kubelet: nodes, binding and pod lifecycle "
                                "through the Kubernetes API")
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    p.add_argument("--context", default=None)
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--cpu", default="4", help="CPU of each node (e.g. 4 or 3500m)")
    p.add_argument("--memory", default="8Gi", help="memory of each node (e.g. 8Gi)")
    p.add_argument("--max-pods", type=int, default=110)
    p.add_argument("--labels", default="", help="extra node labels k=v,k2=v2")
    p.add_argument("--node-prefix", default="fake-node")
    p.add_argument("--namespace", default=None, help="only handle pods of this namespace")
    p.add_argument("--no-bind", action="store_true",
                   help="leave binding to the cluster's scheduler (on a real API server)")
    p.add_argument("--run-pods", action="store_true",
                   help="run each pod's first container command as a local process")
    p.add_argument("--path-prefix", action="append", default=[],
                   help="directory prepended to PATH for pod processes (repeatable)")
    p.add_argument("--pass-env", action="append", default=[],
                   help="environment variable passed from the kubelet to pod processes")
    p.add_argument("--ip-prefix", default="127.10",
                   help="first two octets of pod addresses (127.x)")
    p.add_argument("--work-dir", default=None, help="logs and hosts files (default: temp)")
    p.add_argument("--heartbeat", type=float, default=10.0)
    p.add_argument("--pod-gc-seconds", type=float, default=40.0,
                   help="force-delete pods of a deleted node this long after (PodGC)")
    p.add_argument("--ready-file", default=None, help="written once the kubelet is syncing")
    args = p.parse_args(argv)
    if not args.kubeconfig:
        p.error("--kubeconfig (or KUBECONFIG) is required")
    # Pod processes run in their own directories: relative paths would break there.
    args.path_prefix = [os.path.abspath(d) for d in args.path_prefix]
    if not args.ip_prefix.startswith("127.") or args.ip_prefix.count(".") != 1:
        p.error("--ip-prefix must look like 127.N")
    try:
        kubelet = Kubelet(args)
    except (ValueError, OSError) as e:
        sys.stderr.write("fake_kubelet: %s\n" % e)
        return 2

    def stop(signum, frame):
        kubelet.stop.set()
        kubelet.wake.set()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        kubelet.run()
    except KubeError as e:
        sys.stderr.write("fake_kubelet: API error: %s\n" % e)
        kubelet.shutdown()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

