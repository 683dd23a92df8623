"""The model zoo: torchvision ResNet-50 / ResNet-18 and a small CIFAR-style ResNet, by name
(``model.name``): add one with a builder registered by ``@model("name")`` and its
``scenarios/model/<name>.yaml``.

Every model is built from torchvision's own ``BasicBlock`` / ``Bottleneck`` classes, so zennit's
``ResNetCanonizer`` (which matches those classes) and torch-pruning's dependency graph treat all of
them alike.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models.resnet import BasicBlock

from swarm.nodes.errors import SwarmError

class Stem(StrEnum):
    """The first layers: auto (small for inputs of 64 px or less), imagenet (7x7 stride-2 conv + max-pool), small (3x3 stride-1)."""

    auto = "auto"
    imagenet = "imagenet"
    small = "small"


def resolve_stem(stem: str, image_size: int) -> str:
    """``auto`` picks the small stem (3x3 stride-1 conv, no max-pool) for inputs of 64 px or less."""
    if stem not in tuple(Stem):
        raise SwarmError(f"model.stem must be one of {', '.join(Stem)}, not '{stem}'")
    if stem == "auto":
        return "small" if image_size <= 64 else "imagenet"
    return stem


def _stem(in_channels: int, width: int, stem: str) -> tuple[nn.Conv2d, nn.Module]:
    if stem == "small":
        return nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False), nn.Identity()
    return (nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1))


class SmallResNet(nn.Module):
    """A CIFAR-style ResNet: a stem, three stages of basic blocks, global pooling, a linear head.

    The default (widths 16/32/64, two blocks a stage) has about 0.18M parameters. Attribute names
    follow torchvision (conv1, bn1, layer1..., fc) so that tools written for ResNets apply.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, widths: Sequence[int] = (16, 32, 64),
                 blocks: Sequence[int] = (2, 2, 2), stem: str = "small") -> None:
        super().__init__()
        if len(widths) != len(blocks) or not widths:
            raise SwarmError("model.widths and model.blocks must be lists of the same, non-zero length")
        # Registration order = forward order (conv1, bn1, relu, maxpool): zennit's BatchNorm merging
        # pairs each BatchNorm with the module registered right before it.
        conv1, maxpool = _stem(in_channels, widths[0], stem)
        self.conv1 = conv1
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = maxpool
        in_planes = widths[0]
        self.stages: list[str] = []
        for i, (width, count) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(count):
                downsample = None
                if j == 0 and (stride != 1 or in_planes != width):
                    downsample = nn.Sequential(nn.Conv2d(in_planes, width, 1, stride=stride, bias=False),
                                               nn.BatchNorm2d(width))
                layers.append(BasicBlock(in_planes, width, stride if j == 0 else 1, downsample))
                in_planes = width
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
            self.stages.append(f"layer{i + 1}")
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.stages:
            x = getattr(self, stage)(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


Builder = Callable[[Mapping[str, Any], int, int, str], nn.Module]  # (model config, outputs, in channels, stem)
MODELS: dict[str, Builder] = {}


def model(name: str) -> Callable[[Builder], Builder]:
    """Register a model builder under ``name`` (``model.name``; ``scenarios/model/<name>.yaml``)."""
    def register(builder: Builder) -> Builder:
        MODELS[name] = builder
        return builder
    return register


def model_name(model_cfg: Mapping[str, Any]) -> str:
    """The registered model a ``model`` config chooses. The group is free-form (each model takes
    options of its own), so the registry is its one reader."""
    return str(model_cfg.get("name"))


def build_model(model_cfg: Mapping[str, Any], num_outputs: int, in_channels: int, image_size: int) -> nn.Module:
    """Build the configured model, freshly initialised (no downloaded weights), for this task's shape."""
    name = model_name(model_cfg)
    if name not in MODELS:
        raise SwarmError(f"unknown model '{name}'; models are {', '.join(MODELS)}")
    return MODELS[name](model_cfg, num_outputs, in_channels, resolve_stem(str(model_cfg.get("stem", "auto")), image_size))


def _torchvision_resnet(constructor: Callable[..., nn.Module]) -> Builder:
    def build(model_cfg: Mapping[str, Any], num_outputs: int, in_channels: int, stem: str) -> nn.Module:
        built = constructor(weights=None, num_classes=num_outputs)
        if stem == "small" or in_channels != 3:
            built.conv1, built.maxpool = _stem(in_channels, built.conv1.out_channels, stem)
        return built
    return build


model("resnet50")(_torchvision_resnet(resnet50))
model("resnet18")(_torchvision_resnet(resnet18))


@model("resnet_small")
def _small_resnet(model_cfg: Mapping[str, Any], num_outputs: int, in_channels: int, stem: str) -> nn.Module:
    return SmallResNet(num_outputs, in_channels, tuple(model_cfg.get("widths", (16, 32, 64))),
                       tuple(model_cfg.get("blocks", (2, 2, 2))), stem)


def classifier(model: nn.Module) -> tuple[str, nn.Linear]:
    """The output layer (name, module): the last ``Linear``, ``fc`` in every model of the zoo."""
    heads = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not heads:
        raise SwarmError(f"{type(model).__name__} has no Linear output layer")
    return heads[-1]


def reset_outputs(model: nn.Module, outputs: Sequence[int]) -> None:
    """Give the classifier's ``outputs`` a neutral start: zero weights, the other outputs' mean bias.

    Before new classes arrive, pre-training and every recovery after a cut train all outputs with
    cross-entropy on the old classes only, which drives the new classes' outputs far below the
    rest; on a deeply pruned model, adaptation then needs more epochs to lift them than early
    stopping allows (docs/adaptation.md, section 9). A zero row gives every input the same, middling
    score, so it takes practically no prediction from the classes the model knows, and the first
    gradient step already moves it towards its class's features, like a freshly added
    class-incremental head.
    """
    _, head = classifier(model)
    rows = sorted({int(o) for o in outputs})
    if not rows:
        return
    if rows[0] < 0 or rows[-1] >= head.out_features:
        raise SwarmError(f"outputs {rows} are not all outputs of a {head.out_features}-output classifier")
    others = sorted(set(range(head.out_features)) - set(rows))
    with torch.no_grad():
        head.weight[rows] = 0.0
        if head.bias is not None:
            head.bias[rows] = head.bias[others].mean() if others else 0.0


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
