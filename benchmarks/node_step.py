"""The node's training step as the fleet runs it, against this machine's floor for the same work.

    python benchmarks/node_step.py                         # the default scenario, model after its cuts
    python benchmarks/node_step.py --windows 2 --nodes 6   # more node-windows measured
    python benchmarks/node_step.py fleet.batch_size=16     # Hydra overrides of the default config
    python benchmarks/node_step.py --optimizers            # also: the step alone with each Adam implementation
    python benchmarks/node_step.py --grouped 2,4,8         # also: K nodes' steps as one grouped network

**Fleet.** A fleet plan of the default config (``python -m swarm.simulate``'s scenario, budget,
batch and loss), whose model is resnet_small after the default number of 20% cuts (channels
chosen by weight magnitude: the widths, and so the work, are the trained run's). Its nodes run
their windows for real (:class:`swarm.nodes.node.NodeRuntime`, what a node's actor runs) in as many
processes at once as the simulation runs actors here (cores / ``fleet.ray.cpus_per_node``), each
with one thread per CPU it is given, as Ray sets them. The fleet's training throughput is the
FLOPs of the steps the nodes were granted (``3 x forward FLOPs x batch``, what the device model
charges) over the seconds each process spent in its training steps, summed over the processes.

**Floor.** The same model's training step (forward, backward, Adam) on random data at large
batches (128, 256), in both memory layouts, as one process with every core's thread or as one
single-thread process per core running at once; the best FLOPs per second of these is the
machine's floor for the work.

Prints both, their ratio (goal <= 1.5: the fleet's steps within 1.5x of the floor), and where a
node-window's time went (training, evaluation, the rest).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

BATCHES = (128, 256)
LAYOUTS = ("channels_last", "contiguous")


def make_plan(workdir: Path, overrides: list[str]) -> Path:
    """The default config's fleet plan, from resnet_small cut as the default run cuts it."""
    import torch

    from swarm.config import compose_config, data_options, scenario_of
    from swarm.nodes import checkpoints
    from swarm.nodes.local_data import DATA_DIR
    from swarm.nodes.models import build_model
    from swarm.server.data.build import build
    from swarm.server.node_folders import write_fleet_data
    from swarm.server.plan_drawing import plan_from_config
    from swarm.server.pruning import prunable_layers, prune_step
    from swarm.server.relevance import filter_l1

    cfg = compose_config(overrides)
    data = build(scenario_of(cfg), data_options(cfg))
    torch.manual_seed(0)
    model = build_model(cfg.model, data.num_outputs, data.channels, data.image_size)
    example = torch.randn(1, data.channels, data.image_size, data.image_size)
    scope = str(cfg.prune.scope)
    for _ in range(int(cfg.prune.iterations)):
        prune_step(model, filter_l1(model, prunable_layers(model, scope)), example, ratio=float(cfg.prune.ratio),
                   scope=scope)
    arch = checkpoints.architecture(model, cfg.model, data.num_outputs, data.channels, data.image_size)
    checkpoints.save(workdir / "start.pt", model, arch)
    plan = plan_from_config(cfg, data, checkpoint=workdir / "start.pt", run_dir=workdir / "run")
    path = workdir / "run" / "fleet_plan.json"
    plan.save(path)
    write_fleet_data(plan, data, workdir / "run" / "nodes", inner=DATA_DIR)
    return path


def _step_flops(plan_path: Path) -> tuple[float, int, int]:
    """(FLOPs of one node step, forward MACs per sample, batch) as the device model counts them."""
    from swarm.nodes import checkpoints
    from swarm.nodes.checkpoints import received_model
    from swarm.nodes.device import step_flops
    from swarm.nodes.fleet_plan import FleetPlan
    from swarm.nodes.shapes import count_macs_and_params

    plan = FleetPlan.load(plan_path)
    macs, _ = count_macs_and_params(received_model(plan), checkpoints.example_inputs(plan.architecture))
    batch = plan.fleet.batch_size
    return step_flops(2.0 * macs, batch), macs, batch


def run_nodes(plan_path: str, partitions: list[int], windows: int, threads: int) -> dict[str, float]:
    """One actor's share of the fleet: every window of these nodes, timed."""
    import torch

    from swarm.nodes.fleet_plan import FleetPlan
    from swarm.nodes.node import local_runtime

    torch.set_num_threads(threads)
    plan = FleetPlan.load(Path(plan_path))
    root = Path(plan_path).parent / "nodes"
    runtimes = [local_runtime(plan, p, root, plan_id=f"bench{os.getpid()}") for p in partitions]
    steps, started = 0, time.perf_counter()
    for window in range(windows):
        for runtime in runtimes:
            row, _ = runtime.run_window(window)
            steps += row.steps
    return {"steps": steps, "train_s": sum(r.train_s for r in runtimes), "eval_s": sum(r.eval_s for r in runtimes),
            "node_s": time.perf_counter() - started, "node_windows": len(partitions) * windows}


def floor_rate(plan_path: str, batch: int, layout: str, threads: int, repeats: int) -> float:
    """FLOPs per second of this process training the plan's model at ``batch`` (median step)."""
    import torch

    from swarm.nodes.checkpoints import received_model
    from swarm.nodes.fleet_plan import FleetPlan

    torch.set_num_threads(threads)
    plan = FleetPlan.load(Path(plan_path))
    model = received_model(plan).train()
    size, channels = int(plan.architecture["image_size"]), int(plan.architecture["in_channels"])
    x = torch.randn(batch, channels, size, size)
    y = torch.randint(0, int(plan.architecture["num_outputs"]), (batch,))
    if layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4, fused=True)  # the fastest, as the nodes use
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
        if i >= 2:  # warm-up steps excluded
            times.append(time.perf_counter() - start)
    flops, _, node_batch = _step_flops(Path(plan_path))
    return flops / node_batch * batch / statistics.median(times)


def machine_floors(plan_path: str, repeats: int) -> dict[tuple[str, int, str], float]:
    """Training FLOPs per second of the whole machine on the plan's model, for every layout, large
    batch and split of the cores (one process with every thread, or one single-thread process per
    core running at once); the best of them is the machine's floor for the fleet's work."""
    cores = os.cpu_count() or 1
    floors = {}
    for layout in LAYOUTS:
        for batch_size in BATCHES:
            floors[(layout, batch_size, f"1 process x {cores} threads")] = floor_rate(
                plan_path, batch_size, layout, cores, repeats)
            floors[(layout, batch_size, f"{cores} processes x 1 thread")] = sum(
                in_parallel(floor_rate, [(plan_path, batch_size, layout, 1, repeats)] * cores))
    return floors


def training_step(model, optimizer, loss_fn, x, y):
    """One training step on ``(x, y)`` as a call; logits may carry a node axis (``[batch, K, outputs]``)."""
    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss_fn(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).backward()
        optimizer.step()
    return step


def ms_per_call(call, repeats: int, warmup: int = 5) -> float:
    """Mean milliseconds of ``call()`` over ``repeats`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats * 1e3


def optimizer_steps(plan_path: str, repeats: int = 60) -> dict[str, tuple[float, float]]:
    """The node's step alone (batch of the plan, one thread, random data) with torch's Adam as it
    comes and with its ``foreach`` and ``fused`` implementations: (step ms, optimizer ms)."""
    import torch

    from swarm.nodes.checkpoints import received_model
    from swarm.nodes.fleet_plan import FleetPlan
    from swarm.nodes.layout import batch_to, place

    torch.set_num_threads(1)
    plan = FleetPlan.load(Path(plan_path))
    arch, batch = plan.architecture, plan.fleet.batch_size
    x = batch_to(torch.randn(batch, arch["in_channels"], arch["image_size"], arch["image_size"]), "cpu")
    y = torch.randint(0, int(arch["num_outputs"]), (batch,))
    loss_fn = torch.nn.CrossEntropyLoss()
    out = {}
    for kind in ("as it comes", "foreach", "fused"):
        model = place(received_model(plan), "cpu").train()
        optimizer = torch.optim.Adam(model.parameters(), lr=5e-4, **({} if kind == "as it comes" else {kind: True}))

        step_ms = ms_per_call(training_step(model, optimizer, loss_fn, x, y), repeats)
        out[kind] = (step_ms, ms_per_call(optimizer.step, repeats, warmup=0))
    return out


def grouped_steps(plan_path: str, ks: list[int], repeats: int = 40) -> dict[int, float]:
    """ms a node step when K nodes' models (the same architecture) train as one network whose
    convolutions have ``groups=K`` (each node's channels see only its own batch; BatchNorm and Adam
    are per channel and per element, so the K models stay independent) and whose head is a batched
    matrix product; K = 1 is the plain step. One thread, random data. A measurement of the idea,
    not how the fleet runs."""
    import copy

    import torch
    from torch import nn

    from swarm.nodes.checkpoints import received_model
    from swarm.nodes.fleet_plan import FleetPlan
    from swarm.nodes.layout import batch_to, place

    class GroupedHead(nn.Module):
        def __init__(self, fc: nn.Linear, k: int) -> None:
            super().__init__()
            self.k = k
            self.weight = nn.Parameter(fc.weight.detach().repeat(k, 1, 1).clone())
            self.bias = nn.Parameter(fc.bias.detach().repeat(k, 1).clone())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.einsum("bkd,kod->bko", x.view(x.shape[0], self.k, -1), self.weight) + self.bias

    def grouped(model: nn.Module, k: int) -> nn.Module:
        model = copy.deepcopy(model)
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, nn.Conv2d):
                    setattr(module, name, nn.Conv2d(child.in_channels * k, child.out_channels * k, child.kernel_size,
                                                    child.stride, child.padding, groups=k, bias=False))
                elif isinstance(child, nn.BatchNorm2d):
                    setattr(module, name, nn.BatchNorm2d(child.num_features * k))
        model.fc = GroupedHead(model.fc, k)
        return model

    torch.set_num_threads(1)
    plan = FleetPlan.load(Path(plan_path))
    arch, batch = plan.architecture, plan.fleet.batch_size
    size, channels, outputs = int(arch["image_size"]), int(arch["in_channels"]), int(arch["num_outputs"])
    loss_fn = torch.nn.CrossEntropyLoss()
    out = {}
    for k in [1, *ks]:
        model = received_model(plan) if k == 1 else grouped(received_model(plan), k)
        place(model, "cpu").train()
        optimizer = torch.optim.Adam(model.parameters(), lr=5e-4, fused=True)
        x = batch_to(torch.randn(batch, channels * k, size, size), "cpu")
        y = torch.randint(0, outputs, (batch, k) if k > 1 else (batch,))

        out[k] = ms_per_call(training_step(model, optimizer, loss_fn, x, y), repeats) / k
    return out


def in_parallel(function, argument_lists: list[tuple]) -> list:
    """Run ``function`` once per argument tuple, each in a fresh process, all at once."""
    with multiprocessing.get_context("spawn").Pool(len(argument_lists)) as pool:
        return pool.starmap(function, argument_lists)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4, help="nodes per actor process")
    parser.add_argument("--windows", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per floor configuration")
    parser.add_argument("--optimizers", action="store_true", help="also time the step with each Adam implementation")
    parser.add_argument("--grouped", type=lambda text: [int(k) for k in text.split(",")], default=[],
                        help="also time K nodes' steps as one network, for each K of a comma list (2,4,8)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the default config")
    args = parser.parse_args()
    from swarm.config import compose_config

    cfg = compose_config(args.overrides)
    cores = os.cpu_count() or 1
    per_actor = max(1, int(round(float(cfg.fleet.ray.cpus_per_node))))
    actors = max(1, cores // per_actor)
    with tempfile.TemporaryDirectory(prefix="swarm-node-step-") as tmp:
        plan_path = make_plan(Path(tmp), args.overrides + [f"fleet.nodes={actors * args.nodes}"])
        flops, macs, batch = _step_flops(plan_path)
        print(f"model: {macs / 1e6:.2f}M MACs a sample; node step {flops / 1e9:.3f} GFLOP (batch {batch}); "
              f"{cores} cores, {actors} node actors x {per_actor} thread(s)")

        shares = [(str(plan_path), list(range(k, actors * args.nodes, actors)), args.windows, per_actor)
                  for k in range(actors)]
        actors_out = in_parallel(run_nodes, shares)
        steps = sum(a["steps"] for a in actors_out)
        fleet = sum(a["steps"] * flops / a["train_s"] for a in actors_out if a["train_s"] > 0)
        node_windows = sum(a["node_windows"] for a in actors_out)
        totals = {k: sum(a[k] for a in actors_out) for k in ("train_s", "eval_s", "node_s")}

        floors = machine_floors(str(plan_path), args.repeats)
        (layout, batch_size, how), best = max(floors.items(), key=lambda item: item[1])
        optimizers = optimizer_steps(str(plan_path)) if args.optimizers else {}
        grouped = grouped_steps(str(plan_path), args.grouped) if args.grouped else {}

    print("\nfloor (training FLOPs per second of the whole machine, same model, random data):")
    for (lay, b, h), rate in floors.items():
        print(f"  {lay:>13}  batch {b:>3}  {h:<26} {rate / 1e9:6.1f} GFLOP/s")
    print(f"\nfleet: {steps} node steps in {node_windows} node-windows, {fleet / 1e9:.1f} GFLOP/s "
          f"({1e3 * flops / fleet:.1f} ms of the machine a step; floor {1e3 * flops / best:.1f} ms: "
          f"{layout}, batch {batch_size}, {how})")
    print(f"fleet / floor: {best / fleet:.2f} (goal <= 1.5)")
    per = {k: v / node_windows for k, v in totals.items()}
    print(f"a node-window on one actor: {per['node_s']:.2f} s = training {per['train_s']:.2f} s + evaluation "
          f"{per['eval_s']:.2f} s + the rest {per['node_s'] - per['train_s'] - per['eval_s']:.2f} s "
          "(loading data and state, the device model, saving state)")
    for k, ms in grouped.items():
        print(f"{k} node(s) a call, one thread: {ms:.2f} ms a node step" +
              (f" ({grouped[1] / ms:.2f}x the plain step)" if k > 1 else " (the plain step)"))
    for kind, (step_ms, optimizer_ms) in optimizers.items():
        print(f"the step alone, one thread, Adam {kind}: {step_ms:.2f} ms (the optimizer {optimizer_ms:.2f} ms)")


if __name__ == "__main__":
    main()
