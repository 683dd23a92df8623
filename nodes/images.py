"""The images a model sees: stored raw (uint8, C × H × W), normalised on access.

One definition for the coordinator's datasets and a node's own folder, so a node on its folder
computes bit for bit what it would on the full dataset.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

# Inputs are scaled to [-1, 1]; one convention for every dataset keeps models interchangeable.
MEAN, STD = 0.5, 0.5


class ImageStore(Protocol):
    """Random access to the pixels of one official split, as uint8 tensors shaped (C, H, W)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> torch.Tensor: ...


class TensorImages:
    """Images already in memory as one uint8 tensor (N, C, H, W): CIFAR, Fashion-MNIST, synthetic."""

    def __init__(self, images: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected a uint8 tensor (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


class LabeledImages(Dataset):
    """Samples ``indices`` of an image store with their network targets, as normalised float tensors."""

    def __init__(self, images: ImageStore, indices: np.ndarray, targets: np.ndarray, image_size: int) -> None:
        self.images = images
        self.indices = np.asarray(indices, dtype=np.int64)
        self.targets = torch.as_tensor(np.asarray(targets, dtype=np.int64))
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return len(self.indices)

    def batch(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples ``positions`` stacked, as ``__getitem__`` gives each (bit for bit: the same
        elementwise arithmetic), in one indexing call where the images are in memory at the model's
        size: a node's step gathers its batch this way (32 calls were 4% of the step)."""
        positions = np.asarray(positions, dtype=np.int64)
        if not isinstance(self.images, TensorImages) or self.images.images.shape[-1] != self.image_size \
                or self.images.images.shape[-2] != self.image_size:
            samples = [self[int(i)] for i in positions]
            return torch.stack([x for x, _ in samples]), torch.stack([y for _, y in samples])
        x = self.images.images[torch.from_numpy(self.indices[positions])].float().div_(255)
        return x.sub_(MEAN).div_(STD), self.targets[torch.from_numpy(positions)]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[int(self.indices[i])]
        x = image.float().div_(255)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x[None], size=(self.image_size, self.image_size), mode="bilinear",
                              antialias=True, align_corners=False)[0]
        return x.sub_(MEAN).div_(STD), self.targets[i]
