"""Our zennit parts: the paper's ε-rule (Eq. 1) in gradient form, and a ResNet canonizer that costs
nothing per batch.

Algorithm 1 runs LRP over all of P every pruning iteration, so what is not the rule itself is cut:

* :class:`GradientEpsilon` does not re-run the layer in the backward pass as zennit's ``Epsilon`` and
  ``Norm`` do (they may modify parameters; the plain rule does not need to);
* :class:`FastResNetCanonizer` merges each BatchNorm into its convolution like zennit's
  ``ResNetCanonizer`` and then *skips* the merged BatchNorm (zennit leaves it computing an identity
  forward and backward), and gives each residual sum a two-input :class:`Add` module (zennit's
  ``Sum`` needs both summands stacked: a copy, and a reduction over the last dimension that is ~30×
  slower than an add).

The result equals zennit's own ``Epsilon``/``Norm`` layer map with its ``ResNetCanonizer``
(``tests/test_relevance.py``).
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from zennit.canonizers import AttributeCanonizer, CompositeCanonizer, SequentialMergeBatchNorm
from zennit.composites import LayerMapComposite, register_composite
from zennit.core import Hook, Identity
from zennit.layer import Sum
from zennit.torchvision import ResNetCanonizer
from zennit.types import AvgPool, Convolution


class Add(nn.Module):
    """A residual sum as a module of its two summands, so that a rule can be attached to it."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class MergeBatchNormAway(SequentialMergeBatchNorm):
    """zennit's BatchNorm merge, after which the BatchNorm (now an identity) is not run at all."""

    def register(self, linears, batch_norm) -> None:
        super().register(linears, batch_norm)
        batch_norm.forward = _identity  # an instance attribute shadows the class's forward

    def remove(self) -> None:
        del self.batch_norm.forward
        super().remove()


def _basic_block_forward(self: BasicBlock, x: torch.Tensor) -> torch.Tensor:
    out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
    identity = x if self.downsample is None else self.downsample(x)
    return self.relu(self.canonizer_add(out, identity))


def _bottleneck_forward(self: Bottleneck, x: torch.Tensor) -> torch.Tensor:
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    identity = x if self.downsample is None else self.downsample(x)
    return self.relu(self.canonizer_add(out, identity))


def _residual_attributes(name: str, module: nn.Module) -> dict | None:
    forward = {BasicBlock: _basic_block_forward, Bottleneck: _bottleneck_forward}.get(type(module))
    if forward is None:
        return None
    return {"forward": forward.__get__(module), "canonizer_add": Add()}


class FastResNetCanonizer(CompositeCanonizer):
    """zennit's ``ResNetCanonizer`` without its per-batch cost: merged BatchNorms skipped, residual
    sums as :class:`Add` (see the module's docstring). For rules that know :class:`Add`; zennit's
    own composites get zennit's canonizer."""

    def __init__(self) -> None:
        super().__init__((MergeBatchNormAway(), AttributeCanonizer(_residual_attributes)))


def canonizers(model: nn.Module, *, fast: bool) -> list:
    """The canonizers a model needs: for ResNet blocks a BatchNorm merge and hookable residual sums."""
    if any(isinstance(m, (BasicBlock, Bottleneck)) for m in model.modules()):
        return [FastResNetCanonizer() if fast else ResNetCanonizer()]
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return [MergeBatchNormAway() if fast else SequentialMergeBatchNorm()]
    return []


class GradientEpsilon(Hook):
    """zennit's ε-rule (Eq. 1), computed without re-running the layer in the backward pass.

    zennit's ``Epsilon`` (and ``Norm``, the same rule for parameter-free sums and pools) re-runs
    each layer's forward inside the backward pass so that it can modify parameters; the plain rule
    needs no modification, so this one divides the incoming relevance by the stabilised output
    ``z`` that the forward pass already produced, lets autograd's own backward apply ``Wᵀ``, and
    multiplies by the input: ``R_in = a ⊙ Wᵀ(R_out / (z + ε·sign z))``. For :class:`Add` each
    summand gets its own share, ``R_i = x_i ⊙ R_out / (z + ε·sign z)``.
    """

    def __init__(self, epsilon: float = 1e-6) -> None:
        super().__init__()
        self.epsilon = epsilon

    def pre_forward(self, module: nn.Module, input):
        """zennit's pre-forward hook without its defensive copy of the input (no in-place ops run here)."""
        if not input[0].requires_grad:
            return None
        hook_ref = weakref.ref(self)

        def wrapper(grad_input, grad_output):
            hook = hook_ref()
            if hook is not None and hook.active:
                return hook.backward(module, grad_input, None)
            return None

        post_input = Identity.apply(*input)
        self.tensor_handles.append(post_input[0].grad_fn.register_hook(wrapper))
        return post_input[0] if len(post_input) == 1 else post_input

    def forward(self, module: nn.Module, input: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        self.stored_tensors["inputs"] = [x.detach() for x in input]
        # zennit's stabiliser z + ε·sign(z), sign(0) = +1, in two element-wise passes (where z is
        # -0.0 this gives -ε instead: the relevance there is 0 either way, being proportional to z).
        z = output.detach()
        z = torch.copysign(torch.tensor(self.epsilon, dtype=z.dtype, device=z.device), z).add_(z)
        output.register_hook(lambda relevance: relevance / z)
        # Hand on an identity of the output: what flows back into it (and what observers of the
        # layer's output see) is the relevance itself; the division happens just below it.
        return Identity.apply(output)[0]

    def backward(self, module: nn.Module, grad_input, grad_output):
        inputs = self.stored_tensors["inputs"]
        return tuple(grad if grad is None or i >= len(inputs) else inputs[i] * grad
                     for i, grad in enumerate(grad_input))

    def copy(self) -> GradientEpsilon:
        return GradientEpsilon(self.epsilon)


@register_composite("epsilon")
class EpsilonComposite(LayerMapComposite):
    """The paper's ε-rule (Eq. 1) on every conv and linear layer, residual sum and average pool, in
    gradient form (:class:`GradientEpsilon`). Registered in zennit's own ``COMPOSITES`` as
    ``epsilon``, so it is chosen by name exactly like zennit's composites.

    Only layers whose rule changes the gradient get a hook. Activations and (merged, identity)
    BatchNorms are left to autograd: zennit's Pass rule differs from the ReLU gradient only where
    the activation is 0, and every rule here gives such a neuron no relevance anyway (each is
    proportional to its input). The tests check that the result equals zennit's full ε layer map."""

    fast_canonizers = True  # knows Add: make_composite gives it FastResNetCanonizer

    def __init__(self, epsilon: float = 1e-6, canonizers: list | None = None) -> None:
        layer_map = [
            (Add, GradientEpsilon(epsilon=epsilon)),  # zennit's Norm rule is this rule without parameters
            (Sum, GradientEpsilon(epsilon=epsilon)),
            (AvgPool, GradientEpsilon(epsilon=epsilon)),
            (Convolution, GradientEpsilon(epsilon=epsilon)),
            (nn.Linear, GradientEpsilon(epsilon=epsilon)),
        ]
        super().__init__(layer_map=layer_map, canonizers=canonizers)
