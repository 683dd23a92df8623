"""Cost of an LRP relevance pass relative to a plain training forward+backward, same model and batch.

    python benchmarks/relevance_cost.py [--models resnet_small resnet18] [--batch 64] [--repeats 7]

Goals: relevance / (forward+backward) <= 1.5 (coordinator issue), then <= 1.0 for resnet_small and
<= 0.75 for resnet18 (issue 12), on the CPU at batch 64, 32 px.
Also reports the floor the notes name: a forward plus an input-gradient backward with no
parameter gradients. Measurements are interleaved (train, LRP, floor, train, ...) and the median
of ``repeats`` is reported, because these machines are noisy. The relevance pass runs over 4
batches with the zennit context opened once, as the coordinator does over P, and is reported
per batch. Unless ``--malloc default``, glibc's malloc is first told to reuse freed memory, as
the coordinator's processes do (:mod:`swarm.allocator`); it cannot be undone in a process, so
compare the two in two runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from swarm.allocator import reuse_freed_memory
from swarm.nodes.layout import batch_to, place
from swarm.nodes.models import build_model
from swarm.server.relevance import channel_relevance

PER_PASS = 4


def measure(name: str, batch: int, size: int, repeats: int, layout: str) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_model({"name": name, "stem": "auto"}, 10, 3, size)
    if layout == "fast":  # as the coordinator runs: the device's fastest layout (swarm.nodes.layout)
        place(model, "cpu")
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    if layout == "fast":
        x = batch_to(x, "cpu")
    optimizer = torch.optim.Adam(model.parameters())

    def train_step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()

    def relevance_pass() -> None:
        channel_relevance(model, [(x, y)] * PER_PASS)

    def floor() -> None:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        inputs = x.clone().requires_grad_(True)
        out = model(inputs)
        torch.autograd.grad(out.gather(1, y.view(-1, 1)).sum(), inputs)
        for p in model.parameters():
            p.requires_grad_(True)

    times: dict[str, list[float]] = {"train": [], "lrp": [], "floor": []}
    for fn in (train_step, relevance_pass, floor):  # warm-up
        fn()
    for _ in range(repeats):
        for key, fn, per in (("train", train_step, 1), ("lrp", relevance_pass, PER_PASS), ("floor", floor, 1)):
            start = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - start) / per)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet_small", "resnet18"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--layout", choices=["fast", "contiguous"], default="fast",
                        help="fast: the coordinator's (channels-last on the CPU); contiguous: PyTorch's default")
    parser.add_argument("--malloc", choices=["reuse", "default"], default="reuse",
                        help="reuse: as the coordinator's processes (swarm.allocator); default: glibc's own")
    args = parser.parse_args()
    tuned = args.malloc == "reuse" and reuse_freed_memory()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {args.size} px, "
          f"layout {args.layout}, malloc {'reusing freed memory' if tuned else 'as glibc sets it'}")
    for name in args.models:
        t = measure(name, args.batch, args.size, args.repeats, args.layout)
        print(f"{name:>13}: train fwd+bwd {t['train'] * 1e3:7.1f} ms | LRP {t['lrp'] * 1e3:7.1f} ms/batch "
              f"(ratio {t['lrp'] / t['train']:.2f}) | floor fwd+input-grad {t['floor'] * 1e3:7.1f} ms "
              f"(ratio {t['floor'] / t['train']:.2f})")


if __name__ == "__main__":
    main()
