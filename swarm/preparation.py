"""Everything a simulation does before its fleet starts, in the order it does it: check the
pruning settings against their registries, build the scenario's data, run the coordinator (or take
its cached result), adapt the reference, write each chosen iteration's fleet plan, restore finished
fleets from the cache, and write the nodes' own data folders.

``python -m swarm.simulate`` runs :func:`prepare_fleet` in a process of its own
(:mod:`swarm.isolated`), which ends before the simulation engine starts: torch, the data and the
coordinator's models are gone before the fleet's processes start, and the caller, which waits
through the fleet, never imports torch. It sits with the entry points (it uses their config glue,
:mod:`swarm.config` and :mod:`swarm.schema`, and ``server/`` and ``nodes/``) and is no entry point.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from swarm.allocator import reuse_freed_memory
from swarm.config import data_options, scenario_of
from swarm.jobs import FleetJob, PreparedFleet
from swarm.nodes import io
from swarm.nodes.errors import SwarmError
from swarm.nodes.fleet_plan import FleetPlan
from swarm.nodes.settings import FleetConfig
from swarm.nodes.local_data import DATA_DIR, MANIFEST, simulated_folders
from swarm.nodes.run_folder import COORDINATOR, EVALUATION_DIR, FLEET_STATUS, NODE_FOLDERS
from swarm.server import cache
from swarm.server import coordinator, reference
from swarm.server.criteria import check_pruning
from swarm.server.data.build import ScenarioData, build
from swarm.server.data.evaluation_sets import f_groups
from swarm.server.node_folders import write_evaluation_set, write_fleet_data
from swarm.server.plan_drawing import check_fleet_fits, plan_from_config
from swarm.server.settings import SwarmConfig
from swarm.nodes.strategies import check_strategy

log = logging.getLogger("swarm.simulate")


def prepare_fleet(cfg: SwarmConfig, run_dir: Path) -> PreparedFleet:
    """The coordinator's result, the reference and every fleet plan of this run, written under
    ``run_dir``; the nodes' folders written for the plans that still have to run."""
    reuse_freed_memory()  # faster relevance; this process ends when the preparation does
    check_pruning(cfg.pruning)
    check_strategy(cfg.fleet.strategy)
    check_gpu_share(cfg.fleet)
    scenario = scenario_of(cfg)
    data = build(scenario, data_options(cfg))
    check_fleet_fits(cfg.fleet, data)
    log.info("scenario %s (%s, pretrain=%s, pruning=%s)", scenario.name, scenario.mode, scenario.pretrain,
             cfg.pruning.name)
    result = coordinator.run(cfg, data)
    iterations = chosen_iterations(cfg.fleet.checkpoint, result)
    record = reference.annotate(cfg, data, result, iterations)
    io.write_json(run_dir / COORDINATOR, {**record, "cache_dir": str(result.directory)})
    print(f"\ncoordinator: {scenario.name} · pretrain={scenario.pretrain} · pruning={cfg.pruning.name} · "
          f"{record['model']}{' (from cache)' if result.cached else ''}\n{coordinator.table(record)}")

    cache_dir = Path(cfg.cache_dir)
    jobs = [FleetJob(it, run_dir if len(iterations) == 1 else run_dir / f"iteration_{it:02d}",
                     cache.fleet_key(coordinator.model_key(cfg, it), it, cfg.fleet, cfg.seed))
            for it in iterations]
    for job in jobs:
        job.directory.mkdir(parents=True, exist_ok=True)
        (job.directory / FLEET_STATUS).unlink(missing_ok=True)
        job.from_cache = cache.restore_fleet(cache_dir, job.key, job.directory)
        checkpoint = coordinator.checkpoint_path(result.directory, job.iteration)
        # also for a cached result: its report reads the plan
        plan_from_config(cfg, data, checkpoint=checkpoint, run_dir=job.directory).save(job.plan_path)
    pending = [job for job in jobs if not job.from_cache]
    sizes = ", ".join(f"{result.iterations[j.iteration]['params'] / 1e6:.2f}M" for j in jobs)
    print(f"\nfleet: {cfg.fleet.nodes} nodes ({', '.join(cfg.fleet.profiles)}), {cfg.fleet.windows} windows of "
          f"{cfg.fleet.window_s:g} s, strategy {cfg.fleet.strategy}; iteration "
          f"{', '.join(str(j.iteration) for j in jobs)} ({sizes} parameters)"
          + (f"; {len(jobs) - len(pending)} from the cache" if len(pending) < len(jobs) else ""))
    node_root = None
    if pending:
        print(f"(saved after every window: if this run is killed, the same command with hydra.run.dir={run_dir} "
              f"resumes it)")
        node_root = node_folders(FleetPlan.load(pending[0].plan_path), data, run_dir / NODE_FOLDERS)
        first = pending[0].directory / EVALUATION_DIR
        for job in pending:  # the server scores the shared model on them (one copy, hard-linked)
            write_evaluation_set(FleetPlan.load(job.plan_path), data, job.directory / EVALUATION_DIR, like=first)
    return PreparedFleet(record=record, jobs=jobs, scenario=scenario.name, mode=scenario.mode, f_group_names=list(f_groups(data, "test")[1]),
                         node_root=node_root)


def check_gpu_share(fleet: FleetConfig) -> None:
    """``fleet.ray.gpus_per_node`` > 0 on a machine whose torch sees no CUDA GPU is an error (a Ray
    cluster's GPUs may be elsewhere: not checked then)."""
    import torch

    if fleet.on_gpu and fleet.ray.address is None and not torch.cuda.is_available():
        raise SwarmError(f"fleet.ray.gpus_per_node={fleet.ray.gpus_per_node} gives each node a share of a GPU, "
                         "and torch sees no CUDA GPU here; leave it at 0 to simulate the nodes on the CPU")


def chosen_iterations(choice: Any, result: coordinator.CoordinatorResult) -> list[int]:
    """``fleet.checkpoint``: last, all, one iteration number, or a list of them."""
    numbers = [it["iteration"] for it in result.iterations]
    if choice in (None, "last", -1):
        return numbers[-1:]
    if choice == "all":
        return numbers
    wanted = list(choice) if isinstance(choice, (list, tuple)) else [choice]
    try:
        wanted = [int(w) for w in wanted]
    except (TypeError, ValueError):
        raise SwarmError(f"fleet.checkpoint={choice}: use last, all, an iteration number or a list of them") from None
    for number in wanted:
        if number not in numbers:
            raise SwarmError(f"fleet.checkpoint={choice}: the coordinator has iterations {numbers[0]}..{numbers[-1]}")
    return sorted(set(wanted))


def node_folders(plan: FleetPlan, data: ScenarioData, root: Path) -> Path:
    """Every node's data folder under ``root/node_NNN/data`` (the plans of one run share their data:
    same scenario, seed and stream); folders already written for this data are kept."""
    def current(partition: int) -> bool:
        manifest = simulated_folders(root, partition)[0] / MANIFEST
        return manifest.exists() and json.loads(manifest.read_text()).get("data_id") == plan.data_id(partition)

    if all(current(i) for i in range(len(plan.nodes))):
        return root
    step = max(1, len(plan.nodes) // 10)
    write_fleet_data(plan, data, root, inner=DATA_DIR,
                     progress=lambda done, total: (done % step == 0 or done == total)
                     and print(f"node data: {done}/{total} folders", flush=True))
    return root
