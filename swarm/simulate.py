"""``python -m swarm.simulate``: the coordinator, then a Flower-simulated fleet adapting its model.

1. The coordinator pre-trains and prunes (Algorithm 1), or its cached result is reused.
2. The fleet plan is drawn from the seed: every node's device profile, drift time, availability
   phase and non-IID share of F (``fleet_plan.json``).
3. Flower's simulation engine runs the ServerApp and one ClientApp per node: the chosen
   checkpoint (``fleet.checkpoint``) is sent once, then every node adapts for ``fleet.windows``
   windows within what its SimPy device model grants.
4. ``nodes.csv``, ``summary.json``, ``report.md`` and plots land in the run directory. A node that
   failed makes the run exit with code 1 after everything is written.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from nodes.plan import draw_plan
from server import coordinator
from swarm import checkpoints, io
from swarm.config import data_options, entry_point, scenario_of
from swarm.data.build import ScenarioData, build
from swarm.errors import SwarmError
from swarm.fleet_report import write_report
from swarm.prune import table

log = logging.getLogger("swarm.simulate")


def chosen_iteration(choice: Any, result: coordinator.CoordinatorResult) -> int:
    numbers = [it["iteration"] for it in result.iterations]
    if choice in (None, "last", -1):
        return numbers[-1]
    if int(choice) not in numbers:
        raise SwarmError(f"fleet.checkpoint={choice}: the coordinator has iterations {numbers[0]}..{numbers[-1]}")
    return int(choice)


def f_groups(data: ScenarioData) -> np.ndarray:
    """The group of every F training sample for the non-IID split: its class, or its domain when F
    holds a single class (new classes) but several domains."""
    f_train = data.datasets["F"]["train"]
    classes = np.asarray(data.catalog.train.class_idx)[f_train.indices]
    domains = np.asarray(data.catalog.train.domain_idx)[f_train.indices]
    return classes if len(np.unique(classes)) > 1 or len(np.unique(domains)) == 1 else domains


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    scenario = scenario_of(cfg)
    data = build(scenario, data_options(cfg))
    log.info("scenario %s (%s, pretrain=%s, pruning=%s)", scenario.name, scenario.mode, scenario.pretrain,
             cfg.pruning.name)
    result = coordinator.run(cfg, data)
    io.write_json(run_dir / "coordinator.json", {**result.record, "cache_dir": str(result.directory)})
    print(f"\ncoordinator: {scenario.name} · pretrain={scenario.pretrain} · pruning={cfg.pruning.name} · "
          f"{cfg.model.name}{' (from cache)' if result.cached else ''}\n{table(result.record)}")

    iteration = chosen_iteration(cfg.fleet.checkpoint, result)
    checkpoint = coordinator.checkpoint_path(result.directory, iteration)
    _, arch, _ = checkpoints.load(checkpoint)
    plan = draw_plan(run_dir=run_dir, config=OmegaConf.to_container(cfg, resolve=True), checkpoint=checkpoint,
                     architecture=arch, f_groups=f_groups(data), num_nodes=int(cfg.fleet.nodes),
                     profiles=list(cfg.fleet.profiles), alpha=float(cfg.fleet.alpha), drift=dict(cfg.fleet.drift),
                     window_s=float(cfg.fleet.window_s), windows=int(cfg.fleet.windows), seed=int(cfg.seed))
    plan_path = run_dir / "fleet_plan.json"
    plan.save(plan_path)
    print(f"\nfleet: {cfg.fleet.nodes} nodes ({', '.join(cfg.fleet.profiles)}), {cfg.fleet.windows} windows of "
          f"{cfg.fleet.window_s:g} s, iteration {iteration} ({result.iterations[iteration]['params'] / 1e6:.2f}M "
          f"parameters), strategy {cfg.fleet.strategy}")

    from nodes.client_app import app as client_app
    from server.server_app import app as server_app
    from swarm import flower_sim

    (run_dir / "fleet_status.json").unlink(missing_ok=True)
    os.environ["SWARM_FLEET_PLAN"] = str(plan_path)
    flower_sim.run(server_app, client_app, int(cfg.fleet.nodes))
    status_file = run_dir / "fleet_status.json"
    if not status_file.exists():
        raise SwarmError(f"the fleet stopped without a result; see {run_dir} and the log above")
    status = json.loads(status_file.read_text())
    if status["error"]:
        raise SwarmError(f"the fleet failed: {status['error']}")
    title = f"{scenario.name} · {cfg.pruning.name} · {cfg.pretrain.name} · seed {cfg.seed}"
    summary = write_report(run_dir, title)
    last = summary["windows"][-1]
    acc = {m: last[m]["mean"] for m in ("acc_P", "acc_F", "acc_PF") if m in last}
    print("\nfleet mean after the last window: " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    print(f"totals: {summary['totals']['steps']:.0f} steps, {summary['totals']['energy_j']:.1f} J; "
          f"report: {run_dir / 'report.md'}")
    if status["failed_nodes"]:
        print(f"error: nodes {status['failed_nodes']} failed; see {run_dir / 'report.md'}", file=sys.stderr)
    return {"summary": summary, "failed_nodes": status["failed_nodes"]}


@entry_point("config")
def main(cfg: DictConfig) -> None:
    outcome = run(cfg, Path(HydraConfig.get().runtime.output_dir))
    if outcome["failed_nodes"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
