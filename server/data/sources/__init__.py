"""Dataset sources by name (``scenario.dataset.name``). Each reduces its on-disk format to a
:class:`~swarm.server.data.catalog.Catalog`, and registers itself
(:mod:`swarm.server.data.sources.registry`): a new format is one new module here.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from swarm.nodes.errors import ScenarioError
from swarm.server.data.catalog import Catalog
from swarm.server.data.options import DataOptions
from swarm.server.data.sources.registry import SOURCES, Names, Source, register_source

__all__ = ["SOURCES", "Names", "Source", "register_source", "source", "known_names", "load", "geometry"]

# Every module of this package registers its sources when imported (cifar, fashion_mnist, ...).
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


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
