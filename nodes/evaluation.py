"""What "accuracy" means for adaptation: the test sets of P, F and P ∪ F, and the metrics on them.

One definition, used by every node after every window, by the node's evaluation of the model as it
was received, and by the coordinator's reference adaptation, so that their numbers compare: the
same seeded subset of each test split (``cap`` samples, 0 = all), top-1 accuracy, and the accuracy
on every group of F: its classes (new classes, new subclasses), or its domains when F is one class
in several domains. The groups are also what F is split by among nodes and into drift events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from swarm.nodes.layout import batch_to, place

SETS = ("P", "F", "PF")


@dataclass(frozen=True)
class TestSets:
    """The evaluation sets of a scenario, and the group of each F test sample (see :func:`swarm.server.data.evaluation_sets.f_groups`)."""

    sets: dict[str, Dataset]
    f_groups: np.ndarray
    f_group_names: list[str]


@torch.no_grad()
def _predict(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    predicted, targets = [], []
    for inputs, labels in loader:
        predicted.append(model(batch_to(inputs, device)).argmax(dim=1).cpu())
        targets.append(labels)
    if not predicted:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(predicted), torch.cat(targets)


def accuracies(model: nn.Module, tests: TestSets, device: torch.device | None = None) -> dict[str, object]:
    """``acc_P``, ``acc_F``, ``acc_PF`` (NaN where a set does not exist) and ``acc_F_groups``: the
    accuracy on each group of F (NaN for a group the subset lacks). The model is left in the mode
    it came in."""
    device = device or next(model.parameters()).device
    place(model, device)
    was_training = model.training
    model.eval()
    result: dict[str, object] = {}
    for name in SETS:
        if name not in tests.sets:
            result[f"acc_{name}"] = math.nan
            continue
        predicted, targets = _predict(model, tests.sets[name], device)
        result[f"acc_{name}"] = (predicted == targets).float().mean().item() if len(targets) else math.nan
        if name == "F":
            correct = (predicted == targets).numpy()
            result["acc_F_groups"] = [float(correct[tests.f_groups == g].mean()) if (tests.f_groups == g).any()
                                      else math.nan for g in range(len(tests.f_group_names))]
    model.train(was_training)
    return result
