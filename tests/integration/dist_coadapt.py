#!/usr/bin/env python3
"""`kadet run` co-adapts like the operator (issue 16 part 5): without --agents the
launcher hosts the job's policy, builds the job's goodput model from what the coordinator
publishes (throughput per configuration, noise scale) and lets the policy choose the
batch with the agent count; it sends that batch to the coordinator as the operator would
(BATCH over CURVE with the run's own operator key), and the coordinator keeps it within
the job's bounds. Checks: the metrics carried the configurations and the noise (the
policy chose a batch from them), the coordinator took the scheduler's batch and made no
choice of its own after it, the progress lines show it, and training converges.

Usage: dist_coadapt.py   (KADET_BIN_DIR points at the kadet binary's directory)
"""
import json
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dist_test as d  # noqa: E402

N = 12000
BATCH = 16
MAX_BATCH = 256


def main():
    t0 = time.time()
    tmp = tempfile.mkdtemp(prefix="kd_ca.")
    job = d.write_job(tmp, name="coadapt", epochs=24 if not d.ASAN else 12, batch=BATCH,
                      hidden="[256, 128]", agents="{min: 2, max: 2}",
                      optimizer="{type: sgd, learningRate: 0.02, momentum: 0.9, "
                                "schedule: {type: cosine}}",
                      extra=f"    adaptive: {{batchSize: true, maxBatchSize: {MAX_BATCH}}}\n"
                            "  scheduling: {policy: rl}\n")
    summary = os.path.join(tmp, "summary.json")
    rc, out = d.run(["run", job, "--max-samples", str(N), "--summary-json", summary,
                     "--log-level", "info"], timeout=300)
    d.check(rc == 0, "training with the scheduler's batch completed")
    chose = [(int(b), int(a), int(n)) for b, a, n in
             re.findall(r"run:? scheduler rl chose batch=(\d+) agents=(\d+) noise_scale=(\d+)",
                        out)]
    print("scheduler choices (batch, agents, noise scale):", chose)
    d.check(len(chose) >= 1, "the policy chose a batch from the coordinator's measurements")
    d.check(all(BATCH <= b <= MAX_BATCH and a == 2 for b, a, _ in chose),
            "within the job's bounds, with 2 agents")
    d.check(all(n > 0 for _, _, n in chose), "from a measured noise scale")
    sent = [int(b) for b in re.findall(r"run:? batch (\d+) sent to the coordinator", out)]
    took = [int(b) for b in re.findall(r"batch (\d+) decided by the operator's scheduler", out)]
    print("sent:", sent, "taken by the coordinator:", took)
    d.check(set(took) <= set(sent), "the coordinator took only batches the launcher sent")
    d.check(not sent or took, "the coordinator took the scheduler's batch")
    d.check("refused batch=" not in out,
            "the coordinator refused no batch of the launcher")
    s = json.load(open(summary))
    print("epochs:", " ".join(f"{e['epoch']}:{e['accuracy']:.3f}/b{e['batch']}"
                              for e in s["epoch_log"]))
    # Until the first decision the coordinator's own adaptive batch runs (the launcher's
    # policy decides on measurements, which take a few epochs); once a batch is decided,
    # the coordinator changes it only to what the scheduler sends. How many epochs are left
    # then depends on the machine's speed, so the final batch may still be the own one
    # when the decision came within the last change interval.
    lines = out.splitlines()
    first = next((i for i, l in enumerate(lines)
                  if re.search(r"batch \d+ decided by the operator's scheduler", l)), None)
    own_after = [l for l in lines[first:] if first is not None and
                 re.search(r"coordinator:? batch \d+ -> \d+ noise_scale=", l)]
    d.check(not own_after,
            f"no batch of the coordinator's own after the scheduler decided {own_after[:2]}")
    if took and s["batch"] not in took:
        print(f"note: the final batch {s['batch']} is the coordinator's own choice; the "
              f"scheduler's {took[-1]} came too close to the end to be applied")
    if took and s["batch"] in took and s["epoch_log"][0]["batch"] != s["batch"]:
        d.check(re.search(r"batch \d+ -> \d+ per agent \(scheduler rl: goodput", out)
                is not None, "the progress lines name the scheduler as the cause of a change")
    d.check(s["test_accuracy"] >= 0.80, f"test accuracy {s['test_accuracy']:.4f} >= 0.80")
    print(f"ok: co-adaptation in kadet run in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
