"""Issue 11: the config's schema, device profiles as a config group, one error scheme."""

from __future__ import annotations

import pytest
import yaml

from swarm.config import compose_config
from swarm.nodes.errors import SwarmError
from tests.conftest import FLEET_TINY, REPO, run_module, write_fleet_plan


def _profile_dir(tmp_path, power_w: float):
    """A user's --config-dir holding one device profile of their own, ``toaster``."""
    profile = yaml.safe_load((REPO / "scenarios" / "device" / "raspberry_pi_4.yaml").read_text())
    profile.update(name="toaster", active_power_w=power_w, description="a user's own device")
    (tmp_path / "mine" / "device").mkdir(parents=True, exist_ok=True)
    (tmp_path / "mine" / "device" / "toaster.yaml").write_text(yaml.safe_dump(profile))
    return tmp_path / "mine"


def test_a_profile_in_a_users_config_dir_is_used_by_name_and_keys_the_fleet_cache(tmp_path):
    from swarm.nodes.fleet_plan import FleetPlan, NodeTask
    from swarm.server import cache

    mine = _profile_dir(tmp_path, power_w=4.0)
    cfg = compose_config([*FLEET_TINY, "fleet.nodes=2", "fleet.profiles=[toaster,jetson_nano]"], config_dir=mine)
    assert cfg.fleet.devices["toaster"]["active_power_w"] == 4.0 and cfg.fleet.devices["jetson_nano"]["name"] == "jetson_nano"
    # device=NAME selects the group's option: a one-class fleet.
    assert list(compose_config(["device=toaster"], config_dir=mine).fleet.profiles) == ["toaster"]

    # The contents travel in the plan: the node simulates the user's device, not a shipped file.
    path, _ = write_fleet_plan(cfg, tmp_path, "run", windows=1)
    plan = FleetPlan.load(path)
    task = plan.task(0, "ab" * 8)
    assert task.node.profile == "toaster" and NodeTask.from_config(task.to_config()).fleet.devices["toaster"]["active_power_w"] == 4.0
    from swarm.nodes.node import local_runtime

    runtime = local_runtime(plan, 0, path.parent / "nodes")
    assert runtime.profile.active_power_w == 4.0 and runtime.profile.name == "toaster"

    # Editing the profile changes the fleet's cache key; the same contents give the same key.
    key = cache.fleet_key("m", 0, cfg.fleet, 0)
    same = compose_config([*FLEET_TINY, "fleet.nodes=2", "fleet.profiles=[toaster,jetson_nano]"], config_dir=mine)
    assert cache.fleet_key("m", 0, same.fleet, 0) == key
    edited = compose_config([*FLEET_TINY, "fleet.nodes=2", "fleet.profiles=[toaster,jetson_nano]"],
                            config_dir=_profile_dir(tmp_path, power_w=6.0))
    assert cache.fleet_key("m", 0, edited.fleet, 0) != key


def test_a_profile_with_a_bad_number_is_one_line(tmp_path):
    mine = _profile_dir(tmp_path, power_w=-1.0)
    with pytest.raises(SwarmError, match="device toaster: power and RAM must be positive"):
        compose_config(["fleet.profiles=[toaster]"], config_dir=mine)


def test_config_dir_profiles_work_from_the_command_line(tmp_path):
    mine = _profile_dir(tmp_path, power_w=4.0)
    args = ["prune.dry_run=true", f"hydra.run.dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}"]
    found = run_module("swarm.prune", "--config-dir", str(mine), "fleet.profiles=[toaster]", *args)
    assert found.returncode == 0, found.stderr[-2000:]  # (without it: tests/test_fleet_faults.py)


def test_help_lists_the_groups_and_the_knobs():
    result = run_module("swarm.simulate", "--help")
    assert result.returncode == 0
    for text in ("scenario: cifar100_new_classes", "pruning: imp, lrp", "device: jetson_nano",
                 "fleet.strategy=local", "fleet.checkpoint=all", "-m seed=0,1,2 pruning=lrp,imp", "Errors: one line"):
        assert text in result.stdout, text


def test_the_schema_rejects_wrong_types_and_choices_as_composed():
    from hydra.errors import ConfigCompositionException

    from swarm.config import composition_error

    for override, message in (("fleet.windows=many", "fleet.windows=many: Value 'many' of type 'str' could not be converted to Integer"),
                              ("pruning.target=logit", "pruning.target=logit: choose one of label, prediction"),
                              ("prune.scope=some", "prune.scope=some: choose one of inner, all")):
        with pytest.raises(ConfigCompositionException) as caught:
            compose_config([override])
        assert composition_error(caught.value) == message
