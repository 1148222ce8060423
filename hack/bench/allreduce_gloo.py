#!/usr/bin/python3
"""torch.distributed gloo allreduce among N local processes: the reference for
hack/bench/allreduce.sh. Prints lines in allreduce_bench's format:
  gloo procs=N bytes=B median_ms=T algbw_gbs=G
Usage: allreduce_gloo.py PROCS ITERS MIB [MIB...]   (run with /usr/bin/python3)"""
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank, procs, port, iters, sizes, q):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=procs)
    for mib in sizes:
        n = int(mib * 1024 * 1024) // 4
        t = torch.arange(n, dtype=torch.float32) % 97 * 0.01
        times = []
        for it in range(3 + iters):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(t)
            if it >= 3:
                times.append(time.perf_counter() - t0)
        if rank == 0:
            times.sort()
            q.put((mib, times[len(times) // 2]))
    dist.destroy_process_group()


def main():
    procs, iters = int(sys.argv[1]), int(sys.argv[2])
    sizes = [float(x) for x in sys.argv[3:]]
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ps = [ctx.Process(target=worker, args=(r, procs, port, iters, sizes, q))
          for r in range(procs)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    while not q.empty():
        mib, med = q.get()
        b = int(mib * 1024 * 1024)
        print(f"gloo procs={procs} bytes={b} median_ms={med * 1e3:.3f} "
              f"algbw_gbs={b / med / 1e9:.3f}")


if __name__ == "__main__":
    main()
