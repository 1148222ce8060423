#!/usr/bin/env python3
"""Why a job failed, in the API, against the emulator with REAL kadet processes.

kubectl apply of the sample with a dataset path that does not exist (backoffLimit 3):
every worker exits 1 with the runtime's error, which it writes as its termination
message; the fake kubelet reports it as the kubelet does; the operator quotes it in each
Warning Event, in status.lastFailure and in the Failed condition, and replaces the
workers with an exponential backoff (10 s, 20 s, 40 s), so the job is Failed after the
fourth failure, about 70 s after the apply. Prints that time (the figure: under 2
minutes)."""

import datetime
import json
import time

import operator_e2e as e2e
import reconcile_harness as h
from reconcile_harness import check, wait_for

WANT = "no train split"


def parse_time(text):
    return datetime.datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def main():
    with h.Cluster(nodes=1, cpu="4", memory="8Gi", run_pods=True) as c:
        op = c.operator(extra=["--scheduler-interval", "1s", "--scheduler-policy", "greedy"])
        op.wait_ready()
        j = e2e.job_from_sample("nodata", c, (1, 1), 1)
        j["spec"]["training"]["dataset"]["path"] = "/nonexistent/fashion-mnist"
        t0 = time.time()
        c.kubectl("apply", "-f", "-", stdin=json.dumps(j))
        st = wait_for(lambda: e2e.status(c, "nodata").get("phase") == "Failed"
                      and e2e.status(c, "nodata"), 240, "nodata Failed")
        took = time.time() - t0
        print("apply -> Failed with the runtime's error: %.1f s" % took)
        failed = [x for x in st["conditions"] if x["type"] == "Failed"][0]
        print("Failed condition:", failed["message"])
        check(failed["reason"] == "BackoffLimitExceeded", "reason %r" % failed)
        check(WANT in failed["message"] and "/nonexistent/fashion-mnist" in failed["message"],
              "the Failed condition quotes the runtime's error: %r" % failed["message"])
        check(st["failures"] == 4, "failures %r (backoffLimit 3)" % st["failures"])
        lf = st.get("lastFailure") or {}
        check(WANT in lf.get("message", "") and lf.get("exitCode") == 1,
              "status.lastFailure %r" % lf)
        evs = [e for e in c.events("nodata") if e["reason"] == "Failed"
               and e["type"] == "Warning" and "failed (exit code 1" in e["message"]]
        check(len(evs) == 4 and all(WANT in e["message"] for e in evs),
              "four Warning events with the cause: %r" % [e["message"] for e in evs])
        # The backoff: the failures are spread out, each wait at least the 10 s base
        # (only lower bounds: a loaded machine makes them longer, never shorter).
        times = sorted(parse_time(e.get("lastTimestamp") or e.get("eventTime") or
                                    e["metadata"]["creationTimestamp"]) for e in evs)
        gaps = [b - a for a, b in zip(times, times[1:])]
        print("gaps between the failures: %s s" % ", ".join("%.1f" % g for g in gaps))
        check(all(g >= 9 for g in gaps) and gaps[-1] >= 35,
              "replacements backed off 10, 20, 40 s: gaps %r" % gaps)
        desc = c.kubectl("describe", "agentjob", "nodata").stdout
        check(WANT in desc, "kubectl describe shows the cause")
        c.kubectl("delete", "agentjob", "nodata")
        wait_for(lambda: not c.pods("nodata"), 30, "pods collected")
    print("ok")


if __name__ == "__main__":
    main()
