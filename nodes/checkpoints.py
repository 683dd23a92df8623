"""Checkpoints of pruned models that load with ``torch.load(weights_only=True)``: no pickled code.

A checkpoint holds the state dict, an *architecture* record (the model config, the task's shape,
and every conv layer's width) and free-form metadata. Loading builds the unpruned model from the
config, shrinks it to the recorded widths with torch-pruning, then loads the weights.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from swarm.nodes import io
from swarm.nodes.errors import SwarmError
from swarm.nodes.fleet_plan import FleetPlan
from swarm.nodes.models import build_model, reset_outputs
from swarm.nodes.shapes import conv_widths, shrink_to

FORMAT = "swarm-checkpoint/1"


def architecture(model: nn.Module, model_cfg: Mapping[str, Any], num_outputs: int, in_channels: int,
                 image_size: int) -> dict[str, Any]:
    """Everything needed to rebuild ``model``'s shape, as plain JSON-able values."""
    return {
        "model": dict(model_cfg),
        "num_outputs": int(num_outputs),
        "in_channels": int(in_channels),
        "image_size": int(image_size),
        "conv_widths": conv_widths(model),
    }


def example_inputs(arch: Mapping[str, Any], batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, arch["in_channels"], arch["image_size"], arch["image_size"])


_SHAPES: dict[str, nn.Module] = {}


def build_from_architecture(arch: Mapping[str, Any]) -> nn.Module:
    """A model of exactly the recorded (possibly pruned) shape, with initial values to be overwritten.

    Shrinking traces torch-pruning's dependency graph, so each shape is built once per process
    and copied afterwards (a fleet loads the same shape for every node and window)."""
    key = json.dumps(arch, sort_keys=True)
    if key not in _SHAPES:
        model = build_model(arch["model"], arch["num_outputs"], arch["in_channels"], arch["image_size"])
        _SHAPES[key] = shrink_to(model, arch["conv_widths"], example_inputs(arch))
    return copy.deepcopy(_SHAPES[key])


def save(path: Path, model: nn.Module, arch: Mapping[str, Any], **meta: Any) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    io.save_tensors(path, {"format": FORMAT, "architecture": dict(arch), "state_dict": state, "meta": meta})


def load(path: Path) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """Return (model, architecture, metadata) from a checkpoint written by :func:`save`."""
    try:
        blob = io.load_tensors(path)
    except FileNotFoundError:
        raise SwarmError(f"checkpoint not found: {path}") from None
    except Exception as error:  # a truncated or foreign file
        raise SwarmError(f"cannot read checkpoint {path}: {error}") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise SwarmError(f"{path} is not a swarm checkpoint ({FORMAT})")
    model = build_from_architecture(blob["architecture"])
    model.load_state_dict(blob["state_dict"])
    return model, blob["architecture"], blob.get("meta", {})


def received_model(plan: FleetPlan) -> nn.Module:
    """The model every node starts from: the checkpoint, with the new classes' outputs given a
    neutral start (``fleet.new_class_outputs``; :func:`swarm.nodes.models.reset_outputs`)."""
    model, _, _ = load(Path(plan.checkpoint))
    reset_outputs(model, plan.reset_outputs)
    return model
