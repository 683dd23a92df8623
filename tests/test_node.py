"""One node's windows, without Flower: real training of exactly the granted steps, state on disk."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from hydra.errors import ConfigCompositionException
import torch

from swarm.nodes import checkpoints
from swarm.nodes.checkpoints import received_model
from swarm.nodes.errors import SwarmError
from swarm.nodes.fleet_plan import FleetPlan
from tests.conftest import node_runtime, write_fleet_plan

TINY = ["scenario.dataset.train_per_group=8", "scenario.dataset.test_per_group=3", "scenario.dataset.image_size=16",
        "fleet.nodes=3", "fleet.window_s=100", "fleet.stream_rate=0.2", "fleet.eval_samples=60",
        "fleet.drift.low=0", "fleet.drift.high=150", "fleet.batch_size=8",
        "fleet.budget.compute_s=0.5"]  # about 5 steps of 0.09 s a window on the Pi 4 profile


@pytest.fixture
def fleet(make_cfg, tmp_path):
    def make(*overrides, profiles=("raspberry_pi_4",), pretrain_epochs=0):
        cfg = make_cfg(*TINY, f"fleet.profiles=[{','.join(profiles)}]", *overrides)
        path, data = write_fleet_plan(cfg, tmp_path, "run", windows=3, pretrain_epochs=pretrain_epochs)
        return FleetPlan.load(path), data
    return make


def test_windows_train_the_granted_steps_and_persist_state(fleet):
    plan, data = fleet()
    node = node_runtime(plan, 1)
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
    # Energy: training at the Pi 4 profile's power, plus its link (941 Mbit/s Ethernet at 3.2 W) receiving
    # the model and, under FedAvg, sending the update back.
    assert rows[0].energy_j == pytest.approx(rows[0].flops / 3.6e9 * 7.2 + rows[0].comm_j)
    # (The untrained model's equal arrays travel once; trained, fewer are equal: a few % more up.)
    assert rows[0].bytes_down > 0 and rows[0].bytes_up == pytest.approx(rows[0].bytes_down, rel=0.05)
    assert rows[0].comm_j == pytest.approx((rows[0].bytes_down + rows[0].bytes_up) * 8 / 9.41e8 * 3.2)
    assert rows[1].bytes_down == 0  # run in-process, nothing is sent after the first window
    start, _, _ = checkpoints.load(plan.checkpoint)
    moved = any(not torch.equal(a, b) for a, b in zip(start.state_dict().values(), model.state_dict().values()))
    assert moved  # real training happened
    with pytest.raises(SwarmError, match="at window 3, asked for window 1"):
        node.run_window(1)
    # Window 2 again (a server resuming after a kill): from the state it started from, same result.
    assert sorted(p.name for p in node.state_dir.glob("*.pt")) == ["node_001_w0002.pt", "node_001_w0003.pt"]
    again, _ = node.run_window(2)
    assert again == rows[2]


def test_same_seed_same_rows(fleet, tmp_path):
    plan, data = fleet()
    first = [node_runtime(plan, 0).run_window(w)[0] for w in range(2)]
    for state in (tmp_path / "run" / "nodes").glob("node_*/state"):
        shutil.rmtree(state)
    again = [node_runtime(plan, 0).run_window(w)[0] for w in range(2)]
    assert first == again


def test_the_microcontroller_does_not_fit(fleet):
    plan, data = fleet(profiles=("microcontroller",))
    metrics, _ = node_runtime(plan, 0).run_window(0)
    assert metrics.status == "does_not_fit" and metrics.steps == 0 and 0 <= metrics.acc_P <= 1


def test_a_budget_too_small_for_one_step(fleet):
    plan, data = fleet("fleet.budget.energy_j=1e-9")
    metrics, _ = node_runtime(plan, 2).run_window(0)
    assert metrics.steps == 0 and metrics.energy_j == metrics.comm_j > 0  # only receiving the model
    assert metrics.status in ("budget_exhausted", "ok")  # ok: no data arrived yet to train on


def test_continual_nodes_replay_p(fleet):
    plan, data = fleet("scenario.mode=continual", "fleet.replay.capacity=40", "fleet.replay.policy=class_balanced")
    node = node_runtime(plan, 0)
    metrics, _ = node.run_window(0)
    assert not math.isnan(metrics.acc_PF)
    state = node._load(1)  # the state after window 0
    assert len(state["replay"]) == 40
    assert set(state["replay"].class_counts()) == set(np.unique(data.datasets["P"]["train"].targets.numpy()))


def test_received_row_is_the_model_before_training(fleet):
    plan, data = fleet()
    node = node_runtime(plan, 0)
    received = node.received()
    assert (received.window, received.status, received.steps, received.energy_j) == (-1, "received", 0, 0.0)
    start, _, _ = checkpoints.load(plan.checkpoint)
    assert received.acc_F == node._evaluate(start)["acc_F"]
    # Weights sent by message give the same row as the checkpoint they came from.
    assert node.received(start.state_dict()) == received


LEARNABLE = ["fleet.nodes=1", "fleet.windows=2", "fleet.drift.low=0", "fleet.drift.high=1",
             "fleet.stream_rate=2", "fleet.budget.compute_s=null", "fleet.budget.energy_j=null",
             "fleet.budget.duty_cycle=0.5", "fleet.passes=10", "scenario.dataset.train_per_group=20"]


# New subclasses: the network tells round from sharp shapes; P holds two of each, F two others.
NEW_SUBCLASSES = ["scenario.split_by=class", "scenario.T=[]", "scenario.P=[circle,square,ring,triangle]",
                  "scenario.F=[crescent,diamond,hexagon,star]", "scenario.dataset.test_per_group=10",
                  "+scenario.label_groups={round:[circle,ring,crescent,hexagon],sharp:[square,triangle,diamond,star]}"]


def test_a_node_with_enough_budget_learns_f(fleet):
    """The guard against node training that stops learning: a model trained on P's subclasses, on a
    node that sees all of F (new subclasses of the same two labels), must end far above the model
    it received, scored on all 160 of F's test images (0.50 as received, 0.72 after, on an AVX2
    CPU on 2026-12-07; 0.50 and 0.65 on another AVX2 machine on 2026-12-08). Floating-point results
    differ between CPUs (instruction sets, and machines of one kind pre-train to different models),
    so the margin is kept wide: +0.10 over a two-label task's 0.50, where a node that stops learning
    stays. At the fleet's default rate (5e-4) and on 60 test images the gain was +0.24 when this
    test was written and +0.13 on the first AVX2 CPU."""
    plan, data = fleet(*LEARNABLE, *NEW_SUBCLASSES, "fleet.eval_samples=0", "scenario.dataset.test_per_group=40",
                       "fleet.lr=2e-3", profiles=("jetson_nano",), pretrain_epochs=4)
    node = node_runtime(plan, 0)
    received = node.received()
    rows = [node.run_window(w)[0] for w in range(2)]
    assert sum(r.steps for r in rows) >= 100
    assert rows[-1].acc_F >= received.acc_F + 0.10, (received.acc_F, [r.acc_F for r in rows])


NEW_CLASSES = ["scenario.mode=continual", "scenario.split_by=class", "scenario.T=[]",
               "scenario.P=[circle,square,triangle,plus]", "scenario.F=[ring,star]", "fleet.replay.capacity=all"]


def test_continual_nodes_learn_the_new_classes_and_keep_p(fleet):
    """New classes go from nothing to something in both of them. The tiny model barely knows P
    here (0.27-0.42 of 4 classes) and what F reaches depends on float rounding: 0.11-0.39 over
    seeds 0-3 in either memory layout (7d18688), 0.17 at seed 0 in channels-last, at the fleet's
    default rate (5e-4); on a second AVX2 machine (2026-12-08) 20 steps at that rate left one new
    class at 0. At 2e-3 there both are learned (0.33 and 0.39, F 0.36). So this guards that they
    are learned at all; the measured figures on real images are in docs/adaptation.md, section 9."""
    plan, data = fleet(*LEARNABLE, *NEW_CLASSES, "fleet.lr=2e-3", profiles=("jetson_nano",), pretrain_epochs=4)
    node = node_runtime(plan, 0)
    received = node.received()
    # The new classes' outputs start neutral: zero weights (they were never a target before).
    assert plan.reset_outputs == data.untrained_outputs() and len(plan.reset_outputs) == 2
    assert not received_model(plan).fc.weight[plan.reset_outputs].any()
    assert len(received.acc_F_groups) == 2 and received.acc_F <= 0.5
    last = [node.run_window(w)[0] for w in range(2)][-1]
    assert last.acc_F >= 0.1 and min(last.acc_F_groups) > 0, last
    assert last.acc_P >= received.acc_P - 0.15, (received.acc_P, last.acc_P)


def test_new_class_outputs_are_reset_only_for_new_classes(fleet):
    plan, data = fleet(*NEW_CLASSES, "fleet.new_class_outputs=keep")
    assert plan.reset_outputs == [] and received_model(plan).fc.weight.abs().sum(1).min() > 0
    plan, data = fleet(*NEW_SUBCLASSES)  # F brings new subclasses of known labels: nothing new to reset
    assert data.untrained_outputs() == [] and plan.reset_outputs == []
    with pytest.raises(ConfigCompositionException, match="fleet.new_class_outputs=zero"):  # rejected as composed
        fleet(*NEW_CLASSES, "fleet.new_class_outputs=zero")


def test_drift_events_bring_f_in_tasks(fleet):
    plan, data = fleet(*NEW_CLASSES, "scenario.F=[ring,star,diamond,hexagon]", "fleet.drift.events=2",
                       "fleet.drift.event_gap_s=300", "fleet.nodes=2", "fleet.alpha=100")
    assert plan.f_tasks == [[0, 1], [2, 3]] and plan.event_gap_s == 300
    for partition in range(2):
        node = node_runtime(plan, partition)
        me = plan.node(partition)
        f = node.roles == 1
        groups = np.array([data.label_names[t] for t in node.labels[f]])
        first, second = np.isin(groups, ["ring", "star"]), np.isin(groups, ["diamond", "hexagon"])
        assert first.any() and second.any() and (first | second).all()
        times = node.times[f]
        assert times[first].max() <= times[second].min()  # the second task after the first
        assert times[second].min() >= me.drift_s + 300 and times[first].min() >= me.drift_s


def test_training_is_bounded_by_passes_over_the_data(fleet):
    plan, data = fleet("fleet.passes=3", "fleet.budget.compute_s=null", "fleet.budget.duty_cycle=0.5",
                       profiles=("jetson_nano",))
    node = node_runtime(plan, 0)
    rows = [node.run_window(w)[0] for w in range(3)]
    steps = sum(r.steps for r in rows)
    assert 0 < steps * 8 <= 3 * rows[-1].samples_seen  # batch 8, no replay: 3 visits per sample at most
    assert node._load(3)["visits"] == steps * 8
    assert rows[-1].status == "data_exhausted"  # a fast device with a generous budget runs out of data


# New classes with extra knowledge: T's classes keep their outputs (as in the paper) but are not deployed.
NEW_CLASSES_WITH_T = ["scenario.mode=continual", "scenario.split_by=class", "scenario.T=[diamond,hexagon]",
                      "scenario.P=[circle,square,triangle,plus]", "scenario.F=[ring,star]",
                      "fleet.replay.capacity=all"]


@pytest.mark.parametrize("loss, pushed_down", [("masked", True), ("batch", False)])
def test_the_masked_loss_pushes_down_the_outputs_outside_the_deployed_task(fleet, loss, pushed_down):
    """The paper adapts on P ∪ F with every output in the softmax, so T's outputs are pushed down
    with every example; ``masked`` keeps that (while a class the node's batch lacks is spared),
    ``batch`` (the rule before) never touches them: an extra-knowledge model then keeps predicting
    T's classes for F's samples."""
    plan, data = fleet(*NEW_CLASSES_WITH_T, f"fleet.loss={loss}", "fleet.budget.compute_s=2")
    t_outputs = sorted({int(t) for t in data.datasets["T"]["train"].targets.tolist()})
    deployed = {int(t) for role in "PF" for t in data.datasets[role]["train"].targets.tolist()}
    # T's outputs, and those of the dataset's classes no role uses, are outside the deployed task.
    assert plan.undeployed_outputs == data.undeployed_outputs() == sorted(set(range(data.num_outputs)) - deployed)
    assert set(t_outputs) <= set(plan.undeployed_outputs) and len(t_outputs) == 2
    t_outputs = plan.undeployed_outputs
    node = node_runtime(plan, 0)
    before = received_model(plan).fc.bias.detach().clone()
    row, model = node.run_window(0)
    assert row.steps > 0
    after = model.fc.bias.detach()
    if pushed_down:
        assert (after[t_outputs] < before[t_outputs]).all(), (before, after)
        # FedAvg mixes those rows over every example the node trained on (they all pushed them).
        assert (node.trained_per_output[t_outputs] == row.steps * plan.fleet.batch_size).all()
    else:
        assert torch.equal(after[t_outputs], before[t_outputs])
        assert not node.trained_per_output[t_outputs].any()


def test_both_arms_are_judged_by_one_rule_on_the_same_samples(make_cfg):
    """extra and task_only differ in what the coordinator trains on, never in how a fleet, its
    shared model or the reference are judged: the same test subsets, the same outputs outside the
    deployed task, the same accuracy function (argmax over every output)."""
    from swarm.config import data_options, scenario_of
    from swarm.server.data.build import build
    from swarm.server.data.evaluation_sets import test_sets

    arms = {}
    for pretrain in ("extra", "task_only"):
        cfg = make_cfg(*TINY, *NEW_CLASSES_WITH_T, f"pretrain={pretrain}")
        data = build(scenario_of(cfg), data_options(cfg))
        arms[pretrain] = (data, test_sets(data, continual=True, cap=int(cfg.fleet.eval_samples)))
    (extra, extra_tests), (task, task_tests) = arms["extra"], arms["task_only"]
    assert len(extra.datasets["T"]["train"]) > 0 and len(task.datasets["T"]["train"]) == 0
    assert extra.undeployed_outputs() == task.undeployed_outputs() != []
    assert extra.label_names == task.label_names
    for name in ("P", "F", "PF"):
        a, b = extra_tests.sets[name], task_tests.sets[name]
        assert len(a) == len(b) > 0
        assert all(torch.equal(a[i][0], b[i][0]) and int(a[i][1]) == int(b[i][1]) for i in range(len(a)))
