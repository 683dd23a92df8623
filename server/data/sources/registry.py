"""The registry of dataset sources (``scenario.dataset.name``): each source module registers itself.

A :class:`Source` says how one name is read: its class and domain names where they are fixed (so
``swarm.splits`` works before anything is downloaded), how to load (or render) it, and its input
geometry without reading it. A module in ``server/data/sources/`` that calls :func:`register_source`
is found by ``swarm.server.data.sources`` when it is first imported: adding a format touches that
module only (and the scenario file that names it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from swarm.server.data.catalog import Catalog
from swarm.server.data.options import DataOptions

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
