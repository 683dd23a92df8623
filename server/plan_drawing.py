"""Drawing a fleet plan (:mod:`swarm.nodes.fleet_plan`) from the run config and the scenario's data, and the
model the plan hands every node. The one place that turns configuration into a plan (simulation,
tests and benchmarks); unlike the plan itself, it needs torch and the data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from swarm.nodes import checkpoints
from swarm.nodes.choices import NewClassOutputs, Update
from swarm.nodes.device import DeviceProfile, available_seconds, profile_of
from swarm.nodes.drift import dirichlet_partition, drift_times
from swarm.nodes.availability import node_intervals, read_trace, trace_digest
from swarm.nodes.errors import SwarmError
from swarm.nodes.fleet_plan import FleetPlan, NodePlan, check_faults, draw_faults, split_tasks
from swarm.nodes.settings import FleetConfig, to_plain
from swarm.nodes.training import make_loader
from swarm.server.data.build import ScenarioData
from swarm.server.data.evaluation_sets import f_groups
from swarm.server.relevance import channel_relevance
from swarm.server.settings import SwarmConfig


def availability_phase(profile: DeviceProfile, span_s: float, rng: np.random.Generator, tries: int = 1000) -> float:
    """A phase of the device's availability cycle, uniform among those in which it is available at
    some time during the simulated span ``[0, span_s)``.

    A run simulates a slice of time (an hour, say) of devices whose cycles are long (a phone that
    charges 8 h a day): drawn uniformly, most such devices would be offline for the whole slice and
    the fleet would be smaller than asked by accident. Conditioning on overlap keeps every device in
    the fleet while their availability still starts and ends at random times inside the run."""
    cycle = profile.availability_cycle_s
    phase = float(rng.uniform(0, cycle))
    if profile.availability <= 0 or profile.availability >= 1:
        return phase
    for _ in range(tries):
        if available_seconds(profile, 0.0, span_s, phase) > 0:
            return phase
        phase = float(rng.uniform(0, cycle))
    return phase


def traced(fleet: FleetConfig) -> dict[str, list[list[float]]] | None:
    """The availability trace's intervals by ``who`` (None: the profiles' cycles), the very file the
    run was set up with (its digest, taken by the entry point)."""
    availability = fleet.availability
    if availability.trace is None:
        return None
    path = Path(availability.trace)
    if availability.digest and path.is_file() and trace_digest(path) != availability.digest:
        raise SwarmError(f"fleet.availability.trace={path} changed since the run was set up; start it again")
    return read_trace(path)


def check_fleet_fits(fleet: FleetConfig, data: ScenarioData) -> None:
    """What needs the data: every node gets at least one sample of F."""
    supply = len(data.datasets["F"]["train"])
    if fleet.nodes > supply:
        raise SwarmError(f"fleet.nodes={fleet.nodes}: F has {supply} training samples, so at most {supply} "
                         "nodes get a share of it; lower fleet.nodes")


def draw_plan(*, run_dir: Path, config: dict[str, Any], fleet: FleetConfig, checkpoint: Path,
              architecture: dict[str, Any], f_groups: np.ndarray, seed: int, continual: bool, min_f_per_node: int = 1,
              reset_outputs: list[int] | None = None, undeployed_outputs: list[int] | None = None,
              p_train_size: int = 0) -> FleetPlan:
    """Draw every node's profile, drift time, availability phase (one that meets the run, see
    :func:`availability_phase`) and share of F, from ``seed``; ``config`` is the run's settings as
    the plan records them (:attr:`FleetPlan.config`).

    ``f_groups`` gives the group (class or domain) of each F training sample; ``fleet.profiles``
    are assigned round-robin, so a fleet of mixed devices is reproducible and balanced. With
    ``fleet.drift.events > 1`` F's groups arrive as that many tasks, ``fleet.drift.event_gap_s`` apart.
    """
    profiles, num_nodes = list(fleet.profiles), fleet.nodes
    devices = {name: profile_of(fleet, name) for name in profiles}  # a missing one fails here
    f_groups = np.asarray(f_groups)
    tasks = split_tasks(len(np.unique(f_groups)), fleet.drift.events)
    event_of_group = {g: k for k, task in enumerate(tasks) for g in task}
    rng = np.random.default_rng(seed)
    shares = dirichlet_partition(f_groups, num_nodes, fleet.alpha, rng, min_per_node=min_f_per_node)
    drifts = drift_times(num_nodes, fleet.drift, rng)
    trace = traced(fleet)
    nodes = []
    for i in range(num_nodes):
        profile = profiles[i % len(profiles)]
        events = [event_of_group[int(g)] for g in f_groups[shares[i]]] if len(tasks) > 1 else []
        nodes.append(NodePlan(partition=i, profile=profile, drift_s=float(drifts[i]),
                              phase_s=availability_phase(devices[profile], fleet.window_s * fleet.windows, rng),
                              f_indices=shares[i].tolist(), seed=int(rng.integers(0, 2**31 - 1)), f_events=events,
                              online=None if trace is None else node_intervals(trace, i, profile)))
    draw_faults(nodes, check_faults(fleet.faults), fleet.windows, seed)
    return FleetPlan(str(run_dir), config, str(checkpoint), dict(architecture), fleet.window_s, fleet.windows, nodes,
                     f_tasks=tasks, event_gap_s=fleet.drift.event_gap_s,
                     reset_outputs=[int(o) for o in reset_outputs or []],
                     undeployed_outputs=[int(o) for o in undeployed_outputs or []], continual=continual, seed=seed,
                     p_train_size=int(p_train_size))


def plan_from_config(settings: SwarmConfig, data: ScenarioData, *, checkpoint: Path, run_dir: Path) -> FleetPlan:
    """The fleet plan of a run's settings for the model in ``checkpoint``: the one place that
    turns configuration into a plan (simulation, tests and benchmarks)."""
    model, arch, _ = checkpoints.load(Path(checkpoint))
    reset = settings.fleet.new_class_outputs == NewClassOutputs.reset
    plan = draw_plan(run_dir=run_dir, config=to_plain(settings), fleet=settings.fleet, checkpoint=checkpoint,
                     architecture=arch, f_groups=f_groups(data, "train")[0], seed=settings.seed,
                     continual=data.scenario.mode == "continual",
                     reset_outputs=data.untrained_outputs() if reset else [],
                     undeployed_outputs=data.undeployed_outputs(), p_train_size=len(data.datasets["P"]["train"]))
    if settings.fleet.update == Update.relevant:
        plan.channel_relevance = p_relevance(settings, data, model)
    return plan


def p_relevance(settings: SwarmConfig, data: ScenarioData, model: torch.nn.Module) -> dict[str, list[float]]:
    """Every convolution's per-channel LRP relevance over P for the model the fleet is sent
    (Algorithm 1's score, with the run's LRP settings, or zennit's epsilon rule on the labels where
    the run pruned by IMP), which ``fleet.update=relevant`` nodes choose what to train by."""
    p_train = data.datasets["P"]["train"]
    if settings.prune.relevance_samples:
        p_train = torch.utils.data.Subset(p_train, range(min(len(p_train), settings.prune.relevance_samples)))
    loader = make_loader(p_train, settings.prune.relevance_batch_size, shuffle=False)
    lrp = settings.pruning
    scores = channel_relevance(model, loader, composite=lrp.composite or "epsilon", target=str(lrp.target or "label"),
                               epsilon=lrp.epsilon or 1e-6, device="cpu")
    return {name: [float(v) for v in values] for name, values in scores.items()}
