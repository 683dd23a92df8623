"""Fashion-MNIST from its IDX files: torchvision's folder, or the copy Debian's package installs.

Looked for, in order: ``<data.root>/FashionMNIST/raw`` (torchvision's layout, where
``data.download=true`` puts it) and ``/usr/share/datasets/fashion-mnist``
(``apt-get install dataset-fashion-mnist``). Files may be gzipped or not.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from swarm.nodes.errors import DataNotFoundError
from swarm.nodes.images import TensorImages
from swarm.server.data.catalog import Catalog, SplitCatalog
from swarm.server.data.options import DataOptions
from swarm.server.data.sources.registry import Source, register_source

CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
SYSTEM_COPY = Path("/usr/share/datasets/fashion-mnist")
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def known_names() -> tuple[list[str], list[str]]:
    return list(CLASSES), ["default"]


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format: magic, dimension sizes, then big-endian data)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataNotFoundError(f"{path} is not an unsigned-byte IDX file; re-download Fashion-MNIST")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataNotFoundError(f"{path} is truncated: expected {shape}, found {data.size} bytes")
    return data.reshape(shape)


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def _locate(options: DataOptions) -> Path | None:
    for folder in (Path(options.root) / "FashionMNIST" / "raw", SYSTEM_COPY):
        if all(_find(folder, stem) for pair in _FILES.values() for stem in pair):
            return folder
    return None


def load(options: DataOptions) -> Catalog:
    folder = _locate(options)
    if folder is None and options.download:
        import torchvision.datasets

        torchvision.datasets.FashionMNIST(str(options.root), train=True, download=True)
        folder = _locate(options)
    if folder is None:
        raise DataNotFoundError(
            f"Fashion-MNIST not found: looked in {Path(options.root) / 'FashionMNIST' / 'raw'} and {SYSTEM_COPY}. "
            "Get it with data.download=true (torchvision) or `apt-get install dataset-fashion-mnist`"
        )
    splits = {}
    for split, (image_stem, label_stem) in _FILES.items():
        images = read_idx(_find(folder, image_stem))
        labels = read_idx(_find(folder, label_stem)).astype(np.int64)
        if images.ndim != 3 or len(images) != len(labels):
            raise DataNotFoundError(f"{folder}: {split} images {images.shape} do not match labels {labels.shape}")
        tensor = torch.from_numpy(images.copy()).unsqueeze(1)
        splits[split] = SplitCatalog(labels, np.zeros_like(labels), TensorImages(tensor))
    return Catalog("fashion_mnist", list(CLASSES), ["default"], channels=1, image_size=28, **splits)


register_source("fashion_mnist", Source(known_names=lambda cfg: known_names(),
                                        load=lambda cfg, options, wanted: load(options),
                                        channels=1, native_size=lambda cfg: 28))
