"""DomainNet in its official layout.

``<root>/<domain>/<class>/<image>.jpg`` plus the official split files ``<root>/<domain>_train.txt``
and ``<root>/<domain>_test.txt`` (lines: ``<domain>/<class>/<file>.jpg <label>``). The class is
read from the path, so label numbering in the files does not matter. Only the domains a scenario
uses are read; images load lazily.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from swarm.nodes.errors import DataNotFoundError
from swarm.server.data.catalog import Catalog, SplitCatalog
from swarm.server.data.options import DataOptions
from swarm.server.data.sources.files import FileImages
from swarm.server.data.sources.registry import Source, register_source

DOMAINS = ["clipart", "infograph", "painting", "quickdraw", "real", "sketch"]
DOWNLOAD_PAGE = "http://ai.bu.edu/M3SDA/"


def classes() -> list[str]:
    """The 345 class names in the order of the official label numbers."""
    text = resources.files("swarm.server.data").joinpath("domainnet_classes.txt").read_text()
    return [line for line in text.splitlines() if line]


def known_names() -> tuple[list[str], list[str]]:
    return classes(), list(DOMAINS)


def _read_split_file(path: Path, class_index: dict[str, int], domain_index: dict[str, int]):
    paths, class_ids, domain_ids = [], [], []
    with open(path) as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            relative = line.split()[0]
            parts = relative.split("/")
            if len(parts) < 3 or parts[0] not in domain_index or parts[1] not in class_index:
                raise DataNotFoundError(f"{path}:{line_number}: '{relative}' is not <domain>/<class>/<file>")
            paths.append(relative)
            domain_ids.append(domain_index[parts[0]])
            class_ids.append(class_index[parts[1]])
    return paths, class_ids, domain_ids


def load(dataset_cfg, options: DataOptions, wanted_domains: list[str] | None = None) -> Catalog:
    root = Path(options.root) / dataset_cfg.get("folder", "domainnet")
    names = classes()
    class_index = {c: i for i, c in enumerate(names)}
    domain_index = {d: i for i, d in enumerate(DOMAINS)}
    size = int(options.image_size or dataset_cfg.get("image_size", 224))
    splits = {}
    for split in ("train", "test"):
        paths, class_ids, domain_ids = [], [], []
        for domain in wanted_domains or DOMAINS:
            split_file = root / f"{domain}_{split}.txt"
            if not split_file.exists():
                raise DataNotFoundError(
                    f"DomainNet not found: looked for {split_file}. Download the images and the "
                    f"train/test split files from {DOWNLOAD_PAGE} and unpack them into {root}"
                )
            p, c, d = _read_split_file(split_file, class_index, domain_index)
            paths += p
            class_ids += c
            domain_ids += d
        splits[split] = SplitCatalog(np.array(class_ids), np.array(domain_ids), FileImages(root, paths, size))
    return Catalog("domainnet", names, list(DOMAINS), channels=3, image_size=size, **splits)


register_source("domainnet", Source(known_names=lambda cfg: known_names(), load=load, channels=3,
                                    native_size=lambda cfg: int(cfg.get("image_size", 224))))
