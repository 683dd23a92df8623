"""The settings a node and the coordinator's training loop read, typed: the config schema's
``train`` and ``fleet`` sections (:mod:`swarm.schema` composes them with the coordinator's, from
:mod:`swarm.server.settings`, into the whole config).

They are defined here, on the lowest floor, because a node reads them: the entry point turns the
composed config into these dataclasses once, the fleet plan stores the ``fleet`` section, and every
message carries it to the node as JSON, which :func:`from_plain` types again (with the same checks
Hydra applies while composing: a wrong type or an unknown choice is an error, not a string).
Bounds are metadata of each field (:func:`bounded`), checked by :func:`swarm.schema.check`.

Like the enums it uses (:mod:`swarm.nodes.choices`, ...), this module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, TypeVar

from omegaconf import MISSING, OmegaConf

from swarm.nodes.choices import Aggregate, BatchNormMode, DriftKind, Loss, NewClassOutputs, Sampling, Update
from swarm.nodes.replay import ReplayPolicy

Section = TypeVar("Section")


def bounded(*, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None, default: Any = MISSING) -> Any:
    """A number's field with its bounds (checked by :func:`swarm.schema.check`; ``None`` passes where allowed)."""
    return field(default=default, metadata={"ge": ge, "gt": gt, "le": le, "lt": lt})


def to_plain(section: Any) -> dict[str, Any]:
    """A typed section as plain JSON-able values (enums as their strings): what goes into plans,
    messages and cache keys."""
    return OmegaConf.to_container(OmegaConf.structured(section), resolve=True, enum_to_str=True)


def from_plain(kind: type[Section], values: Any) -> Section:
    """``values`` (plain JSON, as :func:`to_plain` wrote it) typed as the section ``kind``: an
    unknown key, a wrong type or an unknown choice raises ``ValueError``."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(kind), values))
    except Exception as error:  # OmegaConf's errors: a validation error, an unknown key, ...
        where = getattr(error, "full_key", None) or ""
        message = str(getattr(error, "msg", None) or error).strip().splitlines()[0]
        raise ValueError(f"{kind.__name__}{'.' + where if where else ''}: {message}") from None


@dataclass
class TrainConfig:
    """``train``: the coordinator's training (pre-training, recovery after each cut, the reference)."""

    lr: float = bounded(gt=0)
    batch_size: int = bounded(ge=1)
    patience: int = bounded(ge=1)
    max_epochs: int = bounded(ge=1)
    device: str = MISSING


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
    capacity: Any = MISSING  # all, auto, or a whole number >= 0 (checked by swarm.schema.check)
    fraction: float = bounded(ge=0, le=1)
    finetune: bool = MISSING


@dataclass
class FaultsConfig:
    """``fleet.faults``: shares of the fleet given an injected fault of each kind."""

    crash: float = bounded(ge=0, le=1)
    late: float = bounded(ge=0, le=1)
    corrupt: float = bounded(ge=0, le=1)
    poison: float = bounded(ge=0, le=1, default=0.0)  # defaults: plans written before these existed
    inflate: float = bounded(ge=0, le=1, default=0.0)


@dataclass
class RayConfig:
    """``fleet.ray``: where the simulated nodes run (never part of a result)."""

    address: Optional[str] = None  # null: a local Ray for the run; auto or HOST:PORT: join that cluster
    cpus_per_node: float = bounded(gt=0)
    gpus_per_node: float = bounded(ge=0)  # > 0: nodes train on the share of a GPU Ray gives their actor


@dataclass
class AvailabilityConfig:
    """``fleet.availability``: when devices are online, from a trace instead of their profiles' cycles."""

    # A CSV of online intervals (swarm.nodes.availability): null, the profiles' cycles.
    trace: Optional[str] = None
    # The trace's contents' digest, set by the entry point (swarm.config.prepare), never by hand: it
    # keys the fleet cache (the path may move) and tells a plan its trace changed.
    digest: str = ""


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
    strategy: str = MISSING  # a strategy of swarm.nodes.strategies' registry (checked by check_strategy)
    participation: Any = MISSING  # a fraction in (0, 1], or a whole number of nodes >= 1 (checked by swarm.schema.check)
    prox_mu: float = bounded(ge=0)  # fedprox: the weight of the proximal term (0: FedAvg, step for step)
    update: Update = Update.full  # what a node trains (swarm.nodes.trainable); plans from before it: full
    # fisher / relevant: the training memory (KB) their chosen channels may take: gradients, Adam's
    # slots and the step's activations at the device's batch (swarm.nodes.selection); null: none set.
    update_budget_kb: Optional[float] = bounded(gt=0, default=None)
    # How the shared model combines the updates (swarm.nodes.strategies); the defaults are for plans
    # written before these settings existed (the config sets them).
    aggregate: Aggregate = Aggregate.mean
    # The share of nodes the robust rules allow to be hostile: trimmed_mean cuts it from each end, multikrum drops it.
    trim_fraction: float = bounded(ge=0, lt=0.5, default=0.25)
    clip_norm: Optional[float] = bounded(gt=0, default=None)  # each update's L2 norm clipped to this (null: none)
    checkpoint: Any = MISSING  # last, all, an iteration, or a list of them (checked by swarm.schema.check)
    new_class_outputs: NewClassOutputs = MISSING
    join_timeout_s: float = bounded(gt=0)
    window_timeout_s: float = bounded(gt=0)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    availability: AvailabilityConfig = field(default_factory=AvailabilityConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    @property
    def on_gpu(self) -> bool:
        """Whether the nodes train on a GPU (``ray.gpus_per_node`` > 0)."""
        return self.ray.gpus_per_node > 0
