"""When a device can work: its profile's availability cycle, or a trace of when it was online.

Two schedules answer the same two questions for the SimPy window (:mod:`swarm.nodes.device`) and the
server's participation draw (:mod:`swarm.server.participation`): is the device available at time
``t`` and until when (:meth:`state_at`), and how many seconds of ``[start, end)`` it is available
(:meth:`seconds`).

* :class:`Cycle` -- the profile's ``availability`` share of every ``availability_cycle_s``, shifted
  by the node's phase (the default).
* :class:`Online` -- the intervals a trace gives the node (``fleet.availability.trace``): it is
  available exactly inside them, never outside.

A trace is a CSV with the header ``who,start_s,end_s``: one row per online interval, in simulated
seconds from the run's start; ``who`` is a node's partition number (its own rows) or a device
profile's name (the rows of every node of that class without rows of its own). Each row is checked
(:func:`read_trace`); a malformed trace is one line naming the file, the line and what is wrong.
No torch.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from swarm.nodes.errors import SwarmError

TRACE_COLUMNS = ("who", "start_s", "end_s")
Intervals = list[list[float]]  # [[start_s, end_s], ...], sorted and disjoint


@dataclass(frozen=True)
class Cycle:
    """Available ``share`` of every ``cycle_s`` seconds, from ``-phase_s`` on."""

    share: float
    cycle_s: float
    phase_s: float = 0.0

    def state_at(self, t: float) -> tuple[bool, float]:
        """(available at ``t``, the time that changes)."""
        if self.share >= 1.0:
            return True, math.inf
        if self.share <= 0.0:
            return False, math.inf
        on_s = self.share * self.cycle_s
        position = (t + self.phase_s) % self.cycle_s
        return (True, t + on_s - position) if position < on_s else (False, t + self.cycle_s - position)

    def seconds(self, start: float, end: float) -> float:
        if self.share >= 1.0:
            return end - start
        on_s = self.share * self.cycle_s

        def up_to(t: float) -> float:  # available seconds in [-phase, t)
            shifted = t + self.phase_s
            return math.floor(shifted / self.cycle_s) * on_s + min(shifted % self.cycle_s, on_s)

        return up_to(end) - up_to(start)


@dataclass(frozen=True)
class Online:
    """Available exactly inside ``intervals`` (sorted, disjoint ``[start, end)`` pairs)."""

    intervals: tuple[tuple[float, float], ...]

    def state_at(self, t: float) -> tuple[bool, float]:
        starts = [s for s, _ in self.intervals]
        i = bisect.bisect_right(starts, t) - 1
        if i >= 0 and t < self.intervals[i][1]:
            return True, self.intervals[i][1]
        return False, (self.intervals[i + 1][0] if i + 1 < len(self.intervals) else math.inf)

    def seconds(self, start: float, end: float) -> float:
        return sum(max(0.0, min(e, end) - max(s, start)) for s, e in self.intervals)


Schedule = Cycle | Online


def schedule(share: float, cycle_s: float, phase_s: float, online: Sequence[Sequence[float]] | None) -> Schedule:
    """A node's schedule: its trace intervals when it has them, else its profile's cycle."""
    if online is not None:
        return Online(tuple((float(s), float(e)) for s, e in online))
    return Cycle(share, cycle_s, phase_s)


def trace_digest(path: Path) -> str:
    """What keys a fleet run on a trace: its contents (the path may move)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def read_trace(path: Path) -> dict[str, Intervals]:
    """A trace's intervals by ``who`` (see the module docstring), every row checked: the header,
    numbers that are finite with 0 <= start < end, no overlap within one ``who``."""
    path = Path(path)
    where = f"fleet.availability.trace={path}"
    if not path.is_file():
        raise SwarmError(f"{where}: no such file")
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or tuple(h.strip() for h in header) != TRACE_COLUMNS:
                raise SwarmError(f"{where}, line 1: the header must be {','.join(TRACE_COLUMNS)}, not "
                                 f"{','.join(header or []) or 'empty'}")
            out: dict[str, Intervals] = {}
            for line, row in enumerate(reader, start=2):
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != 3:
                    raise SwarmError(f"{where}, line {line}: {len(row)} fields, need 3 (who,start_s,end_s)")
                who = row[0].strip()
                try:
                    start, end = float(row[1]), float(row[2])
                except ValueError:
                    raise SwarmError(f"{where}, line {line}: start_s and end_s must be numbers, not "
                                     f"{row[1].strip()!r}, {row[2].strip()!r}") from None
                if not who:
                    raise SwarmError(f"{where}, line {line}: 'who' is empty (a node number or a profile name)")
                if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
                    raise SwarmError(f"{where}, line {line}: need 0 <= start_s < end_s, finite; got {start:g}, {end:g}")
                out.setdefault(who, []).append([start, end])
    except UnicodeDecodeError:
        raise SwarmError(f"{where}: not a text CSV file") from None
    if not out:
        raise SwarmError(f"{where}: no intervals (a row per online interval after the header)")
    for who, intervals in out.items():
        intervals.sort()
        for (_, end), (start, _) in zip(intervals, intervals[1:]):
            if start < end:
                raise SwarmError(f"{where}: the intervals of '{who}' overlap (one starts at {start:g} "
                                 f"before the one before it ends at {end:g})")
    return out


def node_intervals(trace: Mapping[str, Intervals], partition: int, profile: str) -> Intervals:
    """A node's intervals from a trace: its own rows, else its device class's; an error if neither."""
    for who in (str(partition), profile):
        if who in trace:
            return [list(pair) for pair in trace[who]]
    raise SwarmError(f"fleet.availability.trace has no rows for node {partition} nor for its device class "
                     f"'{profile}': every node needs its own rows or its class's")
