"""Memory layout on the CPU: a training step and an inference pass in PyTorch's default NCHW layout
against channels-last (NHWC), which ``swarm.nodes.layout`` chooses for every model on the CPU.

    python benchmarks/layout.py [--repeats 15] [--threads 1 2]

For resnet_small (32 px, as in the default scenario) unpruned and after 5 cuts of 20% (IMP, the
default scenario's last checkpoint size), and resnet18: a training step at batch 32 (forward,
backward, Adam), and inference over 250 images (a node's evaluation). Interleaved (NCHW,
NHWC, NCHW, ...), medians of ``repeats``; the ratio is NCHW time / NHWC time (> 1: channels-last
is faster). 1 thread is what a simulated node has (one Ray CPU), 2 what the coordinator has here.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from swarm.nodes.models import build_model
from swarm.server.pruning import prune_step
from swarm.server.relevance import filter_l1


def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    small = build_model({"name": "resnet_small", "stem": "auto"}, 12, 3, 32)
    pruned = copy.deepcopy(small)
    for _ in range(5):
        prune_step(pruned, filter_l1(pruned), torch.randn(1, 3, 32, 32), ratio=0.2)
    return {"resnet_small": small, "resnet_small, 5 cuts": pruned,
            "resnet18": build_model({"name": "resnet18", "stem": "auto"}, 12, 3, 32)}


def timers(model: nn.Module, layout: torch.memory_format):
    model = copy.deepcopy(model).to(memory_format=layout)
    x = torch.randn(32, 3, 32, 32).contiguous(memory_format=layout)
    y = torch.randint(0, 12, (32,))
    images = torch.randn(250, 3, 32, 32).contiguous(memory_format=layout)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)

    def train() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    @torch.no_grad()
    def infer() -> None:
        model.eval()
        model(images)

    return {"train step": train, "inference x250": infer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"torch {torch.__version__}; ratio = NCHW / channels-last (> 1: channels-last faster)")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, model in models().items():
            runs = {layout: timers(model, layout) for layout in (torch.contiguous_format, torch.channels_last)}
            for task in ("train step", "inference x250"):
                times: dict[torch.memory_format, list[float]] = {layout: [] for layout in runs}
                for layout in runs:  # warm-up
                    runs[layout][task]()
                for _ in range(args.repeats):
                    for layout, fns in runs.items():
                        start = time.perf_counter()
                        fns[task]()
                        times[layout].append(time.perf_counter() - start)
                nchw, nhwc = (statistics.median(times[layout]) * 1e3 for layout in runs)
                print(f"{threads} thread{'s' if threads > 1 else ' '} {name:>20} {task:>15}: "
                      f"NCHW {nchw:7.1f} ms, channels-last {nhwc:7.1f} ms, ratio {nchw / nhwc:.2f}")


if __name__ == "__main__":
    main()
