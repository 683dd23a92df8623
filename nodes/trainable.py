"""What a node trains (``fleet.update``), and what training only that costs the device.

A device too small to train every weight can still adapt part of the model: its biases and
normalisation scales (TinyTL: Cai et al., NeurIPS 2020, https://arxiv.org/abs/2007.11622, trains
biases only and keeps activation memory to the layers whose inputs a gradient needs) or its output
layer. A mode names the parameters trained; :func:`freeze` leaves every other one without a
gradient, so the optimizer, given :func:`freeze`'s list, holds no state for it.

:func:`training_cost` measures what the device model charges for a mode, from one forward pass:

* memory: gradients and Adam's two slots for the trained parameters only; the activations a
  backward pass keeps, from the first layer holding a trained parameter on (and that layer's
  input, unless it is the model's first), as output bytes of the leaf modules, the convention
  the full model always had (:func:`swarm.nodes.node.activation_bytes_per_sample`);
* compute: the forward pass, plus the backward pass's input gradients from that first layer on
  and the weight gradients of the trained convolution and linear weights, each as many
  multiply-accumulates as the layer's forward. Under ``full`` that is 2 x the forward, the
  3 x forward a training step always cost here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from swarm.nodes.choices import Update
from swarm.nodes.models import classifier

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)  # their weight is a scale


def trained_names(model: nn.Module, mode: Update) -> list[str]:
    """The names of the parameters ``mode`` trains, in ``model.named_parameters()`` order."""
    if mode == Update.full:
        return [name for name, _ in model.named_parameters()]
    if mode == Update.head:
        head, _ = classifier(model)
        return [name for name, _ in model.named_parameters() if name.rpartition(".")[0] == head]
    norms = {name for name, module in model.named_modules() if isinstance(module, _NORMS)}
    return [name for name, _ in model.named_parameters()
            if name.endswith(".bias") or (name.endswith(".weight") and name.rpartition(".")[0] in norms)]


def freeze(model: nn.Module, mode: Update) -> list[nn.Parameter]:
    """Only ``mode``'s parameters keep ``requires_grad``; returns them, for the optimizer."""
    trained = set(trained_names(model, mode))
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in trained)
    return [parameter for name, parameter in model.named_parameters() if name in trained]


@dataclass(frozen=True)
class TrainingCost:
    """What one sample of a training step under a mode costs (see the module docstring)."""

    trained_parameters: int
    activation_bytes: int  # kept for the backward pass, per sample
    backward_share: float  # the backward pass's multiply-accumulates over the forward pass's


@dataclass
class _Leaf:
    name: str
    module: nn.Module
    input_bytes: int
    output_bytes: int
    macs: int  # per sample: convolutions and linear layers (what dominates both passes)


def _leaves_in_call_order(model: nn.Module, example: torch.Tensor) -> list[_Leaf]:
    names = {module: name for name, module in model.named_modules()}
    leaves: list[_Leaf] = []

    def hook(module, inputs, output):
        if not isinstance(output, torch.Tensor):
            return
        first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        macs = 0
        if isinstance(module, nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1]
            macs = output.numel() * (module.in_channels // module.groups) * kernel
        elif isinstance(module, nn.Linear):
            macs = output.numel() * module.in_features
        leaves.append(_Leaf(names[module], module, 0 if first is None else first.numel() * first.element_size(),
                            output.numel() * output.element_size(), macs))

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example[:1])
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return leaves


def training_cost(model: nn.Module, example: torch.Tensor, mode: Update) -> TrainingCost:
    """:class:`TrainingCost` of training ``mode``'s parameters of ``model`` on inputs like ``example``."""
    trained = set(trained_names(model, mode))
    leaves = _leaves_in_call_order(model, example)
    owns = [any(f"{leaf.name}.{p}" in trained for p, _ in leaf.module.named_parameters(recurse=False))
            for leaf in leaves]
    count = sum(p.numel() for name, p in model.named_parameters() if name in trained)
    if not any(owns):
        return TrainingCost(count, 0, 0.0)
    first = owns.index(True)
    above = leaves[first:]
    activations = sum(leaf.output_bytes for leaf in above) + (leaves[first].input_bytes if first else 0)
    forward = sum(leaf.macs for leaf in leaves)
    input_gradients = sum(leaf.macs for leaf in above)
    weight_gradients = sum(leaf.macs for leaf in leaves if f"{leaf.name}.weight" in trained)
    share = (input_gradients + weight_gradients) / forward if forward else 0.0
    return TrainingCost(count, activations, share)
