"""The config's schema: Hydra structured configs for every setting a user turns, registered and checked.

``scenarios/config.yaml`` holds the values and says what each one means; the schema's classes hold
their types, the choices of every enumerated setting (each an enum in a module without torch:
:mod:`swarm.nodes.choices`, :class:`swarm.nodes.replay.ReplayPolicy`, ...) and the bounds of every
number. Each class is defined once, on the floor that reads it: the node's sections (``train``,
``fleet``) in :mod:`swarm.nodes.settings`, the coordinator's and the whole
(:class:`swarm.server.settings.SwarmConfig`) in :mod:`swarm.server.settings`. This module puts
:class:`SwarmConfig` in Hydra's ConfigStore as ``swarm_schema`` (:func:`register`), which
``config.yaml`` lists first in its defaults, so that Hydra rejects a wrong type or an unknown choice
while it composes the config, before anything runs. :func:`check` then checks the bounds
(``fleet.nodes=0``, ``prune.ratio=1.5``) and what spans several keys, also before any work, and
:func:`typed` turns the config into the dataclasses the entry points pass down: below them, no
code reads a setting by string key.

It imports no torch, and nothing that does: the caller of ``python -m swarm.simulate`` composes
and checks the config and then waits through the whole fleet, and without torch it holds about
700 MB less beside the simulated nodes. The choices that name entries of registries kept in
torch code (``pruning.name`` in :data:`swarm.server.criteria.CRITERIA`, ``pruning.composite`` in zennit's,
``fleet.strategy`` in :data:`swarm.nodes.strategies.STRATEGIES`) are strings here, checked by
:func:`swarm.server.criteria.check_pruning` and :func:`swarm.nodes.strategies.check_strategy` before
the coordinator reads any data.

Group configs whose shape differs per option (``scenario``, ``model``) stay free-form: their
loaders read and check them (:class:`swarm.server.data.scenario.Scenario`,
:func:`swarm.nodes.models.build_model`), and the rest of the code reads what those return.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from swarm.nodes.choices import DriftKind, Update
from swarm.nodes.errors import SwarmError
from swarm.nodes.fleet_plan import check_faults
from swarm.server.settings import SwarmConfig

SCHEMA = "swarm_schema"


def register() -> None:
    """Put the schema in Hydra's ConfigStore (idempotent); ``config.yaml`` names it in its defaults."""
    ConfigStore.instance().store(name=SCHEMA, node=SwarmConfig)


def typed(cfg: DictConfig) -> SwarmConfig:
    """The composed, checked config as the schema's dataclasses: what the entry points hand to
    everything below them (the free-form groups become plain mappings, read by their loaders)."""
    return OmegaConf.to_object(cfg)


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
    """Every field's bounds, and no key the section does not have (``+fleet.faults.meteor=0.1``
    gets past Hydra's struct mode, and typing would drop it without a word)."""
    names = [spec.name for spec in dataclasses.fields(schema)]
    unknown = [key for key in (node.keys() if isinstance(node, DictConfig) else ()) if key not in names]
    if unknown:
        raise SwarmError(f"{prefix}{unknown[0]} is not a setting; {prefix.rstrip('.') or 'the config'} has "
                         f"{', '.join(names)}")
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
    participation = fleet.participation
    if isinstance(participation, bool) or not (
            (isinstance(participation, float) and 0 < participation <= 1) or (isinstance(participation, int) and participation >= 1)):
        raise SwarmError(f"fleet.participation={participation}: a fraction in (0, 1] (0.25), or a whole number of nodes >= 1")
    drift = fleet.drift
    needs = {DriftKind.fixed: ("value",), DriftKind.uniform: ("low", "high"), DriftKind.exponential: ("mean",)}
    for key in needs[DriftKind(drift.kind)]:
        if drift[key] is None:
            raise SwarmError(f"fleet.drift.kind={drift.kind} needs fleet.drift.{key}")
    if drift.kind == DriftKind.uniform and drift.high < drift.low:
        raise SwarmError(f"fleet.drift.high={drift.high}: must be >= fleet.drift.low ({drift.low})")
    if not fleet.profiles:
        raise SwarmError("fleet.profiles=[]: name at least one device profile")
    update = fleet["update"]  # (an attribute would be DictConfig's own update method)
    if update in (Update.fisher, Update.relevant) and fleet.update_budget_kb is None:
        raise SwarmError(f"fleet.update={update} chooses channels within a memory budget: set "
                         "fleet.update_budget_kb (for example 128)")
    check_faults(OmegaConf.to_object(fleet.faults))
    if cfg.pruning.name == "lrp" and (cfg.pruning.composite is None or cfg.pruning.epsilon is None
                                      or cfg.pruning.target is None):
        raise SwarmError("pruning=lrp needs pruning.composite, pruning.epsilon and pruning.target")
