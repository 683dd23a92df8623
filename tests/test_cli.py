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
                        f"hydra.run.dir={tmp_path / 'run'}")
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
    run_dir = tmp_path / "run"
    result = run_module("swarm.simulate", *TINY, f"hydra.run.dir={run_dir}", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert [s["stage"] for s in results["stages"]] == ["pretrain", "adapt"]
    assert results["stages"][0]["trained_on"] == "TP" and results["stages"][1]["trained_on"] == "F"
    for stage in results["stages"]:
        assert 0.0 <= stage["acc_P"] <= 1.0 and 0.0 <= stage["acc_F"] <= 1.0
    state = torch.load(run_dir / "pretrained.pt", weights_only=True)
    assert "fc.weight" in state["state_dict"]
    assert "acc P" in result.stdout
