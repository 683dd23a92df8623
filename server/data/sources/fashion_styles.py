"""Fashion-MNIST in six styles: a domain-shift task on real images that a CPU trains in minutes.

The paper's DomainNet task (the same 345 classes in six styles; adapt to a new style) is the one
where pre-training on extra knowledge matters most, and the one a 2-core machine cannot train.
This source gives Fashion-MNIST's 10 classes the same shape: every image is drawn in exactly one of
six styles, so T, P and F (split by style) never share an image, and every style holds about a
sixth of every class. Each style is a fixed, pure function of the pixels:

* ``original``: as published;
* ``outline``: the gradient magnitude (Sobel), a line drawing (DomainNet's sketch);
* ``inverted``: 255 − x, a light background;
* ``noisy``: Gaussian noise (σ = 48 of 255) from a generator seeded by the image's index;
* ``striped``: the garment seen through horizontal bars (every third row of pixels dimmed);
* ``blurred``: a 5×5 box blur at two thirds of the contrast, the closest to ``original`` as
  DomainNet's painting is to real.

Which style an image gets is a seeded, class-balanced draw (``dataset.seed``), per official split.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as functional

from swarm.nodes.images import TensorImages
from swarm.server.data.catalog import Catalog, SplitCatalog
from swarm.server.data.options import DataOptions
from swarm.server.data.sources import fashion_mnist
from swarm.server.data.sources.registry import Source, register_source

STYLES = ["original", "outline", "inverted", "noisy", "striped", "blurred"]


def known_names() -> tuple[list[str], list[str]]:
    return list(fashion_mnist.CLASSES), list(STYLES)


def _outline(x: torch.Tensor) -> torch.Tensor:
    sobel = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
    kernels = torch.stack([sobel, sobel.T]).unsqueeze(1)
    gradient = functional.conv2d(x, kernels, padding=1)
    magnitude = gradient.pow(2).sum(1, keepdim=True).sqrt()
    return magnitude / magnitude.amax(dim=(2, 3), keepdim=True).clamp(min=1.0) * 255.0


def _noisy(x: torch.Tensor, indices: np.ndarray) -> torch.Tensor:
    noise = torch.stack([torch.from_numpy(np.random.default_rng((0x5EED, int(i))).normal(0.0, 48.0, x.shape[1:]))
                         for i in indices]).float()
    return x + noise


def _striped(x: torch.Tensor) -> torch.Tensor:
    bars = torch.ones(x.shape[-2], 1)
    bars[::3] = 0.25
    return x * bars


def _blurred(x: torch.Tensor) -> torch.Tensor:
    box = torch.full((1, 1, 5, 5), 1.0 / 25.0)
    return functional.conv2d(x, box, padding=2) * (2.0 / 3.0) + 255.0 / 6.0


def render(images: torch.Tensor, style: str, indices: np.ndarray) -> torch.Tensor:
    """``images`` (N, 1, H, W) uint8 in ``style``; ``indices`` name the images (the noise's seeds)."""
    x = images.float()
    if style == "original":
        out = x
    elif style == "outline":
        out = _outline(x)
    elif style == "inverted":
        out = 255.0 - x
    elif style == "noisy":
        out = _noisy(x, indices)
    elif style == "striped":
        out = _striped(x)
    elif style == "blurred":
        out = _blurred(x)
    else:
        raise ValueError(f"unknown style '{style}'; the styles are {', '.join(STYLES)}")
    return out.round().clamp(0, 255).to(torch.uint8)


def assign_styles(classes: np.ndarray, seed: int) -> np.ndarray:
    """A style per image: within each class, a seeded permutation dealt round the styles, so every
    style holds a sixth of every class (give or take one)."""
    rng = np.random.default_rng(seed)
    styles = np.empty(len(classes), dtype=np.int64)
    for label in np.unique(classes):
        members = np.flatnonzero(classes == label)
        styles[rng.permutation(members)] = np.arange(len(members)) % len(STYLES)
    return styles


def load(dataset_cfg, options: DataOptions, wanted: list[str] | None = None) -> Catalog:
    plain = fashion_mnist.load(options)
    seed = int(dataset_cfg.get("seed", 0))
    splits = {}
    for offset, split in enumerate(("train", "test")):
        part = plain.split(split)
        styles = assign_styles(part.class_idx, seed + offset)
        images = part.images.images.clone()
        for k, style in enumerate(STYLES):
            chosen = np.flatnonzero(styles == k)
            if wanted is not None and style not in wanted:
                continue  # an unused style keeps its plain pixels; no role reads them
            images[chosen] = render(images[chosen], style, chosen + offset * 1_000_000)
        splits[split] = SplitCatalog(part.class_idx, styles, TensorImages(images))
    return Catalog("fashion_mnist_styles", list(fashion_mnist.CLASSES), list(STYLES), channels=1, image_size=28,
                   **splits)


register_source("fashion_mnist_styles", Source(known_names=lambda cfg: known_names(), load=load, channels=1,
                                               native_size=lambda cfg: 28))
