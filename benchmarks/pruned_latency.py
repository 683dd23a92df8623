"""Per pruning iteration: parameters, MACs and measured CPU inference latency vs the unpruned model.

    python benchmarks/pruned_latency.py [--model resnet50] [--size 32] [--iterations 10] [--repeats 5]

Applies the schedule (20% of every inner layer's channels per cut, magnitude scores: latency
depends only on the shapes) and times eval-mode inference at batch 1 and batch 32, interleaving
all models in each repeat and taking medians. Prints each ratio to the unpruned model, and how
close the latency ratio comes to the MAC ratio.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from swarm.models import build_model
from swarm.pruning import count_macs_and_params, prunable_layers, prune_step
from swarm.relevance import filter_l1


@torch.inference_mode()
def latency(model: torch.nn.Module, x: torch.Tensor, loops: int) -> float:
    start = time.perf_counter()
    for _ in range(loops):
        model(x)
    return (time.perf_counter() - start) / loops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model({"name": args.model, "stem": "auto"}, 10, 3, args.size).eval()
    example = torch.randn(1, 3, args.size, args.size)
    models = [copy.deepcopy(model)]
    for _ in range(args.iterations):
        prune_step(model, filter_l1(model, prunable_layers(model)), example)
        models.append(copy.deepcopy(model).eval())
    stats = [count_macs_and_params(m, example) for m in models]
    inputs = {1: example, 32: torch.randn(32, 3, args.size, args.size)}
    loops = {1: 20, 32: 2}
    times = {b: [[] for _ in models] for b in inputs}
    for m in models:  # warm-up
        for b, x in inputs.items():
            latency(m, x, 1)
    for _ in range(args.repeats):
        for i, m in enumerate(models):
            for b, x in inputs.items():
                times[b][i].append(latency(m, x, loops[b]))
    med = {b: [statistics.median(t) for t in times[b]] for b in inputs}
    print(f"{args.model} at {args.size} px, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'iter':>4} {'params':>8} {'MACs':>9} {'MAC ratio':>9} {'lat b1 ms':>10} {'ratio':>6} "
          f"{'lat b32 ms':>11} {'ratio':>6}")
    for i, (macs, params) in enumerate(stats):
        print(f"{i:>4} {params / 1e6:>7.2f}M {macs / 1e6:>8.1f}M {macs / stats[0][0]:>9.2f} "
              f"{med[1][i] * 1e3:>10.2f} {med[1][i] / med[1][0]:>6.2f} {med[32][i] * 1e3:>11.1f} {med[32][i] / med[32][0]:>6.2f}")


if __name__ == "__main__":
    main()
