"""A small Kubernetes API client in Python's standard library, for the fake kubelet
(and tests): kubeconfig loading (current context, server, CA file or data, insecure
flag, token or tokenFile, client certificate and key), JSON requests with retries on
429/5xx and connection errors, and an informer (list, then watch from the list's
resourceVersion with bookmarks, relist on 410, reconnect with backoff).

The kubeconfig is read as JSON when it is JSON; any other (YAML) kubeconfig is turned
into JSON by `kubectl config view --raw -o json`, since the standard library has no YAML
parser.
"""

import base64
import http.client
import json
import os
import random
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse


def now_rfc3339(ts=None):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts if ts is not None else time.time()))


def log(msg, **kv):
    """One log line: time, component, message, key=value fields."""
    fields = " ".join("%s=%s" % (k, v) for k, v in kv.items())
    sys.stderr.write("%s fake-kubelet %s %s\n" % (now_rfc3339(), msg, fields))
    sys.stderr.flush()


class KubeError(Exception):
    def __init__(self, code, status, message):
        super().__init__("%s: %s" % (code, message))
        self.code, self.status, self.message = code, status, message


def _parse_simple_yaml_kubeconfig(path):
    """The kubeconfig as a dict: JSON directly, anything else through kubectl."""
    with open(path) as f:
        text = f.read()
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        out = subprocess.run(["kubectl", "config", "view", "--raw", "-o", "json",
                              "--kubeconfig", path], check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise ValueError("%s: cannot read the kubeconfig (needs JSON or kubectl): %s"
                         % (path, getattr(e, "stderr", e)))
    return json.loads(out.stdout)


class KubeConfig:
    def __init__(self, path, context=None):
        cfg = _parse_simple_yaml_kubeconfig(path)
        base = os.path.dirname(os.path.abspath(path))
        ctx_name = context or cfg.get("current-context")
        ctxs = {c["name"]: c.get("context", {}) for c in cfg.get("contexts") or []}
        if ctx_name not in ctxs:
            raise ValueError("%s: context %r not found" % (path, ctx_name))
        ctx = ctxs[ctx_name]
        clusters = {c["name"]: c.get("cluster", {}) for c in cfg.get("clusters") or []}
        users = {u["name"]: u.get("user", {}) for u in cfg.get("users") or []}
        cluster = clusters.get(ctx.get("cluster"))
        if cluster is None or not cluster.get("server"):
            raise ValueError("%s: cluster %r has no server" % (path, ctx.get("cluster")))
        user = users.get(ctx.get("user"), {})
        self.namespace = ctx.get("namespace", "default")
        u = urllib.parse.urlsplit(cluster["server"])
        self.scheme, self.host, self.port = u.scheme, u.hostname, u.port or (
            443 if u.scheme == "https" else 80)
        self.prefix = u.path.rstrip("/")
        self.token = user.get("token")
        self.token_file = user.get("tokenFile")
        if self.token_file and not os.path.isabs(self.token_file):
            self.token_file = os.path.join(base, self.token_file)
        self.tmp = []
        self.ssl = None
        if self.scheme == "https":
            if cluster.get("insecure-skip-tls-verify"):
                self.ssl = ssl._create_unverified_context()
            elif cluster.get("certificate-authority-data"):
                self.ssl = ssl.create_default_context(cadata=base64.b64decode(
                    cluster["certificate-authority-data"]).decode())
            elif cluster.get("certificate-authority"):
                self.ssl = ssl.create_default_context(cafile=self._rel(base, cluster[
                    "certificate-authority"]))
            else:
                self.ssl = ssl.create_default_context()
            cert = self._material(base, user, "client-certificate")
            key = self._material(base, user, "client-key")
            if cert and key:
                self.ssl.load_cert_chain(cert, key)

    @staticmethod
    def _rel(base, p):
        return p if os.path.isabs(p) else os.path.join(base, p)

    def _material(self, base, user, field):
        if user.get(field + "-data"):
            fd, p = tempfile.mkstemp(prefix="kubelet-")
            os.write(fd, base64.b64decode(user[field + "-data"]))
            os.close(fd)
            self.tmp.append(p)
            return p
        if user.get(field):
            return self._rel(base, user[field])
        return None

    def bearer(self):
        if self.token_file:
            try:
                with open(self.token_file) as f:
                    return f.read().strip()
            except OSError:
                pass
        return self.token


class Client:
    """Blocking JSON requests; one connection per thread, reused."""

    def __init__(self, cfg, timeout=30):
        self.cfg, self.timeout = cfg, timeout
        self.local = threading.local()

    def _conn(self, timeout=None):
        if self.cfg.scheme == "https":
            return http.client.HTTPSConnection(self.cfg.host, self.cfg.port, context=self.cfg.ssl,
                                               timeout=timeout or self.timeout)
        return http.client.HTTPConnection(self.cfg.host, self.cfg.port,
                                          timeout=timeout or self.timeout)

    def _headers(self, ctype=None):
        h = {"Accept": "application/json", "User-Agent": "kadet-fake-kubelet"}
        tok = self.cfg.bearer()
        if tok:
            h["Authorization"] = "Bearer " + tok
        if ctype:
            h["Content-Type"] = ctype
        return h

    def request(self, method, path, body=None, ctype="application/json", retries=5,
                ok404=False):
        """Decoded JSON of a 2xx answer; KubeError otherwise (after retrying 429, 5xx and
        connection failures with backoff, honouring Retry-After)."""
        data = None if body is None else json.dumps(body).encode()
        delay = 0.2
        for attempt in range(retries + 1):
            try:
                conn = getattr(self.local, "conn", None)
                if conn is None:
                    conn = self.local.conn = self._conn()
                conn.request(method, self.cfg.prefix + path, body=data,
                             headers=self._headers(ctype if data is not None else None))
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException):
                self.local.conn = None
                if attempt == retries:
                    raise KubeError(0, None, "connection to the API server failed")
                time.sleep(delay)
                delay = min(delay * 2, 5)
                continue
            if resp.status in (429, 500, 502, 503, 504) and attempt < retries:
                ra = resp.getheader("Retry-After")
                time.sleep(float(ra) if ra and ra.isdigit() else delay)
                delay = min(delay * 2, 5)
                continue
            try:
                obj = json.loads(raw) if raw else None
            except ValueError:
                obj = None
            if 200 <= resp.status < 300:
                return obj
            if resp.status == 404 and ok404:
                return None
            msg = obj.get("message") if isinstance(obj, dict) else raw[:200]
            raise KubeError(resp.status, obj, msg)
        raise KubeError(0, None, "unreachable")

    def merge_patch(self, path, patch, **kw):
        return self.request("PATCH", path, patch, "application/merge-patch+json", **kw)


class Informer(threading.Thread):
    """Keeps cache (uid -> object) of a collection in sync; calls on_change() after
    every applied change. Stops when stop_event is set."""

    def __init__(self, client, path, on_change, stop_event, name="informer"):
        super().__init__(name=name, daemon=True)
        self.client, self.path, self.on_change, self.stop_event = client, path, on_change, \
            stop_event
        self.cache = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()
        self.conn = None

    def items(self):
        with self.lock:
            return list(self.cache.values())

    def run(self):
        backoff = 0.2
        self.rv = None
        while not self.stop_event.is_set():
            try:
                if self.rv is None:
                    lst = self.client.request("GET", self.path)
                    with self.lock:
                        self.cache = {o["metadata"]["uid"]: o for o in lst.get("items", [])}
                    self.rv = lst["metadata"]["resourceVersion"]
                    self.synced.set()
                    self.on_change()
                self._watch()
                backoff = 0.2
            except KubeError as e:
                if e.code == 410:
                    self.rv = None
                    continue
                time.sleep(backoff * (1 + random.random()))
                backoff = min(backoff * 2, 5)
            except (OSError, http.client.HTTPException, ValueError):
                time.sleep(backoff * (1 + random.random()))
                backoff = min(backoff * 2, 5)

    def _watch(self):
        """Watch from self.rv until the stream ends; self.rv follows every event so that
        a reconnect resumes exactly after the last one seen."""
        sep = "&" if "?" in self.path else "?"
        conn = self.client._conn(timeout=120)
        self.conn = conn
        try:
            conn.request("GET", self.client.cfg.prefix + self.path + sep +
                         "watch=1&allowWatchBookmarks=true&timeoutSeconds=300&resourceVersion="
                         + self.rv, headers=self.client._headers())
            resp = conn.getresponse()
            if resp.status != 200:
                body = resp.read()
                try:
                    st = json.loads(body)
                except ValueError:
                    st = {}
                raise KubeError(resp.status, st, st.get("message", ""))
            while not self.stop_event.is_set():
                line = resp.readline()
                if not line:
                    return
                ev = json.loads(line)
                obj = ev.get("object") or {}
                if ev.get("type") == "ERROR":
                    raise KubeError(obj.get("code", 500), obj, obj.get("message", ""))
                if ev.get("type") != "BOOKMARK":
                    with self.lock:
                        if ev["type"] == "DELETED":
                            self.cache.pop(obj["metadata"]["uid"], None)
                        else:
                            self.cache[obj["metadata"]["uid"]] = obj
                    self.on_change()
                self.rv = obj.get("metadata", {}).get("resourceVersion", self.rv)
        finally:
            conn.close()
