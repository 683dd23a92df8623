"""Turn a scenario plus a dataset into the nine torch datasets {T, P, F} x {train, val, test}.

Validation is a seeded, stratified slice of the official training split (per class and domain);
test is the official test split. The slice does not depend on ``pretrain``, so P's validation and
test sets are the same whether or not T is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch.utils.data import ConcatDataset, Dataset

from swarm.nodes.images import LabeledImages
from swarm.server.data import sources
from swarm.server.data.catalog import Catalog
from swarm.server.data.options import DataOptions
from swarm.server.data.scenario import ROLES, Scenario

SPLITS = ("train", "val", "test")


def rank_within_groups(groups: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random order inside every group: (rank of each sample in its group, size of its group)."""
    keys = rng.random(len(groups))
    order = np.lexsort((keys, groups))
    sorted_groups = groups[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    sizes = np.diff(np.r_[starts, len(groups)])
    rank = np.empty(len(groups), dtype=np.int64)
    rank[order] = np.arange(len(groups)) - np.repeat(starts, sizes)
    size = np.empty(len(groups), dtype=np.int64)
    size[order] = np.repeat(sizes, sizes)
    return rank, size


@dataclass
class ScenarioData:
    """The datasets of one scenario, ready for training. ``datasets[role][split]``."""

    scenario: Scenario
    catalog: Catalog
    label_names: list[str]
    image_size: int
    datasets: dict[str, dict[str, LabeledImages]]

    @property
    def num_outputs(self) -> int:
        return len(self.label_names)

    @property
    def channels(self) -> int:
        return self.catalog.channels

    def union(self, roles: str, split: str) -> Dataset:
        """Several roles as one dataset, e.g. ``union("TP", "train")`` for pre-training."""
        parts = [self.datasets[r][split] for r in roles if len(self.datasets[r][split])]
        return ConcatDataset(parts) if len(parts) != 1 else parts[0]

    def untrained_outputs(self) -> list[int]:
        """The outputs only F brings: new classes, whose outputs exist from the start (the paper keeps
        all of them) but are never a target before adaptation (empty when F refines known labels)."""
        seen = {int(t) for role in "TP" for split in SPLITS for t in self.datasets[role][split].targets.tolist()}
        return sorted({int(t) for t in self.datasets["F"]["train"].targets.tolist()} - seen)

    def undeployed_outputs(self) -> list[int]:
        """The outputs no class of the deployed task (P ∪ F) maps to: T's classes in continual
        scenarios, whether or not T was trained (pre-training on P only keeps them too)."""
        deployed = {int(t) for role in "PF" for split in SPLITS for t in self.datasets[role][split].targets.tolist()}
        return sorted(set(range(self.num_outputs)) - deployed)

    def counts(self) -> dict[str, dict[str, int]]:
        return {role: {split: len(self.datasets[role][split]) for split in SPLITS} for role in ROLES}


def build(scenario: Scenario, options: DataOptions) -> ScenarioData:
    """Load the scenario's dataset and split it; raises DataNotFoundError / ScenarioError for the CLI."""
    wanted = None
    if scenario.split_by == "domain":
        wanted = sorted({d for names in scenario.active_roles.values() for d in names})
    catalog = sources.load(scenario.dataset, options, wanted)
    scenario.validate(catalog.classes, catalog.domains)
    class_targets = scenario.class_targets(catalog.classes)
    image_size = int(options.image_size or catalog.image_size)
    datasets: dict[str, dict[str, LabeledImages]] = {role: {} for role in ROLES}
    rng = np.random.default_rng(options.seed)
    for official in ("train", "test"):
        part = catalog.split(official)
        roles = scenario.sample_roles(catalog.classes, catalog.domains, part.class_idx, part.domain_idx)
        targets = class_targets[part.class_idx]
        usable = (roles >= 0) & (targets >= 0)
        groups = part.class_idx * len(catalog.domains) + part.domain_idx
        rank, size = rank_within_groups(groups, rng)
        kept = size if options.max_per_class is None else np.minimum(size, options.max_per_class)
        if official == "train":
            n_val = np.rint(kept * options.val_fraction).astype(np.int64)
            selections = {"val": rank < n_val, "train": (rank >= n_val) & (rank < kept)}
        else:
            selections = {"test": rank < kept}
        for split, chosen in selections.items():
            for r, role in enumerate(ROLES):
                idx = np.flatnonzero(usable & chosen & (roles == r))
                datasets[role][split] = LabeledImages(part.images, idx, targets[idx], image_size)
    return ScenarioData(scenario, catalog, scenario.label_names(catalog.classes), image_size, datasets)
