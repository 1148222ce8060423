"""Pod processes of the fake kubelet: resource quantities, the container environment a
real kubelet would build (env, envFrom, fieldRef, resourceFieldRef, configMapKeyRef,
secretKeyRef, $(VAR) expansion), Secret volumes (written as files, paths in the
environment remapped), and PodRun, which starts the first container's command as a
local process group, reports its state through the pod status subresource,
applies the restart policy, and stops it with SIGTERM then SIGKILL on deletion.
"""

import base64
import ctypes
import math
import os
import re
import signal
import subprocess
import time

from kube_client import KubeError, log, now_rfc3339

LOG_ANNOTATION = "emulator.kadet.io/log-file"
RUN_SECONDS = "emulator.kadet.io/run-seconds"
EXIT_CODE = "emulator.kadet.io/exit-code"
INHERITED_ENV = ("HOME", "LANG", "LC_ALL", "TMPDIR", "LD_LIBRARY_PATH", "ASAN_OPTIONS",
                 "UBSAN_OPTIONS", "LSAN_OPTIONS", "OPENBLAS_NUM_THREADS", "PYTHONPATH")

_SUFFIX = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50,
           "Ei": 2 ** 60, "k": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12,
           "P": 10 ** 15, "E": 10 ** 18, "m": 10 ** -3, "": 1}


def parse_quantity(q):
    """A Kubernetes resource quantity as a float; ValueError when malformed."""
    m = re.match(r"^\s*([+-]?[0-9.]+(?:[eE][+-]?\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m)?\s*$",
                 str(q))
    if not m:
        raise ValueError("invalid quantity %r" % q)
    return float(m.group(1)) * _SUFFIX[m.group(2) or ""]


def parse_cpu(q):
    return int(math.ceil(parse_quantity(q) * 1000 - 1e-9))


def parse_memory(q):
    return int(math.ceil(parse_quantity(q) - 1e-9))


def pod_requests(pod):
    """(cpu millicores, memory bytes) requested by a pod's containers; limits stand in
    for missing requests as the API server defaults them. Bad quantities count as 0."""
    cpu = mem = 0
    for c in pod.get("spec", {}).get("containers") or []:
        res = c.get("resources") or {}
        req = dict(res.get("limits") or {})
        req.update(res.get("requests") or {})
        try:
            cpu += parse_cpu(req.get("cpu", 0))
            mem += parse_memory(req.get("memory", 0))
        except ValueError:
            pass
    return cpu, mem


try:
    # Resolved here, not in the forked child, where loading a library could deadlock on
    # a lock another thread held at fork time.
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _PRCTL = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """In the child before exec: get SIGKILL when the kubelet dies, even by SIGKILL,
    so that no pod process outlives it (Linux PR_SET_PDEATHSIG; elsewhere a no-op)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


class EnvError(Exception):
    pass


def expand(text, env):
    """Kubernetes $(VAR) expansion: defined variables are replaced, $$ is a literal $,
    anything else is left as written."""
    def rep(m):
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)", rep, str(text))


def _field_ref(pod, path, ip):
    md = pod["metadata"]
    m = re.match(r"^metadata\.(labels|annotations)\['([^']+)'\]$", path)
    if m:
        return (md.get(m.group(1)) or {}).get(m.group(2), "")
    vals = {"metadata.name": md.get("name"), "metadata.namespace": md.get("namespace"),
            "metadata.uid": md.get("uid"), "spec.nodeName": pod.get("spec", {}).get("nodeName"),
            "spec.serviceAccountName": pod.get("spec", {}).get("serviceAccountName"),
            "status.podIP": ip, "status.podIPs": ip, "status.hostIP": "127.0.0.1",
            "status.hostIPs": "127.0.0.1"}
    if path not in vals:
        raise EnvError("unsupported fieldRef %r" % path)
    return vals[path] or ""


def _resource_ref(container, ref, kubelet):
    res = ref.get("resource", "")
    kind, _, what = res.partition(".")
    r = container.get("resources") or {}
    val = (r.get(kind) or {}).get(what)
    if val is None and kind == "requests":
        val = (r.get("limits") or {}).get(what)
    try:
        if what == "cpu":
            milli = parse_cpu(val) if val is not None else kubelet.cpu_milli
            return str(int(math.ceil(milli / parse_cpu(ref.get("divisor") or "1"))))
        if what in ("memory", "ephemeral-storage"):
            b = parse_memory(val) if val is not None else kubelet.mem_bytes
            return str(int(math.ceil(b / parse_memory(ref.get("divisor") or "1"))))
    except (ValueError, ZeroDivisionError):
        raise EnvError("bad resourceFieldRef %r" % ref)
    raise EnvError("unsupported resourceFieldRef %r" % res)


def _lookup(kubelet, kind, ns, name, cache):
    key = (kind, name)
    if key not in cache:
        try:
            cache[key] = kubelet.client.request(
                "GET", "/api/v1/namespaces/%s/%s/%s" % (ns, kind, name), retries=2)
        except KubeError as e:
            if e.code != 404:
                raise EnvError("cannot read %s %s/%s: %s" % (kind, ns, name, e))
            cache[key] = None
    return cache[key]


def _data_of(obj, kind):
    if obj is None:
        return None
    if kind == "secrets":
        out = {}
        for k, v in (obj.get("data") or {}).items():
            try:
                out[k] = base64.b64decode(v).decode(errors="replace")
            except (ValueError, TypeError):
                out[k] = ""
        out.update(obj.get("stringData") or {})
        return out
    return dict(obj.get("data") or {})


def build_env(kubelet, pod, container, ip, hosts_file):
    """The process environment of a container: a few host variables (PATH with the
    kubelet's --path-prefix), then envFrom, then env, in the API's order."""
    ns = pod["metadata"]["namespace"]
    base = {k: os.environ[k] for k in INHERITED_ENV + tuple(kubelet.args.pass_env)
            if k in os.environ}
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    base["PATH"] = os.pathsep.join([os.path.abspath(d) for d in kubelet.args.path_prefix]
                                   + [path])
    base.update({"HOSTNAME": pod["spec"].get("hostname") or pod["metadata"]["name"],
                 "KADET_POD_IP": ip, "KADET_HOSTS": hosts_file,
                 "KUBERNETES_NAMESPACE": ns})
    env, cache = {}, {}
    for src in container.get("envFrom") or []:
        for kind, field in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
            ref = src.get(field)
            if not ref:
                continue
            data = _data_of(_lookup(kubelet, kind, ns, ref.get("name", ""), cache), kind)
            if data is None:
                if ref.get("optional"):
                    continue
                raise EnvError('%s "%s" not found' % (kind[:-1], ref.get("name")))
            for k, v in data.items():
                env[src.get("prefix", "") + k] = v
    for e in container.get("env") or []:
        name = e.get("name")
        if not name:
            continue
        if "value" in e:
            env[name] = expand(e["value"], {**base, **env})
            continue
        vf = e.get("valueFrom") or {}
        if "fieldRef" in vf:
            env[name] = _field_ref(pod, vf["fieldRef"].get("fieldPath", ""), ip)
        elif "resourceFieldRef" in vf:
            env[name] = _resource_ref(container, vf["resourceFieldRef"], kubelet)
        elif "configMapKeyRef" in vf or "secretKeyRef" in vf:
            kind, field = ("configmaps", "configMapKeyRef") if "configMapKeyRef" in vf \
                else ("secrets", "secretKeyRef")
            ref = vf[field]
            data = _data_of(_lookup(kubelet, kind, ns, ref.get("name", ""), cache), kind)
            if data is None or ref.get("key") not in data:
                if ref.get("optional"):
                    continue
                raise EnvError("couldn't find key %s in %s %s/%s"
                               % (ref.get("key"), kind[:-1], ns, ref.get("name")))
            env[name] = data[ref["key"]]
        else:
            env[name] = ""
    base.update(env)
    return base


def mount_secret_volumes(kubelet, pod, container, pod_dir):
    """The Secret volumes the container mounts, written as files under pod_dir (the fake
    node has no mount namespaces). Returns {mountPath: local directory}; the caller
    rewrites environment values under a mountPath to the local directory. A real kubelet
    writes root-owned files with the volume's defaultMode; here the files belong to the
    pod's process, so only the owner bits of the mode are kept (a key file readable by its
    own user's group would rightly be refused by the runtime). EnvError when a Secret or
    key is missing (a real kubelet keeps the pod in ContainerCreating)."""
    ns = pod["metadata"]["namespace"]
    volumes = {v.get("name"): v for v in pod["spec"].get("volumes") or []}
    out, cache = {}, {}
    for m in container.get("volumeMounts") or []:
        vol = volumes.get(m.get("name")) or {}
        src = vol.get("secret")
        if src is None or not m.get("mountPath"):
            continue
        data = _data_of(_lookup(kubelet, "secrets", ns, src.get("secretName", ""), cache),
                        "secrets")
        if data is None:
            if src.get("optional"):
                continue
            raise EnvError('secret "%s" not found' % src.get("secretName"))
        items = src.get("items") or [{"key": k, "path": k} for k in sorted(data)]
        local = os.path.join(pod_dir, "volumes", m["name"])
        os.makedirs(local, mode=0o700, exist_ok=True)
        mode = int(src.get("defaultMode", 0o644)) & 0o700 or 0o400
        for it in items:
            if it.get("key") not in data:
                raise EnvError("couldn't find key %s in secret %s/%s"
                               % (it.get("key"), ns, src.get("secretName")))
            path = os.path.join(local, os.path.basename(it.get("path") or it["key"]))
            if os.path.exists(path):
                os.chmod(path, 0o600)
            with open(path, "w") as f:
                f.write(data[it["key"]])
            os.chmod(path, int(it.get("mode", mode)) & 0o700 or 0o400)
        out[m["mountPath"].rstrip("/") or "/"] = local
    return out


def remap_paths(env, mounts):
    """Environment values naming a path under a mounted volume point to its local copy."""
    for k, v in env.items():
        for mp, local in mounts.items():
            if v == mp or v.startswith(mp + "/"):
                env[k] = local + v[len(mp):]
                break
    return env


class PodRun:
    """One pod on the fake node: its process (or simulated run) and reported status."""

    def __init__(self, kubelet, pod, ip):
        self.kubelet, self.pod, self.ip = kubelet, pod, ip
        md = pod["metadata"]
        self.key = "%s/%s" % (md["namespace"], md["name"])
        self.dir = os.path.join(kubelet.work_dir, "pods", "%s_%s_%s" % (
            md["namespace"], md["name"], md["uid"][:8]))
        self.log_path = os.path.join(self.dir, "container.log")
        # What a real kubelet mounts at the container's terminationMessagePath; this one
        # cannot mount, so it points KADET_TERMINATION_LOG at the file instead.
        self.term_path = os.path.join(self.dir, "termination-log")
        self.proc = None
        self.started_at = None
        self.sim_deadline = None
        self.restarts = 0
        self.restart_at = None
        self.last_term = None
        self.kill_deadline = None
        self.done = False
        self.config_error_at = None

    # ------------------------------------------------------------ status

    def _container_statuses(self, state, ready):
        """One status per container: the first is the process (or the simulation); the
        others are reported in the same state, since only the first one runs."""
        out = []
        for i, c in enumerate(self.pod["spec"].get("containers") or [{}]):
            cs = {"name": c.get("name", "main"), "image": c.get("image", ""),
                  "imageID": "fake://%s" % c.get("image", ""), "ready": ready,
                  "started": "running" in state, "restartCount": self.restarts,
                  "state": state}
            if self.proc is not None and i == 0:
                cs["containerID"] = "fake://%d" % self.proc.pid
            if self.last_term:
                cs["lastState"] = {"terminated": self.last_term}
            out.append(cs)
        return out

    def _push(self, phase, state, ready, reason=None, message=None):
        t = time.time()
        conds = [{"type": ct, "status": "True" if (ready or ct in ("PodScheduled",
                                                                  "Initialized")) else "False",
                  "lastTransitionTime": now_rfc3339(t)}
                 for ct in ("Initialized", "Ready", "ContainersReady", "PodScheduled")]
        status = {"phase": phase, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
                  "podIP": self.ip, "podIPs": [{"ip": self.ip}], "conditions": conds,
                  "containerStatuses": self._container_statuses(state, ready),
                  "startTime": now_rfc3339(self.started_at or t)}
        if reason:
            status["reason"] = reason
        if message:
            status["message"] = message
        md = self.pod["metadata"]
        try:
            self.kubelet.client.merge_patch("/api/v1/namespaces/%s/pods/%s/status"
                                            % (md["namespace"], md["name"]),
                                            {"status": status}, ok404=True)
        except KubeError as e:
            log("status update failed", pod=self.key, error=e)

    # ------------------------------------------------------------ lifecycle

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        self.started_at = self.started_at or time.time()
        spec = self.pod["spec"]
        containers = spec.get("containers") or [{}]
        c = containers[0]
        ann = self.pod["metadata"].get("annotations") or {}
        hosts = self.kubelet.hosts_path(self.pod["metadata"]["namespace"])
        if not os.path.exists(hosts):
            with open(hosts, "w") as f:
                f.write("# no services yet\n")
        cmd = [str(x) for x in (c.get("command") or []) + (c.get("args") or [])]
        if self.kubelet.args.run_pods and cmd:
            try:
                env = build_env(self.kubelet, self.pod, c, self.ip, hosts)
                env = remap_paths(env, mount_secret_volumes(self.kubelet, self.pod, c,
                                                            self.dir))
            except EnvError as e:
                self.config_error_at = time.time()
                self._push("Pending", {"waiting": {"reason": "CreateContainerConfigError",
                                                   "message": str(e)}}, False)
                log("container config error", pod=self.key, error=e)
                return
            self.config_error_at = None
            with open(self.term_path, "w"):
                pass
            env["KADET_TERMINATION_LOG"] = self.term_path
            cmd = [expand(x, env) for x in cmd]
            cmd[0] = self._resolve(cmd[0])
            cwd = c.get("workingDir") if c.get("workingDir") and os.path.isdir(
                c.get("workingDir")) else self.dir
            try:
                with open(self.log_path, "ab") as logf:
                    self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                                 stdout=logf, stderr=subprocess.STDOUT,
                                                 start_new_session=True,
                                                 preexec_fn=_die_with_parent)
            except OSError as e:
                self.proc = None
                msg = "failed to start %s: %s" % (cmd[0], e)
                with open(self.log_path, "a") as logf:   # so that kubectl logs shows it too
                    logf.write("fake-kubelet: %s\n" % msg)
                self._annotate_log()
                self._exited(128, "StartError", msg)
                return
            self._annotate_log()
            log("pod started", pod=self.key, ip=self.ip, pid=self.proc.pid, cmd=cmd[0])
        else:
            if RUN_SECONDS in ann:
                try:
                    self.sim_deadline = time.time() + float(ann[RUN_SECONDS])
                except ValueError:
                    self.sim_deadline = None
            log("pod running (simulated)", pod=self.key, ip=self.ip)
        self._push("Running", {"running": {"startedAt": now_rfc3339()}}, True)

    def _annotate_log(self):
        """Point the API server's pods/log at this pod's log file."""
        md = self.pod["metadata"]
        try:
            self.kubelet.client.merge_patch("/api/v1/namespaces/%s/pods/%s" % (
                md["namespace"], md["name"]), {"metadata": {"annotations": {
                    LOG_ANNOTATION: self.log_path}}}, ok404=True)
        except KubeError as e:
            log("log annotation failed", pod=self.key, error=e)

    def _resolve(self, prog):
        """An image path such as /usr/local/bin/kadet that does not exist here is looked
        up by its base name in the --path-prefix directories."""
        if "/" in prog and not os.path.exists(prog):
            for d in self.kubelet.args.path_prefix:
                cand = os.path.join(d, os.path.basename(prog))
                if os.access(cand, os.X_OK):
                    return cand
        return prog

    def _termination_message(self, code):
        """As the kubelet reads it: the file at terminationMessagePath (at most 4096
        bytes), or with FallbackToLogsOnError and a failure, the end of the log (the last
        80 lines, at most 2048 bytes); None when there is nothing to say."""
        text = ""
        try:
            with open(self.term_path, "rb") as f:
                text = f.read(4096).decode("utf-8", "replace")
        except OSError:
            pass
        c = (self.pod["spec"].get("containers") or [{}])[0]
        if not text and code != 0 and c.get("terminationMessagePolicy") == \
                "FallbackToLogsOnError":
            try:
                with open(self.log_path, "rb") as f:
                    f.seek(0, os.SEEK_END)
                    f.seek(max(0, f.tell() - 2048))
                    tail = f.read().decode("utf-8", "replace")
                text = "\n".join(tail.splitlines()[-80:])
            except OSError:
                pass
        return text or None

    def _exited(self, code, reason=None, message=None):
        policy = self.pod["spec"].get("restartPolicy", "Always")
        term = {"exitCode": code, "reason": reason or ("Completed" if code == 0 else "Error"),
                "startedAt": now_rfc3339(self.started_at), "finishedAt": now_rfc3339()}
        if message:
            term["message"] = message
        log("container exited", pod=self.key, code=code, restarts=self.restarts)
        if policy == "Always" or (policy == "OnFailure" and code != 0):
            self.last_term = term
            self.restarts += 1
            self.restart_at = time.time() + min(10.0, 0.5 * 2 ** min(self.restarts, 5))
            self.proc = None
            self._push("Running", {"waiting": {"reason": "CrashLoopBackOff",
                                               "message": "back-off restarting container"}},
                       False)
            return
        self.done = True
        self._push("Succeeded" if code == 0 else "Failed", {"terminated": term}, False)

    def poll(self):
        if self.done:
            return
        if self.config_error_at is not None:
            if time.time() - self.config_error_at > 2:
                self.start()
            return
        if self.restart_at is not None:
            if time.time() >= self.restart_at:
                self.restart_at = None
                self.started_at = time.time()
                self.start()
            return
        if self.proc is not None:
            code = self.proc.poll()
            if code is not None:
                code = code if code >= 0 else 128 - code
                self._exited(code, message=self._termination_message(code))
        elif self.sim_deadline is not None and time.time() >= self.sim_deadline:
            ann = self.pod["metadata"].get("annotations") or {}
            try:
                code = int(ann.get(EXIT_CODE, "0"))
            except ValueError:
                code = 1
            self.sim_deadline = None
            self._exited(code)

    def _signal(self, sig):
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def terminate(self, pod):
        """Drive a graceful stop; True once nothing runs any more."""
        if self.proc is None or self.proc.poll() is not None:
            return True
        if self.kill_deadline is None:
            grace = pod["metadata"].get("deletionGracePeriodSeconds")
            if grace is None:
                grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
            self.kill_deadline = time.time() + max(0, grace)
            log("stopping pod", pod=self.key, signal="SIGTERM", grace=grace)
            self._signal(signal.SIGTERM)
            return False
        if time.time() >= self.kill_deadline:
            log("stopping pod", pod=self.key, signal="SIGKILL")
            self._signal(signal.SIGKILL)
            self.proc.wait()
            return True
        return False

    def kill_now(self):
        if self.proc is not None and self.proc.poll() is None:
            self._signal(signal.SIGKILL)
            self.proc.wait()
