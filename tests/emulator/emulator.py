"""Python helper for tests that need a Kubernetes API: starts kube_emulator.py in a
temporary state directory, waits until it is ready, and offers small request helpers.

    with Emulator() as emu:
        code, body = emu.request("GET", "/api/v1/namespaces")
        emu.fault(failNext=2, code=429, retryAfter=1)

Attributes: state_dir, kubeconfig (path), server (https URL), token, ca (CA file path).
"""

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import http.client
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))


class Emulator:
    def __init__(self, rv_window=None, token=None, bookmark_interval=None, extra_args=(),
                 state_dir=None, python=None):
        self.own_dir = state_dir is None
        self.state_dir = state_dir or tempfile.mkdtemp(prefix="kube-emu-")
        self.args = [python or sys.executable, os.path.join(HERE, "kube_emulator.py"),
                     "--state-dir", self.state_dir]
        if rv_window is not None:
            self.args += ["--rv-window", str(rv_window)]
        if token is not None:
            self.args += ["--token", token]
        if bookmark_interval is not None:
            self.args += ["--bookmark-interval", str(bookmark_interval)]
        self.args += list(extra_args)
        self.proc = None
        self.kubeconfig = os.path.join(self.state_dir, "kubeconfig")
        self.ca = os.path.join(self.state_dir, "ca.crt")
        self.server = self.token = None
        self.port = None
        self._ctx = None

    def start(self, timeout=20):
        self.log = open(os.path.join(self.state_dir, "emulator.log"), "ab")
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=self.log)
        ready = os.path.join(self.state_dir, "ready")
        deadline = time.time() + timeout
        while not os.path.exists(ready):
            if self.proc.poll() is not None:
                raise RuntimeError("emulator exited with %d; log: %s" % (
                    self.proc.returncode, os.path.join(self.state_dir, "emulator.log")))
            if time.time() > deadline:
                self.stop()
                raise RuntimeError("emulator not ready after %ss" % timeout)
            time.sleep(0.05)
        with open(ready) as f:
            self.server = f.read().strip()
        with open(os.path.join(self.state_dir, "token")) as f:
            self.token = f.read().strip()
        self.port = int(urllib.parse.urlsplit(self.server).port)
        self._ctx = ssl.create_default_context(cafile=self.ca)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()
            self.log = None
        if self.own_dir and os.environ.get("KADET_KEEP_EMULATOR_STATE") is None:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def connection(self, timeout=30):
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self._ctx,
                                           timeout=timeout)

    def request(self, method, path, body=None, content_type="application/json",
                headers=None, token=None):
        """(status, decoded JSON body or text) of one request."""
        conn = self.connection()
        try:
            h = {"Authorization": "Bearer %s" % (token or self.token),
                 "Accept": "application/json"}
            data = None
            if body is not None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                h["Content-Type"] = content_type
            h.update(headers or {})
            conn.request(method, path, body=data, headers=h)
            resp = conn.getresponse()
            raw = resp.read()
            self.last_headers = dict(resp.getheaders())
            try:
                return resp.status, json.loads(raw) if raw else None
            except ValueError:
                return resp.status, raw.decode(errors="replace")
        finally:
            conn.close()

    def fault(self, **kw):
        code, body = self.request("POST", "/_emulator/faults", kw)
        if code != 200:
            raise RuntimeError("fault injection failed: %s %s" % (code, body))
        return body

    def state(self):
        return self.request("GET", "/_emulator/state")[1]

    def watch(self, path, timeout=30):
        """Open a watch; returns a WatchStream yielding decoded events."""
        conn = self.connection(timeout)
        conn.request("GET", path, headers={"Authorization": "Bearer %s" % self.token,
                                           "Accept": "application/json"})
        resp = conn.getresponse()
        return WatchStream(conn, resp)


class WatchStream:
    def __init__(self, conn, resp):
        self.conn, self.resp, self.status = conn, resp, resp.status

    def next(self):
        """The next event as a dict, or None at the end of the stream."""
        line = self.resp.readline()
        if not line:
            return None
        return json.loads(line)

    def close(self):
        self.conn.close()
