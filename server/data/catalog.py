"""The common shape every dataset source is reduced to.

A source (CIFAR, DomainNet, Fashion-MNIST, synthetic, a folder) only has to say, for each of its
official splits, which fine class and which domain every sample belongs to, and how to fetch the
pixels of sample ``i``. Scenarios then carve T, P and F out of that by class or by domain, without
knowing anything about file formats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from swarm.nodes.images import ImageStore

SPLITS = ("train", "test")


@dataclass
class SplitCatalog:
    """Metadata of one official split: per sample, its fine class and domain index, plus the pixels."""

    class_idx: np.ndarray
    domain_idx: np.ndarray
    images: ImageStore

    def __post_init__(self) -> None:
        self.class_idx = np.asarray(self.class_idx, dtype=np.int64)
        self.domain_idx = np.asarray(self.domain_idx, dtype=np.int64)
        if not (len(self.class_idx) == len(self.domain_idx) == len(self.images)):
            raise ValueError("class, domain and image counts differ")

    def __len__(self) -> int:
        return len(self.class_idx)


@dataclass
class Catalog:
    """Everything a scenario needs from a dataset: names, image geometry and both official splits."""

    name: str
    classes: Sequence[str]
    domains: Sequence[str]
    channels: int
    image_size: int
    train: SplitCatalog
    test: SplitCatalog

    def split(self, name: str) -> SplitCatalog:
        return {"train": self.train, "test": self.test}[name]
