"""``python -m swarm.simulate``: the coordinator, then a Flower-simulated fleet adapting its model.

1. The coordinator pre-trains and prunes (Algorithm 1), or its cached result is reused.
2. The fleet plan is drawn from the seed: every node's device profile, drift time, availability
   phase and non-IID share of F (``fleet_plan.json``); every node's own data folder is written
   from it under ``nodes/`` (:mod:`swarm.nodes.local_data`, as ``swarm.partition`` does for devices).
3. Flower's simulation engine runs the ServerApp and one ClientApp per node: the chosen
   checkpoint (``fleet.checkpoint``: last, all, a number or a list) is sent once, then every node
   adapts for ``fleet.windows`` windows within what its SimPy device model grants. Several
   checkpoints run one after the other in one engine start, each in ``iteration_NN/``.
4. ``nodes.csv``, ``summary.json``, ``run.json``, ``report.md`` and plots land in the run directory.
   After everything is written, the exit code says how complete the fleet was: 1 if a node failed
   (as a device: its app raised, or its reply was invalid), 3 if the simulation engine left some
   node-windows unserved (``not_simulated``: every fleet mean then covers only part of the fleet).

Steps 1 and 2 run in a process of their own (:mod:`swarm.preparation`, through
:mod:`swarm.isolated`) that ends before the engine starts, so this process, which waits through the
fleet, never imports torch. Finished fleet results are cached (:mod:`swarm.server.cache`), like the
coordinator's, so a sweep that is run again skips every point it already finished.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from swarm import isolated
from swarm.config import entry_point
from swarm.fleet_report import coverage_line, write_report
from swarm.jobs import FleetJob, PreparedFleet
from swarm.nodes import io
from swarm.nodes.errors import FleetFailure, FleetIncomplete, SwarmError
from swarm.nodes.fleet_plan import ATTACKS, FleetPlan
from swarm.nodes.run_folder import FLEET_STATUS, RUN_RECORD
from swarm.nodes.settings import RayConfig, to_plain
from swarm.server import cache
from swarm.server.settings import SwarmConfig

# Steps 1-2 (and the nodes' folders), run in a process of their own: this one never imports torch.
PREPARE = "swarm.preparation:prepare_fleet"


def run(cfg: SwarmConfig, run_dir: Path) -> dict[str, Any]:
    # The settings were checked when composed (swarm.schema); what needs the data or the
    # registries of torch code, by the preparation before it reads or trains anything.
    prepared = _prepare(cfg, run_dir)
    jobs = prepared.jobs
    pending = [job for job in jobs if not job.from_cache]
    if pending:
        _run_flower([job.plan_path for job in pending], cfg.fleet.nodes, Path(prepared.node_root), cfg.fleet.ray)

    errors, failed_nodes, unserved, finals = [], {}, {}, []
    target = "acc_PF" if prepared.mode == "continual" else "acc_F"
    cache_dir = Path(cfg.cache_dir)
    record = prepared.record
    for job in jobs:
        status = ({"error": "", "failed_nodes": [], "not_simulated_nodes": []} if job.from_cache
                  else _status(job.directory))
        if status["error"]:
            errors.append(f"iteration {job.iteration}: {status['error']}")
            continue
        title = (f"{prepared.scenario} · {cfg.pruning.name} · {cfg.pretrain.name} · seed {cfg.seed} · "
                 f"iteration {job.iteration}")
        entry = record["iterations"][job.iteration]
        summary = write_report(job.directory, title, target=target, f_group_names=prepared.f_group_names,
                               reference=entry.get("reference"), events=_events(job.plan_path),
                               faults=_faults(job.plan_path))
        if status["failed_nodes"]:
            failed_nodes[job.iteration] = status["failed_nodes"]
        if status["not_simulated_nodes"]:
            unserved[job.iteration] = status["not_simulated_nodes"]
        if not job.from_cache and not status["failed_nodes"] and not status["not_simulated_nodes"]:
            cache.store_fleet(cache_dir, job.key, job.directory)
        _write_run_record(cfg, prepared, job, summary, status)
        finals.append((job, summary))
    for job, summary in finals:
        print(f"\niteration {job.iteration}{' (from cache)' if job.from_cache else ''}: {_outcome(summary)}")
        totals = summary["totals"]
        print(f"totals: {totals['steps']:.0f} steps, {totals['energy_j']:.1f} J ({totals['comm_j']:.1f} J radio, "
              f"{(totals['bytes_down'] + totals['bytes_up']) / 1e6:.1f} MB moved); "
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
        raise FleetFailure(f"{where} failed or answered late; see report.md in {run_dir}")
    return {"jobs": [(job.iteration, summary) for job, summary in finals]}


def _prepare(cfg: SwarmConfig, run_dir: Path) -> PreparedFleet:
    """:data:`PREPARE` in a process of its own (:mod:`swarm.isolated`), logging as this job does."""
    logging_config = None
    if HydraConfig.initialized():
        logging_config = OmegaConf.to_container(HydraConfig.get().job_logging, resolve=True)
    return isolated.call(PREPARE, cfg, run_dir, logging_config=logging_config)


def _faults(plan_path: Path) -> dict[int, str]:
    """The faults ``fleet.faults`` injected into a plan's nodes: node -> what and in which window."""
    if not plan_path.exists():
        return {}
    return {node.partition: f"{node.fault} " + ("in every window" if node.fault in ATTACKS else f"in window {node.fault_window}")
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
    parts, shared_parts = [], []
    shared = (summary.get("shared_model") or [{}])[-1]
    for metric, gain in summary["gain"].items():
        text = f"{metric} {gain['received']:.3f} -> {gain['final']:.3f} ({gain['gain']:+.3f})"
        reference_after = summary.get("reference", {}).get("after", {}).get(metric)
        parts.append(text + (f" [reference {reference_after:.3f}]" if reference_after is not None else ""))
        if shared.get(metric) is not None:
            shared_parts.append(f"{metric} {gain['received']:.3f} -> {shared[metric]:.3f} "
                                f"({shared[metric] - gain['received']:+.3f})")
    idle = summary["idle_nodes"]
    lines = ["nodes' mean as received -> after the last window: " + ", ".join(parts)]
    if shared_parts:
        lines.append("shared model after the last window: " + ", ".join(shared_parts))
    warning = coverage_line(summary["coverage"])
    if warning:
        lines.insert(0, warning)
    lines += [f"  node {node} never trained: {reason}" for node, reason in list(idle.items())[:5]]
    if len(idle) > 5:
        lines.append(f"  ... and {len(idle) - 5} more nodes that never trained (report.md lists them)")
    return "\n".join(lines)


def _run_flower(plans: list[Path], num_nodes: int, node_root: Path, ray: RayConfig) -> None:
    """One Flower simulation for every pending plan: the engine starts once. The simulated nodes
    find their folders under ``node_root`` (their ``node_config`` holds only a partition id)."""
    from swarm.server import flower_sim

    flower_sim.run(plans, num_nodes, node_root, cpus_per_node=ray.cpus_per_node, gpus_per_node=ray.gpus_per_node,
                   ray_address=ray.address)


def _status(directory: Path) -> dict[str, Any]:
    path = directory / FLEET_STATUS
    if not path.exists():
        return {"error": f"the fleet stopped without a result in {directory}", "failed_nodes": [],
                "not_simulated_nodes": []}
    return {"not_simulated_nodes": [], **json.loads(path.read_text())}


def _write_run_record(cfg: SwarmConfig, prepared: PreparedFleet, job: FleetJob,
                      summary: dict[str, Any], status: dict[str, Any]) -> None:
    """``run.json``: what ``swarm.report`` needs to place this fleet result among others."""
    fleet = to_plain(cfg.fleet)
    record = prepared.record
    iterations = record["iterations"]
    run_record = {
        "scenario": prepared.scenario, "mode": prepared.mode, "pruning": cfg.pruning.name,
        "pretrain": str(cfg.pretrain.name), "model": record["model"], "seed": cfg.seed, "iteration": job.iteration,
        "params": iterations[job.iteration]["params"], "macs": iterations[job.iteration]["macs"],
        "coordinator_key": record["key"], "coordinator": iterations, "fleet_key": job.key,
        "fleet": {k: v for k, v in fleet.items() if k not in cache.NOT_IN_FLEET_KEY},
        "from_cache": job.from_cache, "failed_nodes": status["failed_nodes"],
        "not_simulated_nodes": status["not_simulated_nodes"], "totals": summary["totals"],
        "gain": summary["gain"],
    }
    io.write_json(job.directory / RUN_RECORD, run_record)


@entry_point("config")
def main(cfg: SwarmConfig) -> None:
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
