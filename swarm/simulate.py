"""``python -m swarm.simulate``: the coordinator, then a Flower-simulated fleet adapting its model.

1. The coordinator pre-trains and prunes (Algorithm 1), or its cached result is reused.
2. The fleet plan is drawn from the seed: every node's device profile, drift time, availability
   phase and non-IID share of F (``fleet_plan.json``); every node's own data folder is written
   from it under ``nodes/`` (:mod:`nodes.local_data`, as ``swarm.partition`` does for devices).
3. Flower's simulation engine runs the ServerApp and one ClientApp per node: the chosen
   checkpoint (``fleet.checkpoint``: last, all, a number or a list) is sent once, then every node
   adapts for ``fleet.windows`` windows within what its SimPy device model grants. Several
   checkpoints run one after the other in one engine start, each in ``iteration_NN/``.
4. ``nodes.csv``, ``summary.json``, ``run.json``, ``report.md`` and plots land in the run directory.
   After everything is written, the exit code says how complete the fleet was: 1 if a node failed
   (as a device: its app raised, or its reply was invalid), 3 if the simulation engine left some
   node-windows unserved (``not_simulated``: every fleet mean then covers only part of the fleet).

Finished fleet results are cached (:mod:`swarm.fleet_cache`), like the coordinator's, so a sweep
that is run again skips every point it already finished.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig

from nodes.plan import FleetPlan, check_fleet_fits, plan_from_config
from server import coordinator, reference
from swarm import fleet_cache, io, settings
from swarm.config import data_options, entry_point, scenario_of
from swarm.data.build import ScenarioData, build
from swarm.errors import FleetFailure, FleetIncomplete, SwarmError
from swarm.evaluation import f_groups
from swarm.fleet_report import coverage_line, write_report
from swarm.fleet_protocol import COORDINATOR, FLEET_PLAN, FLEET_STATUS, NODE_FOLDERS, RUN_RECORD

log = logging.getLogger("swarm.simulate")


def chosen_iterations(choice: Any, result: coordinator.CoordinatorResult) -> list[int]:
    """``fleet.checkpoint``: last, all, one iteration number, or a list of them."""
    numbers = [it["iteration"] for it in result.iterations]
    if choice in (None, "last", -1):
        return numbers[-1:]
    if choice == "all":
        return numbers
    wanted = list(choice) if isinstance(choice, (list, tuple, ListConfig)) else [choice]
    try:
        wanted = [int(w) for w in wanted]
    except (TypeError, ValueError):
        raise SwarmError(f"fleet.checkpoint={choice}: use last, all, an iteration number or a list of them") from None
    for number in wanted:
        if number not in numbers:
            raise SwarmError(f"fleet.checkpoint={choice}: the coordinator has iterations {numbers[0]}..{numbers[-1]}")
    return sorted(set(wanted))


@dataclass
class FleetJob:
    """One fleet run: the model of one pruning iteration, adapted by the whole fleet."""

    iteration: int
    directory: Path
    key: str
    from_cache: bool = False

    @property
    def plan_path(self) -> Path:
        return self.directory / FLEET_PLAN


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    # The settings were checked when composed (swarm.settings); what needs the data, right after it.
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
          f"{cfg.model.name}{' (from cache)' if result.cached else ''}\n{coordinator.table(record)}")

    config = settings.plain(cfg)
    cache_dir = Path(str(cfg.cache_dir))
    jobs = [FleetJob(it, run_dir if len(iterations) == 1 else run_dir / f"iteration_{it:02d}",
                     fleet_cache.fleet_key(coordinator.model_key(cfg, it), it, config["fleet"], int(cfg.seed)))
            for it in iterations]
    for job in jobs:
        job.directory.mkdir(parents=True, exist_ok=True)
        (job.directory / FLEET_STATUS).unlink(missing_ok=True)
        job.from_cache = fleet_cache.restore(cache_dir, job.key, job.directory)
        _write_plan(cfg, config, data, result, job)  # also for a cached result: its report reads the plan
    pending = [job for job in jobs if not job.from_cache]
    sizes = ", ".join(f"{result.iterations[j.iteration]['params'] / 1e6:.2f}M" for j in jobs)
    print(f"\nfleet: {cfg.fleet.nodes} nodes ({', '.join(cfg.fleet.profiles)}), {cfg.fleet.windows} windows of "
          f"{cfg.fleet.window_s:g} s, strategy {cfg.fleet.strategy}; iteration "
          f"{', '.join(str(j.iteration) for j in jobs)} ({sizes} parameters)"
          + (f"; {len(jobs) - len(pending)} from the cache" if len(pending) < len(jobs) else ""))
    if pending:
        print(f"(saved after every window: if this run is killed, the same command with hydra.run.dir={run_dir} "
              f"resumes it)")
        root = _node_folders(FleetPlan.load(pending[0].plan_path), data, run_dir / NODE_FOLDERS)
        _run_flower([job.plan_path for job in pending], int(cfg.fleet.nodes), root, cfg.fleet.ray)

    errors, failed_nodes, unserved, finals = [], {}, {}, []
    target = "acc_PF" if scenario.mode == "continual" else "acc_F"
    f_names = f_groups(data, "test")[1]
    for job in jobs:
        status = ({"error": "", "failed_nodes": [], "not_simulated_nodes": []} if job.from_cache
                  else _status(job.directory))
        if status["error"]:
            errors.append(f"iteration {job.iteration}: {status['error']}")
            continue
        title = (f"{scenario.name} · {cfg.pruning.name} · {cfg.pretrain.name} · seed {cfg.seed} · "
                 f"iteration {job.iteration}")
        entry = record["iterations"][job.iteration]
        summary = write_report(job.directory, title, target=target, f_group_names=f_names,
                               reference=entry.get("reference"), events=_events(job.plan_path),
                               faults=_faults(job.plan_path))
        if status["failed_nodes"]:
            failed_nodes[job.iteration] = status["failed_nodes"]
        if status["not_simulated_nodes"]:
            unserved[job.iteration] = status["not_simulated_nodes"]
        if not job.from_cache and not status["failed_nodes"] and not status["not_simulated_nodes"]:
            fleet_cache.store(cache_dir, job.key, job.directory)
        _write_run_record(cfg, scenario.mode, record, job, summary, status)
        finals.append((job, summary))
    for job, summary in finals:
        print(f"\niteration {job.iteration}{' (from cache)' if job.from_cache else ''}: {_outcome(summary)}")
        print(f"totals: {summary['totals']['steps']:.0f} steps, {summary['totals']['energy_j']:.1f} J; "
              f"report: {job.directory / 'report.md'}")
    if errors:
        raise SwarmError("the fleet failed: " + "; ".join(errors) + f" (see {run_dir} and the log above)")
    if unserved:
        where = "; ".join(f"iteration {it}: {len(nodes)} nodes" for it, nodes in unserved.items())
        raise FleetIncomplete(f"{where} not simulated in some window (the engine gave no reply within "
                              f"fleet.window_timeout_s={cfg.fleet.window_timeout_s}); their fleet means cover only "
                              f"the nodes that were; see report.md in {run_dir}")
    if failed_nodes:
        where = "; ".join(f"iteration {it}: nodes {nodes}" for it, nodes in failed_nodes.items())
        raise FleetFailure(f"{where} failed; see report.md in {run_dir}")
    return {"jobs": [(job.iteration, summary) for job, summary in finals]}


def _faults(plan_path: Path) -> dict[int, str]:
    """The faults ``fleet.faults`` injected into a plan's nodes: node -> what and in which window."""
    if not plan_path.exists():
        return {}
    return {node.partition: f"{node.fault} in window {node.fault_window}"
            for node in FleetPlan.load(plan_path).nodes if node.fault}


def _events(plan_path: Path) -> tuple[list[list[int]], dict[int, list[float]]] | None:
    """The drift events of a plan: the tasks they bring and when each node's begin (None: one event)."""
    if not plan_path.exists():
        return None
    plan = FleetPlan.load(plan_path)
    if len(plan.f_tasks) < 2:
        return None
    return plan.f_tasks, {n.partition: n.event_starts(plan.event_gap_s, len(plan.f_tasks)) for n in plan.nodes}


def _outcome(summary: dict[str, Any]) -> str:
    """One line per accuracy: as received -> fleet mean after the last window (gain), and the reference."""
    parts = []
    for metric, gain in summary["gain"].items():
        text = f"{metric} {gain['received']:.3f} -> {gain['final']:.3f} ({gain['gain']:+.3f})"
        reference_after = summary.get("reference", {}).get("after", {}).get(metric)
        parts.append(text + (f" [reference {reference_after:.3f}]" if reference_after is not None else ""))
    idle = summary["idle_nodes"]
    lines = ["fleet mean as received -> after the last window: " + ", ".join(parts)]
    warning = coverage_line(summary["coverage"])
    if warning:
        lines.insert(0, warning)
    lines += [f"  node {node} never trained: {reason}" for node, reason in list(idle.items())[:5]]
    if len(idle) > 5:
        lines.append(f"  ... and {len(idle) - 5} more nodes that never trained (report.md lists them)")
    return "\n".join(lines)


def _write_plan(cfg: DictConfig, config: dict[str, Any], data: ScenarioData, result: coordinator.CoordinatorResult,
                job: FleetJob) -> None:
    checkpoint = coordinator.checkpoint_path(result.directory, job.iteration)
    plan_from_config(config, data, checkpoint=checkpoint, run_dir=job.directory).save(job.plan_path)




def _node_folders(plan: FleetPlan, data: ScenarioData, root: Path) -> Path:
    """Every node's data folder under ``root/node_NNN/data`` (the plans of one run share their data:
    same scenario, seed and stream); folders already written for this data are kept."""
    from nodes.local_data import DATA_DIR, MANIFEST, simulated_folders, write_fleet_data

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


def _run_flower(plans: list[Path], num_nodes: int, node_root: Path, ray: DictConfig) -> None:
    """One Flower simulation for every pending plan: the engine starts once. The simulated nodes
    find their folders under ``node_root`` (their ``node_config`` holds only a partition id)."""
    from server import flower_sim

    flower_sim.run(plans, num_nodes, node_root, cpus_per_node=float(ray.cpus_per_node),
                   ray_address=None if ray.address is None else str(ray.address))


def _status(directory: Path) -> dict[str, Any]:
    path = directory / FLEET_STATUS
    if not path.exists():
        return {"error": f"the fleet stopped without a result in {directory}", "failed_nodes": [],
                "not_simulated_nodes": []}
    return {"not_simulated_nodes": [], **json.loads(path.read_text())}


def _write_run_record(cfg: DictConfig, mode: str, record: dict[str, Any], job: FleetJob,
                      summary: dict[str, Any], status: dict[str, Any]) -> None:
    """``run.json``: what ``swarm.report`` needs to place this fleet result among others."""
    fleet = settings.plain(cfg.fleet)
    iterations = record["iterations"]
    run_record = {
        "scenario": cfg.scenario.name, "mode": mode, "pruning": cfg.pruning.name, "pretrain": cfg.pretrain.name,
        "model": cfg.model.name, "seed": int(cfg.seed), "iteration": job.iteration,
        "params": iterations[job.iteration]["params"], "macs": iterations[job.iteration]["macs"],
        "coordinator_key": record["key"], "coordinator": iterations, "fleet_key": job.key,
        "fleet": {k: v for k, v in fleet.items() if k not in fleet_cache.NOT_IN_KEY},
        "from_cache": job.from_cache, "failed_nodes": status["failed_nodes"],
        "not_simulated_nodes": status["not_simulated_nodes"], "totals": summary["totals"],
        "gain": summary["gain"],
    }
    io.write_json(job.directory / RUN_RECORD, run_record)


@entry_point("config")
def main(cfg: DictConfig) -> None:
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
