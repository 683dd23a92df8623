"""Chosen channels (``fleet.update=fisher|relevant``): a node trains exactly the channels it chose
within the budget, and the device model charges the choosing and the training of those."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from swarm.nodes import io
from swarm.nodes.checkpoints import received_model
from swarm.nodes.choices import Update
from swarm.nodes.device import scoring_need, step_flops
from swarm.nodes.errors import SwarmError
from swarm.nodes.fleet_plan import FleetPlan
from swarm.nodes.models import build_model
from swarm.nodes.node import model_costs
from swarm.nodes.selection import (FISHER_BATCHES, Chooser, attach, cost, fisher_scores, layers,
                                   least_relevant_first, merged)
from tests.conftest import node_runtime, write_fleet_plan

TINY = ["scenario.dataset.train_per_group=8", "scenario.dataset.test_per_group=3", "scenario.dataset.image_size=16",
        "fleet.nodes=2", "fleet.window_s=100", "fleet.stream_rate=0.2", "fleet.eval_samples=60",
        "fleet.drift.low=0", "fleet.drift.high=150", "fleet.batch_size=8", "fleet.budget.compute_s=0.5",
        "fleet.profiles=[raspberry_pi_4]"]
BUDGET_KB = 1500  # the head alone needs about 540 KB at batch 8 on this model: room for some channels, not all


def _model() -> nn.Module:
    torch.manual_seed(0)
    return build_model({"name": "resnet_small"}, num_outputs=10, in_channels=3, image_size=16)


@pytest.mark.parametrize("mode", [Update.fisher, Update.relevant])
def test_a_node_trains_exactly_the_channels_it_chose(make_cfg, tmp_path, mode):
    cfg = make_cfg(*TINY, f"fleet.update={mode}", f"fleet.update_budget_kb={BUDGET_KB}", "fleet.budget.compute_s=5")
    plan = FleetPlan.load(write_fleet_plan(cfg, tmp_path, "run", windows=2)[0])
    assert bool(plan.channel_relevance) == (mode == Update.relevant)  # the server's LRP over P, in the plan
    node = node_runtime(plan, 0)
    row, model = node.run_window(0)
    saved = io.load_tensors(node.state_path(1))
    selection = saved["selection"]
    assert row.steps > 0 and selection
    sent, after = received_model(plan).state_dict(), model.state_dict()
    assert list(after) == list(sent)  # a plain model leaves the node: same names, same order
    modules = dict(model.named_modules())
    chosen_layers = {layer.conv: layer for layer in layers(model, node.example)}
    moved_rows = 0
    for layer in chosen_layers.values():
        channels = selection.get(layer.conv, [])
        others = [c for c in range(layer.channels) if c not in channels]
        names = [f"{layer.conv}.weight"] + ([f"{layer.norm}.weight", f"{layer.norm}.bias"] if layer.norm else [])
        for name in names:
            assert torch.equal(after[name][others], sent[name][others]), name  # not one bit moved
            moved_rows += sum(not torch.equal(after[name][c], sent[name][c]) for c in channels)
    assert moved_rows > 0
    assert not torch.equal(after["fc.weight"], sent["fc.weight"])  # the output layer always trains
    assert sum(len(c) for c in selection.values()) < sum(layer.channels for layer in chosen_layers.values())
    # Optimizer state for the chosen rows (a delta per chosen weight) and the output layer, nothing else.
    state = saved["optimizer"]["state"]
    expected = sorted([(len(c), *sent[f"{name}.weight"].shape[1:]) for name, c in selection.items()]
                      + [(len(c),) for name, c in selection.items() if chosen_layers[name].norm for _ in range(2)]
                      + [tuple(sent["fc.weight"].shape), tuple(sent["fc.bias"].shape)])
    assert sorted(tuple(s["exp_avg"].shape) for s in state.values()) == expected
    # The next window trains the same channels, the optimizer's state carried over.
    row1, _ = node.run_window(1)
    assert io.load_tensors(node.state_path(2))["selection"] == selection


def test_the_choice_fits_the_budget_and_the_device_model_charges_it():
    model = _model()
    example = torch.randn(2, 3, 16, 16)
    candidates = layers(model, example)
    scores = {layer.conv: torch.rand(layer.channels) for layer in candidates}
    assert Chooser(model, example, batch=8, budget_bytes=250 * 1024).choose(scores) == {}  # the head alone exceeds it
    chosen = []
    for budget_kb in (600, 1500, 3000):
        chooser = Chooser(model, example, batch=8, budget_bytes=budget_kb * 1024)
        selection = chooser.choose(scores)
        chosen.append(sum(len(c) for c in selection.values()))
        step = cost(model, example, selection)
        parameters = step.trained_parameters
        # What the choice was held to, recounted from the step's cost: within the budget.
        assert 3 * 4 * parameters + step.activation_bytes * 8 <= budget_kb * 1024
        assert parameters >= model.fc.weight.numel() + model.fc.bias.numel()
        assert step.backward_share < 2.0
    assert 0 < chosen[0] < chosen[1] < chosen[2]
    # Every channel chosen: every parameter trains (each convolution's BatchNorm with it), and the
    # step costs what full training does.
    everything = {layer.conv: list(range(layer.channels)) for layer in candidates}
    full = cost(model, example, everything)
    assert full.trained_parameters == sum(p.numel() for p in model.parameters())
    assert full.backward_share == pytest.approx(2.0)


def test_fisher_scores_are_the_summed_squared_gradients_per_parameter():
    model = _model()
    example = torch.randn(2, 3, 16, 16)
    candidates = layers(model, example)
    batches = [(torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))) for _ in range(2)]
    model.layer1[0].conv2.weight.requires_grad_(False)
    scores = fisher_scores(model, batches, candidates)
    assert not model.layer1[0].conv2.weight.requires_grad and model.conv1.weight.requires_grad and model.training
    conv1 = candidates[0]
    assert conv1.conv == "conv1" and conv1.norm == "bn1"
    expected = torch.zeros(conv1.channels)
    model.eval()
    for inputs, targets in batches:
        model.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        expected += (model.conv1.weight.grad.square().flatten(1).sum(1) + model.bn1.weight.grad.square()
                     + model.bn1.bias.grad.square())
    assert torch.allclose(scores["conv1"], expected / conv1.per_channel, rtol=1e-4)


def test_relevant_takes_the_channels_least_relevant_to_p_first():
    model = _model()
    example = torch.randn(2, 3, 16, 16)
    candidates = layers(model, example)
    relevance = {layer.conv: [float(c + 1) for c in range(layer.channels)] for layer in candidates}
    relevance["conv1"] = [100.0] * candidates[0].channels
    relevance["conv1"][3] = 1.0  # far below its layer's mean
    scores = least_relevant_first(relevance, candidates)
    best = max(((float(v), name, c) for name, values in scores.items() for c, v in enumerate(values)))
    assert best[1:] == ("conv1", 3)
    with pytest.raises(SwarmError, match="does not fit this model's layer"):
        least_relevant_first({"conv1": [1.0, 2.0]}, candidates)
    with pytest.raises(SwarmError, match="does not fit"):
        least_relevant_first({"conv1": [float("nan")] * candidates[0].channels}, candidates)


def test_fisher_charges_its_choosing_in_the_first_window(make_cfg, tmp_path):
    cfg = make_cfg(*TINY, "fleet.update=fisher", f"fleet.update_budget_kb={BUDGET_KB}", "fleet.budget.compute_s=5")
    plan = FleetPlan.load(write_fleet_plan(cfg, tmp_path, "run", windows=2)[0])
    row, _ = node_runtime(plan, 0).run_window(0)
    macs, _ = model_costs(received_model(plan), plan.architecture, Update.head)
    choosing = FISHER_BATCHES * step_flops(2.0 * macs, 8, 2.0)
    assert row.steps > 0 and row.flops == pytest.approx(row.steps * row.step_flops + choosing)


def test_fishers_choosing_pass_must_fit_in_ram_too(make_cfg, tmp_path):
    """On the microcontroller the chosen channels' steps fit 150 KB, but fisher's choosing pass (a
    backward pass to every channel, one gradient held at a time) does not fit its 256 KB: the node
    never trains and reports the pass's need; relevant, chosen by the server's relevance, trains."""
    rows, plans = {}, {}
    for mode in (Update.fisher, Update.relevant):
        cfg = make_cfg(*TINY, "fleet.profiles=[microcontroller]", "fleet.budget.compute_s=30",
                       "fleet.replay.capacity=0", f"fleet.update={mode}", "fleet.update_budget_kb=150")
        plans[mode] = FleetPlan.load(write_fleet_plan(cfg, tmp_path / str(mode), "run", windows=1)[0])
        rows[mode], _ = node_runtime(plans[mode], 0).run_window(0)
    fisher, relevant = rows[Update.fisher], rows[Update.relevant]
    assert fisher.status == "does_not_fit" and fisher.steps == 0 and fisher.memory_mb > 0.25
    assert relevant.status != "does_not_fit" and relevant.steps > 0 and relevant.memory_mb <= 0.25
    activations, held = Chooser(received_model(plans[Update.fisher]), torch.randn(2, 3, 16, 16), 1, 0.0).scoring()
    assert fisher.memory_mb == pytest.approx(scoring_need(1, activations, 1, 0, 0, held, frozen_in_flash=True).total_mb)


def test_attach_and_merge_leave_a_plain_model():
    model, fresh = _model(), _model()
    example = torch.randn(2, 3, 16, 16)
    trained = attach(model, {"layer1.0.conv1": [0, 2]}, example)
    assert [p.shape[0] for p in trained[:3]] == [2, 2, 2] and len(trained) == 5  # conv rows, bn scale, bn shift, fc
    with torch.no_grad():
        trained[0].add_(1.0)
    plain = merged(model, fresh)
    original = _model()
    delta = plain.layer1[0].conv1.weight - original.layer1[0].conv1.weight
    assert torch.allclose(delta[[0, 2]], torch.ones_like(delta[[0, 2]])) and not delta[[1, 3]].any()
