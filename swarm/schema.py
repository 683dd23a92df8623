"""The config's schema, defined once: Hydra structured configs for every setting a user turns.

``scenarios/config.yaml`` holds the values and says what each one means; this module holds their
types, the choices of every enumerated setting (each an enum in a module without torch:
:class:`swarm.nodes.fleet_plan.Loss`, :class:`swarm.nodes.replay.ReplayPolicy`, :mod:`swarm.nodes.choices`, ...) and
the bounds of every number. :func:`register` puts :class:`SwarmConfig` in Hydra's ConfigStore as
``swarm_schema``, which ``config.yaml`` lists first in its defaults, so that Hydra rejects a wrong
type or an unknown choice while it composes the config, before anything runs. :func:`check` then
checks the bounds (``fleet.nodes=0``, ``prune.ratio=1.5``) and what spans several keys, also
before any work. It belongs with the entry points (it may import ``nodes/`` and ``server/``).

It imports no torch, and nothing that does: the caller of ``python -m swarm.simulate`` composes
and checks the config and then waits through the whole fleet, and without torch it holds about
700 MB less beside the simulated nodes. The choices that name entries of registries kept in
torch code (``pruning.name`` in :data:`swarm.server.criteria.CRITERIA`, ``pruning.composite`` in zennit's,
``fleet.strategy`` in :data:`swarm.server.strategies.STRATEGIES`) are strings here, checked by
:func:`swarm.server.criteria.check_pruning` and :func:`swarm.server.strategies.check_strategy` before
the coordinator reads any data.

Group configs whose shape differs per option (``scenario``, ``model``, ``pretrain``) stay free-form:
their loaders check them (:class:`swarm.server.data.scenario.Scenario`, :func:`swarm.nodes.models.build_model`).
"""

from __future__ import annotations

import dataclasses
import math
import operator
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from swarm.nodes.choices import NewClassOutputs, Scope, Target
from swarm.nodes.drift import DriftKind
from swarm.nodes.errors import SwarmError
from swarm.nodes.fleet_plan import BatchNormMode, Loss, Sampling, check_faults
from swarm.nodes.replay import ReplayPolicy

SCHEMA = "swarm_schema"


def bounded(*, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None, default: Any = MISSING) -> Any:
    """A number's field with its bounds (checked by :func:`check`; ``None`` passes where allowed)."""
    return field(default=default, metadata={"ge": ge, "gt": gt, "le": le, "lt": lt})


@dataclass
class DataConfig:
    """``data``: where datasets live and how much of them a run uses."""

    root: str = MISSING
    download: bool = MISSING
    image_size: Optional[int] = bounded(ge=8)
    max_per_class: Optional[int] = bounded(ge=1)
    val_fraction: float = bounded(ge=0, lt=1)
    verify_checksums: bool = MISSING
    num_workers: int = bounded(ge=0)


@dataclass
class TrainConfig:
    """``train``: the coordinator's training (pre-training, recovery after each cut, the reference)."""

    lr: float = bounded(gt=0)
    batch_size: int = bounded(ge=1)
    patience: int = bounded(ge=0)
    max_epochs: int = bounded(ge=1)
    device: str = MISSING


@dataclass
class PruneConfig:
    """``prune``: Algorithm 1's schedule of cuts."""

    iterations: int = bounded(ge=0)
    ratio: float = bounded(gt=0, lt=1)
    scope: Scope = MISSING
    relevance_batch_size: int = bounded(ge=1)
    relevance_samples: Optional[int] = bounded(ge=1)
    dry_run: bool = MISSING


@dataclass
class PruningConfig:
    """The criterion (``pruning=lrp|imp``); LRP's settings are empty for criteria that need none."""

    name: str = MISSING  # a criterion of swarm.server.criteria's registry (checked by swarm.server.criteria.check_pruning)
    composite: Optional[str] = None  # a composite of zennit's registry (likewise)
    epsilon: Optional[float] = bounded(gt=0, default=None)
    target: Optional[Target] = None


@dataclass
class ReferenceConfig:
    """``reference``: the paper's central adaptation of each checkpoint, the yardstick of the fleet."""

    adapt: bool = MISSING
    max_epochs: int = bounded(ge=1)
    new_class_outputs: NewClassOutputs = MISSING
    in_prune: bool = MISSING


@dataclass
class BudgetConfig:
    """``fleet.budget``: what one window may spend on training per node (null: no limit)."""

    duty_cycle: Optional[float] = bounded(ge=0, le=1)
    energy_j: Optional[float] = bounded(ge=0)
    compute_s: Optional[float] = bounded(ge=0)
    flops: Optional[float] = bounded(ge=0)


@dataclass
class DriftConfig:
    """``fleet.drift``: when each node's stream turns from P-like samples to F."""

    kind: DriftKind = MISSING
    low: Optional[float] = bounded(ge=0, default=None)  # uniform
    high: Optional[float] = bounded(ge=0, default=None)  # uniform
    value: Optional[float] = bounded(ge=0, default=None)  # fixed
    mean: Optional[float] = bounded(gt=0, default=None)  # exponential
    events: int = bounded(ge=1)
    event_gap_s: float = bounded(ge=0)


@dataclass
class ReplayConfig:
    """``fleet.replay``: the buffer of P samples continual nodes replay."""

    policy: ReplayPolicy = MISSING
    capacity: Any = MISSING  # all, auto, or a whole number >= 0 (checked by check)
    fraction: float = bounded(ge=0, le=1)
    finetune: bool = MISSING


@dataclass
class FaultsConfig:
    """``fleet.faults``: shares of the fleet given an injected fault of each kind."""

    crash: float = bounded(ge=0, le=1)
    late: float = bounded(ge=0, le=1)
    corrupt: float = bounded(ge=0, le=1)


@dataclass
class RayConfig:
    """``fleet.ray``: where the simulated nodes run (never part of a result)."""

    address: Optional[str] = None  # null: a local Ray for the run; auto or HOST:PORT: join that cluster
    cpus_per_node: float = bounded(gt=0)
    gpus_per_node: float = bounded(ge=0)  # > 0: nodes train on the share of a GPU Ray gives their actor


@dataclass
class FleetConfig:
    """``fleet``: the simulated edge devices and how they adapt."""

    nodes: int = bounded(ge=1)
    windows: int = bounded(ge=1)
    window_s: float = bounded(gt=0)
    profiles: list[str] = MISSING  # names in the config group `device` (Hydra's search path)
    # The named profiles' contents, loaded by the entry point (swarm.config.prepare), never set by
    # hand: they travel in the fleet plan to the nodes and key the fleet cache.
    devices: dict[str, Any] = field(default_factory=dict)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    passes: Optional[int] = bounded(ge=1)
    stream_rate: float = bounded(gt=0)
    drift: DriftConfig = field(default_factory=DriftConfig)
    alpha: float = bounded(gt=0)
    batch_size: int = bounded(ge=1)
    lr: float = bounded(gt=0)
    recent_samples: Optional[int] = bounded(ge=1)
    batchnorm: BatchNormMode = MISSING
    loss: Loss = MISSING
    sampling: Sampling = MISSING
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    eval_samples: int = bounded(ge=0)
    strategy: str = MISSING  # a strategy of swarm.server.strategies' registry (checked by check_strategy)
    checkpoint: Any = MISSING  # last, all, an iteration, or a list of them (checked by check)
    new_class_outputs: NewClassOutputs = MISSING
    join_timeout_s: float = bounded(gt=0)
    window_timeout_s: float = bounded(gt=0)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    ray: RayConfig = field(default_factory=RayConfig)


@dataclass
class SwarmConfig:
    """The whole config: the groups, free-form, and the typed sections."""

    scenario: Any = MISSING
    device: Any = None  # the optional shortcut device=NAME: every node that profile
    pretrain: Any = MISSING
    model: Any = MISSING
    pruning: PruningConfig = field(default_factory=PruningConfig)
    seed: int = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    cache_dir: str = MISSING


def register() -> None:
    """Put the schema in Hydra's ConfigStore (idempotent); ``config.yaml`` names it in its defaults."""
    ConfigStore.instance().store(name=SCHEMA, node=SwarmConfig)


def plain(node: Any) -> Any:
    """A config node as plain Python (enums as their strings, interpolations resolved): what goes
    into JSON, cache keys and fleet plans."""
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    return node


BOUNDS = {"ge": (operator.ge, ">="), "gt": (operator.gt, ">"), "le": (operator.le, "<="), "lt": (operator.lt, "<")}


def _bound_problem(value: float, meta: dict[str, Any], annotation: str) -> str | None:
    """What ``value`` should be, if it breaks its field's bounds (``None`` if it keeps them)."""
    bounds = {k: meta[k] for k in BOUNDS if meta.get(k) is not None}
    if all(BOUNDS[k][0](value, b) for k, b in bounds.items()) and not (isinstance(value, float) and math.isnan(value)):
        return None
    kind = "a whole number" if "int" in annotation else "a number"
    said = " and ".join(f"{BOUNDS[k][1]} {b:g}" for k, b in bounds.items())
    return f"{kind} {said}" + (", or null" if annotation.startswith("Optional") else "")


def _check_bounds(schema: type, node: Any, prefix: str) -> None:
    for spec in dataclasses.fields(schema):
        value = node.get(spec.name) if node is not None else None
        key = f"{prefix}{spec.name}"
        if dataclasses.is_dataclass(spec.default_factory):  # a nested section (annotations are strings here)
            _check_bounds(spec.default_factory, value, f"{key}.")
        elif value is not None and spec.metadata:
            problem = _bound_problem(value, spec.metadata, str(spec.type))
            if problem:
                raise SwarmError(f"{key}={value}: {problem}")


def check(cfg: DictConfig) -> None:
    """Everything about the settings that Hydra's types cannot say, checked right after composition
    (before any data is read): bounds, and rules over several keys. One :class:`SwarmError` line."""
    _check_bounds(SwarmConfig, cfg, "")
    fleet = cfg.fleet
    capacity = fleet.replay.capacity
    if capacity not in ("all", "auto") and (isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0):
        raise SwarmError(f"fleet.replay.capacity={capacity}: all, auto, or a whole number >= 0")
    drift = fleet.drift
    needs = {DriftKind.fixed: ("value",), DriftKind.uniform: ("low", "high"), DriftKind.exponential: ("mean",)}
    for key in needs[DriftKind(drift.kind)]:
        if drift[key] is None:
            raise SwarmError(f"fleet.drift.kind={drift.kind} needs fleet.drift.{key}")
    if drift.kind == DriftKind.uniform and drift.high < drift.low:
        raise SwarmError(f"fleet.drift.high={drift.high}: must be >= fleet.drift.low ({drift.low})")
    if not fleet.profiles:
        raise SwarmError("fleet.profiles=[]: name at least one device profile")
    check_faults(plain(fleet.faults))
    if cfg.pruning.name == "lrp" and (cfg.pruning.composite is None or cfg.pruning.epsilon is None
                                      or cfg.pruning.target is None):
        raise SwarmError("pruning=lrp needs pruning.composite, pruning.epsilon and pruning.target")
