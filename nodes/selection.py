"""Channels a node chooses to train within a memory budget (``fleet.update=fisher|relevant``).

A partial update need not stop at whole kinds of parameter (``bias``, ``head``): a device can train
its output layer and a chosen set of convolution channels (a channel's filter, with the scale and
shift of the BatchNorm that normalises it), as many as ``fleet.update_budget_kb`` holds. Two ways
to choose, over the same channels and within the same budget:

* ``fisher`` (after TinyTrain: Kwon et al., ICML 2024, https://arxiv.org/abs/2307.09988, which picks
  layers and channels by Fisher information under memory and compute budgets): on the node's first
  :data:`FISHER_BATCHES` batches, each channel's empirical Fisher information (the squared gradient
  of the loss with respect to its parameters, summed over the batches) per parameter it trains;
  the most informative first. Choosing costs the device those batches' forward and full backward
  passes, charged in the window it chooses in.
* ``relevant`` (from the paper's LRP): the channels *least* relevant to P, by the relevance the
  server computes over P for the model it sends (Algorithm 1's score, each channel's relative to
  its layer's mean), train first, and the most relevant stay frozen, so that adapting to F leaves
  what P needs. Choosing costs the device nothing.

Both take channels in their order while the budget holds the step's training memory: gradients and
Adam's two slots of the chosen channels and the output layer, and the activations a step holds at
its peak at the device's batch (measured for the layers with chosen channels: a channel of an early
layer costs the activations of every layer above it, so a tight budget keeps to the last layers).
The output layer always trains; a budget below its own need trains it alone.

Exactly the chosen channels train: each chosen convolution gets a delta of its chosen filters,
added to those output channels by a forward hook (:class:`ConvRows`), and its BatchNorm a
parametrization (PyTorch's public ``torch.nn.utils.parametrize``) ``scale = frozen scale + a delta
on the chosen entries``, likewise its shift; the deltas and the output layer are the only
parameters with gradients and optimizer state. Before a model is evaluated, saved or sent, the
deltas are merged into plain weights (:func:`merged`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from swarm.nodes.choices import Update
from swarm.nodes.errors import SwarmError
from swarm.nodes.models import classifier
from swarm.nodes.trainable import TrainingCost, leaves_in_call_order, peak_activation_bytes, trained_names

FISHER_BATCHES = 4  # batches the Fisher information is summed over (an assumption: "a few")
SELECTING = (Update.fisher, Update.relevant)  # the modes that choose channels
Selection = dict[str, list[int]]  # conv layer name -> the chosen output channels, ascending


@dataclass(frozen=True)
class Layer:
    """A convolution whose output channels may be chosen, with the BatchNorm right after it."""

    conv: str
    norm: str | None
    channels: int
    per_channel: int  # parameters one channel trains: its filter, and its scale and shift
    macs: int  # the convolution's multiply-accumulates per sample
    order: int  # its place in the forward pass


def layers(model: nn.Module, example: torch.Tensor) -> list[Layer]:
    """Every convolution of ``model`` in call order, paired with the BatchNorm called next on its output."""
    leaves = leaves_in_call_order(model, example)
    out = []
    for i, leaf in enumerate(leaves):
        if not isinstance(leaf.module, nn.Conv2d):
            continue
        after = leaves[i + 1].module if i + 1 < len(leaves) else None
        norm = (leaves[i + 1].name if isinstance(after, nn.BatchNorm2d) and after.affine
                and after.num_features == leaf.module.out_channels else None)
        per_channel = leaf.module.weight[0].numel() + (2 if norm else 0)
        out.append(Layer(leaf.name, norm, leaf.module.out_channels, per_channel, leaf.macs, i))
    return out


def _owners(chosen: Iterable[Layer]) -> dict[str, Layer]:
    """The parameters the chosen layers' channels belong to, each with its layer: what autograd
    keeps activations for is the same whether a channel of a tensor or all of it trains."""
    owners = {}
    for layer in chosen:
        owners[f"{layer.conv}.weight"] = layer
        if layer.norm:
            owners |= {f"{layer.norm}.weight": layer, f"{layer.norm}.bias": layer}
    return owners


def _layer_parameters(chosen: Iterable[Layer]) -> set[str]:
    """The names of :func:`_owners`."""
    return set(_owners(chosen))


# ----------------------------------------------------------------------------- scores
def fisher_scores(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                  candidates: list[Layer]) -> dict[str, torch.Tensor]:
    """Each channel's empirical Fisher information over ``batches`` (cross-entropy of the labels),
    per parameter it trains. Eval mode (BatchNorm's statistics untouched); flags restored.

    As a device would run it: only the candidates' parameters require gradients (the backward pass
    stops below the earliest), and each gradient is folded into its channels' sums the moment it is
    accumulated and dropped (``register_post_accumulate_grad_hook``), so the pass holds one
    parameter's gradient at a time, as :meth:`Chooser.scoring` counts it."""
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    sums = {layer.conv: torch.zeros(layer.channels) for layer in candidates}

    def folder(layer: Layer):
        def fold(parameter: torch.Tensor) -> None:
            squared = parameter.grad.detach().square()
            sums[layer.conv].add_((squared.flatten(1).sum(dim=1) if squared.dim() > 1 else squared).cpu())
            parameter.grad = None
        return fold

    owned = _owners(candidates)
    handles = []
    was_training = model.training
    try:
        model.eval()
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name in owned)
            parameter.grad = None
            if name in owned:
                handles.append(parameter.register_post_accumulate_grad_hook(folder(owned[name])))
        for inputs, targets in batches:
            nn.functional.cross_entropy(model(inputs), targets).backward()
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(flags[name])
    return {layer.conv: sums[layer.conv] / layer.per_channel for layer in candidates}


def least_relevant_first(relevance: Mapping[str, Iterable[float]], candidates: list[Layer]) -> dict[str, torch.Tensor]:
    """Scores that put the channels least relevant to P first: minus each channel's relevance over
    its layer's mean. ``relevance`` comes from the server; checked against the model here."""
    by_name = {layer.conv: layer for layer in candidates}
    scores = {}
    for name, values in relevance.items():
        layer = by_name.get(name)
        values = torch.as_tensor(list(values), dtype=torch.float64)
        if layer is None or values.shape != (layer.channels,) or not torch.isfinite(values).all() or (values < 0).any():
            raise SwarmError(f"the channel relevance sent for '{name}' does not fit this model's layer "
                             f"({layer.channels if layer else 'no such'} channels)")
        mean = values.mean()
        scores[name] = -(values / mean if mean > 0 else values).float()
    return scores


# ----------------------------------------------------------------------------- choosing
class Chooser:
    """Takes channels in score order while a step's training memory fits the budget."""

    def __init__(self, model: nn.Module, example: torch.Tensor, batch: int, budget_bytes: float) -> None:
        self.model, self.example, self.batch, self.budget = model, example, batch, budget_bytes
        self.candidates = layers(model, example)
        self.by_name = {layer.conv: layer for layer in self.candidates}
        self.head = trained_names(model, Update.head)
        self.head_parameters = sum(p.numel() for n, p in model.named_parameters() if n in self.head)
        self._activations: dict[frozenset[str], int] = {}

    def activations(self, chosen: frozenset[str]) -> int:
        """Bytes a sample holds at a step's peak when the ``chosen`` convolutions and the output
        layer train (measured once per set of layers: what a backward pass keeps depends on all of
        them, not only on the earliest, as a residual block's shortcut keeps the block's input)."""
        if chosen not in self._activations:
            trained = set(self.head) | _layer_parameters([self.by_name[name] for name in chosen])
            self._activations[chosen] = math.ceil(peak_activation_bytes(self.model, self.example, trained)
                                                  / len(self.example))
        return self._activations[chosen]

    def need(self, parameters: int, chosen: frozenset[str]) -> float:
        """Training memory beyond the weights: gradients and Adam's two slots, activations at the batch."""
        return 3 * 4 * parameters + self.activations(chosen) * self.batch

    def scoring(self) -> tuple[int, int]:
        """What ``fisher``'s choosing pass (:func:`fisher_scores`) holds beyond the weights: the
        activation bytes a sample keeps for a backward pass that reaches every candidate, and the
        gradient values held at once (the largest candidate tensor's: each is folded and dropped)."""
        owned = _layer_parameters(self.candidates)
        largest = max((p.numel() for n, p in self.model.named_parameters() if n in owned), default=0)
        return self.activations(frozenset(self.by_name)), largest

    def choose(self, scores: Mapping[str, torch.Tensor]) -> Selection:
        by_name = {layer.conv: layer for layer in self.candidates}
        ranked = sorted(((float(s), layer_name, c) for layer_name, values in scores.items()
                         for c, s in enumerate(values.tolist())), key=lambda item: (-item[0], item[1], item[2]))
        chosen: Selection = {}
        parameters, chosen_layers = self.head_parameters, frozenset()
        for _, name, channel in ranked:
            layer = by_name[name]
            with_it = chosen_layers | {name}
            if self.need(parameters + layer.per_channel, with_it) <= self.budget:
                chosen.setdefault(name, []).append(channel)
                parameters, chosen_layers = parameters + layer.per_channel, with_it
        return {name: sorted(channels) for name, channels in sorted(chosen.items(), key=lambda kv: by_name[kv[0]].order)}


def cost(model: nn.Module, example: torch.Tensor, selection: Selection) -> TrainingCost:
    """What a step that trains ``selection`` and the output layer costs per sample (as
    :func:`swarm.nodes.trainable.training_cost` counts it for the fixed modes)."""
    candidates = {layer.conv: layer for layer in layers(model, example)}
    leaves = leaves_in_call_order(model, example)
    head = trained_names(model, Update.head)
    head_layer, _ = classifier(model)
    chosen = [candidates[name] for name in selection]
    parameters = sum(p.numel() for n, p in model.named_parameters() if n in head)
    parameters += sum(len(selection[layer.conv]) * layer.per_channel for layer in chosen)
    trained = set(head) | _layer_parameters(chosen)
    activations = math.ceil(peak_activation_bytes(model, example, trained) / len(example))
    first = min((layer.order for layer in chosen), default=next(i for i, leaf in enumerate(leaves) if leaf.name == head_layer))
    forward = sum(leaf.macs for leaf in leaves)
    input_gradients = sum(leaf.macs for leaf in leaves[first:])
    weight_gradients = sum(layer.macs * len(selection[layer.conv]) / layer.channels for layer in chosen)
    weight_gradients += sum(leaf.macs for leaf in leaves if leaf.name == head_layer)
    return TrainingCost(parameters, activations, (input_gradients + weight_gradients) / forward if forward else 0.0)


# ----------------------------------------------------------------------------- training them
class ChannelDelta(nn.Module):
    """``value + delta`` on the chosen entries of a BatchNorm's scale or shift (a parametrization)."""

    def __init__(self, shape: torch.Size, channels: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("channels", channels, persistent=False)
        self.delta = nn.Parameter(torch.zeros(len(channels), *shape[1:]))

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        return value.index_add(0, self.channels, self.delta)


class ConvRows(nn.Module):
    """The chosen output channels of a convolution, trained as a delta of their filters. The frozen
    convolution runs as it is; a forward hook adds the delta's convolution of the same input to the
    chosen channels. So no copy of the whole weight is made, and the backward pass computes the
    gradient of the chosen filters only, as a sparse training engine would (a parametrization of the
    whole weight made PyTorch hold a copy and a full gradient of each chosen layer: up to 1.29x the
    memory the device model counts, at batch 1; ``benchmarks/training_memory.py``)."""

    def __init__(self, conv: nn.Conv2d, channels: torch.Tensor) -> None:
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros":
            raise SwarmError("fleet.update=fisher|relevant chooses channels of plain convolutions "
                             "(one group, zero padding) only")
        self.register_buffer("channels", channels, persistent=False)
        self.delta = nn.Parameter(torch.zeros(len(channels), *conv.weight.shape[1:]))
        self.handle = conv.register_forward_hook(self.add_delta)

    def add_delta(self, conv: nn.Conv2d, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        extra = nn.functional.conv2d(inputs[0], self.delta, None, conv.stride, conv.padding, conv.dilation)
        return _AddToChannels.apply(output, extra, self.channels)

    def merge_into(self, conv: nn.Conv2d) -> None:
        self.handle.remove()
        with torch.no_grad():
            conv.weight.index_add_(0, self.channels, self.delta.to(conv.weight.dtype))


class _AddToChannels(torch.autograd.Function):
    """``output`` with ``extra`` added to its ``channels`` (dim 1). Written out because autograd's
    own ``index_add`` keeps ``extra`` for its backward pass, where only its shape is needed: an
    activation-sized tensor per chosen layer that a training engine does not hold."""

    @staticmethod
    def forward(ctx, output: torch.Tensor, extra: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(channels)
        return output.index_add(1, channels, extra)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (channels,) = ctx.saved_tensors
        return grad, grad.index_select(1, channels), None


ROWS = "chosen_rows"  # the attribute a convolution's ConvRows is kept under while attached


def attach(model: nn.Module, selection: Selection, example: torch.Tensor) -> list[nn.Parameter]:
    """Freeze ``model`` but for the output layer and the chosen channels (their deltas); returns the
    parameters to train, in a fixed order (the optimizer's state is saved and loaded by position)."""
    modules = dict(model.named_modules())
    candidates = {layer.conv: layer for layer in layers(model, example)}
    head = set(trained_names(model, Update.head))
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in head)
    deltas = []
    for name, channels in selection.items():
        layer, conv = candidates[name], modules[name]
        index = torch.as_tensor(channels, dtype=torch.long)
        conv.add_module(ROWS, ConvRows(conv, index))
        deltas.append(getattr(conv, ROWS).delta)
        if layer.norm:
            norm = modules[layer.norm]
            for attribute in ("weight", "bias"):
                parametrize.register_parametrization(norm, attribute, ChannelDelta(getattr(norm, attribute).shape, index))
                deltas.append(norm.parametrizations[attribute][0].delta)
    return deltas + [p for n, p in model.named_parameters() if n in head]


def merged(model: nn.Module, fresh: nn.Module) -> nn.Module:
    """``model``'s weights with every delta merged in, as ``fresh`` (a model of the same
    architecture, whose parameters keep their usual order and names)."""
    for module in list(model.modules()):
        rows = getattr(module, ROWS, None)
        if isinstance(rows, ConvRows):
            rows.merge_into(module)
            delattr(module, ROWS)
        if parametrize.is_parametrized(module):
            for attribute in list(module.parametrizations):
                parametrize.remove_parametrizations(module, attribute, leave_parametrized=True)
    fresh.load_state_dict(model.state_dict())
    return fresh
