"""The library's enumerated settings, in a module that imports no torch.

Each enum says what its choices mean; the module that implements a choice imports it from here
(:mod:`swarm.nodes.models` resets outputs, :mod:`swarm.server.pruning` scopes a cut, :mod:`swarm.server.relevance`
starts relevance at a target). They live apart from that code because the config schema
(:mod:`swarm.schema`) lists them, and the process that composes and checks the config, the
caller of ``python -m swarm.simulate``, then waits through the whole fleet: without torch it holds
about 700 MB less beside the simulated nodes.
"""

from __future__ import annotations

from enum import StrEnum


class Pretrain(StrEnum):
    """What the coordinator pre-trains on: the extra knowledge T and the task P, or P alone (the baseline)."""

    extra = "extra"
    task_only = "task_only"


class DriftKind(StrEnum):
    """How nodes' drift times are drawn: one value for all, uniform in [low, high], or exponential with a mean."""

    fixed = "fixed"
    uniform = "uniform"
    exponential = "exponential"


class NewClassOutputs(StrEnum):
    """How adaptation treats the outputs of classes the model was never trained on
    (:func:`swarm.nodes.models.reset_outputs`)."""

    reset = "reset"
    keep = "keep"


class Scope(StrEnum):
    """Which channels a cut may remove: inside residual blocks (the paper's counts), or every dependency group."""

    inner = "inner"
    all = "all"


class Target(StrEnum):
    """Where relevance starts: the logit of the true class, or of the predicted one."""

    label = "label"
    prediction = "prediction"


# On-device loss, cross-entropy over: the classes a batch holds and every output outside the
# deployed task (masked: a class a node lacks is not pushed down, T's outputs are, as in the paper's
# adaptation); the batch's classes alone (batch: T's outputs are never pushed down -- the rule
# before masked counted them; docs/adaptation.md, section 10); every output (full).
Loss = StrEnum("Loss", ["masked", "batch", "full"])
# How a batch draws from the local stream: a label, then a sample of it (balanced), or uniformly.
Sampling = StrEnum("Sampling", ["balanced", "uniform"])
# BatchNorm on a device: re-estimate the statistics on local data (track), or keep the received (frozen).
BatchNormMode = StrEnum("BatchNormMode", ["track", "frozen"])
# How the server combines the nodes' updates under a strategy that shares a model
# (swarm.nodes.strategies): their mean weighted by examples trained (FedAvg), or, robust to a
# minority of bad updates, each value's median or trimmed mean over the nodes (unweighted: a node's
# claim of how much it trained cannot buy it more say), with Flower's FedMedian and FedTrimmedAvg,
# or the mean of the updates Multi-Krum keeps (Flower's select_multikrum).
Aggregate = StrEnum("Aggregate", ["mean", "trimmed_mean", "median", "multikrum"])
# What a node trains (swarm.nodes.trainable): every parameter, its biases and normalisation scales
# (TinyTL-style), its output layer, or its output layer and the convolution channels it chooses
# within fleet.update_budget_kb (swarm.nodes.selection): by Fisher information on its first
# batches (TinyTrain-style), or the least relevant to P by the server's LRP; the device model
# charges only what training those needs.
Update = StrEnum("Update", ["full", "bias", "head", "fisher", "relevant"])
