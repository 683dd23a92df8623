"""Bring your own data: a folder of images, ``<root>/<domain>/<class>/*`` or ``<root>/<class>/*``.

The layout is detected (``layout: auto``) or declared (``domains`` / ``classes``). Folders have no
official test split, so ``test_fraction`` of every (class, domain) pair is held out with the seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from swarm.nodes.errors import DataNotFoundError, ScenarioError
from swarm.server.data.catalog import Catalog, SplitCatalog
from swarm.server.data.options import DataOptions
from swarm.server.data.sources.files import IMAGE_SUFFIXES, FileImages
from swarm.server.data.sources.registry import Source, register_source


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _root(dataset_cfg) -> Path:
    if not dataset_cfg.get("root"):
        raise ScenarioError("the folder dataset needs scenario.dataset.root=/path/to/images")
    return Path(str(dataset_cfg["root"])).expanduser()


def scan(root: Path, layout: str = "auto") -> tuple[list[str], list[str], list[tuple[str, int, int]]]:
    """Return (classes, domains, samples) where each sample is (relative path, class id, domain id)."""
    if not root.is_dir():
        raise DataNotFoundError(f"image folder not found: {root}. Point scenario.dataset.root at a folder of "
                                "<domain>/<class>/<image> or <class>/<image> files")
    top = _subdirs(root)
    if not top:
        raise DataNotFoundError(f"{root} has no sub-folders: expected <class>/<image> or <domain>/<class>/<image>")
    if layout == "auto":
        layout = "domains" if all(_subdirs(d) for d in top) else "classes"
    if layout == "classes":
        groups = {("default", d.name): d for d in top}
    elif layout == "domains":
        groups = {(d.name, c.name): c for d in top for c in _subdirs(d)}
    else:
        raise ScenarioError(f"scenario.dataset.layout must be auto, domains or classes, not '{layout}'")
    domains = sorted({d for d, _ in groups})
    classes = sorted({c for _, c in groups})
    samples = []
    for (domain, cls), folder in sorted(groups.items()):
        for image in _images(folder):
            samples.append((image.relative_to(root).as_posix(), classes.index(cls), domains.index(domain)))
    if not samples:
        raise DataNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {root}")
    return classes, domains, samples


def known_names(dataset_cfg) -> tuple[list[str] | None, list[str] | None]:
    try:
        classes, domains, _ = scan(_root(dataset_cfg), dataset_cfg.get("layout", "auto"))
    except (DataNotFoundError, ScenarioError):
        return None, None
    return classes, domains


def load(dataset_cfg, options: DataOptions, wanted_domains: list[str] | None = None) -> Catalog:
    root = _root(dataset_cfg)
    classes, domains, samples = scan(root, dataset_cfg.get("layout", "auto"))
    size = int(options.image_size or dataset_cfg.get("image_size", 64))
    test_fraction = float(dataset_cfg.get("test_fraction", 0.2))
    paths = np.array([s[0] for s in samples], dtype=object)
    class_ids = np.array([s[1] for s in samples])
    domain_ids = np.array([s[2] for s in samples])
    rng = np.random.default_rng(options.seed)
    is_test = np.zeros(len(samples), dtype=bool)
    for group in np.unique(class_ids * len(domains) + domain_ids):
        members = np.flatnonzero(class_ids * len(domains) + domain_ids == group)
        n_test = int(round(test_fraction * len(members)))
        is_test[rng.permutation(members)[:n_test]] = True
    splits = {
        name: SplitCatalog(class_ids[mask], domain_ids[mask], FileImages(root, list(paths[mask]), size))
        for name, mask in (("train", ~is_test), ("test", is_test))
    }
    return Catalog(f"folder:{root.name}", classes, domains, channels=3, image_size=size, **splits)


register_source("folder", Source(known_names=known_names, load=load, channels=3,
                                 native_size=lambda cfg: int(cfg.get("image_size", 64))))
