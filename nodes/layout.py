"""Where a model and its batches live: the device, in the memory layout that is fastest there.

On the CPU that is channels-last (NHWC): oneDNN's convolutions run the small ResNets' training
steps about 1.3x and their inference 1.2-1.5x faster on it than on the default NCHW layout
(``python benchmarks/layout.py``, docs/benchmarks.md). Elsewhere models and batches keep their
layout (not measured there). Every place that trains, evaluates or explains a model goes through
:func:`place` and :func:`batch_to`, so the layout is decided here once.
"""

from __future__ import annotations

import torch
from torch import nn


def memory_format(device: torch.device | str) -> torch.memory_format:
    return torch.channels_last if torch.device(device).type == "cpu" else torch.preserve_format


def place(model: nn.Module, device: torch.device | str) -> nn.Module:
    """Move ``model`` (in place, as ``Module.to`` does) to ``device`` in that device's layout."""
    return model.to(device, memory_format=memory_format(device))


def batch_to(inputs: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A batch on ``device``; image batches (N, C, H, W) in that device's layout."""
    if inputs.dim() != 4:
        return inputs.to(device, non_blocking=True)
    return inputs.to(device, memory_format=memory_format(device), non_blocking=True)
