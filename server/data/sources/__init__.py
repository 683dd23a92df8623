"""Dataset sources by name (``scenario.dataset.name``). Each reduces its on-disk format to a
:class:`~swarm.server.data.catalog.Catalog`.

A :class:`Source` says how one name is read: its class and domain names where they are fixed
(so ``swarm.splits`` works before anything is downloaded), how to load (or render) it, and its
input geometry without reading it. Add a format with :func:`register_source`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from swarm.nodes.errors import ScenarioError
from swarm.server.data.catalog import Catalog
from swarm.server.data.options import DataOptions
from swarm.server.data.sources import cifar, domainnet, fashion_mnist, fashion_styles, folder, synthetic

Names = tuple[list[str] | None, list[str] | None]


@dataclass(frozen=True)
class Source:
    known_names: Callable[[Any], Names]  # (classes, domains) from the dataset's config; None: read from data
    load: Callable[[Any, DataOptions, list[str] | None], Catalog]  # (config, options, wanted domains)
    channels: int
    native_size: Callable[[Any], int]  # image side before data.image_size, from the dataset's config


SOURCES: dict[str, Source] = {}


def register_source(name: str, source: Source) -> None:
    SOURCES[name] = source


for _cifar in ("cifar10", "cifar100"):
    register_source(_cifar, Source(known_names=lambda cfg, n=_cifar: cifar.known_names(n),
                                   load=lambda cfg, options, wanted, n=_cifar: cifar.load(n, options),
                                   channels=3, native_size=lambda cfg: 32))
register_source("fashion_mnist", Source(known_names=lambda cfg: fashion_mnist.known_names(),
                                        load=lambda cfg, options, wanted: fashion_mnist.load(options),
                                        channels=1, native_size=lambda cfg: 28))
register_source("fashion_mnist_styles", Source(known_names=lambda cfg: fashion_styles.known_names(),
                                               load=fashion_styles.load, channels=1, native_size=lambda cfg: 28))
register_source("domainnet", Source(known_names=lambda cfg: domainnet.known_names(), load=domainnet.load,
                                    channels=3, native_size=lambda cfg: int(cfg.get("image_size", 224))))
register_source("synthetic", Source(known_names=lambda cfg: synthetic.known_names(), load=synthetic.load,
                                    channels=3, native_size=lambda cfg: int(cfg.get("image_size", 32))))
register_source("folder", Source(known_names=folder.known_names, load=folder.load,
                                 channels=3, native_size=lambda cfg: int(cfg.get("image_size", 64))))


def source(dataset_cfg: Any) -> Source:
    name = dataset_cfg["name"]
    if name not in SOURCES:
        raise ScenarioError(f"unknown dataset '{name}'; known datasets: {', '.join(SOURCES)}")
    return SOURCES[name]


def known_names(dataset_cfg: Any) -> Names:
    """(classes, domains) of a dataset, or None where they can only be read from the data."""
    return source(dataset_cfg).known_names(dataset_cfg)


def load(dataset_cfg: Any, options: DataOptions, wanted_domains: list[str] | None = None) -> Catalog:
    """Read (or render) a dataset. ``wanted_domains`` lets multi-domain sources skip unused domains."""
    return source(dataset_cfg).load(dataset_cfg, options, wanted_domains)


def geometry(dataset_cfg: Any, options: DataOptions) -> tuple[int, int]:
    """(input channels, image side) of a dataset without reading it: what a model needs to be built."""
    chosen = source(dataset_cfg)
    return chosen.channels, int(options.image_size or chosen.native_size(dataset_cfg))
