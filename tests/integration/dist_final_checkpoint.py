#!/usr/bin/env python3
"""A coordinator restarted from the FINAL checkpoint finishes at once (real processes).

A coordinator killed or deleted just as its job finishes is restarted (by `kadet run` or
by the operator) after its workers got DONE and exited. It must not wait for them: it
reports success with the final accuracy and train loss recorded in the checkpoint, and
writes its summary.

  1. `kadet run` trains a tiny job to the end with a checkpoint directory;
  2. a fresh `kadet coordinator` on that directory, no workers: exit 0 within a few
     seconds, same test accuracy and train loss in its summary as the run's;
  3. the same with a worker of the previous instance still around: it is told DONE and
     exits 0 (it does not wait for a world that never comes);
  4. `kadet run` again on the same directory: exit 0 quickly, same accuracy printed;
  5. a job that stopped early at its targetAccuracy: the restarted coordinator finishes;
  6. a final checkpoint of the previous format (1, no evaluation): still finishes at once,
     with a warning that the accuracy was not recorded.

Usage: dist_final_checkpoint.py   (KADET_BIN_DIR points at the kadet binary's directory)
"""
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dist_test as d  # noqa: E402  (shared helpers: binary, job files, checkpoints)

# Generous for ASan on a loaded 2-core machine; a coordinator that waits for workers
# never exits at all.
FINISH_LIMIT_S = 10.0 if d.ASAN else 6.0


def coordinator(job, ck, summary, port=0, extra=()):
    """Runs `kadet coordinator` to its end; returns (rc, output, seconds)."""
    t0 = time.time()
    bind = f"tcp://127.0.0.1:{port}" if port else "tcp://127.0.0.1:*"
    try:
        rc, out = d.run(["coordinator", "--job", job, "--bind", bind, "--metrics-bind",
                         "tcp://127.0.0.1:*", "--checkpoint-dir", ck, "--max-samples",
                         "3000", "--summary-json", summary] + list(extra),
                        timeout=FINISH_LIMIT_S * 4)
    except subprocess.TimeoutExpired:
        d.fail("the restarted coordinator waited for workers and never finished")
    return rc, out, time.time() - t0


def to_format_1(path):
    """Rewrites a format 3 checkpoint as format 1 (80-byte header, no evaluation)."""
    b = open(path, "rb").read()
    assert b[7] == 3
    hdr = bytearray(b[:80])
    hdr[7] = 1
    hdr[72:80] = b"\0" * 8
    body = b[112:-4]
    data = bytes(hdr) + body
    open(path, "wb").write(data + struct.pack("<I", zlib.crc32(data) & 0xffffffff))


def main():
    t_start = time.time()
    tmp = tempfile.mkdtemp(prefix="kd_fin.")
    job = d.write_job(tmp, name="fin", epochs=2, hidden="[32]")
    ck = os.path.join(tmp, "ck")
    s1 = os.path.join(tmp, "run.json")
    rc, out = d.run(["run", job, "--agents", "2", "--max-samples", "3000", "--checkpoint-dir",
                     ck, "--summary-json", s1, "--log-level", "warn"], timeout=180)
    d.check(rc == 0, f"the job trained to the end (rc {rc})\n{out[-1500:]}")
    first = json.load(open(s1))
    ckpt = d.read_ckpt(os.path.join(ck, "checkpoint.kdc"))
    d.check(ckpt["epoch"] == 2 and ckpt["cursor"] == 0,
            f"the final checkpoint is at the end (epoch {ckpt['epoch']}, cursor "
            f"{ckpt['cursor']})")
    d.check(ckpt["format"] == 3 and ckpt["eval_epoch"] == 2 and
            abs(ckpt["accuracy"] - first["test_accuracy"]) < 1e-6,
            f"it records the last epoch's accuracy ({ckpt['accuracy']:.4f} of epoch "
            f"{ckpt['eval_epoch']}; the run reported {first['test_accuracy']:.4f})")

    # 2. No workers at all.
    s2 = os.path.join(tmp, "restart.json")
    rc, out, secs = coordinator(job, ck, s2)
    print(out[-1500:])
    d.check(rc == 0, f"the restarted coordinator exited 0 (rc {rc})")
    d.check(secs < FINISH_LIMIT_S, f"... after {secs:.1f} s (< {FINISH_LIMIT_S:.0f} s)")
    d.check("already complete" in out, "it said why it finished without workers")
    second = json.load(open(s2))
    d.check(abs(second["test_accuracy"] - first["test_accuracy"]) < 1e-6 and
            abs(second["train_loss"] - first["train_loss"]) < 1e-5 and
            second["epochs"] == first["epochs"],
            f"its summary has the run's result: accuracy {second['test_accuracy']:.4f} "
            f"train_loss {second['train_loss']:.4f} epochs {second['epochs']}")
    d.check(d.read_ckpt(os.path.join(ck, "checkpoint.kdc"))["step"] == ckpt["step"],
            "the checkpoint was left as it was")

    # 3. A worker of the previous instance is still around: it gets DONE.
    port = d.free_port()
    wlog = os.path.join(tmp, "w.log")
    w = d.start(["worker", "--coordinator", f"tcp://127.0.0.1:{port}", "--name", "old0"],
                open(wlog, "w"))
    try:
        rc, out, secs = coordinator(job, ck, os.path.join(tmp, "restart2.json"), port=port)
        d.check(rc == 0 and secs < FINISH_LIMIT_S,
                f"with a worker waiting, the coordinator finished too ({secs:.1f} s)")
        wrc = w.wait(timeout=FINISH_LIMIT_S)
    except subprocess.TimeoutExpired:
        d.fail("the waiting worker was not released:\n" + open(wlog).read()[-1500:])
    finally:
        if w.poll() is None:
            w.kill()
    d.check(wrc == 0, f"the waiting worker was told DONE and exited 0 (rc {wrc})")

    # 4. `kadet run` on the same checkpoint directory.
    t0 = time.time()
    rc, out = d.run(["run", job, "--agents", "2", "--max-samples", "3000", "--checkpoint-dir",
                     ck, "--log-level", "warn"], timeout=120)
    secs = time.time() - t0
    print(out[-800:])
    d.check(rc == 0, f"kadet run on the finished checkpoint exited 0 (rc {rc})")
    d.check(secs < FINISH_LIMIT_S + 4, f"... in {secs:.1f} s")
    m = re.search(r"done: .* test_accuracy (\d\.\d+)", out)
    d.check(m is not None and abs(float(m.group(1)) - first["test_accuracy"]) < 1e-4,
            f"and printed the same accuracy ({m.group(1) if m else None})")

    # 5. Early stop at targetAccuracy (the final checkpoint is before the last epoch).
    os.mkdir(os.path.join(tmp, "target"))
    tjob = d.write_job(os.path.join(tmp, "target"), name="fin-target", epochs=6,
                       hidden="[32]", extra="    targetAccuracy: 0.55\n")
    ckt = os.path.join(tmp, "ckt")
    st = os.path.join(tmp, "target.json")
    rc, out = d.run(["run", tjob, "--agents", "1", "--max-samples", "3000",
                     "--checkpoint-dir", ckt, "--summary-json", st, "--log-level", "warn"],
                    timeout=180)
    target = json.load(open(st))
    d.check(rc == 0 and target["epochs"] < 6,
            f"the target-accuracy job stopped early (epochs {target['epochs']}, accuracy "
            f"{target['test_accuracy']:.4f})")
    rc, out, secs = coordinator(tjob, ckt, os.path.join(tmp, "target2.json"))
    again = json.load(open(os.path.join(tmp, "target2.json")))
    d.check(rc == 0 and secs < FINISH_LIMIT_S and "reason=target-accuracy" in out and
            abs(again["test_accuracy"] - target["test_accuracy"]) < 1e-6,
            f"its restarted coordinator finished at once ({secs:.1f} s, accuracy "
            f"{again['test_accuracy']:.4f})")

    # 6. A final checkpoint written by the previous format.
    for name in ("checkpoint.kdc", "checkpoint.prev.kdc"):
        p = os.path.join(ck, name)
        if os.path.exists(p) and open(p, "rb").read()[7] == 3:
            to_format_1(p)
    rc, out, secs = coordinator(job, ck, os.path.join(tmp, "old.json"))
    print(out[-1200:])
    d.check(rc == 0 and secs < FINISH_LIMIT_S and "format=1" in out,
            f"a format 1 final checkpoint loads and finishes at once ({secs:.1f} s)")
    d.check("does not record the last epoch's accuracy" in out,
            "with a warning that its accuracy was not recorded")
    print(f"PASS final_checkpoint in {time.time() - t_start:.1f}s")


if __name__ == "__main__":
    main()
