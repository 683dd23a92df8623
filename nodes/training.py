"""The one training loop every stage uses: pre-training, recovery after a cut, adaptation.

The paper's recipe: Adam (lr 5e-4), batch 32, cross-entropy, early stopping on validation accuracy
with a patience of 4 epochs, keeping the weights of the best validation epoch. ``max_epochs`` caps
the run for CPU budgets.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from swarm.nodes.errors import SwarmError
from swarm.nodes.layout import batch_to, place
from swarm.nodes.settings import TrainConfig


@dataclass(frozen=True)
class TrainSettings:
    lr: float = 5e-4
    batch_size: int = 32
    patience: int = 4
    max_epochs: int = 100
    device: str = "auto"
    num_workers: int = 0

    @classmethod
    def from_config(cls, train: TrainConfig, num_workers: int = 0) -> TrainSettings:
        """The ``train`` settings (bounds checked with the config) and the data's loader workers."""
        return cls(train.lr, train.batch_size, train.patience, train.max_epochs, train.device, num_workers)


@dataclass
class FitResult:
    """What a fit did: the best validation accuracy, its epoch, and a row per epoch."""

    best_val_acc: float
    best_epoch: int
    epochs: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def progress_bar(*args: Any, **kwargs: Any) -> tqdm:
    """A tqdm bar that redraws often on a terminal and rarely in a log file (CI, nohup)."""
    kwargs.setdefault("mininterval", 0.1 if sys.stderr.isatty() else 30.0)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(*args, **kwargs)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SwarmError(f"train.device={name} but no CUDA device is available; use train.device=cpu")
    return torch.device(name)


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0,
                num_workers: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=num_workers, persistent_workers=num_workers > 0)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device | None = None) -> float:
    """Top-1 accuracy over a loader; NaN for an empty one (a split that does not exist here).

    With ``device`` given, the model is moved there first."""
    if device is None:
        device = next(model.parameters()).device
    place(model, device)
    was_training = model.training
    model.eval()
    correct = total = 0
    for inputs, targets in loader:
        predictions = model(batch_to(inputs, device)).argmax(dim=1)
        correct += (predictions.cpu() == targets).sum().item()
        total += targets.numel()
    model.train(was_training)
    return correct / total if total else math.nan


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                device: torch.device, progress: tqdm | None = None) -> float:
    """One pass over ``loader``; returns the mean training loss."""
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    total_loss, batches = 0.0, 0
    for inputs, targets in loader:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(batch_to(inputs, device)), targets.to(device, non_blocking=True))
        loss.backward()
        optimizer.step()
        total_loss += loss.item()
        batches += 1
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{total_loss / batches:.3f}", refresh=False)
    return total_loss / max(batches, 1)


def fit(model: nn.Module, train_set: Dataset, val_set: Dataset, settings: TrainSettings, *,
        seed: int = 0, desc: str = "train") -> FitResult:
    """Train with Adam and early stopping; leaves ``model`` holding its best-validation weights.

    A fresh optimizer is built on every call, as pruning replaces parameters between calls.
    """
    if len(train_set) == 0:
        raise SwarmError(f"{desc}: the training set is empty; check the scenario's split and data.max_per_class")
    device = resolve_device(settings.device)
    place(model, device)
    torch.manual_seed(seed)
    train_loader = make_loader(train_set, settings.batch_size, shuffle=True, seed=seed,
                               num_workers=settings.num_workers)
    val_loader = make_loader(val_set, max(settings.batch_size, 256), shuffle=False,
                             num_workers=settings.num_workers)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    best_acc, best_epoch, best_state = -math.inf, 0, None
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    with progress_bar(total=settings.max_epochs * len(train_loader), desc=desc, unit="batch") as progress:
        for epoch in range(1, settings.max_epochs + 1):
            loss = train_epoch(model, train_loader, optimizer, device, progress)
            val_acc = evaluate(model, val_loader, device)
            history.append({"epoch": epoch, "loss": loss, "val_acc": val_acc})
            score = -loss if math.isnan(val_acc) else val_acc  # no validation data: keep the lowest loss
            if score > best_acc:
                best_acc, best_epoch = score, epoch
                best_state = copy.deepcopy(model.state_dict())
            progress.set_description(f"{desc} ep {epoch} val {val_acc:.3f} best {history[best_epoch - 1]['val_acc']:.3f}")
            if epoch - best_epoch >= settings.patience:
                break
    model.load_state_dict(best_state)
    best_val = history[best_epoch - 1]["val_acc"]
    return FitResult(best_val, best_epoch, len(history), time.perf_counter() - start, history)
