"""Images that stay on disk until asked for (DomainNet, bring-your-own folders)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class FileImages:
    """Loads image ``i`` from disk on access and resizes it to ``size`` x ``size`` RGB.

    Only the relative paths are held in memory, so a pass over hundreds of thousands of images
    keeps memory flat.
    """

    def __init__(self, root: Path, relative_paths: Sequence[str], size: int) -> None:
        self.root = Path(root)
        self.paths = list(relative_paths)
        self.size = int(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.root / self.paths[index]) as image:
            image = image.convert("RGB").resize((self.size, self.size), Image.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
        return torch.from_numpy(array.copy()).permute(2, 0, 1)
