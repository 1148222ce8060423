#!/usr/bin/env python3
"""Emulator benchmark: bulk-load N pods, time full and paginated lists of them, and the
latency from sending a write to receiving its watch event.

    python3 tests/emulator/bench_emulator.py [--pods 10000] [--events 200]

Prints one Markdown table; timings are medians of several runs on a shared machine.
"""

import argparse
import json
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emulator import Emulator  # noqa: E402


def pod(i, ns):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "bench-%05d" % i, "namespace": ns,
                         "labels": {"app": "bench", "shard": str(i % 10)}},
            "spec": {"nodeName": "node-%d" % (i % 16), "containers": [{
                "name": "agent", "image": "kadet:latest", "command": ["kadet", "worker"],
                "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}},
                "env": [{"name": "KADET_COORDINATOR", "value": "job-coordinator:7000"}]}]},
            "status": {"phase": "Running", "podIP": "127.10.%d.%d" % (i // 254, i % 254 + 1)}}


def timed(fn, runs):
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=10000)
    ap.add_argument("--events", type=int, default=200)
    args = ap.parse_args()
    rows = []
    with Emulator(rv_window=max(1000, args.pods + 1000)) as emu:
        emu.request("POST", "/api/v1/namespaces", {"metadata": {"name": "bench"}})
        objs = [pod(i, "bench") for i in range(args.pods)]
        t0 = time.perf_counter()
        code, body = emu.request("POST", "/_emulator/bulk", {"objects": objs})
        assert code == 200, body
        rows.append(("bulk create %d pods" % args.pods, "%.2f s" % (time.perf_counter() - t0)))
        conn = emu.connection()
        hdr = {"Authorization": "Bearer " + emu.token, "Accept": "application/json"}
        size = [0]

        def full_list():
            conn.request("GET", "/api/v1/namespaces/bench/pods", headers=hdr)
            r = conn.getresponse()
            size[0] = len(r.read())
        t_list = timed(full_list, 5)
        rows.append(("list %d pods (%.1f MB), one request" % (args.pods, size[0] / 1e6),
                     "%.0f ms" % (1000 * t_list)))

        def paged():
            cont = ""
            while True:
                conn.request("GET", "/api/v1/namespaces/bench/pods?limit=500" +
                             ("&continue=" + cont if cont else ""), headers=hdr)
                body = json.loads(conn.getresponse().read())
                cont = body["metadata"].get("continue")
                if not cont:
                    break
        rows.append(("list %d pods in pages of 500 (client decodes JSON)" % args.pods,
                     "%.0f ms" % (1000 * timed(paged, 3))))
        conn.close()

        rv = emu.state()["resourceVersion"]
        w = emu.watch("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=%d" % rv)
        lat = []
        wc = emu.connection()
        for i in range(args.events):
            got = threading.Event()
            stamp = []

            def reader():
                w.next()
                stamp.append(time.perf_counter())
                got.set()
            th = threading.Thread(target=reader)
            th.start()
            t_send = time.perf_counter()
            wc.request("POST", "/api/v1/namespaces/default/configmaps",
                       body=('{"metadata":{"name":"lat-%d"}}' % i).encode(),
                       headers=dict(hdr, **{"Content-Type": "application/json"}))
            wc.getresponse().read()
            got.wait(5)
            th.join()
            lat.append(stamp[0] - t_send if stamp else 5.0)
        wc.close()
        w.close()
        lat.sort()
        rows.append(("write request sent -> watch event received, median",
                     "%.2f ms" % (1000 * statistics.median(lat))))
        rows.append(("write request sent -> watch event received, p99",
                     "%.2f ms" % (1000 * lat[int(len(lat) * 0.99) - 1])))
    print("| measurement | result |\n|---|---|")
    for name, val in rows:
        print("| %s | %s |" % (name, val))


if __name__ == "__main__":
    main()
