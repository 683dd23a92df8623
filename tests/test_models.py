"""The model zoo: sizes, stems and shapes."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.resnet import BasicBlock, Bottleneck

from swarm.nodes.errors import SwarmError
from swarm.nodes.models import SmallResNet, build_model, count_parameters, reset_outputs, resolve_stem


def test_resnet50_is_the_papers_size():
    model = build_model({"name": "resnet50", "stem": "imagenet"}, 10, 3, 224)
    assert count_parameters(model) == 23_528_522  # the paper's 23.5M
    assert any(isinstance(m, Bottleneck) for m in model.modules())


def test_small_stem_for_small_images():
    model = build_model({"name": "resnet50", "stem": "auto"}, 10, 3, 32)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    assert abs(count_parameters(model) - 23.5e6) < 0.05e6
    assert resolve_stem("auto", 224) == "imagenet" and resolve_stem("auto", 64) == "small"


@pytest.mark.parametrize("name, channels, size", [("resnet18", 1, 28), ("resnet_small", 1, 28),
                                                  ("resnet_small", 3, 32), ("resnet18", 3, 96)])
def test_forward_shapes(name, channels, size):
    model = build_model({"name": name, "stem": "auto"}, 7, channels, size)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 7)
    out.sum().backward()


def test_resnet_small_is_small_and_uses_torchvision_blocks():
    model = build_model({"name": "resnet_small", "stem": "auto", "widths": [16, 32, 64], "blocks": [2, 2, 2]}, 10, 3, 32)
    assert isinstance(model, SmallResNet)
    assert count_parameters(model) < 1_000_000
    assert sum(isinstance(m, BasicBlock) for m in model.modules()) == 6


def test_unknown_model_and_stem():
    with pytest.raises(SwarmError, match="unknown model 'vgg'"):
        build_model({"name": "vgg"}, 10, 3, 32)
    with pytest.raises(SwarmError, match="model.stem"):
        build_model({"name": "resnet18", "stem": "huge"}, 10, 3, 32)


def test_reset_outputs_start_neutral_and_leave_the_rest():
    model = SmallResNet(6, widths=(4, 8), blocks=(1, 1)).eval()
    with torch.no_grad():
        model.fc.weight.mul_(50)  # a trained head: confident on its classes
        model.fc.bias.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0, -9.0, -9.0]))  # outputs 4, 5 pushed down
    x = torch.randn(16, 3, 16, 16)
    before = model(x)
    reset_outputs(model, [4, 5])
    after = model(x)
    assert torch.equal(model.fc.weight[4:], torch.zeros(2, 8)) and torch.allclose(model.fc.bias[4:], torch.tensor(2.5))
    assert torch.equal(after[:, :4], before[:, :4])  # the known classes score as before
    assert torch.allclose(after[:, 4:], torch.tensor(2.5))  # every input alike
    reset_outputs(model, [])  # nothing to reset
    with pytest.raises(SwarmError, match="6-output"):
        reset_outputs(model, [6])


def test_a_model_is_a_plug_in(monkeypatch):
    """A builder registered with ``@model(name)`` is what ``model.name=name`` builds, with the task's
    shape and the resolved stem; an unknown name lists the registered ones."""
    from swarm.nodes import models

    monkeypatch.setattr(models, "MODELS", dict(models.MODELS))  # registered for this test only
    calls = []

    @models.model("linear_probe")
    def linear_probe(model_cfg, num_outputs, in_channels, stem):
        calls.append((num_outputs, in_channels, stem))
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_outputs))

    built = models.build_model({"name": "linear_probe"}, num_outputs=7, in_channels=1, image_size=28)
    assert calls == [(7, 1, "small")] and isinstance(built, torch.nn.Sequential)
    with pytest.raises(SwarmError, match="unknown model 'nope'; models are resnet50, resnet18, resnet_small, linear_probe"):
        models.build_model({"name": "nope"}, num_outputs=7, in_channels=1, image_size=28)


def test_every_data_source_module_registers_itself():
    """The sources package imports its modules, and each registers its names (no central list)."""
    from swarm.server.data import sources

    assert set(sources.SOURCES) == {"cifar10", "cifar100", "domainnet", "fashion_mnist", "fashion_mnist_styles",
                                    "folder", "synthetic"}
    assert sources.source({"name": "fashion_mnist"}).channels == 1
