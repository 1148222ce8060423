#!/usr/bin/env python3
"""kube_emulator: a Kubernetes API server stand-in for tests and local hacking.

Serves the HTTP API shapes kadet, kubectl and client-go style clients use (discovery,
core/v1, coordination.k8s.io leases, CRDs and custom resources) over HTTPS with bearer
token auth, from memory. See docs/emulator.md for the semantics and their limits.

    python3 tests/emulator/kube_emulator.py --state-dir DIR [--port 0] [--token T]
        [--rv-window N] [--host 127.0.0.1] [--bookmark-interval S]

When serving, it writes DIR/port, DIR/ca.crt, DIR/token, DIR/kubeconfig and last
DIR/ready. SIGTERM or SIGINT stop it cleanly (DIR/ready is removed).
Test hooks under /_emulator/ (same token): POST faults, GET state, POST bulk.
"""

import argparse
import base64
import json
import os
import secrets
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from emu_api import Api  # noqa: E402
from emu_store import Store  # noqa: E402
from emu_util import ApiError, dumps  # noqa: E402

MAX_BODY = 3 << 20        # kube-apiserver's default --max-request-body-bytes
MAX_BULK_BODY = 256 << 20  # /_emulator/bulk loads benchmark data sets
PUBLIC_PATHS = ("/healthz", "/readyz", "/livez", "/version")


def make_certs(state_dir, host):
    """A throw-away CA and a server certificate for 127.0.0.1/localhost (and host)."""
    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, cwd=state_dir,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key")
    run("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=kadet-emulator-ca",
        "-days", "30", "-out", "ca.crt", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "server.key")
    run("req", "-new", "-key", "server.key", "-subj", "/CN=kadet-emulator", "-out", "server.csr")
    sans = ["IP:127.0.0.1", "DNS:localhost"]
    if host not in ("127.0.0.1", "localhost", "0.0.0.0", ""):
        sans.append(("IP:" if host.replace(".", "").isdigit() else "DNS:") + host)
    with open(os.path.join(state_dir, "server.ext"), "w") as f:
        f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n" % ",".join(sans))
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "30",
        "-out", "server.crt", "-extfile", "server.ext")


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(data)
    os.replace(tmp, path)


def kubeconfig_text(server, ca_pem, token):
    ca = base64.b64encode(ca_pem).decode()
    return ("apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n"
            "    server: %s\n    certificate-authority-data: %s\n"
            "users:\n- name: emulator\n  user:\n    token: %s\n"
            "contexts:\n- name: emulator\n  context:\n    cluster: emulator\n"
            "    user: emulator\n    namespace: default\n"
            "current-context: emulator\npreferences: {}\n" % (server, ca, token))


class Faults:
    """Injected faults; guarded by its own lock, read on every request."""

    def __init__(self):
        self.lock = threading.Lock()
        self.fail_next = 0
        self.fail_code = 500
        self.retry_after = 1
        self.delay_ms = 0

    def snapshot(self):
        with self.lock:
            return {"failNext": self.fail_next, "code": self.fail_code,
                    "retryAfter": self.retry_after, "delayMs": self.delay_ms}


class Emulator:
    def __init__(self, args):
        self.args = args
        self.store = Store(args.rv_window)
        self.api = Api(self.store, args.bookmark_interval)
        self.faults = Faults()
        self.tokens = {args.token}
        self.counters_lock = threading.Lock()
        self.requests = 0
        self.watches_open = 0
        self.server = None
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.store.create(self.store.types_gr[("", "namespaces")], "",
                              {"metadata": {"name": ns}}, "v1")

    def count(self, field, delta):
        with self.counters_lock:
            setattr(self, field, getattr(self, field) + delta)

    def state(self):
        with self.store.lock:
            objects = sum(len(v) for v in self.store.objects.values())
            st = {"resourceVersion": self.store.rv, "compactedResourceVersion":
                  self.store.compacted, "objects": objects,
                  "watchers": len(self.store.watchers)}
        with self.counters_lock:
            st.update({"requests": self.requests, "watchesOpen": self.watches_open})
        st["faults"] = self.faults.snapshot()
        return st

    def set_faults(self, body):
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "faults must be a JSON object")
        with self.faults.lock:
            if "failNext" in body:
                n, code = body["failNext"], body.get("code", 500)
                if not isinstance(n, int) or n < 0 or not isinstance(code, int) \
                        or not 400 <= code <= 599:
                    raise ApiError(400, "BadRequest", "failNext needs a count >= 0 and a "
                                   "code in 400..599")
                self.faults.fail_next = n
                self.faults.fail_code = code
                self.faults.retry_after = int(body.get("retryAfter", 1))
            if "delayMs" in body:
                d = body["delayMs"]
                if not isinstance(d, (int, float)) or d < 0:
                    raise ApiError(400, "BadRequest", "delayMs must be a number >= 0")
                self.faults.delay_ms = d
        if body.get("tokens") is not None:
            toks = body["tokens"]
            if not isinstance(toks, list) or not toks or \
                    not all(isinstance(t, str) and t for t in toks):
                raise ApiError(400, "BadRequest", "tokens must be a non-empty list of strings")
            self.tokens = set(toks)
        if body.get("expireNow"):
            self.store.expire_now()
        if body.get("dropWatches"):
            self.store.drop_watches()
        return self.state()

    def bulk(self, body):
        objs = body.get("objects") if isinstance(body, dict) else None
        if not isinstance(objs, list):
            raise ApiError(400, "BadRequest", "bulk needs {\"objects\": [...]}")
        created = 0
        for o in objs:
            if not isinstance(o, dict) or not isinstance(o.get("apiVersion"), str):
                raise ApiError(400, "BadRequest", "bulk object %d has no apiVersion" % created)
            av = o["apiVersion"]
            group, version = av.rsplit("/", 1) if "/" in av else ("", av)
            rt = None
            with self.store.lock:
                for (g, v, _), cand in self.store.types.items():
                    if g == group and v == version and cand.kind == o.get("kind"):
                        rt = cand
                        break
            if rt is None:
                raise ApiError(400, "BadRequest", "bulk object %d: no resource for %s %s"
                               % (created, av, o.get("kind")))
            self.store.create(rt, o.get("metadata", {}).get("namespace"), o, version)
            created += 1
        return {"created": created, "resourceVersion": self.store.rv}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kadet-kube-emulator"
    emu = None  # set on the class by serve()

    def log_message(self, fmt, *args):
        if os.environ.get("KADET_EMULATOR_VERBOSE"):
            sys.stderr.write("emulator: %s\n" % (fmt % args))

    def _send(self, code, body, headers=None, ctype="application/json"):
        self.send_response(code)
        self.send_header("Content-Type", (headers or {}).pop("Content-Type", ctype)
                         if headers else ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, e):
        headers = dict(e.headers)
        self._send(e.code, dumps(e.status()), headers)

    def _read_body(self):
        limit = MAX_BULK_BODY if self.path.startswith("/_emulator/") else MAX_BODY
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                line = self.rfile.readline(100)
                try:
                    size = int(line.split(b";")[0].strip() or b"0", 16)
                except ValueError:
                    self.close_connection = True
                    raise ApiError(400, "BadRequest", "malformed chunked request body")
                if size == 0:
                    self.rfile.readline(100)
                    return out
                out += self.rfile.read(size)
                self.rfile.readline(10)
                if len(out) > limit:
                    self.close_connection = True
                    raise ApiError(413, "RequestEntityTooLarge", "request body too large")
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise ApiError(400, "BadRequest", "invalid Content-Length")
        if n > limit:
            # Read and drop a moderately oversized body so that the client, still sending
            # it, gets the 413; beyond that, stop reading and close the connection.
            if n <= 16 * limit:
                while n > 0:
                    chunk = self.rfile.read(min(n, 1 << 16))
                    if not chunk:
                        break
                    n -= len(chunk)
            else:
                self.close_connection = True
            raise ApiError(413, "RequestEntityTooLarge", "request body too large (limit %d "
                           "bytes)" % limit)
        return self.rfile.read(n) if n > 0 else b""

    def _authorized(self):
        auth = self.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[7:].strip() in self.emu.tokens

    def _dispatch(self):
        emu = self.emu
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        emu.count("requests", 1)
        try:
            body = self._read_body()
            if path in PUBLIC_PATHS or path.startswith("/healthz/") or \
                    path.startswith("/readyz/") or path.startswith("/livez/"):
                if path == "/version":
                    return self._send(200, dumps({
                        "major": "1", "minor": "32", "gitVersion": "v1.32.0-kadet-emulator",
                        "gitCommit": "0000000000000000000000000000000000000000",
                        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                        "goVersion": "python%d.%d" % sys.version_info[:2],
                        "compiler": "python", "platform": "linux/amd64"}))
                return self._send(200, b"ok", ctype="text/plain")
            if not self._authorized():
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if path.startswith("/_emulator/"):
                return self._emulator_hook(path, body)
            delay = 0
            with emu.faults.lock:
                if emu.faults.fail_next > 0:
                    emu.faults.fail_next -= 1
                    code, ra = emu.faults.fail_code, emu.faults.retry_after
                else:
                    code = None
                delay = emu.faults.delay_ms
            if delay:
                time.sleep(delay / 1000.0)
            if code is not None:
                reason = {429: "TooManyRequests", 500: "InternalError",
                          503: "ServiceUnavailable", 504: "Timeout"}.get(code, "InternalError")
                headers = {"Retry-After": ra} if code in (429, 503) else {}
                details = {"retryAfterSeconds": ra} if code in (429, 503) else None
                raise ApiError(code, reason, "injected fault: %s" % reason, details, headers)
            resp = emu.api.handle(self.command, path, query, self.headers, body)
        except ApiError as e:
            return self._error(e)
        except (ConnectionError, BrokenPipeError):
            raise
        except Exception as e:  # a bug in the emulator: answer 500, keep serving
            import traceback
            traceback.print_exc()
            return self._error(ApiError(500, "InternalError", "emulator error: %r" % e))
        if resp.stream is None:
            return self._send(resp.code, resp.body, dict(resp.headers))
        self._stream(resp)

    def _stream(self, resp):
        self.send_response(resp.code)
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.emu.count("watches_open", 1)
        try:
            for chunk in resp.stream:
                if not chunk:
                    if self._peer_closed():
                        self.close_connection = True
                        return
                    continue
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except ConnectionAbortedError:
            # An injected drop: cut the TCP connection without the final chunk, as a
            # network failure or an API server restart would.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        except OSError:
            self.close_connection = True
        finally:
            close = getattr(resp.stream, "close", None)
            if close:
                close()
            self.emu.count("watches_open", -1)

    def _peer_closed(self):
        """Whether the client of a stream went away. A watch client sends nothing, so
        a readable socket means end of stream (or, rarely, a pipelined request, which
        also ends the watch)."""
        sock = self.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            sock.settimeout(0.05)
            try:
                sock.recv(1)   # b"" at end of stream; any byte also ends the watch
            finally:
                sock.settimeout(None)
            return True
        except (ssl.SSLWantReadError, socket.timeout):
            return False
        except (OSError, ValueError):
            return True

    def _emulator_hook(self, path, body):
        emu = self.emu
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            raise ApiError(400, "BadRequest", "body is not JSON")
        if path == "/_emulator/state" and self.command == "GET":
            return self._send(200, dumps(emu.state()))
        if path == "/_emulator/faults" and self.command == "POST":
            return self._send(200, dumps(emu.set_faults(data)))
        if path == "/_emulator/bulk" and self.command == "POST":
            return self._send(200, dumps(emu.bulk(data)))
        raise ApiError(404, "NotFound", "unknown emulator hook %s" % path)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch


class TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    ssl_ctx = None

    def finish_request(self, request, client_address):
        # The TLS handshake runs in the connection's own thread so that a slow or broken
        # client never stalls accept().
        try:
            # Headers and body leave in separate writes; without TCP_NODELAY, Nagle's
            # algorithm and the client's delayed ACK add ~40 ms to every response.
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            request.settimeout(30)
            tls = self.ssl_ctx.wrap_socket(request, server_side=True)
            tls.settimeout(None)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def main(argv=None):
    p = argparse.ArgumentParser(description="Kubernetes API emulator for kadet tests")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--token", default=None)
    p.add_argument("--rv-window", type=int, default=1000,
                   help="events kept for watch resumption; older versions answer 410")
    p.add_argument("--bookmark-interval", type=float, default=1.0,
                   help="seconds between BOOKMARK events on watches that allow them")
    args = p.parse_args(argv)
    if not args.token:
        args.token = secrets.token_hex(16)
    sd = os.path.abspath(args.state_dir)
    os.makedirs(sd, exist_ok=True)
    for f in ("ready", "port"):
        try:
            os.unlink(os.path.join(sd, f))
        except FileNotFoundError:
            pass
    try:
        make_certs(sd, args.host)
    except (subprocess.CalledProcessError, OSError) as e:
        sys.stderr.write("kube_emulator: certificate generation failed: %s\n" % e)
        return 1
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(sd, "server.crt"), os.path.join(sd, "server.key"))
    emu = Emulator(args)
    Handler.emu = emu
    TLSServer.ssl_ctx = ctx
    try:
        httpd = TLSServer((args.host, args.port), Handler)
    except OSError as e:
        sys.stderr.write("kube_emulator: cannot listen on %s:%d: %s\n"
                         % (args.host, args.port, e))
        return 1
    port = httpd.server_address[1]
    host = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
    server = "https://%s:%d" % (host, port)
    emu.api.server_address = "%s:%d" % (host, port)
    with open(os.path.join(sd, "ca.crt"), "rb") as f:
        ca_pem = f.read()
    write_atomic(os.path.join(sd, "token"), args.token + "\n")
    os.chmod(os.path.join(sd, "token"), 0o600)
    write_atomic(os.path.join(sd, "kubeconfig"), kubeconfig_text(server, ca_pem, args.token))
    os.chmod(os.path.join(sd, "kubeconfig"), 0o600)
    write_atomic(os.path.join(sd, "port"), "%d\n" % port)
    gc = threading.Thread(target=emu.store.gc_loop, name="gc", daemon=True)
    gc.start()

    def stop(signum, frame):
        threading.Thread(target=httpd.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    write_atomic(os.path.join(sd, "ready"), server + "\n")
    sys.stderr.write("kube_emulator: serving %s (state %s)\n" % (server, sd))
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        emu.store.stopping = True
        emu.store.drop_watches()
        httpd.server_close()
        for f in ("ready", "port"):
            try:
                os.unlink(os.path.join(sd, f))
            except FileNotFoundError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
