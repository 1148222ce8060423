#!/usr/bin/env python3
"""Why a job failed, in the API, against the emulator with REAL kadet processes.

kubectl apply of the sample with a dataset path that does not exist (backoffLimit 3):
every worker exits 1 with the runtime's error, which it writes as its termination
message; the fake kubelet reports it as the kubelet does; the operator quotes it in each
Warning Event, in status.lastFailure and in the Failed condition, and replaces the
workers with an exponential backoff (10 s, 20 s, 40 s), so the job is Failed after the
fourth failure, about 70 s after the apply. Prints that time (the figure: under 2
minutes). The failed pods stay (kubectl logs) while the job runs, each counted once
(status.failedPods), the replacements under new names; once the job is Failed,
cleanPodPolicy Running keeps them and All (set afterwards) removes them."""

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
        check(j["spec"]["runPolicy"].get("cleanPodPolicy", "Running") == "Running",
              "the sample keeps cleanPodPolicy Running")
        t0 = time.time()
        c.kubectl("apply", "-f", "-", stdin=json.dumps(j))

        def failed_pods():
            return [p for p in c.pods("nodata") if p.get("status", {}).get("phase") == "Failed"]

        def term_message(p):
            for cs in p.get("status", {}).get("containerStatuses") or []:
                t = (cs.get("state") or {}).get("terminated") or {}
                if t.get("message"):
                    return t["message"]
            return ""

        # While the job runs: the first failed pod is still listed, with its cause, and
        # counted once (status.failedPods) while the replacement backs off.
        first = wait_for(lambda: e2e.status(c, "nodata").get("phase") != "Failed"
                         and e2e.status(c, "nodata").get("failures", 0) >= 1
                         and failed_pods(), 60, "a failed pod listed while the job runs")
        st = e2e.status(c, "nodata")
        name0 = first[0]["metadata"]["name"]
        print("failed pod kept while the job runs: %s (%s)" % (name0, term_message(first[0])))
        check(st.get("phase") != "Failed", "still running: %r" % st.get("phase"))
        check(WANT in term_message(first[0]), "termination message of %s: %r"
              % (name0, term_message(first[0])))
        counted = [x["name"] for x in st.get("failedPods") or []]
        check(name0 in counted or st.get("failures", 0) >= 2,
              "status.failedPods %r names %s" % (counted, name0))
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
        # The job ended: cleanPodPolicy Running removed the pods that ran, the four failed
        # ones stay, each under its own name, with its termination message, counted once.
        fp = wait_for(lambda: (lambda ps: len(ps) == len(failed_pods()) and ps)(
            [p for p in c.pods("nodata") if not p["metadata"].get("deletionTimestamp")]),
            60, "only the failed pods left (cleanPodPolicy Running)")
        names = sorted(p["metadata"]["name"] for p in fp)
        for e in sorted(c.events("nodata"), key=lambda e: e.get("lastTimestamp") or ""):
            if e["reason"] in ("Created", "Deleted", "Failed"):
                print("  event %s %s: %s" % (e.get("lastTimestamp"), e["reason"],
                                            e["message"][:90]))
        print("failed pods kept after the end: %s" % ", ".join(names))
        check(len(names) == 4 and len(set(names)) == 4, "four failed pods: %r" % names)
        # One replacement per failure: no worker created twice under two numbers by a sync
        # on a pod cache that had not shown the first yet (then scaled down again).
        created = sorted(e["message"].split()[-1] for e in c.events("nodata")
                         if e["reason"] == "Created" and "worker pod" in e["message"])
        check(created == names, "workers created %r, failed %r" % (created, names))
        check(all(WANT in term_message(p) for p in fp), "each keeps its termination message")
        st = e2e.status(c, "nodata")
        counted = sorted(x["name"] for x in st.get("failedPods") or [])
        check(counted == names and st["failures"] == 4,
              "status.failedPods %r, failures %r" % (counted, st["failures"]))
        # cleanPodPolicy All (applied to a finished job, as on each of its syncs): gone.
        c.kubectl("patch", "agentjob", "nodata", "--type=merge", "-p",
                  json.dumps({"spec": {"runPolicy": {"cleanPodPolicy": "All"}}}))
        wait_for(lambda: not [p for p in c.pods("nodata")
                              if not p["metadata"].get("deletionTimestamp")],
                 60, "failed pods removed by cleanPodPolicy All")
        st = e2e.status(c, "nodata")
        check(st["failures"] == 4 and st["phase"] == "Failed",
              "count unchanged after the cleanup: %r" % st.get("failures"))
        print("cleanPodPolicy All removed them; failures still 4")
        c.kubectl("delete", "agentjob", "nodata")
        wait_for(lambda: not c.pods("nodata"), 30, "pods collected")
    print("ok")


if __name__ == "__main__":
    main()
