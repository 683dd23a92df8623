"""A pruned model's shape: its conv widths, rebuilding it from them, and counting its cost.

A checkpoint stores a pruned model as its config plus the width of every conv layer; a node (or the
coordinator) rebuilds the shape by pruning a freshly built model down to those widths with
torch-pruning's dependency graph, then loads the weights.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch_pruning as tp
from torch import nn

from swarm.nodes.errors import SwarmError


def conv_widths(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv layer: with the model config, all it takes to rebuild a pruned shape."""
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def shrink_to(model: nn.Module, widths: Mapping[str, int], example_inputs: torch.Tensor) -> nn.Module:
    """Prune a freshly built model down to saved ``widths`` (its trailing channels), so that a pruned
    checkpoint's state dict fits it. The values are then overwritten by ``load_state_dict``."""
    modules = dict(model.named_modules())
    unknown = [n for n in widths if not isinstance(modules.get(n), nn.Conv2d)]
    if unknown:
        raise SwarmError(f"checkpoint names conv layers this model lacks: {', '.join(unknown[:5])}")
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
    for name, width in widths.items():
        conv = modules[name]
        if width > conv.out_channels:
            raise SwarmError(f"checkpoint layer {name} has {width} channels, more than the model's {conv.out_channels}")
        if width < conv.out_channels:
            group = graph.get_pruning_group(conv, tp.prune_conv_out_channels,
                                            idxs=list(range(width, conv.out_channels)))
            group.prune()
    return model


def count_macs_and_params(model: nn.Module, example_inputs: torch.Tensor) -> tuple[int, int]:
    """Multiply-accumulates of one forward pass of ``example_inputs`` and the parameter count."""
    was_training = model.training
    model.eval()
    macs, params = tp.utils.count_ops_and_params(model, example_inputs)
    model.train(was_training)
    return int(macs), int(params)
