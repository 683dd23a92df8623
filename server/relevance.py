"""Channel relevance by Layer-wise Relevance Propagation (zennit), as in the paper's Algorithm 1.

For every sample of P, relevance starts at the target logit and flows back through the network by
the ε-rule (Eq. 1, stabilised); the relevance map at each conv layer's output is summed over all
samples, and each channel's score is the l1 norm of its summed map over spatial positions.

Cost matters because Algorithm 1 runs this over all of P every pruning iteration, so the zennit
composite is registered once for all batches, only the scored layers are hooked, parameters get
no gradients, and each hook accumulates the batch sum on the fly instead of keeping maps.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import nn
from zennit.composites import COMPOSITES
from zennit.core import Composite

from swarm.nodes.choices import Target
from swarm.nodes.errors import SwarmError
from swarm.nodes.layout import batch_to
from swarm.server.lrp import canonizers  # also registers our ``epsilon`` composite in zennit's COMPOSITES


def composite_names() -> list[str]:
    """Every composite in zennit's registry, ours (``epsilon``) included."""
    return sorted(COMPOSITES)


def make_composite(name: str, model: nn.Module, epsilon: float = 1e-6) -> Composite:
    """A composite from zennit's registry by name, with the canonizers this model needs."""
    if epsilon <= 0:
        raise SwarmError("relevance epsilon must be > 0 (ε = 0 leaves zero denominators)")
    if name not in COMPOSITES:
        raise SwarmError(f"unknown LRP composite '{name}'; choose one of {', '.join(composite_names())}")
    cls = COMPOSITES[name]
    params = inspect.signature(cls).parameters
    kwargs = {"canonizers": canonizers(model, fast=getattr(cls, "fast_canonizers", False))}
    if "epsilon" in params:
        kwargs["epsilon"] = epsilon
    if "low" in params:  # z-box rule for the first layer: the bounds of our [-1, 1] inputs
        kwargs["low"], kwargs["high"] = -1.0, 1.0
    return cls(**kwargs)


def conv_layer_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


@contextmanager
def _attribution_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode, no parameter gradients, no in-place activations; everything restored afterwards."""
    was_training = model.training
    requires = [(p, p.requires_grad) for p in model.parameters()]
    inplace = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    model.eval()
    for p, _ in requires:
        p.requires_grad_(False)
    for m in inplace:
        m.inplace = False
    try:
        yield
    finally:
        model.train(was_training)
        for p, flag in requires:
            p.requires_grad_(flag)
        for m in inplace:
            m.inplace = True


def _batch_sum(maps: torch.Tensor) -> torch.Tensor:
    """The sum over the batch (dim 0). A channels-last (N, C, H, W) tensor is summed as the (N, H, W, C)
    array it is in memory: torch's own ``sum(0)`` over that layout is ~15x slower."""
    if maps.dim() == 4 and not maps.is_contiguous() and maps.is_contiguous(memory_format=torch.channels_last):
        return maps.permute(0, 2, 3, 1).sum(dim=0).permute(2, 0, 1)
    return maps.sum(dim=0)


def relevance_maps(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                   composite: str = "epsilon", target: str = "label", epsilon: float = 1e-6,
                   layers: list[str] | None = None, device: torch.device | str | None = None,
                   ) -> dict[str, torch.Tensor]:
    """Signed relevance maps at conv outputs, summed over all samples: ``{name: (C, H, W)}``.

    The relevance at a layer's output is taken after zennit's BatchNorm merge, so it is also the
    relevance at that BatchNorm's output. ``target="label"`` starts from the true class's logit,
    ``"prediction"`` from the predicted class's.
    """
    if target not in tuple(Target):
        raise SwarmError(f"relevance target must be one of {', '.join(Target)}, not '{target}'")
    modules = dict(model.named_modules())
    layers = layers if layers is not None else conv_layer_names(model)
    unknown = [n for n in layers if not isinstance(modules.get(n), nn.Conv2d)]
    if unknown:
        raise SwarmError(f"not conv layers of this model: {', '.join(unknown)}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    sums: dict[str, torch.Tensor | None] = {name: None for name in layers}

    def accumulate(name: str):
        def on_grad(grad: torch.Tensor) -> None:
            batch_sum = _batch_sum(grad.detach())
            sums[name] = batch_sum if sums[name] is None else sums[name] + batch_sum

        def forward_hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            output.register_hook(on_grad)

        return forward_hook

    seen = 0
    with _attribution_mode(model):
        # Register the composite once for all batches; our hooks go on after zennit's, so they see
        # the outputs zennit wraps, whose gradients are the relevance.
        with make_composite(composite, model, epsilon).context(model) as hooked:
            for p in model.parameters():  # canonizers add parameters (merged biases): no gradients there either
                p.requires_grad_(False)
            handles = [modules[name].register_forward_hook(accumulate(name)) for name in layers]
            try:
                for inputs, labels in batches:
                    inputs = batch_to(inputs, device).requires_grad_(True)
                    output = hooked(inputs)
                    classes = labels.to(device) if target == "label" else output.argmax(dim=1)
                    start = torch.zeros_like(output)
                    start.scatter_(1, classes.view(-1, 1), output.detach().gather(1, classes.view(-1, 1)))
                    torch.autograd.backward(output, grad_tensors=start, inputs=[inputs])
                    seen += len(inputs)
            finally:
                for handle in handles:
                    handle.remove()
    if seen == 0:
        raise SwarmError("no samples to compute relevance on (P's training split is empty)")
    return {name: s.cpu() for name, s in sums.items() if s is not None}


def channel_relevance(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                      composite: str = "epsilon", target: str = "label", epsilon: float = 1e-6,
                      layers: list[str] | None = None, device: torch.device | str | None = None,
                      ) -> dict[str, torch.Tensor]:
    """Per-channel LRP relevance of conv layers over ``batches`` (Algorithm 1's score).

    Returns ``{qualified layer name: 1-D tensor of length out_channels}`` on the CPU: the
    relevance maps at the layer's output summed over all samples, then each channel's l1 norm
    over its spatial positions.
    """
    maps = relevance_maps(model, batches, composite=composite, target=target, epsilon=epsilon,
                          layers=layers, device=device)
    return {name: m.abs().flatten(1).sum(dim=1) for name, m in maps.items()}


def filter_l1(model: nn.Module, layers: list[str] | None = None) -> dict[str, torch.Tensor]:
    """IMP's criterion: the l1 norm of each output channel's filter weights."""
    modules = dict(model.named_modules())
    layers = layers if layers is not None else conv_layer_names(model)
    return {name: modules[name].weight.detach().abs().flatten(1).sum(dim=1).cpu() for name in layers}
