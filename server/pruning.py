"""Structural channel pruning with torch-pruning: one cut of Algorithm 1, and rebuilding a pruned shape.

A cut removes ``ratio`` of the *current* output channels of every prunable layer, lowest score
first. Scores are per conv layer and channel (LRP relevance or filter l1 norm); torch-pruning's
dependency graph removes each channel everywhere it is coupled (the BatchNorm after it, the input
channels of the next layer), and a group's score is the sum of the scores of its conv layers.

Scopes:

* ``inner`` (default, the paper's counts): channels inside residual blocks only (bottleneck
  conv1/conv2 outputs, basic-block conv1 output). The residual-stream widths, the stem and the
  head stay. For networks without residual blocks, every conv layer is inner.
* ``all``: every dependency group torch-pruning finds, residual streams included; only the
  classifier's outputs stay.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch_pruning as tp
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from swarm.nodes.choices import Scope
from swarm.nodes.errors import SwarmError


def kept_channels(channels: int, ratio: float) -> int:
    """Channels a layer keeps after one cut: torch-pruning keeps ``floor((1 - ratio) * C)``, at least 1."""
    if channels <= 1:
        return channels
    return max(1, int(channels * (1 - ratio)))


def _classifier(model: nn.Module) -> nn.Module:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise SwarmError("the model has no linear classifier layer to keep")
    return linears[-1]


def prunable_layers(model: nn.Module, scope: Scope = Scope.inner) -> list[str]:
    """Names of the conv layers whose output channels a cut removes (``scope``, a choice Hydra
    checked while composing the config)."""
    names = {m: n for n, m in model.named_modules()}
    blocks = [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    if scope == Scope.inner and blocks:
        inner = []
        for block in blocks:
            convs = [block.conv1] if isinstance(block, BasicBlock) else [block.conv1, block.conv2]
            inner += [names[c] for c in convs]
        return inner
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def ignored_layers(model: nn.Module, scope: Scope) -> list[nn.Module]:
    """Layers whose outputs must keep their width: torch-pruning skips every group that touches them."""
    keep = set(prunable_layers(model, scope))
    ignored = [m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n not in keep]
    return ignored + [_classifier(model)]


class ChannelScores(tp.importance.Importance):
    """torch-pruning importance from per-layer channel scores: a group's score is the sum of the
    scores of its conv layers' output channels (for ``inner`` groups, just the one layer's)."""

    def __init__(self, scores: Mapping[nn.Module, torch.Tensor]) -> None:
        self.scores = scores

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        total = None
        for i, (dep, idxs) in enumerate(group):
            layer = dep.layer
            if dep.pruning_fn != tp.prune_conv_out_channels or layer not in self.scores:
                continue
            score = self.scores[layer]
            if len(score) != layer.out_channels:
                raise SwarmError(f"score of length {len(score)} for a layer with {layer.out_channels} channels")
            root = torch.as_tensor(group[i].root_idxs, dtype=torch.long)
            local = score.to(torch.float64)[torch.as_tensor(idxs, dtype=torch.long)]
            if total is None:
                total = torch.zeros(len(group[0].idxs), dtype=torch.float64)
            total.index_add_(0, root, local)
        return total


def prune_step(model: nn.Module, scores: Mapping[str, torch.Tensor], example_inputs: torch.Tensor,
               ratio: float = 0.2, scope: Scope = Scope.inner) -> dict[str, tuple[int, int]]:
    """Remove ``ratio`` of the current channels of every prunable layer, lowest score first.

    ``scores`` maps conv layer names to one score per output channel; every prunable layer needs
    one. Returns ``{layer: (channels before, after)}``. Never call this with zennit hooks attached.
    """
    if not 0 < ratio < 1:
        raise SwarmError(f"prune.ratio must be in (0, 1), not {ratio}")
    modules = dict(model.named_modules())
    layers = prunable_layers(model, scope)
    missing = [n for n in layers if n not in scores]
    if missing:
        raise SwarmError(f"no channel scores for {', '.join(missing[:5])}")
    before = {n: modules[n].out_channels for n in layers}
    importance = ChannelScores({modules[n]: scores[n] for n in scores if n in modules})
    pruner = tp.pruner.MetaPruner(  # a fresh pruner per cut: its ratio is relative to today's width
        model, example_inputs, importance=importance, pruning_ratio=ratio,
        ignored_layers=ignored_layers(model, scope), global_pruning=False, iterative_steps=1,
    )
    pruner.step()
    return {n: (before[n], modules[n].out_channels) for n in layers}


def schedule(channels: int, ratio: float, iterations: int) -> list[int]:
    """A layer's width after each of ``iterations`` cuts (index 0: unpruned)."""
    widths = [channels]
    for _ in range(iterations):
        widths.append(kept_channels(widths[-1], ratio))
    return widths
