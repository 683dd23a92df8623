"""The entry points as a user runs them: JSON out, one-line errors with exit code 2, a full quick run."""

from __future__ import annotations

import json

import torch

from tests.conftest import run_module

TINY = ["scenario.dataset.train_per_group=6", "scenario.dataset.test_per_group=2", "train.max_epochs=1"]


def test_splits_without_data(tmp_path):
    result = run_module("swarm.splits", "scenario=cifar10_new_classes", f"data.root={tmp_path}")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["scenario"] == "cifar10_new_classes" and out["mode"] == "continual"
    assert out["num_outputs"] == 10 and out["label_names"][0] == "airplane"
    assert out["P"] == {"classes": ["airplane", "automobile", "truck"]}
    assert out["F"] == {"classes": ["ship"]}
    assert "not there" in result.stderr


def test_splits_with_data_has_counts_and_task_only_empties_t(tmp_path, cifar10_root):
    result = run_module("swarm.splits", "scenario=cifar10_new_subclasses", "pretrain=task_only",
                        f"data.root={cifar10_root}")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["label_names"] == ["vehicle", "animal"]
    assert out["T"] == {"classes": [], "counts": {"train": 0, "val": 0, "test": 0}}
    assert out["P"]["counts"] == {"train": 180, "val": 20, "test": 80}


def test_missing_data_is_one_line_exit_2(tmp_path):
    result = run_module("swarm.simulate", "scenario=cifar10_new_classes", f"data.root={tmp_path}",
                        f"hydra.run.dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cifar10 not found"), result.stderr
    assert str(tmp_path / "cifar-10-batches-py") in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_bad_split_is_one_line_exit_2(tmp_path):
    result = run_module("swarm.splits", "scenario=cifar10_new_classes", "scenario.F=[ship,truck]",
                        f"data.root={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: scenario cifar10_new_classes: P and F overlap in truck; "
                                     "T, P and F must be disjoint")


def test_simulate_runs_the_stages_end_to_end(tmp_path):
    args = [*TINY, "prune.iterations=2", "scenario.dataset.image_size=16", f"cache_dir={tmp_path / 'cache'}"]
    result = run_module("swarm.simulate", *args, f"hydra.run.dir={tmp_path / 'run'}", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    iterations = results["coordinator"]["iterations"]
    assert [it["iteration"] for it in iterations] == [0, 1, 2]
    adaptation = results["adaptation"]
    assert adaptation["iteration"] == 2 and adaptation["trained_on"] == "F"
    assert adaptation["parameters"] == iterations[-1]["params"]
    for stage in ("before", "after"):
        assert 0.0 <= adaptation[stage]["acc_P"] <= 1.0 and 0.0 <= adaptation[stage]["acc_F"] <= 1.0
    assert json.loads((tmp_path / "run" / "coordinator.json").read_text())["iterations"] == iterations
    assert "acc P" in result.stdout and "MACs" in result.stdout

    again = run_module("swarm.simulate", *args, "adapt.checkpoint=0", f"hydra.run.dir={tmp_path / 'run2'}",
                       timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "coordinator from cache" in again.stdout
    assert json.loads((tmp_path / "run2" / "results.json").read_text())["adaptation"]["iteration"] == 0

    bad = run_module("swarm.simulate", *args, "adapt.checkpoint=7", f"hydra.run.dir={tmp_path / 'run3'}")
    assert bad.returncode == 2 and "adapt.checkpoint=7" in bad.stderr
