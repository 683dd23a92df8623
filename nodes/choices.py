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
