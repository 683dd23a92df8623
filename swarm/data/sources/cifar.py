"""CIFAR-10 and CIFAR-100 in the official "python version" pickle batches.

torchvision downloads them (``data.download=true``); reading is done here from the pickle batches
directly so that test fixtures in the same format load too (torchvision's loader insists on the
official MD5 sums).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from swarm.data.catalog import Catalog, SplitCatalog, TensorImages
from swarm.data.options import DataOptions
from swarm.errors import DataNotFoundError

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]

# Fine labels of CIFAR-100 in label order, and the superclass each belongs to (from the official meta).
CIFAR100_SUPERCLASSES: dict[str, list[str]] = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}
CIFAR100_CLASSES = sorted(c for members in CIFAR100_SUPERCLASSES.values() for c in members)

_LAYOUT = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "labels": b"labels",
        "meta": ("batches.meta", b"label_names"),
        "torchvision": "CIFAR10",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "labels": b"fine_labels",
        "meta": ("meta", b"fine_label_names"),
        "torchvision": "CIFAR100",
    },
}


def known_names(name: str) -> tuple[list[str], list[str]]:
    return (CIFAR10_CLASSES if name == "cifar10" else CIFAR100_CLASSES), ["default"]


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def _read_split(folder: Path, files: list[str], label_key: bytes) -> tuple[torch.Tensor, np.ndarray]:
    images, labels = [], []
    for file in files:
        batch = _unpickle(folder / file)
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return torch.from_numpy(np.concatenate(images)), np.concatenate(labels)


def load(name: str, options: DataOptions) -> Catalog:
    """Load CIFAR-10 or CIFAR-100 from ``<data.root>/<official folder>``, downloading if allowed."""
    layout = _LAYOUT[name]
    folder = Path(options.root) / layout["folder"]
    needed = layout["train"] + layout["test"] + [layout["meta"][0]]
    if options.download and not all((folder / f).exists() for f in needed):
        import torchvision.datasets

        getattr(torchvision.datasets, layout["torchvision"])(str(options.root), train=True, download=True)
    missing = [f for f in needed if not (folder / f).exists()]
    if missing:
        raise DataNotFoundError(
            f"{name} not found: looked for {folder / missing[0]}. Get it with data.download=true "
            f"(torchvision) or from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it into {options.root}"
        )
    meta_file, meta_key = layout["meta"]
    classes = [n.decode() for n in _unpickle(folder / meta_file)[meta_key]]
    expected = known_names(name)[0]
    if classes != expected:
        raise DataNotFoundError(f"{folder / meta_file} lists classes {classes[:5]}..., not those of {name}")
    splits = {}
    for split in ("train", "test"):
        images, labels = _read_split(folder, layout[split], layout["labels"])
        splits[split] = SplitCatalog(labels, np.zeros_like(labels), TensorImages(images))
    return Catalog(name, classes, ["default"], channels=3, image_size=32, **splits)
