"""The fleet plan: what every node is, what data it will see, and when. Written once, read by all.

The server side draws the plan from the seed (device profile, drift time, availability phase and
non-IID share of F per node; :mod:`swarm.server.plan_drawing`) and writes it to ``<run dir>/fleet_plan.json``.
Nodes never read it: ``swarm.partition`` writes each node's data folder from it
(:mod:`swarm.nodes.local_data`), and the server sends each node its part (:class:`NodeTask`) with every
message. This module is the plan's one definition and the fleet's enumerated settings; it imports
no torch, so that the config schema (:mod:`swarm.schema`) and the simulation's caller, which
reads plans for its report, stay without it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Optional, Mapping

import numpy as np

from swarm.nodes import io
from swarm.nodes.errors import SwarmError
from swarm.nodes.settings import FaultsConfig, FleetConfig, from_plain, to_plain


@dataclass
class NodePlan:
    partition: int
    profile: str
    drift_s: float
    phase_s: float
    f_indices: list[int]  # positions in F's training split
    seed: int
    f_events: list[int] = field(default_factory=list)  # drift event of each F sample (empty: all 0)
    fault: str = ""  # an injected fault (fleet.faults): crash, late, corrupt, poison or inflate; "" for none
    fault_window: int = -1  # the window in which it strikes (an attack: every window)
    # When it is online, from fleet.availability.trace (replacing its profile's cycle and phase_s);
    # None: its profile's cycle.
    online: Optional[list[list[float]]] = None

    def fault_in(self, window: int) -> str:
        """The fault injected into this node's ``window`` ("" for none): a fault strikes once, an
        attack (:data:`ATTACKS`) in every window, as an adversary would."""
        return self.fault if window == self.fault_window or self.fault in ATTACKS else ""

    def event_starts(self, gap_s: float, events: int) -> list[float]:
        """When each of this node's drift events begins (the first at its drift time)."""
        return [self.drift_s + k * gap_s for k in range(events)]


# What of a plan decides a node's data (and so its data folder): the scenario and how it is built,
# and the fleet settings that shape the stream and the evaluation sets.
DATA_CONFIG = ("scenario", "pretrain", "data", "seed")
DATA_FLEET = ("stream_rate", "eval_samples", "replay")


@dataclass
class NodeTask:
    """Everything a node needs from the plan, sent in every ``train.adapt`` message (a ConfigRecord
    of JSON strings, :meth:`to_config`): its plan entry, the fleet settings, the run's shape and the
    pruned architecture. With its own data folder, that is all a node knows of the run; it never
    opens a file the server names."""

    node: NodePlan
    fleet: FleetConfig
    continual: bool
    window_s: float
    windows: int
    events: int  # drift events (1: F arrives at once)
    event_gap_s: float
    architecture: dict[str, Any]
    plan_id: str  # names the node's state for this plan (hex digits only)
    data_id: str  # the data folder this node must hold (:meth:`FleetPlan.data_id`)
    undeployed_outputs: list[int] = field(default_factory=list)  # :attr:`FleetPlan.undeployed_outputs`
    channel_relevance: dict[str, list[float]] = field(default_factory=dict)  # :attr:`FleetPlan.channel_relevance`
    # ``fleet`` as JSON, when the plan has it already (typing to and from JSON takes tens of ms).
    fleet_json: str = field(default="", repr=False, compare=False)

    def to_config(self) -> dict[str, str]:
        return {"node": json.dumps(asdict(self.node)), "fleet": self.fleet_json or json.dumps(to_plain(self.fleet)),
                "run": json.dumps({"continual": self.continual, "window_s": self.window_s, "windows": self.windows,
                                   "events": self.events, "event_gap_s": self.event_gap_s,
                                   "plan_id": self.plan_id, "data_id": self.data_id,
                                   "undeployed_outputs": self.undeployed_outputs,
                                   "channel_relevance": self.channel_relevance}),
                "architecture": json.dumps(self.architecture)}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> NodeTask:
        """Parse a message's task; anything missing or malformed is a ``ValueError`` naming it."""
        try:
            node = NodePlan(**json.loads(config["node"]))
            run = json.loads(config["run"])
            task = cls(node=node, fleet=_typed_fleet(str(config["fleet"])), continual=bool(run["continual"]),
                       window_s=float(run["window_s"]), windows=int(run["windows"]), events=int(run["events"]),
                       event_gap_s=float(run["event_gap_s"]), architecture=dict(json.loads(config["architecture"])),
                       plan_id=str(run["plan_id"]), data_id=str(run["data_id"]),
                       undeployed_outputs=[int(o) for o in run.get("undeployed_outputs", [])],
                       channel_relevance={str(name): [float(v) for v in values]
                                          for name, values in dict(run.get("channel_relevance", {})).items()})
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"the message's task is malformed: {type(error).__name__}: {error}") from None
        if not re.fullmatch(r"[0-9a-f]{8,64}", task.plan_id):
            raise ValueError(f"the message's plan_id {task.plan_id[:80]!r} is not a hex digest")
        return task


@functools.lru_cache(maxsize=8)
def _typed_fleet(text: str) -> FleetConfig:
    """A message's ``fleet`` settings, typed (once per text: every message of a plan carries the same)."""
    return from_plain(FleetConfig, json.loads(text))


@dataclass
class FleetPlan:
    run_dir: str
    config: dict[str, Any]  # the run's settings as recorded (scenario, data, fleet, ...): read as :attr:`fleet`
    checkpoint: str  # the coordinator checkpoint the fleet starts from
    architecture: dict[str, Any]  # its shape, so nodes can build it and take the weights by message
    window_s: float
    windows: int
    nodes: list[NodePlan] = field(default_factory=list)
    f_tasks: list[list[int]] = field(default_factory=list)  # the groups of F each drift event brings
    event_gap_s: float = 0.0  # between a node's drift events
    reset_outputs: list[int] = field(default_factory=list)  # outputs given a neutral start before sending
    # Outputs no class of the deployed task (P ∪ F) maps to: T's classes, kept as the paper keeps
    # every output. Under ``fleet.loss=masked`` they always compete, as in the paper's adaptation.
    undeployed_outputs: list[int] = field(default_factory=list)
    continual: bool = False  # the scenario's mode: continual (P ∪ F with replay of P), or finetune (F)
    seed: int = 0  # the run's seed, which every draw of the plan and the fleet starts from
    # The size of P's training split, which the nodes' streams draw from: with it the server draws
    # each node's stream as the node does, and bounds the steps a node may claim (0: not recorded).
    p_train_size: int = 0
    # Under fleet.update=relevant: each convolution's per-channel LRP relevance over P for the model
    # sent, which the nodes choose what to train by (swarm.nodes.selection); else empty.
    channel_relevance: dict[str, list[float]] = field(default_factory=dict)

    @cached_property
    def fleet(self) -> FleetConfig:
        """The fleet's settings, typed again from the plan file."""
        return from_plain(FleetConfig, self.config["fleet"])

    @cached_property
    def _fleet_plain(self) -> dict[str, Any]:
        return to_plain(self.fleet)

    @cached_property
    def _fleet_json(self) -> str:
        return json.dumps(self._fleet_plain)

    def node(self, partition: int) -> NodePlan:
        return self.nodes[partition]

    def data_id(self, partition: int) -> str:
        """A digest of what decides node ``partition``'s data: a data folder written for another
        plan, seed or scenario is refused by the node with this, rather than silently used."""
        node = {k: v for k, v in asdict(self.node(partition)).items() if k not in ("fault", "fault_window")}
        fleet = self._fleet_plain
        blob = {"config": {k: self.config.get(k) for k in DATA_CONFIG},
                "fleet": {k: fleet[k] for k in DATA_FLEET}, "node": node,
                "events": max(len(self.f_tasks), 1), "event_gap_s": self.event_gap_s}
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]

    def evaluation_id(self) -> str:
        """A digest of what decides the test subsets (the scenario, its data, ``fleet.eval_samples``):
        the server's evaluation folder must carry it (:func:`swarm.nodes.local_data.load_evaluation_set`)."""
        blob = {"config": {k: self.config.get(k) for k in DATA_CONFIG}, "eval_samples": self.fleet.eval_samples}
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]

    def task(self, partition: int, plan_id: str) -> NodeTask:
        """What the server sends node ``partition`` (``plan_id``: the digest of the plan file)."""
        return NodeTask(node=self.node(partition), fleet=self.fleet, fleet_json=self._fleet_json, continual=self.continual,
                        window_s=self.window_s, windows=self.windows, events=max(len(self.f_tasks), 1),
                        event_gap_s=self.event_gap_s, architecture=dict(self.architecture), plan_id=plan_id,
                        data_id=self.data_id(partition), undeployed_outputs=list(self.undeployed_outputs),
                        channel_relevance=self.channel_relevance)

    def save(self, path: Path) -> None:
        io.write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> FleetPlan:
        data = json.loads(Path(path).read_text())
        data["nodes"] = [NodePlan(**n) for n in data["nodes"]]
        return cls(**data)


ATTACKS = ("poison", "inflate")  # a node's deliberate misbehaviour, in every window
FAULTS = ("crash", "late", "corrupt", *ATTACKS)


def check_faults(faults: FaultsConfig) -> dict[str, float]:
    """``fleet.faults`` as shares of the fleet per kind (each in [0, 1], checked with the config);
    shares that add up to more than the fleet are an error."""
    shares = to_plain(faults)
    if sum(shares.values()) > 1.0 + 1e-9:
        raise SwarmError(f"fleet.faults add up to {sum(shares.values()):g} of the fleet; at most 1 (one fault per node)")
    return shares


def draw_faults(nodes: list[NodePlan], faults: Mapping[str, float], windows: int, seed: int) -> None:
    """Give ``round(share x fleet)`` distinct nodes each kind of fault, each in a window drawn
    uniformly, from ``seed`` with a generator of its own (a plan without faults is unchanged)."""
    if not any(faults.values()):
        return
    rng = np.random.default_rng((seed, 0xFA17))
    order = rng.permutation(len(nodes))
    taken = 0
    for kind in FAULTS:
        count = int(round(faults.get(kind, 0.0) * len(nodes)))
        for position in order[taken:taken + count]:
            nodes[int(position)].fault, nodes[int(position)].fault_window = kind, int(rng.integers(0, windows))
        taken += count


def split_tasks(num_groups: int, events: int) -> list[list[int]]:
    """F's groups in order, split into ``events`` consecutive tasks (one per drift event)."""
    if not 1 <= events <= num_groups:
        raise SwarmError(f"fleet.drift.events={events}: F has {num_groups} groups (classes or domains) to bring "
                         f"in 1..{num_groups} drift events")
    return [part.tolist() for part in np.array_split(np.arange(num_groups), events)]
