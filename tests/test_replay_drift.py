"""Replay policies and the non-IID drifting stream."""

from __future__ import annotations

import numpy as np
import pytest

from swarm.nodes.choices import DriftKind
from swarm.nodes.drift import arrival_times, dirichlet_partition, drift_times
from swarm.nodes.errors import SwarmError
from swarm.nodes.replay import ReplayBuffer
from swarm.nodes.settings import DriftConfig


def test_reservoir_is_a_uniform_sample():
    hits = np.zeros(1000)
    for seed in range(200):
        buffer = ReplayBuffer(50, "reservoir", seed=seed)
        buffer.offer(range(1000), [0] * 1000)
        assert len(buffer) == 50 and len(set(buffer.indices)) == 50
        hits[buffer.indices] += 1
    first, last = hits[:500].sum(), hits[500:].sum()
    assert abs(first - last) / (first + last) < 0.05  # early and late samples equally likely


def test_class_balanced_keeps_a_minority_class():
    labels = [0] * 900 + [1] * 90 + [2] * 10
    order = np.random.default_rng(0).permutation(1000)
    buffer = ReplayBuffer(60, "class_balanced", seed=0)
    buffer.offer(order, [labels[i] for i in order])
    counts = buffer.class_counts()
    assert len(buffer) == 60 and counts[2] == 10  # all of the rare class
    assert abs(counts[0] - counts[1]) <= 1  # the others share the rest evenly
    reservoir = ReplayBuffer(60, "reservoir", seed=0)
    reservoir.offer(order, [labels[i] for i in order])
    assert reservoir.class_counts().get(2, 0) < 5


def test_capacity_all_zero_and_state_round_trip():
    everything = ReplayBuffer(None)
    everything.offer(range(500), [i % 3 for i in range(500)])
    assert len(everything) == 500
    none = ReplayBuffer(0)
    none.offer(range(10), [0] * 10)
    assert len(none) == 0 and len(none.sample(5)) == 0
    buffer = ReplayBuffer(20, "class_balanced", seed=3)
    buffer.offer(range(100), [i % 4 for i in range(100)])
    clone = ReplayBuffer.from_state(buffer.state())
    assert clone.indices == buffer.indices and clone.labels == buffer.labels
    assert np.array_equal(clone.sample(8), buffer.sample(8))  # the random stream continues identically
    with pytest.raises(SwarmError, match="replay.policy"):
        ReplayBuffer(5, "fifo")


def test_dirichlet_partition_covers_f_once_and_is_non_iid():
    groups = np.repeat(np.arange(6), 50)
    parts = dirichlet_partition(groups, 10, alpha=0.1, rng=np.random.default_rng(0))
    assert sorted(np.concatenate(parts).tolist()) == list(range(300))
    assert min(len(p) for p in parts) >= 1
    dominant = [np.bincount(groups[p], minlength=6).max() / len(p) for p in parts]
    assert np.mean(dominant) > 0.6  # small alpha: most nodes see mostly one group
    even = dirichlet_partition(groups, 10, alpha=1000.0, rng=np.random.default_rng(0))
    assert np.mean([np.bincount(groups[p], minlength=6).max() / len(p) for p in even]) < 0.3


def test_partition_is_seeded_and_says_how_many_nodes_fit():
    groups = np.repeat(np.arange(3), 10)
    a = dirichlet_partition(groups, 4, 0.5, np.random.default_rng(7))
    b = dirichlet_partition(groups, 4, 0.5, np.random.default_rng(7))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    with pytest.raises(SwarmError, match="F has 30 training samples: at most 15 nodes fit with 2 each"):
        dirichlet_partition(groups, 16, 0.5, np.random.default_rng(0), min_per_node=2)


def test_drift_and_arrival_times():
    rng = np.random.default_rng(0)
    def drift(kind: str, **values: float) -> DriftConfig:
        return DriftConfig(kind=DriftKind(kind), events=1, event_gap_s=0.0, **values)

    assert np.array_equal(drift_times(3, drift("fixed", value=5.0), rng), [5, 5, 5])
    uniform = drift_times(1000, drift("uniform", low=10.0, high=20.0), rng)
    assert uniform.min() >= 10 and uniform.max() <= 20
    assert abs(drift_times(5000, drift("exponential", mean=30.0), rng).mean() - 30) < 2
    times = arrival_times(100.0, 2000, rate_per_s=4.0, rng=rng)
    assert times[0] > 100 and np.all(np.diff(times) > 0)
    assert abs((times[-1] - 100) / 2000 - 0.25) < 0.02  # mean gap 1 / rate
