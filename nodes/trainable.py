"""What a node trains (``fleet.update``), and what training only that costs the device.

A device too small to train every weight can still adapt part of the model: its biases and
normalisation scales (TinyTL: Cai et al., NeurIPS 2020, https://arxiv.org/abs/2007.11622, trains
biases only and keeps activation memory to the layers whose inputs a gradient needs) or its output
layer. A mode names the parameters trained; :func:`freeze` leaves every other one without a
gradient, so the optimizer, given :func:`freeze`'s list, holds no state for it.

:func:`training_cost` measures what the device model charges for a mode, from one forward pass:

* memory: gradients and Adam's two slots for the trained parameters only; and the activations a
  training step holds at its peak: those autograd keeps for the backward pass of the trained
  parameters (none below the first layer holding one) together with those the forward pass still
  holds (a residual block's input while its branch runs), counted on a real forward pass with
  the mode's parameters requiring gradients, as the bytes of the layers' inputs and outputs still
  alive after each layer, the most at any layer (:func:`peak_activation_bytes`). Counted so,
  weights + gradients + Adam's slots + these came within 8% of the peak memory torch's profiler
  measures in a training step of ``resnet_small`` at 16 and 32 px, batch 1 and 32, every mode
  (``benchmarks/training_memory.py``). Leaf modules' outputs summed, the count used before,
  over-counted ``full`` and ``bias`` by 1.5-1.7x (in-place ReLUs, outputs nothing keeps) and
  under-counted ``head`` 4x (it ignored the forward's working memory);
* compute: the forward pass, plus the backward pass's input gradients from that first layer on
  and the weight gradients of the trained convolution and linear weights, each as many
  multiply-accumulates as the layer's forward. Under ``full`` that is 2 x the forward, the
  3 x forward a training step always cost here.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from swarm.nodes.choices import Update
from swarm.nodes.errors import SwarmError
from swarm.nodes.models import classifier

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)  # their weight is a scale


def trained_names(model: nn.Module, mode: Update) -> list[str]:
    """The names of the parameters ``mode`` trains, in ``model.named_parameters()`` order."""
    if mode in (Update.fisher, Update.relevant):
        raise SwarmError(f"fleet.update={mode} trains the channels each node chooses (swarm.nodes.selection)")
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
    activation_bytes: int  # a training step's activations at their peak, per sample
    backward_share: float  # the backward pass's multiply-accumulates over the forward pass's


@dataclass
class Leaf:
    """A module without children, as one forward pass calls it."""

    name: str
    module: nn.Module
    macs: int  # per sample: convolutions and linear layers (what dominates both passes)


def leaves_in_call_order(model: nn.Module, example: torch.Tensor) -> list[Leaf]:
    """Every leaf module in the order a forward pass of one sample of ``example`` calls it."""
    names = {module: name for name, module in model.named_modules()}
    leaves: list[Leaf] = []

    def hook(module, inputs, output):
        if not isinstance(output, torch.Tensor):
            return
        macs = 0
        if isinstance(module, nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1]
            macs = output.numel() * (module.in_channels // module.groups) * kernel
        elif isinstance(module, nn.Linear):
            macs = output.numel() * module.in_features
        leaves.append(Leaf(names[module], module, macs))

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


def peak_activation_bytes(model: nn.Module, example: torch.Tensor, trained: set[str]) -> int:
    """The most bytes of activations alive at once in a training forward pass of ``example``, with
    exactly the ``trained`` parameters requiring gradients (so autograd keeps what their backward
    pass needs, and nothing for the layers below them). After each leaf module runs, the tensors
    that were a leaf's input or output and are still alive (held by autograd or by the forward
    pass) are summed, each storage once, weights and buffers left out. Run in eval mode, so that
    BatchNorm's running statistics are not touched; the flags are restored after."""
    weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    tracked: dict[int, tuple[weakref.ref, int]] = {}
    peak = 0

    def note(tensor: object) -> None:
        if isinstance(tensor, torch.Tensor):
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in weights:
                tracked[storage.data_ptr()] = (weakref.ref(tensor), storage.nbytes())

    def hook(module, inputs, output) -> None:
        nonlocal peak
        for tensor in (*inputs, output):
            note(tensor)
        peak = max(peak, sum(nbytes for ref, nbytes in tracked.values() if ref() is not None))

    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    was_training = model.training
    try:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name in trained)
        model.eval()
        with torch.enable_grad():
            model(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(flags[name])
    return peak


def training_cost(model: nn.Module, example: torch.Tensor, mode: Update) -> TrainingCost:
    """:class:`TrainingCost` of training ``mode``'s parameters of ``model`` on inputs like ``example``
    (a batch of at least two: the activations are counted per sample of it)."""
    trained = set(trained_names(model, mode))
    leaves = leaves_in_call_order(model, example)
    owns = [any(f"{leaf.name}.{p}" in trained for p, _ in leaf.module.named_parameters(recurse=False))
            for leaf in leaves]
    count = sum(p.numel() for name, p in model.named_parameters() if name in trained)
    if not any(owns):
        return TrainingCost(count, 0, 0.0)
    activations = math.ceil(peak_activation_bytes(model, example, trained) / len(example))
    first = owns.index(True)
    above = leaves[first:]
    forward = sum(leaf.macs for leaf in leaves)
    input_gradients = sum(leaf.macs for leaf in above)
    weight_gradients = sum(leaf.macs for leaf in leaves if f"{leaf.name}.weight" in trained)
    share = (input_gradients + weight_gradients) / forward if forward else 0.0
    return TrainingCost(count, activations, share)
