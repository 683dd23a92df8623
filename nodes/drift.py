"""Drifting local data: which F samples each node gets, and when its samples arrive.

Node i first sees data like P; from its drift time on (drawn per node from a configurable
distribution) samples of F stream in at ``rate`` per simulated second (a Poisson process). Each
node's share of F is non-IID: for every group of F (a class, or a domain), the group's samples are
split among the nodes in Dirichlet(α) proportions (Hsu et al., 2019); small α gives each node a
few groups, large α an even mix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from swarm.nodes.choices import DriftKind
from swarm.nodes.errors import SwarmError
from swarm.nodes.settings import DriftConfig


def dirichlet_partition(groups: np.ndarray, num_nodes: int, alpha: float, rng: np.random.Generator,
                        min_per_node: int = 1, max_tries: int = 100) -> list[np.ndarray]:
    """Split sample positions 0..len(groups)-1 among ``num_nodes`` nodes, non-IID by group.

    Every node gets at least ``min_per_node`` samples; asking for more nodes than the samples can
    supply is an error that says how many fit.
    """
    groups = np.asarray(groups)
    if num_nodes < 1:
        raise SwarmError("the fleet needs at least one node")
    if alpha <= 0:
        raise SwarmError(f"the Dirichlet alpha must be > 0, not {alpha}")
    fit = len(groups) // max(min_per_node, 1)
    if num_nodes > fit:
        raise SwarmError(f"F has {len(groups)} training samples: at most {fit} nodes fit with "
                         f"{min_per_node} each; lower fleet.nodes or raise the data")
    for _ in range(max_tries):
        shares: list[list[int]] = [[] for _ in range(num_nodes)]
        for group in np.unique(groups):
            members = rng.permutation(np.flatnonzero(groups == group))
            proportions = rng.dirichlet(np.full(num_nodes, alpha))
            cuts = (np.cumsum(proportions)[:-1] * len(members)).astype(int)
            for node, part in enumerate(np.split(members, cuts)):
                shares[node].extend(part.tolist())
        if min(len(s) for s in shares) >= min_per_node:
            return [np.sort(np.asarray(s, dtype=np.int64)) for s in shares]
    # Dirichlet draws this skewed leave some node empty: top the smallest shares up from the largest.
    for node in sorted(range(num_nodes), key=lambda n: len(shares[n])):
        while len(shares[node]) < min_per_node:
            donor = max(range(num_nodes), key=lambda n: len(shares[n]))
            shares[node].append(shares[donor].pop(int(rng.integers(0, len(shares[donor])))))
    return [np.sort(np.asarray(s, dtype=np.int64)) for s in shares]


def drift_times(num_nodes: int, drift: DriftConfig, rng: np.random.Generator) -> np.ndarray:
    """Each node's drift time (simulated seconds) under ``fleet.drift`` (its kind's parameters
    checked with the config: :func:`swarm.schema.check`)."""
    if drift.kind == DriftKind.fixed:
        return np.full(num_nodes, drift.value)
    if drift.kind == DriftKind.uniform:
        return rng.uniform(drift.low, drift.high, num_nodes)
    return rng.exponential(drift.mean, num_nodes)


def arrival_times(start_s: float, count: int, rate_per_s: float, rng: np.random.Generator) -> np.ndarray:
    """Times at which ``count`` samples arrive from ``start_s`` on, as a Poisson process of ``rate_per_s``."""
    if rate_per_s <= 0:
        raise SwarmError(f"the stream rate must be > 0 samples/s, not {rate_per_s}")
    return start_s + np.cumsum(rng.exponential(1.0 / rate_per_s, count))


P, F = 0, 1  # the roles of stream samples


def node_stream(node: Any, *, rate: float, events: int, event_gap_s: float,
                p_train_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrival time, role (``P`` or ``F``) and training-split position of every sample a node's
    stream brings, in time order, from its plan entry ``node`` (a :class:`swarm.nodes.fleet_plan.NodePlan`:
    drift time, share of F and its drift events, drawn from the node's own seed).

    P-like samples (positions drawn uniformly from P's training split) arrive from 0 until the
    drift time; then its share of F, each drift event's samples from that event's start (or when
    the previous event's have all arrived, if later). The node's data folder holds exactly the
    samples this names (:mod:`swarm.nodes.local_data`), and the node replays the same draw."""
    drift_s = node.drift_s
    rng = np.random.default_rng(node.seed)
    expected = int(drift_s * rate * 1.5) + 10
    p_times = arrival_times(0.0, expected, rate, rng)
    p_times = p_times[p_times < drift_s]
    p_indices = rng.integers(0, p_train_size, len(p_times))
    shares = np.asarray(node.f_indices, dtype=np.int64)
    event_of = np.asarray(node.f_events or np.zeros(len(shares)), dtype=np.int64)
    f_positions, f_times, last = [], [], drift_s
    for k, start in enumerate(node.event_starts(event_gap_s, max(events, 1))):
        members = rng.permutation(shares[event_of == k])
        times_k = arrival_times(max(start, last), len(members), rate, rng)
        last = float(times_k[-1]) if len(times_k) else max(start, last)
        f_positions.append(members)
        f_times.append(times_k)
    times = np.concatenate([p_times, *f_times])
    roles = np.concatenate([np.full(len(p_times), P), np.full(sum(len(t) for t in f_times), F)])
    return times, roles, np.concatenate([p_indices, *f_positions]).astype(np.int64)
