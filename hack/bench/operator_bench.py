#!/usr/bin/env python3
"""kadet-operator figures against the Kubernetes API emulator on loopback (driven by
hack/bench/operator.sh):

1. apply -> all agent pods created: an AgentJob is POSTed and the time until its
   coordinator and every worker pod exist is measured (the pod list polled every 5 ms),
   for a pinned job (spec.replicas = 4) and for a scheduler-driven job (agents 1..4 on
   fake nodes with room: created with agents.min, then the scheduler host's round,
   triggered by the new job, scales it to 4), median over --runs each;
2. RSS of the operator with --jobs AgentJobs (each pinned at --pods/--jobs - 1 workers,
   so with its coordinator --pods pods exist, all created by the operator), after it
   created everything;
3. reconciles per second at that size: a second operator replica takes over (the first
   is stopped) and re-syncs every job from warm caches; the rate is jobs / time from
   its first to its last of those reconciles (kadet_reconciles_total polled).
Standard library only; prints a Markdown table."""

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(TOP, "tests", "integration"))
import reconcile_harness as h  # noqa: E402


def job(name, replicas, agents):
    j = h.sample_job(name, agents=agents, replicas=replicas, cpu="100m")
    return j


def count_pods(c, name):
    code, body = c.emu.request(
        "GET", "/api/v1/namespaces/default/pods?labelSelector=kadet.io%%2Fjob-name%%3D%s" % name)
    return len(body["items"]) if code == 200 else 0


def time_to_pods(c, name, replicas, agents, want):
    t0 = time.time()
    code, body = c.emu.request("POST", "/apis/kadet.io/v1alpha1/namespaces/default/agentjobs",
                               job(name, replicas, agents))
    if code != 201:
        h.fail("create %s: %s %s" % (name, code, body))
    while count_pods(c, name) < want:
        if time.time() - t0 > 30:
            h.fail("%s: pods not created after 30 s" % name)
        time.sleep(0.005)
    return time.time() - t0


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        st = dict(line.split(":", 1) for line in f)
    return int(st["VmRSS"].split()[0]), int(st["VmHWM"].split()[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--pods", type=int, default=1000)
    args = ap.parse_args()
    rows = []
    with h.Cluster(nodes=4, cpu="16", memory="64Gi") as c:
        op = c.operator("bench-0", extra=["--scheduler-interval", "10s"])
        op.wait_ready()
        pinned, sched = [], []
        for i in range(args.runs):
            pinned.append(time_to_pods(c, "pin-%d" % i, 4, (1, 4), 5))
            sched.append(time_to_pods(c, "sch-%d" % i, None, (1, 4), 5))
        for i in range(args.runs):
            c.emu.request("DELETE", "/apis/kadet.io/v1alpha1/namespaces/default/agentjobs/pin-%d" % i)
            c.emu.request("DELETE", "/apis/kadet.io/v1alpha1/namespaces/default/agentjobs/sch-%d" % i)
        rows.append(("apply -> coordinator + 4 worker pods created, spec.replicas 4 (median of %d)"
                     % args.runs, "%.0f ms" % (1000 * statistics.median(pinned)),
                     "min %.0f / max %.0f ms" % (1000 * min(pinned), 1000 * max(pinned))))
        rows.append(("apply -> coordinator + 4 worker pods created, agents 1..4, scheduler scales up (median of %d)"
                     % args.runs, "%.0f ms" % (1000 * statistics.median(sched)),
                     "min %.0f / max %.0f ms" % (1000 * min(sched), 1000 * max(sched))))
        wait = time.time() + 30
        while any(count_pods(c, "pin-%d" % i) for i in range(args.runs)) and time.time() < wait:
            time.sleep(0.2)
        c.kubelet.terminate()  # the size test measures the operator, not the fake kubelet
        c.kubelet.wait()

    with h.Cluster(nodes=1, cpu="1") as c:
        c.kubelet.terminate()
        c.kubelet.wait()
        per = max(1, args.pods // args.jobs - 1)  # + 1 coordinator: --pods pods in all
        op = c.operator("size-0", extra=["--scheduler-interval", "30s"])
        op.wait_ready()
        t0 = time.time()
        objs = [job("job-%03d" % i, per, (1, per)) for i in range(args.jobs)]
        code, body = c.emu.request("POST", "/_emulator/bulk", {"objects": objs})
        if code != 200:
            h.fail("bulk: %s %s" % (code, str(body)[:200]))
        total = args.jobs * (per + 1)
        while True:
            code, body = c.emu.request("GET", "/api/v1/pods?labelSelector=kadet.io%2Frole")
            n = len(body["items"]) if code == 200 else 0
            if n >= total:
                break
            if time.time() - t0 > 300:
                h.fail("only %d of %d pods after 300 s" % (n, total))
            time.sleep(0.5)
        created_s = time.time() - t0
        time.sleep(3)
        rss, hwm = rss_kb(op.proc.pid)
        rows.append(("%d AgentJobs -> %d pods created by the operator" % (args.jobs, total),
                     "%.1f s" % created_s, "%.0f pods/s" % (total / created_s)))
        rows.append(("operator RSS with %d AgentJobs and %d pods" % (args.jobs, total),
                     "%.1f MB" % (rss / 1024), "peak %.1f MB" % (hwm / 1024)))
        # Full re-sync by a fresh replica from warm caches.
        op.stop()
        op2 = c.operator("size-1", extra=["--scheduler-interval", "30s"])
        op2.wait_ready()
        first = None
        t_ready = time.time()
        while True:
            n = op2.metric("kadet_reconciles_total")
            now = time.time()
            if n > 0 and first is None:
                first = now
            if n >= args.jobs:
                break
            if now - t_ready > 120:
                h.fail("only %d reconciles after 120 s" % n)
            time.sleep(0.01)
        rate = args.jobs / max(1e-3, now - (first or t_ready))
        rss2, hwm2 = rss_kb(op2.proc.pid)
        rows.append(("reconciles per second (%d jobs, %d pods in the caches, 2 workers)"
                     % (args.jobs, total), "%.0f /s" % rate,
                     "%.2f s for all; RSS %.1f MB" % (now - t_ready, rss2 / 1024)))
    print("| measurement | median / value | spread / detail |")
    print("|---|---|---|")
    for r in rows:
        print("| %s | %s | %s |" % r)


if __name__ == "__main__":
    main()
