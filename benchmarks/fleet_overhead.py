"""Flower's overhead and the fleet's scaling: the same adaptation work with and without Flower.

    python benchmarks/fleet_overhead.py --nodes 8 32            # overhead ratio at 8 and 32 nodes
    python benchmarks/fleet_overhead.py --nodes 8 200 --no-plain  # scale: time per node-window, memory
    python benchmarks/fleet_overhead.py --nodes 8 --plans 3       # 3 model sizes in one engine start

For each fleet size it draws one plan (synthetic data, an untrained resnet_small, tiny
per-window budgets so that Flower's share is visible), then runs every window of every node

* ``plain``: in one Python loop calling :class:`swarm.nodes.node.NodeRuntime` directly;
* ``flower``: through :func:`swarm.server.flower_sim.run` (``flwr run`` on a SuperLink in simulation
  mode; Ray, one CPU per node actor), the way ``swarm.simulate`` does,

each into its own run directory (2 training steps per node and window on the Pi 4 profile), and reports wall times, their ratio (goal <= 1.3) and the time
per node-window. While Flower runs, the resident memory of this process and all its descendants
(the SuperLink, its simulation process, Ray's raylet, GCS and workers) is sampled every 0.5 s; the peak is reported (goal <= 4 GB at 200
nodes). Flower's wall time includes starting and stopping Ray. With ``--plans K`` the work is K
plans (as ``fleet.checkpoint=all`` runs K model sizes), one after the other in one engine start.
"""

from __future__ import annotations

import argparse
import os
import shutil
import threading
import time
from pathlib import Path

import torch
from process_tree import tree_rss_mb
from swarm.config import compose_config


class PeakMemory:
    def __init__(self) -> None:
        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_mb(os.getpid()))
            self._stop.wait(0.5)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def make_plan(nodes: int, windows: int, workdir: Path, name: str):
    from swarm.config import data_options, scenario_of
    from swarm.nodes import checkpoints
    from swarm.nodes.local_data import DATA_DIR
    from swarm.nodes.models import build_model
    from swarm.nodes.run_folder import EVALUATION_DIR
    from swarm.server.data.build import build
    from swarm.server.node_folders import write_evaluation_set, write_fleet_data
    from swarm.server.plan_drawing import plan_from_config

    overrides = ["scenario.dataset.train_per_group=40", "scenario.dataset.test_per_group=5", f"fleet.nodes={nodes}",
                 f"fleet.windows={windows}", "fleet.window_s=100", "fleet.stream_rate=1", "fleet.drift.low=0",
                 "fleet.drift.high=50", "fleet.eval_samples=50", "fleet.budget.energy_j=null",
                 "fleet.budget.compute_s=3", "fleet.profiles=[raspberry_pi_4]"]  # 2 steps a window
    cfg = compose_config(overrides)
    data = build(scenario_of(cfg), data_options(cfg))
    torch.manual_seed(0)
    model = build_model(cfg.model, data.num_outputs, data.channels, data.image_size)
    arch = checkpoints.architecture(model, cfg.model, data.num_outputs, data.channels, data.image_size)
    checkpoints.save(workdir / "start.pt", model, arch)
    run = workdir / name
    shutil.rmtree(run, ignore_errors=True)
    plan = plan_from_config(cfg, data, checkpoint=workdir / "start.pt",
                            run_dir=run)
    plan.save(run / "fleet_plan.json")
    write_fleet_data(plan, data, run / "nodes", inner=DATA_DIR)  # each node's own folder, as swarm.simulate writes it
    write_evaluation_set(plan, data, run / EVALUATION_DIR)  # the server's, for the shared model
    return run / "fleet_plan.json", data


def plain(nodes: int, windows: int, plans: int, workdir: Path) -> float:
    from swarm.nodes.fleet_plan import FleetPlan
    from swarm.nodes.node import local_runtime

    made = [make_plan(nodes, windows, workdir, f"plain-{nodes}-{k}") for k in range(plans)]
    start = time.perf_counter()
    for path, _ in made:
        plan = FleetPlan.load(path)
        runtimes = [local_runtime(plan, p, path.parent / "nodes") for p in range(nodes)]
        for window in range(windows):
            for runtime in runtimes:
                runtime.run_window(window)
    return time.perf_counter() - start


def flower(nodes: int, windows: int, plans: int, workdir: Path) -> tuple[float, float]:
    from swarm.server import flower_sim

    paths = [make_plan(nodes, windows, workdir, f"flower-{nodes}-{k}")[0] for k in range(plans)]
    # The plans share their data (same config and seed): one node root, as in swarm.simulate.
    with PeakMemory() as memory:
        start = time.perf_counter()
        flower_sim.run(paths, nodes, paths[0].parent / "nodes")
        seconds = time.perf_counter() - start
    for path in paths:
        rows = (path.parent / "nodes.csv").read_text().strip().splitlines()
        assert len(rows) == nodes * (windows + 1) + 1, "the fleet did not finish"  # + the received rows
    return seconds, memory.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--windows", type=int, default=2)
    parser.add_argument("--plans", type=int, default=1, help="plans (model sizes) per engine start")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/swarm-fleet-bench"))
    parser.add_argument("--no-plain", action="store_true", help="skip the plain loop (scale runs)")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for n in args.nodes:
        plain_s = None if args.no_plain else plain(n, args.windows, args.plans, args.workdir)
        flower_s, peak = flower(n, args.windows, args.plans, args.workdir)
        results.append((n, plain_s, flower_s, peak))
    print(f"\n{args.windows} windows, {args.plans} plan(s) per engine start")
    print(f"{'nodes':>5} {'plain s':>8} {'flower s':>9} {'ratio':>6} {'s / node-window':>16} {'peak RSS MB':>12}")
    for n, plain_s, flower_s, peak in results:
        ratio = f"{flower_s / plain_s:.2f}" if plain_s else "-"
        plain_txt = f"{plain_s:.1f}" if plain_s else "-"
        print(f"{n:>5} {plain_txt:>8} {flower_s:>9.1f} {ratio:>6} {flower_s / (n * args.windows * args.plans):>16.3f} {peak:>12.0f}")


if __name__ == "__main__":
    main()
