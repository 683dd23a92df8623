"""The fleet's protocol, defined once: a node-window row, its statuses, and the run folder's files.

Nodes build a :class:`WindowRow` and send its :meth:`~WindowRow.metrics` in their reply; the server
checks the reply against the same field groups (:mod:`swarm.server.replies`), writes the rows to
``nodes.csv`` with :func:`write_rows`; reports, results and the fleet cache read them back with
:func:`read_rows`. Every module that names a file of a run folder takes the name from here.

Statuses a node reports about its own window: ``ok`` (it trained what its budget granted),
``budget_exhausted``, ``data_exhausted``, ``does_not_fit``, ``unavailable``, ``not_received`` (the
model did not arrive over its link inside the window: it trained nothing and is sent the model
again), ``failed`` (its app
raised, or the server found its reply invalid: the node is out for the rest of the run), ``late``
(its answer missed the window's deadline: its result is not used, and it rejoins the next window;
on real devices the server writes it when the deadline passes, in simulation the simulated device
reports it). Statuses the server writes: ``received`` (the model as received, window -1) and, in
simulation only, ``not_simulated`` (the engine never served that node's window: a fact about this
machine, not about the device). Rows with a status in :data:`NO_RESULT` carry no measurement and
are never averaged; :data:`DEVICE_FAULTS` are the ones that make a run exit 1.
"""

from __future__ import annotations

import csv
import io as text_io
import math
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from swarm.nodes import io


class Status(StrEnum):
    """What became of one node in one window (equal to its name as a string, as written in CSV)."""

    ok = "ok"
    budget_exhausted = "budget_exhausted"
    data_exhausted = "data_exhausted"
    does_not_fit = "does_not_fit"
    unavailable = "unavailable"
    failed = "failed"
    late = "late"
    received = "received"
    not_simulated = "not_simulated"
    not_selected = "not_selected"  # not drawn to take part in the window (fleet.participation)
    not_received = "not_received"  # the model did not arrive over the device's link inside the window


RECEIVED_WINDOW = -1  # the row of the model as received, before any window
NODE_STATUSES = (Status.ok, Status.budget_exhausted, Status.data_exhausted, Status.does_not_fit,
                 Status.unavailable, Status.not_received, Status.failed, Status.late)  # what a node may report
DEVICE_FAULTS = (Status.failed, Status.late)
NO_RESULT = (Status.failed, Status.late, Status.not_simulated, Status.not_selected)

# The measurement columns, by what they may hold (the server checks replies by these groups).
ACCURACIES = ("acc_P", "acc_F", "acc_PF")  # in [0, 1], or NaN where not measured
# What a window moved over the device's link and what that cost (energy_j includes comm_j), and
# the seconds it computed: the columns a report splits time and energy by.
LINK = ("bytes_down", "bytes_up")  # whole, >= 0
COSTS = ("compute_s", "comm_s", "comm_j")  # finite, >= 0
COUNTS = ("steps", "samples_seen") + LINK  # whole, >= 0
# What one training step needs on the device under the fleet's update mode (fleet.update): its RAM
# in MB (weights held in RAM, gradients, optimizer state, activations, replay) and its FLOPs; NaN in
# a row that asked nothing of the device (the model as received, a failed or late window).
NEEDS = ("memory_mb", "step_flops")
AMOUNTS = ("sim_time_s", "flops", "energy_j") + COSTS + NEEDS  # finite, >= 0 (NaN: see NEEDS)
METRICS = ACCURACIES + ("steps", "samples_seen", "flops", "energy_j")  # what reports summarise per window
# Where a node's wall-clock seconds of one window went, on the machine that runs it (a fact about
# that machine, not a result: kept apart from nodes.csv, in TIMINGS_CSV). ``node_s`` is all of it:
# training, evaluation and the rest (loading its data and state, saving its state).
TIMING = ("train_s", "eval_s", "node_s")


@dataclass
class WindowRow:
    """One row of ``nodes.csv``: one node in one window (or as received, window -1)."""

    node: int
    profile: str
    window: int
    sim_time_s: float
    steps: int
    samples_seen: int
    flops: float
    energy_j: float
    acc_P: float
    acc_F: float
    acc_PF: float
    status: str
    error: str = ""
    acc_F_groups: list[float] = field(default_factory=list)  # accuracy on each group of F (classes or domains)
    compute_s: float = 0.0  # simulated seconds training
    comm_s: float = 0.0  # simulated seconds receiving the model and sending the update
    comm_j: float = 0.0  # the radio's energy, part of energy_j
    bytes_down: int = 0  # the model received (serialized, as the message carried it)
    bytes_up: int = 0  # the update sent
    memory_mb: float = math.nan  # RAM a training step needs on the device (see NEEDS)
    step_flops: float = math.nan  # FLOPs of one training step on it

    @classmethod
    def without_result(cls, node: int, profile: str, window: int, status: str, error: str) -> WindowRow:
        """The server's row for a node whose window it has no result of: every measurement empty."""
        nan = math.nan
        return cls(node, profile, window, nan, nan, nan, nan, nan, nan, nan, nan, status, error,  # type: ignore[arg-type]
                   compute_s=nan, comm_s=nan, comm_j=nan, bytes_down=nan, bytes_up=nan)  # type: ignore[arg-type]

    @classmethod
    def untrained(cls, node: int, profile: str, window: int, status: str, error: str) -> WindowRow:
        """A node's own row for a window it spent nothing on (it failed, or its answer is late):
        zero steps, samples, FLOPs, energy and transfers; no accuracy."""
        nan = math.nan
        return cls(node, profile, window, nan, 0, 0, 0.0, 0.0, nan, nan, nan, status, error)

    def metrics(self) -> dict[str, int | float | list[float]]:
        """The numeric fields, as a reply's MetricRecord carries them."""
        values: dict[str, int | float | list[float]] = {"node": int(self.node), "window": int(self.window)}
        for key in AMOUNTS + ACCURACIES:
            values[key] = float(getattr(self, key))
        for key in COUNTS:
            values[key] = int(getattr(self, key))
        values["acc_F_groups"] = [float(v) for v in self.acc_F_groups]
        return values

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


COLUMNS = tuple(f.name for f in fields(WindowRow))


def _cell(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join("nan" if math.isnan(v) else f"{v:.4f}" for v in value)
    return value


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """``nodes.csv``, atomically: rows sorted by window and node; NaN as an empty cell."""
    buffer = text_io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: (r["window"], r["node"])):
        writer.writerow({k: _cell(row.get(k, "")) for k in COLUMNS})
    io.write_text(path, buffer.getvalue())


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``nodes.csv``, with numbers as numbers (an empty cell is NaN)."""
    rows = []
    with open(path) as f:
        for row in csv.DictReader(f):
            # A nodes.csv written before the link or need columns existed reads them as NaN (not measured).
            for key in METRICS + ("sim_time_s",) + COSTS + LINK + NEEDS:
                row[key] = float(row[key]) if row.get(key) not in (None, "") else math.nan
            row["node"], row["window"] = int(row["node"]), int(row["window"])
            row["acc_F_groups"] = [float(v) for v in (row.get("acc_F_groups") or "").split()]
            rows.append(row)
    return rows


TIMING_COLUMNS = ("window", "node") + TIMING + ("window_wall_s",)


def append_timings(path: Path, rows: list[dict[str, Any]]) -> None:
    """Add one window's rows to ``timings.csv`` (atomically, the file rewritten whole): each node's
    :data:`TIMING` and the window's wall seconds as the server saw them (a resumed run keeps the
    finished windows' rows)."""
    buffer = text_io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(TIMING_COLUMNS), extrasaction="ignore")
    if not path.exists():
        writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{row[k]:.4f}" if isinstance(row[k], float) else row[k]) for k in TIMING_COLUMNS})
    io.write_text(path, (path.read_text() if path.exists() else "") + buffer.getvalue())


def read_timings(path: Path) -> list[dict[str, float]]:
    """The rows of a ``timings.csv``, numbers as numbers."""
    with open(path) as f:
        return [{k: (int(v) if k in ("window", "node") else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]
