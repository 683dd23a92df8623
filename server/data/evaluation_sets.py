"""The seeded test subsets of P, F and P ∪ F that every node, the shared model and the reference
are scored on (:class:`swarm.nodes.evaluation.TestSets`), and the groups of F (its classes, or its
domains when F is one class in several domains): what F is split by among nodes and into drift
events."""

from __future__ import annotations

import numpy as np
from torch.utils.data import Subset

from swarm.nodes.evaluation import SETS, TestSets
from swarm.server.data.build import ScenarioData


def f_groups(data: ScenarioData, split: str) -> tuple[np.ndarray, list[str]]:
    """The group of every F sample of ``split`` (indices into the names), and the groups' names: F's
    classes, or its domains when F holds a single class in several domains."""
    f_set = data.datasets["F"][split]
    train = data.datasets["F"]["train"]
    catalog = data.catalog.split("train" if split in ("train", "val") else "test")
    classes = np.asarray(catalog.class_idx)[f_set.indices]
    domains = np.asarray(catalog.domain_idx)[f_set.indices]
    every_class = np.asarray(data.catalog.train.class_idx)[train.indices]
    every_domain = np.asarray(data.catalog.train.domain_idx)[train.indices]
    by_class = len(np.unique(every_class)) > 1 or len(np.unique(every_domain)) == 1
    values, names = (classes, data.catalog.classes) if by_class else (domains, data.catalog.domains)
    present = sorted(set(np.unique(every_class if by_class else every_domain).tolist()))
    position = {g: i for i, g in enumerate(present)}
    return np.array([position.get(int(v), -1) for v in values], dtype=np.int64), [names[g] for g in present]



def test_sets(data: ScenarioData, continual: bool, cap: int) -> TestSets:
    """P, F (and P ∪ F for continual scenarios) test sets, each cut to the same seeded ``cap`` samples."""
    sets = {}
    groups, names = f_groups(data, "test")
    for name in SETS:
        if name == "PF" and not continual:
            continue
        dataset = data.union(name, "test")
        if cap and len(dataset) > cap:
            chosen = sorted(np.random.default_rng(0).choice(len(dataset), cap, replace=False).tolist())
            dataset = Subset(dataset, chosen)
            if name == "F":
                groups = groups[chosen]
        sets[name] = dataset
    return TestSets(sets, groups, names)
