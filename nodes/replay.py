"""Replay buffers of P samples, mixed into every on-device batch to keep P from being forgotten.

The buffer holds sample *indices* into P's training set (the simulated device would hold the
samples themselves; :func:`swarm.nodes.device.memory_need` charges their bytes). Two policies:

* ``reservoir`` -- a uniform sample of everything offered so far (Vitter's algorithm R);
* ``class_balanced`` -- class-balancing reservoir sampling (CBRS, Chrysakis & Moens, ICML 2020):
  when full, an incoming sample of a non-largest class evicts a random member of the largest
  class; one of the largest class replaces a member of its own class with reservoir probability.

``capacity=None`` keeps everything (the paper's setting: replay of the complete P).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Iterable

import numpy as np

from swarm.nodes.errors import SwarmError

class ReplayPolicy(StrEnum):
    """Which P samples the replay buffer keeps: a uniform reservoir, or class-balanced (CBRS)."""

    reservoir = "reservoir"
    class_balanced = "class_balanced"


class ReplayBuffer:
    def __init__(self, capacity: int | None, policy: str = "reservoir", seed: int = 0) -> None:
        if policy not in tuple(ReplayPolicy):
            raise SwarmError(f"replay.policy must be one of {', '.join(ReplayPolicy)}, not '{policy}'")
        if capacity is not None and capacity < 0:
            raise SwarmError(f"replay capacity must be >= 0, not {capacity}")
        self.capacity = capacity
        self.policy = policy
        self.rng = np.random.default_rng(seed)
        self.indices: list[int] = []
        self.labels: list[int] = []
        self.seen = 0
        self.seen_per_class: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.indices)

    def offer(self, indices: Iterable[int], labels: Iterable[int]) -> None:
        """Offer stream samples (index into P's training set, and its label) to the buffer."""
        for index, label in zip(indices, labels):
            self._offer_one(int(index), int(label))

    def _offer_one(self, index: int, label: int) -> None:
        self.seen += 1
        self.seen_per_class[label] = self.seen_per_class.get(label, 0) + 1
        if self.capacity is None or len(self.indices) < self.capacity:
            self.indices.append(index)
            self.labels.append(label)
            return
        if self.capacity == 0:
            return
        if self.policy == "reservoir":
            slot = int(self.rng.integers(0, self.seen))
            if slot < self.capacity:
                self.indices[slot], self.labels[slot] = index, label
            return
        counts = self.class_counts()
        largest = max(counts.values())
        if counts.get(label, 0) < largest:
            victims = [c for c, n in counts.items() if n == largest]
            victim_class = victims[int(self.rng.integers(0, len(victims)))]
            slots = [i for i, c in enumerate(self.labels) if c == victim_class]
        else:
            slots = [i for i, c in enumerate(self.labels) if c == label]
            if self.rng.random() >= len(slots) / self.seen_per_class[label]:
                return
        slot = slots[int(self.rng.integers(0, len(slots)))]
        self.indices[slot], self.labels[slot] = index, label

    def class_counts(self) -> dict[int, int]:
        labels, counts = np.unique(np.asarray(self.labels, dtype=np.int64), return_counts=True)
        return {int(c): int(n) for c, n in zip(labels, counts)}

    def sample(self, k: int) -> np.ndarray:
        """``k`` buffered indices drawn uniformly with replacement (empty if the buffer is)."""
        if not self.indices or k <= 0:
            return np.zeros(0, dtype=np.int64)
        return np.asarray(self.indices, dtype=np.int64)[self.rng.integers(0, len(self.indices), size=k)]

    def state(self) -> dict:
        """Plain arrays and numbers, for the node's state file on disk."""
        return {"capacity": -1 if self.capacity is None else self.capacity, "policy": self.policy,
                "indices": np.asarray(self.indices, dtype=np.int64), "labels": np.asarray(self.labels, dtype=np.int64),
                "seen": self.seen, "seen_per_class": self.seen_per_class,
                "rng": self.rng.bit_generator.state}

    @classmethod
    def from_state(cls, state: dict) -> ReplayBuffer:
        buffer = cls(None if state["capacity"] == -1 else int(state["capacity"]), state["policy"])
        buffer.indices = [int(i) for i in state["indices"]]
        buffer.labels = [int(c) for c in state["labels"]]
        buffer.seen = int(state["seen"])
        buffer.seen_per_class = {int(k): int(v) for k, v in state["seen_per_class"].items()}
        buffer.rng.bit_generator.state = state["rng"]
        return buffer
