"""The device model's training memory against the real peak memory of the same training step here.

    python benchmarks/training_memory.py               # resnet_small at 16 and 32 px, as built and after 3 cuts
    python benchmarks/training_memory.py --quick       # 16 px, as built only (the test suite runs this)

For every ``fleet.update`` mode and both device batches (1, the microcontroller profile's; 32, the
fleet's), the memory a node reports (``nodes.csv``'s ``memory_mb``, from
:func:`swarm.nodes.node.model_costs` and :func:`swarm.nodes.device.memory_need`, every weight in
RAM as on this machine, no replay) is set beside the peak memory torch's profiler measures in the
node's training step (the node's layout, train mode, the mode's parameters only, fused Adam, cross
entropy): the weights and buffers, the optimizer state held from the step before, and the most
the step's own allocations net of its frees reach at any moment (``torch.profiler`` with
``profile_memory=True``; each operator's own allocations in the order the operators started).
Steps two to four are measured, as a node's steps after its first hold the optimizer state, and
the most of them kept (the profiler dates an operator's allocations at its start, so a single
step's figure varied by up to 20% from run to run).

Prints a row per case and exits 1 if any need is outside [0.8, 1.2] x the measured peak (the goal
of issue "The smallest devices train too": within 20%).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Callable

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from swarm.nodes import checkpoints
from swarm.nodes.choices import Update
from swarm.nodes.device import memory_need, scoring_need
from swarm.nodes.layout import batch_to, place
from swarm.nodes.models import build_model
from swarm.nodes.node import model_costs
from swarm.nodes.selection import Chooser, attach, fisher_scores, layers
from swarm.nodes.selection import cost as selection_cost
from swarm.nodes.trainable import TrainingCost, freeze
from swarm.server.pruning import prunable_layers, prune_step
from swarm.server.relevance import filter_l1

BATCHES = (1, 32)
# Steps measured, the most of them kept: the profiler dates each operator's own allocations, net of
# its frees, at the operator's start, so one step's figure can fall short of its true peak.
STEPS = 3
FIXED = (Update.full, Update.bias, Update.head)
CHOSEN = "chosen"  # fisher / relevant: channels chosen within a budget halfway between head's and full's need
SCORING = "fisher's choosing pass"  # the Fisher information of every candidate channel, nothing trained
TOLERANCE = 0.2
CPU = torch.device("cpu")


def model_of(image_size: int, cuts: int) -> tuple[nn.Module, dict]:
    """resnet_small for 12 classes of 3-channel images, after ``cuts`` 20% cuts by weight magnitude."""
    torch.manual_seed(0)
    model = build_model({"name": "resnet_small"}, num_outputs=12, in_channels=3, image_size=image_size)
    example = torch.randn(1, 3, image_size, image_size)
    for _ in range(cuts):
        prune_step(model, filter_l1(model, prunable_layers(model, "inner")), example, ratio=0.2, scope="inner")
    return model, checkpoints.architecture(model, {"name": "resnet_small"}, 12, 3, image_size)


def profiled_peak_bytes(run: Callable[[], None], held: Callable[[], list[torch.Tensor]]) -> int:
    """The tensors ``held`` between runs plus the most ``run``'s own allocations net of its frees reach
    (see the module docstring): ``run`` once unmeasured, then the most of :data:`STEPS` profiled runs."""
    run()  # the optimizer's state exists from here on, as in every step of a node after its first
    peak = 0
    for _ in range(STEPS):
        with warnings.catch_warnings(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
            warnings.simplefilter("ignore")  # the profiler warns of blocks allocated before it started
            run()
        events = sorted((e for e in profiler.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
        current = 0
        for event in events:
            current += event.self_cpu_memory_usage
            peak = max(peak, current)
    return sum(t.numel() * t.element_size() for t in held()) + peak


def _batch(batch: int, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    return batch_to(torch.randn(batch, 3, image_size, image_size), CPU), torch.randint(0, 12, (batch,))


def measured_peak_bytes(model: nn.Module, trained: list[nn.Parameter], batch: int, image_size: int) -> int:
    """The real peak memory of the node's training step of the ``trained`` parameters (see the module docstring)."""
    place(model, CPU)
    optimizer = torch.optim.Adam(trained, lr=5e-4, fused=True)
    inputs, targets = _batch(batch, image_size)
    loss_fn = nn.CrossEntropyLoss()
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(inputs), targets).backward()
        optimizer.step()

    return profiled_peak_bytes(step, lambda: [*model.parameters(), *model.buffers(), *(
        t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t))])


def measured_scoring_bytes(model: nn.Module, batch: int, image_size: int) -> int:
    """The real peak memory of fisher's choosing pass over one batch (:func:`fisher_scores`)."""
    place(model, CPU)
    example = torch.randn(2, 3, image_size, image_size)
    candidates = layers(model, example)
    batches = [_batch(batch, image_size)]
    return profiled_peak_bytes(lambda: fisher_scores(model, batches, candidates),
                               lambda: [*model.parameters(), *model.buffers()])


def chosen_channels(model: nn.Module, batch: int, image_size: int) -> dict[str, list[int]]:
    """Channels chosen as ``fleet.update=fisher|relevant`` choose them (scores: the filters' l1
    norms, any order will do here), within a budget halfway between the head's and full training's."""
    example = torch.randn(2, 3, image_size, image_size)
    chooser = Chooser(model, example, batch, 0.0)
    everything = frozenset(layer.conv for layer in chooser.candidates)
    low = chooser.need(chooser.head_parameters, frozenset())
    high = chooser.need(sum(p.numel() for p in model.parameters()), everything)
    chooser.budget = (low + high) / 2
    return chooser.choose(filter_l1(model, [layer.conv for layer in chooser.candidates]))


def need_bytes(model: nn.Module, cost: TrainingCost, batch: int) -> float:
    """The memory need a node reports for the step (every weight in RAM, no replay), in bytes."""
    need = memory_need(sum(p.numel() for p in model.parameters()), cost.activation_bytes, batch, 0, 0,
                       trained_parameters=cost.trained_parameters)
    return need.total_mb * 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 px, the model as built only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = [(16, 0)] if args.quick else [(16, 0), (16, 3), (32, 0), (32, 3)]
    worst = 0.0
    print("| image | cuts | mode | batch | need (MB) | measured peak (MB) | need / peak |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for image_size, cuts in cases:
        for mode in (*FIXED, CHOSEN, SCORING):
            for batch in BATCHES:
                model, arch = model_of(image_size, cuts)
                if mode == SCORING:
                    activations, held = Chooser(model, torch.randn(2, 3, image_size, image_size), batch, 0.0).scoring()
                    need = scoring_need(sum(p.numel() for p in model.parameters()), activations, batch, 0, 0,
                                        held).total_mb * 2**20
                    real = measured_scoring_bytes(model, batch, image_size)
                elif mode == CHOSEN:
                    example = torch.randn(2, 3, image_size, image_size)
                    selection = chosen_channels(model, batch, image_size)
                    need = need_bytes(model, selection_cost(model, example, selection), batch)
                    trained = attach(model, selection, example)
                else:
                    need = need_bytes(model, model_costs(model, arch, mode)[1], batch)
                    trained = freeze(model, mode)
                if mode != SCORING:
                    real = measured_peak_bytes(model, trained, batch, image_size)
                worst = max(worst, abs(need / real - 1))
                print(f"| {image_size} px | {cuts} | {mode} | {batch} | {need / 2**20:.3f} | {real / 2**20:.3f} | "
                      f"{need / real:.2f} |", flush=True)
    print(f"largest deviation: {worst:.1%} (goal <= {TOLERANCE:.0%})")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
