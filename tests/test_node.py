"""One node's windows, without Flower: real training of exactly the granted steps, state on disk."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nodes.node import NodeRuntime
from nodes.plan import FleetPlan
from swarm import checkpoints
from swarm.errors import SwarmError
from tests.conftest import write_fleet_plan

TINY = ["scenario.dataset.train_per_group=8", "scenario.dataset.test_per_group=3", "scenario.dataset.image_size=16",
        "fleet.nodes=3", "fleet.window_s=100", "fleet.stream_rate=0.2", "fleet.eval_samples=60",
        "fleet.drift.low=0", "fleet.drift.high=150", "fleet.batch_size=8",
        "fleet.budget.compute_s=0.5"]  # about 5 steps of 0.09 s a window on the Pi 4 profile


@pytest.fixture
def fleet(make_cfg, tmp_path):
    def make(*overrides, profiles=("raspberry_pi_4",)):
        cfg = make_cfg(*TINY, f"fleet.profiles=[{','.join(profiles)}]", *overrides)
        path, data = write_fleet_plan(cfg, tmp_path, "run", windows=3)
        return FleetPlan.load(path), data
    return make


def test_windows_train_the_granted_steps_and_persist_state(fleet):
    plan, data = fleet()
    node = NodeRuntime(plan, 1, data)
    rows = []
    for window in range(3):
        metrics, model = node.run_window(window)
        rows.append(metrics)
    assert [r.window for r in rows] == [0, 1, 2]
    assert [r.sim_time_s for r in rows] == [100, 200, 300]
    assert rows[-1].samples_seen >= rows[0].samples_seen > 0
    assert sum(r.steps for r in rows) > 0
    assert {r.status for r in rows} <= {"ok", "budget_exhausted"}
    assert all(r.flops <= 0.5 * 3.6e9 + 1 for r in rows)  # the compute budget holds
    assert all(0 <= r.acc_F <= 1 and 0 <= r.acc_P <= 1 and math.isnan(r.acc_PF) for r in rows)
    assert rows[0].energy_j == pytest.approx(rows[0].flops / 3.6e9 * 7.2)  # the Pi 4 profile
    start, _, _ = checkpoints.load(plan.checkpoint)
    moved = any(not torch.equal(a, b) for a, b in zip(start.state_dict().values(), model.state_dict().values()))
    assert moved  # real training happened
    with pytest.raises(SwarmError, match="at window 3, asked for window 1"):
        node.run_window(1)


def test_same_seed_same_rows(fleet, tmp_path):
    plan, data = fleet()
    first = [NodeRuntime(plan, 0, data).run_window(w)[0] for w in range(2)]
    for path in (tmp_path / "run" / "nodes").glob("*.pt"):
        path.unlink()
    again = [NodeRuntime(plan, 0, data).run_window(w)[0] for w in range(2)]
    assert first == again


def test_the_microcontroller_does_not_fit(fleet):
    plan, data = fleet(profiles=("microcontroller",))
    metrics, _ = NodeRuntime(plan, 0, data).run_window(0)
    assert metrics.status == "does_not_fit" and metrics.steps == 0 and 0 <= metrics.acc_P <= 1


def test_a_budget_too_small_for_one_step(fleet):
    plan, data = fleet("fleet.budget.energy_j=1e-9")
    metrics, _ = NodeRuntime(plan, 2, data).run_window(0)
    assert metrics.steps == 0 and metrics.energy_j == 0
    assert metrics.status in ("budget_exhausted", "ok")  # ok: no data arrived yet to train on


def test_continual_nodes_replay_p(fleet):
    plan, data = fleet("scenario.mode=continual", "fleet.replay.capacity=40", "fleet.replay.policy=class_balanced")
    node = NodeRuntime(plan, 0, data)
    metrics, _ = node.run_window(0)
    assert not math.isnan(metrics.acc_PF)
    state = node._load()
    assert len(state["replay"]) == 40
    assert set(state["replay"].class_counts()) == set(np.unique(data.datasets["P"]["train"].targets.numpy()))
