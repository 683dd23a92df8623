"""Partial participation (``fleet.participation``): which nodes take part in a window.

As Flower's strategies sample a fraction of the connected clients for each round, the server
draws, for every window, the nodes that train in it from those available in it (their device's
availability meets the window: the same cycle and phase, or trace, the node's SimPy model applies). The
draw depends only on the plan's seed, the window and the nodes still in the fleet, so a run that is
killed and resumed draws the same nodes. A node left out neither trains nor reports that window;
its row says why (``not_selected``).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from swarm.nodes.device import available_seconds, profile_of
from swarm.nodes.fleet_plan import FleetPlan

DRAW = 0x9A27  # the participation draw's own stream, apart from the plan's and the faults'


def everyone(plan: FleetPlan) -> bool:
    """``fleet.participation`` is 1.0: every node takes part in every window (no draw at all)."""
    share = plan.fleet.participation
    return isinstance(share, float) and share == 1.0


def available_in(plan: FleetPlan, window: int, partitions: Iterable[int]) -> list[int]:
    """The ``partitions`` whose device is available at some time during ``window``."""
    start = window * plan.window_s
    return [p for p in sorted(partitions)
            if available_seconds(profile_of(plan.fleet, plan.node(p).profile), start, start + plan.window_s,
                                 plan.node(p).phase_s, plan.node(p).online) > 0]


def draw_participants(plan: FleetPlan, window: int, partitions: Iterable[int]) -> dict[int, str]:
    """Which of ``partitions`` (the nodes still in the fleet) take part in ``window``: every
    partition mapped to "" (takes part) or to why it does not."""
    partitions = sorted(partitions)
    if everyone(plan):
        return {p: "" for p in partitions}
    available = available_in(plan, window, partitions)
    share = plan.fleet.participation
    count = min(len(available), max(1, int(share * len(available))) if isinstance(share, float) else int(share))
    rng = np.random.default_rng((plan.seed, DRAW, window))
    chosen = set(rng.choice(available, size=count, replace=False).tolist()) if count else set()
    said = f"fleet.participation={share:g}: {count} of the {len(available)} nodes available in this window"
    return {p: "" if p in chosen else (f"not drawn ({said})" if p in available else f"offline all window ({said})")
            for p in partitions}
