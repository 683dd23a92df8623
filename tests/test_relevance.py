"""LRP channel relevance: conservation, an independent reference, zennit agreement, ResNets."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from zennit.composites import LayerMapComposite, layer_map_base
from zennit.rules import Epsilon
from zennit.types import Convolution

from swarm.nodes.errors import SwarmError
from swarm.nodes.models import build_model
import swarm.server.lrp as lrp
from swarm.server.pruning import prune_step
import swarm.server.relevance as relevance


def bias_free_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(),
        nn.Conv2d(8, 6, 3, padding=1, bias=False), nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(6, 5, 3, padding=1, bias=False), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4, bias=False),
    )


def batch(n: int = 6, size: int = 8, classes: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def trained_bn(model: nn.Module, size: int = 32) -> nn.Module:
    """Give BatchNorm layers non-trivial running statistics and affine parameters."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, size, size))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def test_relevance_is_conserved_layer_by_layer():
    model = bias_free_cnn()
    x, y = batch()
    maps = relevance.relevance_maps(model, [(x, y)], epsilon=1e-9)
    logits = model(x).gather(1, y.view(-1, 1)).sum().item()
    assert set(maps) == {"0", "2", "5"}
    for name, m in maps.items():
        assert m.sum().item() == pytest.approx(logits, rel=1e-4, abs=1e-6), name


def test_scores_match_activation_times_gradient():
    """For bias-free ReLU nets LRP-0 equals input x gradient at every layer: an independent reference."""
    model = bias_free_cnn()
    x, y = batch()
    scores = relevance.channel_relevance(model, [(x[:3], y[:3]), (x[3:], y[3:])], epsilon=1e-9)
    outputs = {}
    handles = [model[int(n)].register_forward_hook(lambda m, i, o, n=n: outputs.__setitem__(n, o)) for n in scores]
    logits = model(x)
    for handle in handles:
        handle.remove()
    grads = torch.autograd.grad(logits.gather(1, y.view(-1, 1)).sum(), [outputs[n] for n in scores])
    for (name, score), grad in zip(scores.items(), grads):
        reference = (outputs[name] * grad).sum(0).abs().flatten(1).sum(1).detach()
        assert score.shape == (model[int(name)].out_channels,)
        assert torch.allclose(score, reference, rtol=1e-4, atol=1e-7), name


@pytest.mark.parametrize("name", ["resnet_small", "resnet18"])
def test_our_epsilon_composite_equals_zennits_epsilon_layer_map(name, monkeypatch):
    model = trained_bn(build_model({"name": name, "stem": "auto"}, 10, 3, 32))
    # zennit's merged BatchNorm still computes x / sqrt(1 + eps): not quite the model. Ours skips it
    # (the model exactly). With eps = 0 both explain the same function and must agree; the ε-rule
    # at ε = 1e-6 amplifies a 5e-6 change per layer to a few percent in the lowest layers.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 0.0
    # In float64: the ε-rule at ε = 1e-6 amplifies float32 rounding about 1000-fold in the lowest
    # layers (zennit re-runs each layer in its backward pass, we do not: different rounding), which
    # would hide a real difference; in float64 both are exact to ~1e-9.
    model.double()
    x, y = batch(4, 32, 10)
    x = x.double()
    ours = relevance.relevance_maps(model, [(x, y)])

    def reference(_, m, epsilon=1e-6):
        layer_map = layer_map_base(epsilon) + [(Convolution, Epsilon(epsilon)), (nn.Linear, Epsilon(epsilon))]
        return LayerMapComposite(layer_map=layer_map, canonizers=lrp.canonizers(m, fast=False))

    monkeypatch.setattr(relevance, "make_composite", reference)
    theirs = relevance.relevance_maps(model, [(x, y)])
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert (ours[key] - theirs[key]).abs().max() <= 1e-6 * theirs[key].abs().max(), key


@pytest.mark.parametrize("name", ["resnet_small", "resnet50"])
def test_the_fast_canonizer_computes_the_model_itself(name):
    """BatchNorms merged and skipped, residual sums as Add: the same outputs as the model (to float
    rounding), and everything restored afterwards."""
    model = trained_bn(build_model({"name": name, "stem": "auto"}, 10, 3, 32))
    x, _ = batch(2, 32, 10)
    with torch.no_grad():
        expected = model(x)
        applied = lrp.canonizers(model, fast=True)[0].apply(model)
        assert any(isinstance(m, lrp.Add) for m in model.modules())
        canonized = model(x)
        for canonizer in reversed(applied):
            canonizer.remove()
        assert not any(isinstance(m, lrp.Add) for m in model.modules())
        assert torch.allclose(canonized, expected, rtol=1e-5, atol=1e-5)
        assert torch.equal(model(x), expected)


@pytest.mark.parametrize("name", ["resnet_small", "resnet18", "resnet50"])
def test_resnet_scores_are_finite_with_the_right_shapes(name):
    model = trained_bn(build_model({"name": name, "stem": "auto"}, 10, 3, 32))
    x, y = batch(4, 32, 10)
    scores = relevance.channel_relevance(model, [(x, y)])
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert scores.keys() == convs.keys()
    for n, s in scores.items():
        assert s.shape == (convs[n].out_channels,) and torch.isfinite(s).all() and (s >= 0).all()


def test_attribution_leaves_the_model_as_it_was():
    model = trained_bn(build_model({"name": "resnet_small", "stem": "auto"}, 10, 3, 32)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = batch(4, 32, 10)
    relevance.channel_relevance(model, [(x, y)], target="prediction")
    assert model.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))


def test_a_dead_channel_has_no_relevance_and_is_removed_first():
    model = trained_bn(build_model({"name": "resnet_small", "stem": "auto"}, 10, 3, 32))
    block = model.layer2[0]
    with torch.no_grad():  # channel 5 of the block's inner conv outputs nothing
        block.conv1.weight[5].zero_()
        block.bn1.weight[5] = 0.0
        block.bn1.bias[5] = 0.0
    x, y = batch(8, 32, 10)
    scores = relevance.channel_relevance(model, [(x, y)])
    score = scores["layer2.0.conv1"]
    assert score[5] <= 1e-6 * score.max()
    keep = block.conv2.weight[:, [i for i in range(block.conv1.out_channels) if i != 5]].clone()
    prune_step(model, scores, torch.randn(1, 3, 32, 32), ratio=0.03)  # keeps int(0.97 * 32) = 31
    assert block.conv1.out_channels == 31
    assert torch.equal(block.conv2.weight, keep)  # exactly channel 5 went, everywhere it was used


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon_alpha2_beta1", "epsilon_gamma_box"])
def test_zennit_composites_by_name(composite):
    model = trained_bn(build_model({"name": "resnet_small", "stem": "auto"}, 10, 3, 32))
    x, y = batch(4, 32, 10)
    scores = relevance.channel_relevance(model, [(x, y)], composite=composite)
    assert all(torch.isfinite(s).all() for s in scores.values())


def test_bad_arguments():
    model = bias_free_cnn()
    x, y = batch()
    with pytest.raises(SwarmError, match="unknown LRP composite"):
        relevance.channel_relevance(model, [(x, y)], composite="magic")
    with pytest.raises(SwarmError, match="epsilon must be > 0"):
        relevance.channel_relevance(model, [(x, y)], epsilon=0)
    with pytest.raises(SwarmError, match="target"):
        relevance.channel_relevance(model, [(x, y)], target="all")
    with pytest.raises(SwarmError, match="not conv layers"):
        relevance.channel_relevance(model, [(x, y)], layers=["9"])
    with pytest.raises(SwarmError, match="no samples"):
        relevance.channel_relevance(model, [])
