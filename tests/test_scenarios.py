"""Every shipped scenario declares exactly the paper's (or the documented) split."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarm.config import scenario_of
from swarm.nodes.errors import ScenarioError
from swarm.server.data import sources
from swarm.server.data.scenario import ROLES, Scenario
from swarm.server.data.sources.cifar import CIFAR10_CLASSES, CIFAR100_CLASSES, CIFAR100_SUPERCLASSES

SCENARIO_DIR = Path(__file__).resolve().parents[1] / "scenarios" / "scenario"
ALL = sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))

EXPECTED = {
    "cifar10_new_classes": dict(
        mode="continual", outputs=10,
        T={"bird", "cat", "deer", "dog", "frog", "horse"}, P={"airplane", "automobile", "truck"}, F={"ship"}),
    "cifar10_new_subclasses": dict(
        mode="finetune", outputs=2, labels=["vehicle", "animal"],
        T={"automobile", "dog", "horse"}, P={"airplane", "bird", "frog", "ship"}, F={"cat", "deer", "truck"}),
    "domainnet": dict(
        mode="finetune", outputs=345,
        T={"real", "sketch"}, P={"infograph", "clipart", "quickdraw"}, F={"painting"}),
    "synthetic_domains": dict(
        mode="finetune", outputs=12,
        T={"real", "sketch"}, P={"infograph", "clipart", "quickdraw"}, F={"painting"}),
    "fmnist_new_classes": dict(
        mode="continual", outputs=10,
        T={"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Shirt"},
        P={"Sandal", "Sneaker", "Bag"}, F={"Ankle boot"}),
    "fmnist_new_tops": dict(
        mode="continual", outputs=10,
        T={"Trouser", "Dress", "Sandal", "Sneaker", "Bag", "Ankle boot"},
        P={"T-shirt/top", "Pullover", "Coat"}, F={"Shirt"}),
    "fmnist_new_subclasses": dict(
        mode="finetune", outputs=2, labels=["garment", "footwear_and_bags"],
        T={"Sneaker", "Pullover", "Dress"}, P={"Sandal", "Bag", "T-shirt/top", "Trouser"},
        F={"Ankle boot", "Coat", "Shirt"}),
}

ANIMAL_SUPERCLASSES = {
    "aquatic_mammals", "fish", "insects", "large_carnivores", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals",
}


def cifar100_rule(kind: str) -> dict[str, list[str]]:
    """The documented deterministic rule behind the two CIFAR-100 scenarios."""
    roles: dict[str, list[str]] = {"T": [], "P": [], "F": []}
    for group, members in CIFAR100_SUPERCLASSES.items():
        ordered = sorted(members)
        if kind == "new_subclasses":
            roles["T"] += ordered[:1]
            roles["P"] += ordered[1:3]
            roles["F"] += ordered[3:5]
        elif group in ANIMAL_SUPERCLASSES:
            roles["T"] += ordered
        else:
            roles["P"] += ordered[:3]
            roles["F"] += ordered[3:4]
            roles["T"] += ordered[4:5]
    return roles


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_paper_scenarios_have_the_declared_split(make_cfg, name):
    scenario = scenario_of(make_cfg(f"scenario={name}"))
    expected = EXPECTED[name]
    assert scenario.mode == expected["mode"]
    for role in ROLES:
        assert set(scenario.roles[role]) == expected[role], role
    classes, domains = sources.known_names(scenario.dataset)
    scenario.validate(classes, domains)
    labels = scenario.label_names(classes)
    assert len(labels) == expected["outputs"]
    if "labels" in expected:
        assert labels == expected["labels"]


@pytest.mark.parametrize("name", ALL)
def test_every_scenario_is_disjoint_and_valid(make_cfg, name):
    cfg = make_cfg(f"scenario={name}")
    scenario = scenario_of(cfg)
    seen: set[str] = set()
    for role in ROLES:
        assert not seen & set(scenario.roles[role])
        seen |= set(scenario.roles[role])
    classes, domains = sources.known_names(scenario.dataset)
    scenario.validate(classes, domains)


@pytest.mark.parametrize("kind", ["new_classes", "new_subclasses"])
def test_cifar100_lists_follow_the_documented_rule(make_cfg, kind):
    scenario = scenario_of(make_cfg(f"scenario=cifar100_{kind}"))
    assert scenario.roles == cifar100_rule(kind)
    classes = CIFAR100_CLASSES
    scenario.validate(classes, ["default"])
    t, p, f = (set(scenario.roles[r]) for r in ROLES)
    if kind == "new_classes":
        assert (len(t | p), len(p), len(f)) == (90, 30, 10)
        assert t | p | f == set(classes)
        assert len(scenario.label_names(classes)) == 100
    else:
        assert (len(t | p), len(p), len(f)) == (60, 40, 40)
        assert scenario.label_names(classes) == list(CIFAR100_SUPERCLASSES)
        for members in CIFAR100_SUPERCLASSES.values():
            assert [len(t & set(members)), len(p & set(members)), len(f & set(members))] == [1, 2, 2]


def test_label_mapping_of_superclasses(make_cfg):
    scenario = scenario_of(make_cfg("scenario=cifar10_new_subclasses"))
    targets = scenario.class_targets(CIFAR10_CLASSES)
    vehicle, animal = 0, 1
    expected = {"airplane": vehicle, "automobile": vehicle, "ship": vehicle, "truck": vehicle}
    for i, name in enumerate(CIFAR10_CLASSES):
        assert targets[i] == expected.get(name, animal), name


def test_task_only_empties_t(make_cfg):
    scenario = scenario_of(make_cfg("scenario=cifar10_new_classes", "pretrain=task_only"))
    assert scenario.active_roles["T"] == []
    assert scenario.roles["T"]  # the declaration itself is unchanged


def _declaration(**changes):
    base = {"name": "x", "dataset": {"name": "cifar10"}, "split_by": "class", "mode": "continual",
            "T": ["bird"], "P": ["airplane"], "F": ["ship"]}
    base.update(changes)
    return base


def test_unknown_names_are_named():
    scenario = Scenario.from_config(_declaration(P=["airplane", "spaceship", "zeppelin"]))
    with pytest.raises(ScenarioError, match="unknown classes in P: spaceship, zeppelin"):
        scenario.validate(CIFAR10_CLASSES, ["default"])


def test_unknown_domain_is_named():
    scenario = Scenario.from_config(_declaration(dataset={"name": "domainnet"}, split_by="domain",
                                                 T=["real"], P=["clipart"], F=["oil"]))
    with pytest.raises(ScenarioError, match="unknown domains in F: oil"):
        scenario.validate(*sources.known_names(scenario.dataset))


def test_overlap_is_named():
    with pytest.raises(ScenarioError, match="P and F overlap in ship"):
        Scenario.from_config(_declaration(P=["airplane", "ship"], F=["ship"]))


@pytest.mark.parametrize("change, message", [
    (dict(mode="online"), "mode must be"),
    (dict(split_by="style"), "split_by must be"),
    (dict(P=[]), "P is empty"),
    (dict(label_groups={"vehicle": ["airplane"]}), "belong to no label group"),
])
def test_bad_declarations(change, message):
    with pytest.raises(ScenarioError, match=message):
        Scenario.from_config(_declaration(**change))


def test_unknown_scenario_lists_options():
    from tests.conftest import run_module

    result = run_module("swarm.splits", "scenario=nope")
    assert result.returncode != 0
    assert "synthetic_domains" in result.stderr  # Hydra lists the available scenarios
