"""Settings shared by every dataset source (the ``data`` block of the config)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataOptions:
    """Where data lives and how much of it to use.

    ``root`` is the folder that holds every dataset (each source names its sub-folder);
    ``download`` lets torchvision fetch CIFAR / Fashion-MNIST where there is internet;
    ``image_size`` overrides the scenario's input resolution (None keeps it);
    ``max_per_class`` keeps at most that many samples of each (class, domain) pair in each
    official split, chosen with ``seed``, so that CPU runs stay small;
    ``val_fraction`` of the training split becomes the validation split used for early stopping;
    ``verify_checksums``: files with published checksums (CIFAR's batches) must match them.
    """

    root: Path = Path("data")
    download: bool = False
    image_size: int | None = None
    max_per_class: int | None = None
    val_fraction: float = 0.1
    seed: int = 0
    verify_checksums: bool = True
