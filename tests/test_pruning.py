"""Structural pruning: schedules, the IMP criterion, scopes, the paper's ResNet-50 sizes, checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from swarm.nodes import checkpoints
from swarm.nodes.errors import SwarmError
from swarm.nodes.models import build_model, count_parameters
from swarm.server.pruning import kept_channels, prunable_layers, prune_step, schedule
from swarm.server.relevance import filter_l1

SMALL = {"name": "resnet_small", "stem": "auto", "widths": [16, 32, 64], "blocks": [2, 2, 2]}
PAPER_RESNET50_M = [23.5, 17.5, 13.3, 10.3, 8.3, 6.7, 5.6, 4.8, 4.1, 3.6, 3.3]


def random_scores(model, scope="inner", seed=0):
    g = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    return {n: torch.rand(modules[n].out_channels, generator=g) for n in prunable_layers(model, scope)}


def test_channel_counts_follow_the_schedule_each_iteration():
    model = build_model(SMALL, 10, 3, 32)
    x = torch.randn(1, 3, 32, 32)
    initial = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    inner = prunable_layers(model)
    assert inner == [f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in (0, 1)]
    for iteration in range(1, 5):
        prune_step(model, random_scores(model, seed=iteration), x, ratio=0.2)
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d):
                expected = schedule(initial[name], 0.2, iteration)[-1] if name in inner else initial[name]
                assert module.out_channels == expected, (iteration, name)
    assert schedule(64, 0.2, 3) == [64, 51, 40, 32]
    assert kept_channels(1, 0.2) == 1 and kept_channels(2, 0.2) == 1


def test_pruned_model_trains():
    model = build_model(SMALL, 10, 3, 32)
    for _ in range(3):
        prune_step(model, random_scores(model), torch.randn(1, 3, 32, 32))
    optimizer = torch.optim.Adam(model.parameters())
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    optimizer.step()
    assert all(p.grad is not None for p in model.parameters())


def test_imp_removes_the_lowest_norm_filters():
    model = build_model(SMALL, 10, 3, 32)
    conv = model.layer3[1].conv1
    with torch.no_grad():
        for i in range(conv.out_channels):  # filter i has l1 norm proportional to (i + 1), shuffled
            conv.weight[i] = torch.sign(conv.weight[i]) * (((i * 37) % 64) + 1)
    norms = filter_l1(model)["layer3.1.conv1"]
    survivors = torch.sort(torch.argsort(norms, descending=True)[:kept_channels(64, 0.2)]).values
    expected = conv.weight[survivors].clone()
    prune_step(model, filter_l1(model, prunable_layers(model)), torch.randn(1, 3, 32, 32), ratio=0.2)
    assert torch.equal(model.layer3[1].conv1.weight, expected)


def test_scope_all_prunes_residual_streams():
    model = build_model(SMALL, 10, 3, 32)
    before = count_parameters(model)
    prune_step(model, random_scores(model, "all"), torch.randn(1, 3, 32, 32), scope="all")
    assert model.layer1[0].conv2.out_channels < 16  # the residual stream shrank
    assert model.fc.out_features == 10
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert count_parameters(model) < 0.7 * before


def test_plain_sequential_cnn():
    model = nn.Sequential(nn.Conv2d(3, 10, 3), nn.BatchNorm2d(10), nn.ReLU(), nn.Conv2d(10, 20, 3), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(20, 4))
    assert prunable_layers(model) == ["0", "3"]
    prune_step(model, random_scores(model), torch.randn(1, 3, 16, 16))
    assert (model[0].out_channels, model[3].out_channels, model[7].in_features) == (8, 16, 16)


def test_resnet50_dry_schedule_matches_the_paper():
    model = build_model({"name": "resnet50", "stem": "imagenet"}, 10, 3, 32)
    x = torch.randn(1, 3, 32, 32)
    sizes = [count_parameters(model) / 1e6]
    for _ in range(4):
        prune_step(model, filter_l1(model, prunable_layers(model)), x)
        sizes.append(count_parameters(model) / 1e6)
    for ours, paper in zip(sizes, PAPER_RESNET50_M):
        assert abs(ours - paper) / paper < 0.03, (sizes, PAPER_RESNET50_M)


def test_missing_scores_and_bad_ratio():
    model = build_model(SMALL, 10, 3, 32)
    with pytest.raises(SwarmError, match="no channel scores"):
        prune_step(model, {}, torch.randn(1, 3, 32, 32))
    with pytest.raises(SwarmError, match="ratio"):
        prune_step(model, random_scores(model), torch.randn(1, 3, 32, 32), ratio=1.5)


def test_checkpoint_round_trip(tmp_path):
    model = build_model(SMALL, 10, 3, 32)
    for _ in range(2):
        prune_step(model, random_scores(model), torch.randn(1, 3, 32, 32))
    arch = checkpoints.architecture(model, SMALL, 10, 3, 32)
    checkpoints.save(tmp_path / "m.pt", model, arch, iteration=2)
    blob = torch.load(tmp_path / "m.pt", weights_only=True)  # no pickled code needed
    assert blob["meta"] == {"iteration": 2}
    loaded, loaded_arch, meta = checkpoints.load(tmp_path / "m.pt")
    assert loaded_arch == arch and meta == {"iteration": 2}
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(model.eval()(x), loaded.eval()(x))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SwarmError, match="cannot read checkpoint"):
        checkpoints.load(tmp_path / "bad.pt")
