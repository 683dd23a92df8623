"""The fleet's strategies, by name: what the server does with the nodes' work between windows,
and what a node's training adds for it.

A strategy is one class with both sides. The server's: what travels (``shares_model``: the nodes
send their weights back after every window and are sent the shared model before the next;
otherwise the model travels once and each node keeps adapting its own copy) and how a window's
replies become the next shared model (:meth:`FleetStrategy.begin`, :meth:`~FleetStrategy.add` for
each reply in partition order, :meth:`~FleetStrategy.end`); under a strategy that shares a model,
the server scores it after every window. The node's: a term its loss adds at every step
(:meth:`FleetStrategy.penalty`, FedProx's proximal term). It lives with the nodes, the floor both
sides stand on.

Add one: a subclass of :class:`FleetStrategy` registered with ``@strategy("name")``, in this module
or any module imported before the run (by the nodes' processes too, when it has a node side);
``fleet.strategy=name`` then selects it (:func:`check_strategy` runs before any data is read).
Registration order is the order the choices are listed in.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable, ClassVar, Iterator

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg
from flwr.serverapp.strategy import FedMedian, FedTrimmedAvg
from flwr.serverapp.strategy.multikrum import select_multikrum
from torch import nn

from swarm.nodes.choices import Aggregate
from swarm.nodes.errors import SwarmError
from swarm.nodes.settings import FleetConfig

Weights = dict[str, torch.Tensor]


class FleetStrategy:
    """The default: nothing is shared; every node adapts the model it received once."""

    name: ClassVar[str]
    shares_model: ClassVar[bool] = False
    has_penalty: ClassVar[bool] = False  # its nodes' loss adds :meth:`penalty`

    def __init__(self, fleet: FleetConfig, head: str | None = None) -> None:
        # ``fleet``: the run's fleet settings (a strategy's own options among them). ``head``: the
        # output layer's name when nodes leave the rows of classes they did not see as sent (the
        # masked loss), so that an aggregate can treat those rows apart.
        self.fleet, self.head = fleet, head

    def penalty(self, model: nn.Module, start: Weights) -> torch.Tensor | None:
        """The node's side: what its loss adds at every step, given the parameters the window
        started from (``start``, on the model's device); None: nothing (every strategy here but
        FedProx)."""
        return None

    def begin(self, shared: Weights) -> None:
        """A window starts; ``shared`` is what the nodes were sent."""

    def add(self, arrays: ArrayRecord, weight: float, examples_per_output: np.ndarray | None) -> None:
        """One node's weights after the window, with the examples it trained on (in all, and per
        output); only nodes that trained are added."""

    def end(self, shared: Weights) -> Weights:
        """The shared model for the next window (``shared`` when nothing was added)."""
        return shared


STRATEGIES: dict[str, type[FleetStrategy]] = {}


def strategy(name: str) -> Callable[[type[FleetStrategy]], type[FleetStrategy]]:
    """Register a strategy under ``name`` (as the pruning criteria register themselves)."""
    def register(cls: type[FleetStrategy]) -> type[FleetStrategy]:
        cls.name = name
        STRATEGIES[name] = cls
        return cls
    return register


def check_strategy(name: str) -> None:
    """``fleet.strategy`` names a registered strategy: one :class:`SwarmError` line otherwise."""
    if name not in STRATEGIES:
        raise SwarmError(f"fleet.strategy={name}: choose one of {', '.join(STRATEGIES)}")


def make_strategy(name: str, fleet: FleetConfig, head: str | None = None) -> FleetStrategy:
    check_strategy(name)
    return STRATEGIES[name](fleet, head)


@strategy("local")
class Local(FleetStrategy):
    """Each node keeps adapting its own copy; nothing returns to the server."""


@strategy("fedavg")
class FedAvg(FleetStrategy):
    """FedAvg (McMahan et al., AISTATS 2017, https://arxiv.org/abs/1602.05629): the nodes' weights
    averaged, each weighted by the examples it trained on this window (:class:`RunningFedAvg`);
    or, by ``fleet.aggregate``, each value's median or trimmed mean over the nodes
    (:class:`RobustAggregate`), or the mean of the updates Multi-Krum keeps (:class:`MultiKrum`).
    ``fleet.clip_norm``: each update's L2 norm (its distance from the model sent) is clipped to it
    first (:func:`clip_update`)."""

    shares_model = True

    def begin(self, shared: Weights) -> None:
        self.sent = shared
        rule, trim = self.fleet.aggregate, self.fleet.trim_fraction
        self.running = (RunningFedAvg(shared, head=self.head) if rule == Aggregate.mean
                        else MultiKrum(shared, trim, head=self.head) if rule == Aggregate.multikrum
                        else RobustAggregate(shared, rule, trim, head=self.head))

    def add(self, arrays: ArrayRecord, weight: float, examples_per_output: np.ndarray | None) -> None:
        if self.fleet.clip_norm is not None:
            arrays = clip_update(arrays, self.sent, self.fleet.clip_norm)
        self.running.add(arrays, weight, examples_per_output)

    def end(self, shared: Weights) -> Weights:
        return self.running.result() if self.running.count else shared


@strategy("fedprox")
class FedProx(FedAvg):
    """FedProx (Li et al., MLSys 2020, https://arxiv.org/abs/1812.06127): FedAvg's aggregation, and
    every node's loss adds the proximal term (mu / 2) ||w - w_t||^2 with w_t the model the window
    started from (the shared model it was sent), mu = ``fleet.prox_mu``: a node's skewed share of F
    pulls the weights less far from what the fleet agreed. With mu = 0 it is FedAvg, step for step."""

    has_penalty = True

    def penalty(self, model: nn.Module, start: Weights) -> torch.Tensor | None:
        mu = self.fleet.prox_mu
        if not mu:
            return None
        return (mu / 2) * sum(((parameter - start[name]) ** 2).sum() for name, parameter in model.named_parameters())


class RunningFedAvg:
    """FedAvg folded in as replies arrive, so the server holds a chunk of replies and a few partial
    averages, not every node's weights (at 1,000 nodes that was the ServerApp's only memory that
    grew with the fleet). Flower's own FedAvg strategy (its public ``aggregate_train``) averages
    each chunk of ``chunk`` replies, then the chunks' averages weighted by their totals: the same
    weighted mean, up to
    float rounding. Replies are added in partition order, so the result does not depend on the
    order in which nodes answered. Integer buffers (BatchNorm's batch counter) return to the sent
    model's dtype.

    ``head``: the output layer's name under the masked loss. A node then leaves the row of every
    class its batches lacked exactly as it was sent, so the plain average would shrink what the
    nodes that have a class learned of it by the share of nodes that do not (on a skewed split,
    most). Each output's row is then averaged over the nodes that trained it, weighted by their
    examples of it -- each parameter over the clients that updated it, as HeteroFL does (Diao et
    al., ICLR 2021, https://arxiv.org/abs/2010.01264); a row no node trained keeps the sent value."""

    def __init__(self, sent: Weights, head: str | None = None, chunk: int = 32) -> None:
        self.sent, self.chunk_size = sent, chunk
        self.head_keys = [k for k in (f"{head}.weight", f"{head}.bias") if k in sent] if head else []
        self.chunk: list[tuple[ArrayRecord, float]] = []
        self.partials: list[tuple[ArrayRecord, float]] = []
        self.head_sums: dict[str, torch.Tensor] = {}  # sum over nodes of examples x row, per output
        self.examples: torch.Tensor | None = None  # examples per output, summed over nodes
        self.count = 0  # replies added

    def add(self, arrays: ArrayRecord, weight: float, examples_per_output: np.ndarray | None = None) -> None:
        if self.head_keys:
            examples = torch.as_tensor(examples_per_output, dtype=torch.float64)
            self.examples = examples if self.examples is None else self.examples + examples
            for key in self.head_keys:
                rows = torch.as_tensor(arrays[key].numpy(), dtype=torch.float64)
                weighted = rows * examples.view((-1,) + (1,) * (rows.dim() - 1))
                self.head_sums[key] = weighted if key not in self.head_sums else self.head_sums[key] + weighted
        self.chunk.append((arrays, float(weight)))
        self.count += 1
        if len(self.chunk) >= self.chunk_size:
            self.partials.append(_weighted_mean(self.chunk))
            self.chunk = []

    def result(self) -> Weights:
        parts = self.partials + ([_weighted_mean(self.chunk)] if self.chunk else [])
        if not parts:
            raise SwarmError("FedAvg of no replies")
        state = (parts[0][0] if len(parts) == 1 else _weighted_mean(parts)[0]).to_torch_state_dict()
        for key in self.head_keys:
            total = self.examples.view((-1,) + (1,) * (self.head_sums[key].dim() - 1))
            mixed = self.head_sums[key] / total.clamp(min=1)
            untrained = self.examples == 0
            mixed[untrained] = self.sent[key].to(torch.float64)[untrained]
            state[key] = mixed
        return {key: value.to(self.sent[key].dtype) for key, value in state.items()}


# Flower's FedAvg, used for its aggregation only (the fleet's loop is ours: windows, deadlines,
# checks); weighted by the examples a node trained on, which the server puts in each bundle.
_FLOWER_FEDAVG = FlowerFedAvg(weighted_by_key="examples")
_FLOWER_LOG = logging.getLogger("flwr")  # Flower's logger, which logs every aggregate_train call
log = logging.getLogger(__name__)


def _weighted_mean(records: list[tuple[ArrayRecord, float]]) -> tuple[ArrayRecord, float]:
    """Flower's FedAvg of ``(arrays, weight)`` pairs, with the pairs' total weight: each pair as the
    train reply Flower's strategy aggregates (an ArrayRecord and a MetricRecord with the weight)."""
    replies = [Message(RecordDict({"arrays": arrays, "metrics": MetricRecord({"examples": weight})}),
                       dst_node_id=0, message_type=MessageType.TRAIN) for arrays, weight in records]
    with _quiet_flower():
        arrays, _ = _FLOWER_FEDAVG.aggregate_train(0, replies)
    return arrays, sum(weight for _, weight in records)


@contextmanager
def _quiet_flower() -> Iterator[None]:
    """Flower's strategies log a line per ``aggregate_train`` call: not one per chunk or output row
    in the fleet's log."""
    level = _FLOWER_LOG.level
    _FLOWER_LOG.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        _FLOWER_LOG.setLevel(level)


def clip_update(arrays: ArrayRecord, sent: Weights, clip_norm: float) -> ArrayRecord:
    """``arrays`` moved toward ``sent`` until the update (every floating array's difference from
    it, as one vector) has an L2 norm of at most ``clip_norm``; integer buffers as they came.
    Flower clips updates only inside its differential-privacy wrappers, which also add noise and
    require equal weights, so the fleet clips here."""
    state = arrays.to_torch_state_dict()
    update = {k: v - sent[k] for k, v in state.items() if v.is_floating_point()}
    norm = float(torch.sqrt(sum((u.double() ** 2).sum() for u in update.values())))
    if norm <= clip_norm:
        return arrays
    scale = clip_norm / norm
    return ArrayRecord({k: (sent[k] + update[k] * scale) if k in update else v for k, v in state.items()})


class RobustAggregate:
    """Each value's median, or its trimmed mean (``trim_fraction`` of the nodes cut from each end),
    over the window's updates, by Flower's FedMedian and FedTrimmedAvg (their public
    ``aggregate_train``): a minority of bad updates cannot move it far (Yin et al., ICML 2018,
    https://arxiv.org/abs/1803.01498). Unweighted: a node's claim of how much it trained buys it
    no more say. It holds every reply of the window until the end (the mean folds them in as
    they come), so the server's memory grows with the fleet: about 0.4 MB a node for the default
    model.

    ``head`` (the masked loss): each output's row is aggregated over the nodes that trained that
    output (a node leaves the others as sent), as :class:`RunningFedAvg` does; a row no node
    trained keeps the sent value."""

    def __init__(self, sent: Weights, rule: Aggregate, trim_fraction: float, head: str | None = None) -> None:
        self.sent = sent
        self.flower = FedMedian() if rule == Aggregate.median else FedTrimmedAvg(beta=trim_fraction)
        self.head_keys = [k for k in (f"{head}.weight", f"{head}.bias") if k in sent] if head else []
        self.replies: list[tuple[ArrayRecord, np.ndarray | None]] = []

    @property
    def count(self) -> int:
        return len(self.replies)

    def add(self, arrays: ArrayRecord, weight: float, examples_per_output: np.ndarray | None = None) -> None:
        self.replies.append((arrays, examples_per_output))

    def _aggregate(self, records: list[ArrayRecord]) -> dict[str, torch.Tensor]:
        """Flower's rule over ``records`` (each array name's values across them)."""
        replies = [Message(RecordDict({"arrays": record, "metrics": MetricRecord({"num-examples": 1})}),
                           dst_node_id=0, message_type=MessageType.TRAIN) for record in records]
        with _quiet_flower():
            arrays, _ = self.flower.aggregate_train(0, replies)
        return arrays.to_torch_state_dict()

    def result(self) -> Weights:
        if not self.replies:
            raise SwarmError(f"{type(self.flower).__name__} of no replies")
        # The replies' arrays as they came (Flower's rule takes them out of the records it is given).
        state = self._aggregate([ArrayRecord({k: arrays[k] for k in arrays.keys() if k not in self.head_keys})
                                 for arrays, _ in self.replies])
        for key in self.head_keys:
            rows = self.sent[key].detach().clone().to(torch.float64)
            heads = [(arrays[key].numpy(), examples) for arrays, examples in self.replies]
            for output in range(rows.shape[0]):
                trained = [ArrayRecord({"row": Array(np.asarray(head[output]))})
                           for head, examples in heads if examples is not None and examples[output] > 0]
                if trained:
                    rows[output] = self._aggregate(trained)["row"]
            state[key] = rows
        return {key: state[key].to(self.sent[key].dtype) for key in self.sent}


class MultiKrum:
    """Multi-Krum (Blanchard et al., NeurIPS 2017, https://arxiv.org/abs/1703.02246): with f =
    ``trim_fraction`` of the n nodes assumed hostile, each update is scored by the sum of its
    squared distances to its n - f - 2 nearest, and the n - f with the lowest scores are averaged
    as the mean averages (:class:`RunningFedAvg`: weighted by the examples trained, as capped; under
    the masked loss each head row over the kept nodes that trained it). A poisoned update far from
    the rest is dropped whole, and what every honest node learned, its rare classes included, is
    kept, where a coordinate-wise rule cuts the extreme values of every node (docs/robustness.md).

    The selection is Flower's public ``select_multikrum``, given each update's floating arrays as
    float64 differences from the model sent: on the weights themselves, in float32, the small
    differences between nodes would be lost to cancellation in Flower's ``|x|^2 + |y|^2 - 2 x.y``,
    and BatchNorm's batch counter (an integer that grows with the steps taken) would outweigh them.
    Like :class:`RobustAggregate` it holds every reply of the window until its end."""

    def __init__(self, sent: Weights, trim_fraction: float, head: str | None = None) -> None:
        self.sent, self.trim_fraction, self.head = sent, trim_fraction, head
        self.replies: list[tuple[ArrayRecord, float, np.ndarray | None]] = []
        self.kept: list[int] = []  # the replies (in the order added) the last result averaged

    @property
    def count(self) -> int:
        return len(self.replies)

    def add(self, arrays: ArrayRecord, weight: float, examples_per_output: np.ndarray | None = None) -> None:
        self.replies.append((arrays, weight, examples_per_output))

    def _selected(self) -> list[int]:
        nodes = len(self.replies)
        hostile = int(self.trim_fraction * nodes)
        if hostile == 0 or nodes - hostile - 2 < 1:  # too few nodes for Krum's neighbourhoods: keep all
            return list(range(nodes))
        floating = [k for k, v in self.sent.items() if v.is_floating_point()]
        updates = [RecordDict({"update": ArrayRecord(
            {k: Array(arrays[k].numpy().astype(np.float64) - self.sent[k].double().numpy()) for k in floating})})
            for arrays, _, _ in self.replies]
        chosen = {id(content) for content in select_multikrum(updates, hostile, nodes - hostile)}
        return [i for i, content in enumerate(updates) if id(content) in chosen]

    def result(self) -> Weights:
        if not self.replies:
            raise SwarmError("Multi-Krum of no replies")
        self.kept = self._selected()
        log.info("multikrum: kept %d of %d updates", len(self.kept), len(self.replies))
        mean = RunningFedAvg(self.sent, head=self.head)
        for i in self.kept:
            mean.add(*self.replies[i])
        return mean.result()
