#!/usr/bin/python3
"""PyTorch DistributedDataParallel (gloo) peer of `kadet run --agents N` for
hack/bench/train-dist.sh.

Same MLP (784-256-128-10, same initialisation scheme), SGD momentum 0.9, per-process
batch 64, learning rate scaled linearly with the process count after the same start
warm-up as kadet's coordinator (from one process's rate over the first 2 epochs, at most
a fifth of the run) and decayed along the same per-step cosine, the same per-epoch sample
order (kadet's permutation, reimplemented in torch_train.py) split across ranks as kadet
splits each global batch.
One thread per process (torch.set_num_threads(1), OPENBLAS_NUM_THREADS=1).
--compress fp16 registers DDP's fp16_compress_hook, the closest peer of kadet's
sync.compression: bf16 on a CPU (its bf16_compress_hook requires CUDA and NCCL).

Prints one line per epoch (rank 0) and writes a JSON summary in the layout of kadet's
(--summary-json): samples_per_second, test_accuracy, epoch_log [{epoch, accuracy,
train_seconds, epoch_seconds}], where train_seconds counts from the first step.
"""
import argparse
import json
import math
import os
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_train import (cosine_lr, evaluate, kadet_perm, load_fashion_mnist,  # noqa: E402
                         make_model, training_args)


def worker(rank, a, port):
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=a.procs)
    xtr, ytr, xte, yte = load_fashion_mnist(a.data)
    n = xtr.shape[0]
    model, shape = make_model(a.model)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    if a.compress != "none":
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=a.lr, momentum=a.momentum)
    loss_fn = torch.nn.CrossEntropyLoss()
    perms = [torch.from_numpy(kadet_perm(a.seed, e, n)) for e in range(a.epochs)]
    gb = a.batch * a.procs
    # kadet's start warm-up: the scale ramps from 1 at step 0 to procs at this step
    ramp = math.ceil(min(2.0, a.epochs / 5.0) * n / gb)
    step = 0
    log = []
    dist.barrier()
    start = time.perf_counter()
    acc = 0.0
    for e in range(a.epochs):
        perm = perms[e]
        t0 = time.perf_counter()
        for cur in range(0, n, gb):
            chunk = perm[cur:cur + gb]
            k = chunk.shape[0]
            base, extra = divmod(k, a.procs)
            lo = rank * base + min(rank, extra)
            idx = chunk[lo:lo + base + (1 if rank < extra else 0)]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(ddp(xtr.index_select(0, idx).reshape(shape)),
                           ytr.index_select(0, idx))
            loss.backward()
            scale = a.procs if step >= ramp else 1 + (a.procs - 1) * step / ramp
            for g in opt.param_groups:
                g["lr"] = cosine_lr(a.lr, e + cur / n, a.epochs) * scale
            opt.step()
            step += 1
        dt = time.perf_counter() - t0
        if rank == 0:
            acc = evaluate(model, shape, xte, yte)
            model.train()
            log.append({"epoch": e + 1, "accuracy": acc, "epoch_seconds": dt,
                        "train_seconds": time.perf_counter() - start})
            print(f"epoch {e + 1:2d}/{a.epochs}  test_acc {acc:.4f}  samples/s {n / dt:.0f}"
                  f"  agents {a.procs}  time {time.perf_counter() - start:.2f}s", flush=True)
        dist.barrier()
    if rank == 0 and a.summary_json:
        train = sum(x["epoch_seconds"] for x in log)
        with open(a.summary_json, "w") as f:
            json.dump({"test_accuracy": acc, "epochs": a.epochs, "agents": a.procs,
                       "samples_per_second": n * a.epochs / train, "epoch_log": log}, f)
    dist.destroy_process_group()


def main():
    ap = training_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--compress", choices=("none", "fp16"), default="none")
    a = ap.parse_args()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    mp.spawn(worker, args=(a, port), nprocs=a.procs, join=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
