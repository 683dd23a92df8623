"""Settings typed once (issue 26): the entry points turn the composed config into the schema's
dataclasses, and nothing below them (``server/``, ``nodes/``) reads a setting by string key, holds
a DictConfig, or checks a choice Hydra already checked."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from tests.conftest import REPO

# The free-form groups' own readers: the scenario's loader, the data sources (each reads its
# dataset's options), the model registry (each model its own options). Everything else reads
# their typed results (Scenario, the built model).
LOADERS = {Path("server/data/scenario.py"), Path("nodes/models.py")}
LOADER_FOLDERS = {Path("server/data/sources")}
# What a setting section is called where code holds one.
SETTING_NAMES = {"cfg", "settings", "fleet", "train", "prune", "pruning", "reference", "budget", "drift",
                 "faults", "ray", "train_cfg", "replay_cfg", "fleet_cfg", "spec"}


def _below_entry_points() -> list[Path]:
    files = []
    for folder in ("server", "nodes"):
        for path in (REPO / folder).rglob("*.py"):
            relative = path.relative_to(REPO)
            if relative not in LOADERS and not any(parent in LOADER_FOLDERS for parent in relative.parents):
                files.append(path)
    return files


def _receiver(node: ast.expr) -> str:
    """The last name of the expression a key is read from: ``fleet`` for ``self.fleet["lr"]``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _keyed_reads(tree: ast.AST) -> list[tuple[int, str]]:
    reads = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and isinstance(node.slice, ast.Constant)
                and isinstance(node.slice.value, str)):
            receiver = _receiver(node.value)
            if receiver in SETTING_NAMES or (receiver == "config" and isinstance(node.value, ast.Attribute)):
                reads.append((node.lineno, f"{receiver}[{node.slice.value!r}]"))
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            receiver = _receiver(node.func.value)
            if receiver in SETTING_NAMES or (receiver == "config" and isinstance(node.func.value, ast.Attribute)):
                reads.append((node.lineno, f"{receiver}.get({node.args[0].value!r})"))
    return reads


def test_no_setting_is_read_by_string_key_below_the_entry_points():
    offenders = []
    for path in _below_entry_points():
        source = path.read_text()
        tree = ast.parse(source)
        for line, read in _keyed_reads(tree):
            # The plan's recorded settings become typed in one place: FleetPlan.fleet.
            if path.name == "fleet_plan.py" and read == "config['fleet']":
                continue
            offenders.append(f"{path.relative_to(REPO)}:{line}: {read}")
        if "DictConfig" in source:
            offenders.append(f"{path.relative_to(REPO)}: handles a DictConfig")
    assert not offenders, "\n".join(offenders)


def test_the_keyed_read_check_catches_what_it_looks_for():
    """The check above fails on the patterns it exists for (so it cannot pass by matching nothing)."""
    caught = _keyed_reads(ast.parse('self.fleet["batch_size"]\ncfg.get("seed")\nplan.config["fleet"]\n'
                                    'record["iterations"]\nfleet.batch_size\nkeyed["device"] = 1\n'))
    assert [read for _, read in caught] == ["fleet['batch_size']", "cfg.get('seed')", "config['fleet']"]


def test_the_entry_points_hand_down_typed_settings_and_the_plan_and_message_keep_them_typed(tmp_path):
    from swarm.config import compose_config
    from swarm.nodes.choices import Loss, Scope
    from swarm.nodes.fleet_plan import FleetPlan, NodeTask
    from swarm.nodes.settings import FleetConfig
    from swarm.server.settings import SwarmConfig
    from tests.conftest import FLEET_TINY, write_fleet_plan

    cfg = compose_config([*FLEET_TINY, "fleet.nodes=2", "fleet.loss=batch"])
    assert isinstance(cfg, SwarmConfig) and isinstance(cfg.fleet, FleetConfig)
    assert cfg.fleet.loss is Loss.batch and cfg.prune.scope is Scope.inner and isinstance(cfg.fleet.window_s, float)

    path, _ = write_fleet_plan(cfg, tmp_path, "run", windows=2)
    plan = FleetPlan.load(path)
    assert isinstance(plan.fleet, FleetConfig) and plan.fleet.loss is Loss.batch and plan.fleet.windows == 2
    task = NodeTask.from_config(plan.task(1, "ab" * 8).to_config())  # as a node receives it
    assert task.fleet == plan.fleet and task.fleet.loss is Loss.batch


@pytest.mark.parametrize("change, problem", [({"loss": "sometimes"}, "loss"), ({"batch_size": "many"}, "batch_size"),
                                             ({"nodez": 3}, "nodez")])
def test_a_message_s_settings_that_do_not_type_are_a_malformed_task(change, problem):
    """A node types what it is sent with the schema's rules: a wrong choice, type or key is a
    malformed message (the node's ``ValueError``), not a string the node trusts."""
    import json

    from swarm.config import compose_config
    from swarm.nodes.fleet_plan import NodePlan, NodeTask
    from swarm.nodes.settings import to_plain

    fleet = compose_config([]).fleet
    task = NodeTask(node=NodePlan(0, "smartphone", 0.0, 0.0, [], 0), fleet=fleet, continual=False, window_s=1.0,
                    windows=1, events=1, event_gap_s=0.0, architecture={}, plan_id="ab" * 8, data_id="cd" * 8)
    message = task.to_config()
    message["fleet"] = json.dumps({**to_plain(fleet), **change})
    with pytest.raises(ValueError, match=problem):
        NodeTask.from_config(message)


def test_each_section_is_defined_once():
    """The schema composes the floors' sections; no class is defined twice."""
    from swarm import schema
    from swarm.nodes import settings as node_settings
    from swarm.server import settings as server_settings

    defined = [name for module in (node_settings, server_settings, schema) for name, value in vars(module).items()
               if dataclasses.is_dataclass(value) and value.__module__ == module.__name__]
    assert len(defined) == len(set(defined)) and "FleetConfig" in defined and "SwarmConfig" in defined
    assert not [name for name in defined if getattr(schema, name, None) is not None
                and getattr(schema, name).__module__ == "swarm.schema"]
