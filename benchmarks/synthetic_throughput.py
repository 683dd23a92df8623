"""Synthetic data generation throughput (images/s) at 32 px, over all 12 classes x 6 styles.

    python benchmarks/synthetic_throughput.py [--size 32] [--per-group 500] [--repeats 3]

Goal (issue: foundation): >= 5,000 images/s on 2 CPU cores. Prints the best of ``repeats`` runs
and each style's own rate.
"""

from __future__ import annotations

import argparse
import time

import torch

from swarm.server.data.sources import synthetic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--per-group", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.size} px, "
          f"{args.per_group} images per (class, style)")
    best = 0.0
    for repeat in range(args.repeats):
        per_style = {}
        start = time.perf_counter()
        for style in synthetic.DOMAINS:
            t = time.perf_counter()
            for name in synthetic.CLASSES:
                synthetic.render(name, style, args.per_group, args.size, seed=repeat)
            per_style[style] = len(synthetic.CLASSES) * args.per_group / (time.perf_counter() - t)
        total = len(synthetic.DOMAINS) * len(synthetic.CLASSES) * args.per_group
        rate = total / (time.perf_counter() - start)
        best = max(best, rate)
        print(f"run {repeat}: {rate:,.0f} images/s  (" +
              ", ".join(f"{s} {r:,.0f}" for s, r in per_style.items()) + ")")
    print(f"best: {best:,.0f} images/s (goal >= 5,000)")


if __name__ == "__main__":
    main()
