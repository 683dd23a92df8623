"""The fleet plan: what every node is, what data it will see, and when. Written once, read by all.

The server side draws the plan from the seed (device profile, drift time, availability phase and
non-IID share of F per node) and writes it to ``<run dir>/fleet_plan.json``; each node reads it by
its partition id, so a node needs nothing but the plan's path and its own id.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nodes.device import load_profile
from nodes.drift import dirichlet_partition, drift_times
from swarm import io


@dataclass
class NodePlan:
    partition: int
    profile: str
    drift_s: float
    phase_s: float
    f_indices: list[int]  # positions in F's training split
    seed: int


@dataclass
class FleetPlan:
    run_dir: str
    config: dict[str, Any]  # the resolved run config (scenario, data, fleet, ...)
    checkpoint: str  # the coordinator checkpoint the fleet starts from
    architecture: dict[str, Any]  # its shape, so nodes can build it and take the weights by message
    window_s: float
    windows: int
    nodes: list[NodePlan] = field(default_factory=list)

    def node(self, partition: int) -> NodePlan:
        return self.nodes[partition]

    def save(self, path: Path) -> None:
        io.write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> FleetPlan:
        data = json.loads(Path(path).read_text())
        data["nodes"] = [NodePlan(**n) for n in data["nodes"]]
        return cls(**data)


def draw_plan(*, run_dir: Path, config: dict[str, Any], checkpoint: Path, architecture: dict[str, Any],
              f_groups: np.ndarray,
              num_nodes: int, profiles: list[str], alpha: float, drift: dict[str, Any], window_s: float,
              windows: int, seed: int, min_f_per_node: int = 1) -> FleetPlan:
    """Draw every node's profile, drift time, availability phase and share of F, from ``seed``.

    ``f_groups`` gives the group (class or domain) of each F training sample; ``profiles`` are
    assigned round-robin, so a fleet of mixed devices is reproducible and balanced.
    """
    for name in profiles:
        load_profile(name)  # an unknown profile fails here, listing the known ones
    rng = np.random.default_rng(seed)
    shares = dirichlet_partition(f_groups, num_nodes, alpha, rng, min_per_node=min_f_per_node)
    drifts = drift_times(num_nodes, drift, rng)
    nodes = []
    for i in range(num_nodes):
        profile = profiles[i % len(profiles)]
        cycle = load_profile(profile).availability_cycle_s
        nodes.append(NodePlan(partition=i, profile=profile, drift_s=float(drifts[i]),
                              phase_s=float(rng.uniform(0, cycle)), f_indices=shares[i].tolist(),
                              seed=int(rng.integers(0, 2**31 - 1))))
    return FleetPlan(str(run_dir), config, str(checkpoint), dict(architecture), float(window_s), int(windows), nodes)
