"""CIFAR-10 and CIFAR-100 in the official "python version" pickle batches.

torchvision downloads them (``data.download=true``). Reading is done here: a data folder is not
trusted, so each file's MD5 sum is checked against the one torchvision publishes
(``data.verify_checksums``; test fixtures in the same format turn it off), and the pickles are
read with an unpickler that can build nothing but plain containers and numpy arrays -- a crafted
batch cannot run code -- then checked for shape, type and label range.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path

import numpy as np
import torch

from swarm.nodes.errors import CorruptDataError, DataNotFoundError
from swarm.nodes.images import TensorImages
from swarm.server.data.catalog import Catalog, SplitCatalog
from swarm.server.data.options import DataOptions
from swarm.server.data.sources.registry import Source, register_source

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


# What a CIFAR batch may ask the unpickler to build (module, name): numpy arrays and their dtypes
# (numpy 1 and 2 spell the module differently) and the bytes helper of protocol-2 pickles.
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only; anything else is refused, never imported."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _published_md5(name: str) -> dict[str, str]:
    """File name -> MD5 sum, as torchvision publishes them for the official batches."""
    import torchvision.datasets

    dataset = getattr(torchvision.datasets, _LAYOUT[name]["torchvision"])
    return {**dict(dataset.train_list), **dict(dataset.test_list), dataset.meta["filename"]: dataset.meta["md5"]}


def _unpickle(path: Path, md5: str | None = None) -> dict:
    data = path.read_bytes()
    if md5 is not None and hashlib.md5(data).hexdigest() != md5:
        raise CorruptDataError(f"{path} does not match its published MD5 sum {md5}: download it again "
                               "(data.download=true), or set data.verify_checksums=false for a copy you changed")
    try:
        batch = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise CorruptDataError(f"{path} is not a CIFAR python batch: {error}") from None
    if not isinstance(batch, dict):
        raise CorruptDataError(f"{path} is not a CIFAR python batch (a {type(batch).__name__}, not a dict)")
    return batch


def _read_split(folder: Path, files: list[str], label_key: bytes, classes: int,
                md5: dict[str, str]) -> tuple[torch.Tensor, np.ndarray]:
    images, labels = [], []
    for file in files:
        path = folder / file
        batch = _unpickle(path, md5.get(file))
        data, targets = batch.get(b"data"), batch.get(label_key)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise CorruptDataError(f"{path}: b'data' must be a uint8 array of shape (n, 3072)")
        targets = np.asarray(targets if isinstance(targets, (list, np.ndarray)) else [], dtype=np.int64)
        if len(targets) != len(data) or (len(targets) and not 0 <= targets.min() <= targets.max() < classes):
            raise CorruptDataError(f"{path}: {label_key.decode()} must hold one label in 0..{classes - 1} per image")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(targets)
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
    md5 = _published_md5(name) if options.verify_checksums else {}
    meta_file, meta_key = layout["meta"]
    names = _unpickle(folder / meta_file, md5.get(meta_file)).get(meta_key)
    classes = [n.decode() for n in names] if isinstance(names, list) and all(isinstance(n, bytes) for n in names) else []
    expected = known_names(name)[0]
    if classes != expected:
        raise DataNotFoundError(f"{folder / meta_file} lists classes {classes[:5]}..., not those of {name}")
    splits = {}
    for split in ("train", "test"):
        images, labels = _read_split(folder, layout[split], layout["labels"], len(classes), md5)
        splits[split] = SplitCatalog(labels, np.zeros_like(labels), TensorImages(images))
    return Catalog(name, classes, ["default"], channels=3, image_size=32, **splits)


for _name in ("cifar10", "cifar100"):
    register_source(_name, Source(known_names=lambda cfg, n=_name: known_names(n),
                                  load=lambda cfg, options, wanted, n=_name: load(n, options),
                                  channels=3, native_size=lambda cfg: 32))
