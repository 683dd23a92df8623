"""A scenario: which samples form T, P and F, what the network predicts, and how nodes adapt.

The paper (Tables 1 and 2) splits a dataset either by class or by domain:

* ``T`` -- extra knowledge, used only for pre-training (empty when ``pretrain=task_only``);
* ``P`` -- the task: pre-training, relevance scores for pruning, recovery training;
* ``F`` -- withheld until deployment: nodes fine-tune on it (``finetune``) or learn it next to P
  with replay (``continual``).

The network's outputs are either the dataset's classes, or coarser ``label_groups``
(superclasses) when the scenario adapts to new subclasses of the same labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from swarm.nodes.errors import ScenarioError

ROLES = ("T", "P", "F")
MODES = ("finetune", "continual")
SPLIT_BY = ("class", "domain")


def _names(values: Any) -> list[str]:
    return [str(v) for v in (values or [])]


def _short(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


@dataclass(frozen=True)
class Scenario:
    """A validated split declaration. Build one with :meth:`from_config`."""

    name: str
    dataset: Mapping[str, Any]
    split_by: str
    mode: str
    roles: dict[str, list[str]]
    label_groups: dict[str, list[str]] | None = None
    pretrain: str = "extra"
    description: str = ""
    _group_of: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_config(cls, scenario_cfg: Mapping[str, Any], pretrain: str = "extra") -> Scenario:
        """Read the ``scenario`` config block (a free-form group: this is its loader), for the
        ``pretrain`` setting's choice; raise ScenarioError on a bad declaration."""
        name = str(scenario_cfg.get("name", "?"))
        split_by = str(scenario_cfg.get("split_by", ""))
        mode = str(scenario_cfg.get("mode", ""))
        if split_by not in SPLIT_BY:
            raise ScenarioError(f"scenario {name}: split_by must be one of {', '.join(SPLIT_BY)}, not '{split_by}'")
        if mode not in MODES:
            raise ScenarioError(f"scenario {name}: mode must be one of {', '.join(MODES)}, not '{mode}'")
        if not scenario_cfg.get("dataset") or not scenario_cfg["dataset"].get("name"):
            raise ScenarioError(f"scenario {name}: dataset.name is missing")
        roles = {role: _names(scenario_cfg.get(role)) for role in ROLES}
        groups_cfg = scenario_cfg.get("label_groups")
        groups = {str(g): _names(members) for g, members in groups_cfg.items()} if groups_cfg else None
        scenario = cls(name, dict(scenario_cfg["dataset"]), split_by, mode, roles, groups, str(pretrain),
                       str(scenario_cfg.get("description", "")))
        scenario._check_structure()
        return scenario

    # ------------------------------------------------------------------ declaration checks
    def _check_structure(self) -> None:
        for role in ("P", "F"):
            if not self.roles[role]:
                raise ScenarioError(f"scenario {self.name}: {role} is empty; declare its {self.split_by} names")
        for role in ROLES:
            repeated = sorted({n for n in self.roles[role] if self.roles[role].count(n) > 1})
            if repeated:
                raise ScenarioError(f"scenario {self.name}: {role} lists {_short(repeated)} more than once")
        for i, a in enumerate(ROLES):
            for b in ROLES[i + 1:]:
                shared = sorted(set(self.roles[a]) & set(self.roles[b]))
                if shared:
                    raise ScenarioError(f"scenario {self.name}: {a} and {b} overlap in {_short(shared)}; "
                                        "T, P and F must be disjoint")
        if self.label_groups is not None:
            if self.split_by != "class":
                raise ScenarioError(f"scenario {self.name}: label_groups only apply to split_by: class")
            for group, members in self.label_groups.items():
                for member in members:
                    if member in self._group_of:
                        raise ScenarioError(f"scenario {self.name}: class '{member}' is in label groups "
                                            f"'{self._group_of[member]}' and '{group}'")
                    self._group_of[member] = group
            ungrouped = [n for role in ROLES for n in self.roles[role] if n not in self._group_of]
            if ungrouped:
                raise ScenarioError(f"scenario {self.name}: classes {_short(ungrouped)} belong to no label group")

    def validate(self, classes: Sequence[str] | None, domains: Sequence[str] | None) -> None:
        """Check every declared name exists in the dataset; the error names the unknown ones."""
        known = classes if self.split_by == "class" else domains
        kind = "classes" if self.split_by == "class" else "domains"
        if known is not None:
            for role in ROLES:
                unknown = [n for n in self.roles[role] if n not in known]
                if unknown:
                    raise ScenarioError(f"scenario {self.name}: unknown {kind} in {role}: {_short(unknown)} "
                                        f"(the dataset has: {_short(list(known))})")
        if self.label_groups is not None and classes is not None:
            unknown = [m for members in self.label_groups.values() for m in members if m not in classes]
            if unknown:
                raise ScenarioError(f"scenario {self.name}: unknown classes in label_groups: {_short(unknown)}")

    # ------------------------------------------------------------------ derived views
    @property
    def active_roles(self) -> dict[str, list[str]]:
        """The roles as used by this run: T is empty when pre-training on the task only."""
        roles = {role: list(names) for role, names in self.roles.items()}
        if self.pretrain == "task_only":
            roles["T"] = []
        return roles

    def label_names(self, classes: Sequence[str] | None) -> list[str]:
        """The network's outputs, in order."""
        if self.label_groups is not None:
            return list(self.label_groups)
        if classes is not None:
            return list(classes)
        # Without the data (a bring-your-own folder that is not there yet) the declaration is all we know.
        return sorted({n for names in self.roles.values() for n in names}) if self.split_by == "class" else []

    def class_targets(self, classes: Sequence[str]) -> np.ndarray:
        """For each fine class index of the dataset, its output index (-1: not in the label space)."""
        labels = self.label_names(classes)
        if self.label_groups is None:
            return np.arange(len(classes), dtype=np.int64)
        index = {g: i for i, g in enumerate(labels)}
        return np.array([index[self._group_of[c]] if c in self._group_of else -1 for c in classes], dtype=np.int64)

    def sample_roles(self, classes: Sequence[str], domains: Sequence[str],
                     class_idx: np.ndarray, domain_idx: np.ndarray) -> np.ndarray:
        """Role of every sample as an index into ROLES (-1: in no role), honouring ``pretrain``."""
        keys, names = (class_idx, classes) if self.split_by == "class" else (domain_idx, domains)
        lookup = np.full(len(names), -1, dtype=np.int64)
        for r, role in enumerate(ROLES):
            for name in self.active_roles[role]:
                lookup[list(names).index(name)] = r
        return lookup[keys]
