#!/usr/bin/python3
"""PyTorch peer of `kadet run` for hack/bench/train-single.sh.

Trains the same model (--model mlp: the sample MLP 784-256-128-10; --model cnn: the CNN
sample's conv3x3(32) relu maxpool2 conv3x3(64) relu maxpool2 dense(128) relu dense(10);
He-normal for layers followed by a ReLU, Xavier-uniform output, zero biases) with the same optimizer (SGD, momentum 0.9), the same per-step cosine
learning rate computed from the same fractional epoch position, and the SAME sample order:
kadet's per-epoch permutation (splitmix64 + Fisher-Yates, runtime/kd_dataset.c) is
reimplemented below bit for bit. Prints one line per epoch in kadet's format so that the
benchmark parses both trainers the same way. Training-step time (gather, forward,
backward, optimizer step) is what samples/s counts; evaluation and the permutation are
outside it, as in kadet.

Run with /usr/bin/python3 (Debian's python3-torch) and OPENBLAS_NUM_THREADS=1.
"""
import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch

MASK = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.s = seed & MASK

    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & MASK
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, bound):
        threshold = ((1 << 64) - bound) % bound
        while True:
            x = self.next()
            if x >= threshold:
                return x % bound


def kadet_perm(seed, epoch, n):
    """kd_shuffle_perm(seed, epoch, perm, n)."""
    r = SplitMix64(seed)
    r = SplitMix64(r.next() ^ ((epoch * 0xD1B54A32D192ED03) & MASK))
    perm = list(range(n))
    for i in range(n, 1, -1):
        j = r.below(i)
        perm[i - 1], perm[j] = perm[j], perm[i - 1]
    return np.array(perm, dtype=np.int64)


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return arr.reshape(dims[0], -1) if ndim > 1 else arr


def cosine_lr(base, pos, total):
    f = min(pos / total, 1.0)
    return 0.5 * base * (1.0 + math.cos(math.pi * f))


def load_fashion_mnist(data):
    """Train and test tensors (features scaled to [0, 1], int64 labels) from IDX files."""
    def images(name):
        return torch.from_numpy(read_idx(os.path.join(data, name)).astype(np.float32) / 255.0)

    def labels(name):
        return torch.from_numpy(read_idx(os.path.join(data, name)).astype(np.int64))
    return (images("train-images-idx3-ubyte.gz"), labels("train-labels-idx1-ubyte.gz"),
            images("t10k-images-idx3-ubyte.gz"), labels("t10k-labels-idx1-ubyte.gz"))


def make_mlp():
    """kadet's sample MLP 784-256-128-10 with its initialisation scheme (He for the
    hidden layers, Xavier for the output layer, zero biases)."""
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 10))
    for i, layer in enumerate(m for m in model if isinstance(m, torch.nn.Linear)):
        if i < 2:
            torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        else:
            torch.nn.init.xavier_uniform_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    return model


def make_cnn():
    """manifests/samples/fashion-mnist-cnn.yaml's network with kadet's initialisation
    scheme (kd_net_init_params: He-normal, fan-in, for the layers followed by a ReLU,
    Xavier-uniform for the output layer, zero biases). PyTorch computes in NCHW, kadet in
    NHWC: the same function up to the order of the flattened features."""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(1600, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 10))
    weighted = [m for m in model if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    for i, layer in enumerate(weighted):
        if i + 1 < len(weighted):
            torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        else:
            torch.nn.init.xavier_uniform_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    return model


def make_model(name):
    """The model and the shape a batch of flat samples takes for it."""
    if name == "cnn":
        return make_cnn(), (-1, 1, 28, 28)
    return make_mlp(), (-1, 784)


def evaluate(model, shape, xte, yte):
    """Test accuracy in chunks (the CNN's activations of 10,000 images at once would take
    close to 1 GB)."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, xte.shape[0], 1000):
            out = model(xte[i:i + 1000].reshape(shape))
            correct += (out.argmax(1) == yte[i:i + 1000]).sum().item()
    return correct / xte.shape[0]


def training_args(ap):
    """The options every PyTorch peer shares: the sample job's data, epochs, per-process
    batch, SGD settings and seed, and where to write the summary."""
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--summary-json")
    ap.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    return ap


def main():
    ap = training_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    xtr, ytr, xte, yte = load_fashion_mnist(a.data)
    n = xtr.shape[0]

    model, shape = make_model(a.model)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum)
    loss_fn = torch.nn.CrossEntropyLoss()

    start = time.perf_counter()
    step_time = 0.0
    acc = loss_mean = 0.0
    lr = a.lr
    for e in range(a.epochs):
        perm = torch.from_numpy(kadet_perm(a.seed, e, n))
        model.train()
        t0 = time.perf_counter()
        loss_sum = 0.0
        for cur in range(0, n, a.batch):
            idx = perm[cur:cur + a.batch]
            xb = xtr.index_select(0, idx)
            yb = ytr.index_select(0, idx)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb.reshape(shape)), yb)
            loss.backward()
            lr = cosine_lr(a.lr, e + cur / n, a.epochs)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.step()
            loss_sum += loss.item() * idx.shape[0]
        dt = time.perf_counter() - t0
        step_time += dt
        acc = evaluate(model, shape, xte, yte)
        loss_mean = loss_sum / n
        print(f"epoch {e + 1:2d}/{a.epochs}  lr {lr:.5f}  train_loss {loss_mean:.4f}  "
              f"test_acc {acc:.4f}  samples/s {n / dt:.0f}  agents 1  "
              f"time {time.perf_counter() - start:.2f}s", flush=True)
    wall = time.perf_counter() - start
    print(f"done: pytorch  epochs {a.epochs}  test_accuracy {acc:.4f}  train_loss "
          f"{loss_mean:.4f}  samples/s {n * a.epochs / step_time:.0f}  agents 1  "
          f"wall {wall:.1f}s")
    if a.summary_json:
        with open(a.summary_json, "w") as f:
            json.dump({"test_accuracy": acc, "train_loss": loss_mean, "epochs": a.epochs,
                       "agents": 1, "samples_per_second": n * a.epochs / step_time,
                       "wall_seconds": wall}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
