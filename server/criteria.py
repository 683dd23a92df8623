"""How Algorithm 1 ranks channels before a cut: pruning criteria by name (``pruning.name``).

A criterion scores every output channel of the given conv layers (higher: more worth keeping).
Two ship: ``lrp``, the paper's LRP relevance accumulated over P (:mod:`swarm.server.relevance`), and
``imp``, the baseline's filter magnitude. Add another with :func:`criterion`; its name then
becomes a valid ``pruning.name`` (:func:`check_pruning`, which the coordinator's callers run before
they read any data; the config schema cannot list the registry, as it imports no torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Protocol

import torch
from torch import nn

from swarm.nodes.errors import SwarmError
from swarm.nodes.layout import place
from swarm.server.relevance import channel_relevance, composite_names, filter_l1
from swarm.server.settings import PruningConfig


@dataclass
class ScoringContext:
    """What a criterion may use besides the model: the task data P as batches (made on demand, so
    a criterion that needs no data reads none), the device, and the ``pruning`` settings."""

    p_batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]
    device: torch.device
    settings: PruningConfig


class Criterion(Protocol):
    def __call__(self, model: nn.Module, layers: list[str], context: ScoringContext) -> dict[str, torch.Tensor]: ...


CRITERIA: dict[str, Criterion] = {}
# A criterion's revision keys cached coordinator results: bump it when the scores it computes change.
REVISIONS: dict[str, int] = {}


def criterion(name: str, revision: int = 1) -> Callable[[Criterion], Criterion]:
    """Register a criterion under ``name`` (as zennit registers composites)."""
    def register(function: Criterion) -> Criterion:
        CRITERIA[name] = function
        REVISIONS[name] = revision
        return function
    return register


def check_pruning(pruning: PruningConfig) -> None:
    """The ``pruning`` settings name a registered criterion and, where they name one, a composite
    in zennit's registry (ours, ``epsilon``, included): one :class:`SwarmError` line otherwise."""
    name = pruning.name
    if name not in CRITERIA:
        raise SwarmError(f"pruning.name={name}: choose one of {', '.join(sorted(CRITERIA))}")
    composite = pruning.composite
    if composite is not None and composite not in composite_names():
        raise SwarmError(f"pruning.composite={composite}: choose one of {', '.join(composite_names())}")


@criterion("imp")
def magnitude(model: nn.Module, layers: list[str], context: ScoringContext) -> dict[str, torch.Tensor]:
    """IMP, the paper's baseline: each channel's filter l1 norm (no data)."""
    return filter_l1(model, layers)


# Revision 2 (fcfd031): merged BatchNorms are skipped, where zennit's canonizer left them computing
# x / sqrt(1 + eps); the relevance of the lowest layers moves by up to a few percent.
@criterion("lrp", revision=2)
def relevance(model: nn.Module, layers: list[str], context: ScoringContext) -> dict[str, torch.Tensor]:
    """The paper's criterion: LRP relevance of each channel, summed over P."""
    settings = context.settings
    place(model, context.device)
    return channel_relevance(model, context.p_batches(), composite=settings.composite,
                             target=str(settings.target), epsilon=settings.epsilon, layers=layers,
                             device=context.device)
