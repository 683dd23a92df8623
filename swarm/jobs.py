"""What a simulation's preparation hands its caller: the fleet jobs of a run, as plain values.

The preparation (:func:`swarm.preparation.prepare_fleet`) runs in a process of its own; the
caller (``python -m swarm.simulate``), which imports no torch, receives these and then runs the
fleets and reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarm.nodes.run_folder import FLEET_PLAN


@dataclass
class FleetJob:
    """One fleet run of a simulation: the model of one pruning iteration, adapted by the whole
    fleet, in ``directory`` (its plan, rows and report), cached under ``key``."""

    iteration: int
    directory: Path
    key: str
    from_cache: bool = False

    @property
    def plan_path(self) -> Path:
        return self.directory / FLEET_PLAN


@dataclass
class PreparedFleet:
    """What the preparation of a simulation (coordinator, reference, plans, node folders:
    :func:`swarm.preparation.prepare_fleet`) hands the caller, which then runs the fleet and
    reports: plain values only, as it comes back from a process of its own."""

    record: dict[str, Any]  # the coordinator's record, with the reference of every chosen iteration
    jobs: list[FleetJob]
    scenario: str  # the scenario's name
    mode: str  # the scenario's: continual (new classes) or finetune (new subclasses or domains)
    f_group_names: list[str]  # F's groups (classes or domains) in the test split, as reports name them
    node_root: Path | None  # where the pending jobs' nodes find their folders (None: every job from the cache)
