"""Partial updates (``fleet.update``): a node trains exactly the parameters its mode names, and the
device model charges only what training those needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from swarm.nodes import io
from swarm.nodes.checkpoints import received_model
from swarm.nodes.choices import Update
from swarm.nodes.device import memory_need, step_flops
from swarm.nodes.fleet_plan import FleetPlan
from swarm.nodes.models import build_model
from swarm.nodes.trainable import trained_names, training_cost
from tests.conftest import node_runtime, write_fleet_plan

ROOT = Path(__file__).resolve().parents[1]
TINY = ["scenario.dataset.train_per_group=8", "scenario.dataset.test_per_group=3", "scenario.dataset.image_size=16",
        "fleet.nodes=2", "fleet.window_s=100", "fleet.stream_rate=0.2", "fleet.eval_samples=60",
        "fleet.drift.low=0", "fleet.drift.high=150", "fleet.batch_size=8", "fleet.budget.compute_s=0.5",
        "fleet.profiles=[raspberry_pi_4]"]


def _small_resnet() -> nn.Module:
    return build_model({"name": "resnet_small"}, num_outputs=10, in_channels=3, image_size=16)


def _leaf_outputs(model: nn.Module, example: torch.Tensor) -> list[tuple[nn.Module, int, int]]:
    """(module, input bytes, output bytes) of every leaf call, in call order: counted here apart
    from the module under test."""
    calls = []
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append((m, i[0].numel() * 4, o.numel() * 4)))
             for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model.eval()(example)
    for hook in hooks:
        hook.remove()
    return calls


@pytest.mark.parametrize("mode", [Update.bias, Update.head])
def test_a_node_trains_exactly_its_modes_parameters_and_keeps_no_state_for_the_others(make_cfg, tmp_path, mode):
    cfg = make_cfg(*TINY, f"fleet.update={mode}")
    plan = FleetPlan.load(write_fleet_plan(cfg, tmp_path, "run", windows=2)[0])
    node = node_runtime(plan, 0)
    row, model = node.run_window(0)
    assert row.steps > 0
    sent = received_model(plan).state_dict()
    after = model.state_dict()
    names = trained_names(model, mode)
    frozen = [name for name, _ in model.named_parameters() if name not in names]
    assert names and frozen
    assert all(torch.equal(after[name], sent[name]) for name in frozen)  # not one bit moved
    assert sum(not torch.equal(after[name], sent[name]) for name in names) >= len(names) // 2
    # The optimizer state the node saved holds the trained parameters' slots and nothing else.
    optimizer = io.load_tensors(node.state_path(1))["optimizer"]
    assert len(optimizer["state"]) == len(names) == len(optimizer["param_groups"][0]["params"])
    shapes = sorted(tuple(state["exp_avg"].shape) for state in optimizer["state"].values())
    assert shapes == sorted(tuple(sent[name].shape) for name in names)


def test_full_training_costs_what_it_always_did():
    model, example = _small_resnet(), torch.randn(2, 3, 16, 16)
    model.bn1.weight.requires_grad_(False)
    cost = training_cost(model, example, Update.full)
    assert not model.bn1.weight.requires_grad and model.training  # measuring changed no flag and no mode
    model.bn1.weight.requires_grad_(True)
    assert cost.backward_share == 2.0 and step_flops(1e6, 32, cost.backward_share) == pytest.approx(96e6)
    assert cost.trained_parameters == sum(p.numel() for p in model.parameters())
    # Every layer's output is held for the backward pass (in-place ReLUs share their input's memory).
    outputs = sum(out for m, _, out in _leaf_outputs(model, example[:1]) if not isinstance(m, nn.ReLU))
    assert 0.8 * outputs <= cost.activation_bytes <= 1.2 * outputs


def test_the_head_and_the_biases_cost_less_by_what_they_leave_out():
    model, example = _small_resnet(), torch.randn(2, 3, 16, 16)
    head = training_cost(model, example, Update.head)
    bias = training_cost(model, example, Update.bias)
    full = training_cost(model, example, Update.full)
    fc = model.fc
    calls = _leaf_outputs(model, example[:1])
    forward_macs = sum(m.weight.numel() * o // 4 // m.out_channels if isinstance(m, nn.Conv2d) else 0
                       for m, _, o in calls) + fc.in_features * fc.out_features
    # head: the output layer's weights and bias; nothing kept below it, only the forward's working
    # memory (a few layers' outputs at once); its backward twice its forward
    assert head.trained_parameters == fc.weight.numel() + fc.bias.numel()
    largest = max(i + o for _, i, o in calls)
    assert largest <= head.activation_bytes <= 3 * largest < full.activation_bytes / 2
    assert head.backward_share == pytest.approx(2 * fc.in_features * fc.out_features / forward_macs)
    # bias: every bias and BatchNorm scale; everything after the first convolution kept and
    # back-propagated through, no weight gradient.
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bias.trained_parameters == sum(2 * m.num_features for m in norms) + fc.bias.numel()
    assert calls[0][0] is model.conv1 and calls[1][0] is model.bn1
    conv1_out = calls[0][2]
    assert 0.9 * full.activation_bytes <= bias.activation_bytes <= full.activation_bytes
    first_conv = model.conv1.weight.numel() * conv1_out // 4 // model.conv1.out_channels
    assert bias.backward_share == pytest.approx((forward_macs - first_conv) / forward_macs)
    assert head.backward_share < bias.backward_share < full.backward_share
    # The device's memory: gradients and Adam's two slots only for what trains.
    def need(cost, in_flash=False):
        return memory_need(full.trained_parameters, cost.activation_bytes, 32, 0, 3 * 16 * 16,
                           trained_parameters=cost.trained_parameters, frozen_in_flash=in_flash)
    assert need(full).gradients_mb == need(full).weights_mb
    assert need(head).optimizer_mb == 2 * need(head).gradients_mb < need(full).gradients_mb / 10
    assert need(head).total_mb < need(bias).total_mb < need(full).total_mb
    # Frozen weights kept in flash leave RAM; trained ones do not.
    assert need(full, True) == need(full)
    assert need(head, True).flash_mb + need(head, True).weights_mb == pytest.approx(need(head).weights_mb)
    assert need(head, True).weights_mb == need(head).gradients_mb


def test_the_memory_need_is_the_real_peak_memory_of_the_step_within_20_percent():
    """benchmarks/training_memory.py --quick: full, bias, head, chosen channels (fisher / relevant)
    and fisher's choosing pass at batch 1 and 32, against torch's profiler."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "training_memory.py"), "--quick"],
                          capture_output=True, text=True, timeout=300)
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 16 px")]
    assert done.returncode == 0 and len(rows) == 2 * 5, done.stdout + done.stderr[-2000:]
    assert all(0.8 <= float(row.split("|")[-2]) <= 1.2 for row in rows)


def test_under_a_compute_budget_a_cheaper_mode_is_granted_more_steps(make_cfg, tmp_path):
    steps = {}
    for mode in (Update.full, Update.head):
        cfg = make_cfg(*TINY, f"fleet.update={mode}")
        plan = FleetPlan.load(write_fleet_plan(cfg, tmp_path / str(mode), "run", windows=1)[0])
        row, _ = node_runtime(plan, 0).run_window(0)
        steps[mode] = (row.steps, row.status, row.flops / max(row.steps, 1))
    (full_steps, full_status, full_flops), (head_steps, _, head_flops) = steps[Update.full], steps[Update.head]
    assert full_status == "budget_exhausted" and head_steps > full_steps  # the budget, not the data, bound full
    assert head_flops < 0.5 * full_flops


def test_the_microcontroller_trains_its_head_where_full_training_does_not_fit(make_cfg, tmp_path):
    """Its profile keeps frozen weights in flash and trains one sample a step: under ``head`` the
    RAM need fits its 256 KB and the node trains; under ``full`` it does not fit."""
    rows = {}
    for mode in (Update.full, Update.head):
        cfg = make_cfg(*TINY, "fleet.profiles=[microcontroller]", "fleet.budget.compute_s=30",
                       "fleet.replay.capacity=0", f"fleet.update={mode}")
        plan = FleetPlan.load(write_fleet_plan(cfg, tmp_path / str(mode), "run", windows=1)[0])
        rows[mode], model = node_runtime(plan, 0).run_window(0)
    full, head = rows[Update.full], rows[Update.head]
    assert full.status == "does_not_fit" and full.steps == 0 and full.memory_mb > 0.25
    assert head.steps > 0 and head.memory_mb <= 0.25
    # One sample a step: the step's FLOPs are a batch of one's, the head's backward nearly free.
    assert head.step_flops == pytest.approx(head.flops / head.steps)
    assert head.step_flops < full.step_flops / 2
    assert not torch.equal(model.fc.weight, received_model(plan).fc.weight)
