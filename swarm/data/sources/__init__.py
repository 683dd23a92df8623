"""Dataset sources by name. Each reduces its on-disk format to a :class:`~swarm.data.catalog.Catalog`.

``known_names`` answers without touching the data where the names are fixed (so ``swarm.splits``
works before anything is downloaded); ``load`` reads or renders the data.
"""

from __future__ import annotations

from typing import Any

from swarm.data.catalog import Catalog
from swarm.data.options import DataOptions
from swarm.data.sources import cifar, domainnet, fashion_mnist, folder, synthetic
from swarm.errors import ScenarioError

NAMES = ("cifar10", "cifar100", "domainnet", "fashion_mnist", "synthetic", "folder")


def _check(name: str) -> None:
    if name not in NAMES:
        raise ScenarioError(f"unknown dataset '{name}'; known datasets: {', '.join(NAMES)}")


def known_names(dataset_cfg: Any) -> tuple[list[str] | None, list[str] | None]:
    """(classes, domains) of a dataset, or None where they can only be read from the data."""
    name = dataset_cfg["name"]
    _check(name)
    if name in ("cifar10", "cifar100"):
        return cifar.known_names(name)
    if name == "domainnet":
        return domainnet.known_names()
    if name == "fashion_mnist":
        return fashion_mnist.known_names()
    if name == "synthetic":
        return synthetic.known_names()
    return folder.known_names(dataset_cfg)


def load(dataset_cfg: Any, options: DataOptions, wanted_domains: list[str] | None = None) -> Catalog:
    """Read (or render) a dataset. ``wanted_domains`` lets multi-domain sources skip unused domains."""
    name = dataset_cfg["name"]
    _check(name)
    if name in ("cifar10", "cifar100"):
        return cifar.load(name, options)
    if name == "fashion_mnist":
        return fashion_mnist.load(options)
    module = {"domainnet": domainnet, "synthetic": synthetic, "folder": folder}[name]
    return module.load(dataset_cfg, options, wanted_domains)


def geometry(dataset_cfg: Any, options: DataOptions) -> tuple[int, int]:
    """(input channels, image side) of a dataset without reading it: what a model needs to be built."""
    name = dataset_cfg["name"]
    _check(name)
    native = {"cifar10": (3, 32), "cifar100": (3, 32), "fashion_mnist": (1, 28)}.get(name)
    if native is None:
        default = {"domainnet": 224, "synthetic": 32, "folder": 64}[name]
        native = (3, int(dataset_cfg.get("image_size", default)))
    return native[0], int(options.image_size or native[1])
