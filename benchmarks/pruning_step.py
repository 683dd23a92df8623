"""Time of one structural pruning step on ResNet-50 (dependency graph + removal), over 10 cuts.

    python benchmarks/pruning_step.py [--size 32] [--iterations 10]

Goal (coordinator issue): <= 5 s per step on 2 cores. Scores are filter l1 norms (IMP); the step
builds torch-pruning's dependency graph and removes 20% of every inner layer's channels.
"""

from __future__ import annotations

import argparse
import time

import torch

from swarm.nodes.models import build_model, count_parameters
from swarm.server.pruning import prunable_layers, prune_step
from swarm.server.relevance import filter_l1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--scope", default="inner")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model({"name": "resnet50", "stem": "auto"}, 10, 3, args.size)
    example = torch.randn(1, 3, args.size, args.size)
    print(f"ResNet-50 at {args.size} px, scope {args.scope}: {count_parameters(model) / 1e6:.2f}M parameters")
    seconds = []
    for i in range(1, args.iterations + 1):
        scores = filter_l1(model, prunable_layers(model, args.scope))
        start = time.perf_counter()
        prune_step(model, scores, example, ratio=0.2, scope=args.scope)
        seconds.append(time.perf_counter() - start)
        print(f"  cut {i:2d}: {seconds[-1]:.2f} s -> {count_parameters(model) / 1e6:.2f}M")
    print(f"max {max(seconds):.2f} s, mean {sum(seconds) / len(seconds):.2f} s per step (goal <= 5 s)")


if __name__ == "__main__":
    main()
