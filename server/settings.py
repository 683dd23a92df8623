"""The whole config, typed: the coordinator's sections (``data``, ``prune``, ``pruning``,
``reference``) and :class:`SwarmConfig`, which holds them with the node's (``train`` and ``fleet``,
from :mod:`swarm.nodes.settings`) and the free-form groups.

The entry points turn the composed config into a :class:`SwarmConfig` once
(:func:`swarm.schema.typed`); everything below them reads these objects by attribute. Hydra
checks types and choices against these classes while it composes (:mod:`swarm.schema` registers
them), :func:`swarm.schema.check` the bounds each field carries.

The groups whose shape differs per option stay free-form mappings, each read by its own loader
only: ``scenario`` by :class:`swarm.server.data.scenario.Scenario` (which the rest reads, typed),
and ``model`` by the model registry (:func:`swarm.nodes.models.build_model`). Imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from swarm.nodes.choices import NewClassOutputs, Pretrain, Scope, Target
from swarm.nodes.settings import FleetConfig, TrainConfig, bounded


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
class PretrainConfig:
    """``pretrain=extra|task_only``: what the coordinator pre-trains on."""

    name: Pretrain = MISSING


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

    name: str = MISSING  # a criterion of swarm.server.criteria's registry (checked by check_pruning)
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
class SwarmConfig:
    """The whole config: the groups, free-form, and the typed sections."""

    scenario: Any = MISSING
    device: Any = None  # the optional shortcut device=NAME: every node that profile
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    model: Any = MISSING
    pruning: PruningConfig = field(default_factory=PruningConfig)
    seed: int = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    cache_dir: str = MISSING
