"""A procedurally drawn image dataset: 12 object classes in DomainNet's six styles.

No files and no download: every image is rendered from a seed, so a run on a laptop and a run on a
cluster see the same pixels. Objects are signed-distance shapes (circle, star, arrow, ...) with a
random position, size and tilt. The styles differ the way DomainNet's domains do:

* ``real``      -- textured natural-colour background, shaded and textured object, drop shadow, sensor noise
* ``sketch``    -- grey paper grain, wobbly graphite outline, hatching inside
* ``painting``  -- brush-stroke canvas and object texture, soft edges, blurred
* ``infograph`` -- flat bright background cluttered with text bars and icons, flat object
* ``clipart``   -- white background, saturated flat fill, thick black outline, hard edges
* ``quickdraw`` -- white background, thin, jittery, broken black stroke, no fill

``real`` and ``sketch`` (T) and ``painting`` (F) share texture, soft edges and natural backgrounds
that the flat, clean ``infograph``/``clipart``/``quickdraw`` (P) lack: as in the paper, F is closer
to T than to P, so a model that saw only P does worse on ``painting``.

All work is batched torch tensor code: one call renders every image of one (class, style) pair.
"""

from __future__ import annotations

import math
import zlib
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from swarm.nodes.images import TensorImages
from swarm.server.data.catalog import Catalog, SplitCatalog
from swarm.server.data.options import DataOptions
from swarm.server.data.sources.registry import Source, register_source

CLASSES = [
    "circle", "square", "triangle", "plus", "ring", "star",
    "diamond", "hexagon", "crescent", "arrow", "stripes", "ell",
]
DOMAINS = ["clipart", "infograph", "painting", "quickdraw", "real", "sketch"]

Tensor = torch.Tensor


# ----------------------------------------------------------------------------- shapes (signed distances)
def _box(px: Tensor, py: Tensor, hx: float, hy: float) -> Tensor:
    qx, qy = px.abs() - hx, py.abs() - hy
    outside = torch.hypot(qx.clamp(min=0), qy.clamp(min=0))
    return outside + torch.maximum(qx, qy).clamp(max=0)


def _triangle(px: Tensor, py: Tensor, r: float) -> Tensor:
    """Equilateral triangle pointing up (Inigo Quilez's exact distance)."""
    k = math.sqrt(3.0)
    px = px.abs() - r
    py = -py + r / k
    fold = (px + k * py) > 0
    px, py = torch.where(fold, (px - k * py) / 2, px), torch.where(fold, (-k * px - py) / 2, py)
    px = px - px.clamp(-2 * r, 0)
    return -torch.hypot(px, py) * torch.sign(py)


def _shape(name: str, px: Tensor, py: Tensor) -> Tensor:
    r = torch.hypot(px, py)
    if name == "circle":
        return r - 0.8
    if name == "square":
        return _box(px, py, 0.68, 0.68)
    if name == "triangle":
        return _triangle(px, py + 0.15, 0.9)
    if name == "plus":
        return torch.minimum(_box(px, py, 0.82, 0.24), _box(px, py, 0.24, 0.82))
    if name == "ring":
        return (r - 0.62).abs() - 0.2
    if name == "star":
        angle = torch.atan2(py, px)
        return (r - (0.55 + 0.32 * torch.cos(5 * angle + math.pi / 2))) * 0.7
    if name == "diamond":
        return (px.abs() / 0.62 + py.abs() / 0.92 - 1.0) * 0.5
    if name == "hexagon":
        return torch.maximum(px.abs() * 0.866 + py.abs() * 0.5, py.abs()) - 0.74
    if name == "crescent":
        return torch.maximum(r - 0.82, -(torch.hypot(px - 0.42, py + 0.12) - 0.66))
    if name == "arrow":
        shaft = _box(px + 0.2, py, 0.45, 0.15)
        head = torch.maximum(py.abs() * 0.74 + (px - 0.85) * 0.67, 0.15 - px)
        return torch.minimum(shaft, head)
    if name == "stripes":
        bands = ((((py + 0.75) / 0.5) % 1.0) - 0.5).abs() - 0.25
        return torch.maximum(_box(px, py, 0.78, 0.75), bands * 0.5)
    if name == "ell":
        return torch.minimum(_box(px + 0.45, py, 0.2, 0.8), _box(px, py - 0.6, 0.65, 0.2))
    raise KeyError(name)


# ----------------------------------------------------------------------------- random fields and colours
class _Canvas:
    """Random draws for one batch of ``n`` images of side ``size``, all from one generator."""

    def __init__(self, n: int, size: int, generator: torch.Generator) -> None:
        self.n, self.size, self.g = n, size, generator
        lin = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
        self.y, self.x = torch.meshgrid(lin, lin, indexing="ij")

    def uniform(self, low: float, high: float, *shape: int) -> Tensor:
        return low + (high - low) * torch.rand(self.n, *shape, generator=self.g)

    def noise(self, channels: int, cells: int | tuple[int, int]) -> Tensor:
        """Smooth value noise in [0, 1]-ish, shaped (n, channels, size, size)."""
        ch, cw = (cells, cells) if isinstance(cells, int) else cells
        base = torch.rand(self.n, channels, ch, cw, generator=self.g)
        return F.interpolate(base, size=(self.size, self.size), mode="bilinear", align_corners=False)

    def strokes(self, channels: int, long: int, short: int) -> Tensor:
        """Streaky noise, like brush strokes, horizontal or vertical per image."""
        streaks = self.noise(channels, (short, long))
        vertical = torch.rand(self.n, 1, 1, 1, generator=self.g) < 0.5
        return torch.where(vertical, streaks.transpose(-1, -2), streaks)

    def colour(self, sat: tuple[float, float], val: tuple[float, float], hue: Tensor | None = None) -> Tensor:
        """Random colours from HSV ranges, shaped (n, 3, 1, 1)."""
        h = self.uniform(0, 1) if hue is None else hue % 1.0
        s, v = self.uniform(*sat), self.uniform(*val)
        k = (torch.tensor([5.0, 3.0, 1.0]) + h[:, None] * 6) % 6
        rgb = v[:, None] - v[:, None] * s[:, None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)
        return rgb[:, :, None, None]

    def shape_distance(self, name: str, wobble: float = 0.0, wobble_cells: int = 4) -> Tensor:
        """Signed distance (image units, <0 inside) to a randomly placed, sized and tilted shape."""
        cx, cy = self.uniform(-0.2, 0.2)[:, None, None], self.uniform(-0.2, 0.2)[:, None, None]
        scale = self.uniform(0.5, 0.72)[:, None, None]
        tilt = self.uniform(-0.35, 0.35)[:, None, None]
        dx, dy = self.x - cx, self.y - cy
        if wobble:
            jitter = (self.noise(2, wobble_cells) - 0.5) * 2 * wobble
            dx, dy = dx + jitter[:, 0], dy + jitter[:, 1]
        px = (dx * torch.cos(tilt) + dy * torch.sin(tilt)) / scale
        py = (-dx * torch.sin(tilt) + dy * torch.cos(tilt)) / scale
        return (_shape(self.name_check(name), px, py) * scale).unsqueeze(1)

    @staticmethod
    def name_check(name: str) -> str:
        if name not in CLASSES:
            raise KeyError(f"unknown synthetic class '{name}'")
        return name


def _inside(d: Tensor, edge: float) -> Tensor:
    return torch.sigmoid(-d / edge)


def _line(d: Tensor, width: float, edge: float) -> Tensor:
    return torch.sigmoid(-(d.abs() - width) / edge)


# ----------------------------------------------------------------------------- styles
def _real(c: _Canvas, name: str) -> Tensor:
    background = (c.colour((0.15, 0.55), (0.25, 0.9))
                  + 0.3 * (c.noise(3, 4) - 0.5) + 0.12 * (c.noise(3, 12) - 0.5))
    d = c.shape_distance(name)
    light = c.uniform(0, 2 * math.pi)[:, None, None, None]
    shading = 1 + 0.35 * (c.x * torch.cos(light) + c.y * torch.sin(light))
    obj = c.colour((0.35, 0.9), (0.35, 1.0)) * shading + 0.1 * (c.noise(3, 16) - 0.5)
    shadow = _inside(torch.roll(d, shifts=(2, 2), dims=(-2, -1)), 0.04)
    image = background * (1 - 0.4 * shadow)
    mask = _inside(d, 0.015)
    image = image * (1 - mask) + obj * mask
    return image + 0.03 * torch.randn(image.shape, generator=c.g)


def _sketch(c: _Canvas, name: str) -> Tensor:
    paper = 0.9 + 0.08 * (c.noise(1, 24) - 0.5)
    d = c.shape_distance(name, wobble=0.025, wobble_cells=6)
    stroke = _line(d, 0.02, 0.012) * c.uniform(0.6, 0.95)[:, None, None, None]
    angle = c.uniform(0, math.pi)[:, None, None, None]
    hatch_phase = (c.x * torch.cos(angle) + c.y * torch.sin(angle)) * c.size * 0.8
    hatch = _inside(d, 0.02) * (torch.sin(hatch_phase) > 0.4).float() * 0.4
    darkness = (stroke + hatch).clamp(0, 1)
    tint = torch.tensor([1.0, 0.98, 0.94])[None, :, None, None]
    return paper * tint * (1 - 0.85 * darkness)


def _infograph(c: _Canvas, name: str) -> Tensor:
    hue = c.uniform(0, 1)
    image = c.colour((0.25, 0.6), (0.8, 1.0), hue=hue).expand(c.n, 3, c.size, c.size).clone()
    for _ in range(6):  # text bars
        cx, cy = c.uniform(-0.9, 0.9)[:, None, None], c.uniform(-0.9, 0.9)[:, None, None]
        w, h = c.uniform(0.15, 0.5)[:, None, None], c.uniform(0.03, 0.07)[:, None, None]
        bar = (((c.x - cx).abs() < w) & ((c.y - cy).abs() < h)).float().unsqueeze(1)
        image = image * (1 - bar) + c.colour((0.0, 0.4), (0.05, 0.45)) * bar
    for _ in range(3):  # icons
        cx, cy = c.uniform(-0.85, 0.85)[:, None, None], c.uniform(-0.85, 0.85)[:, None, None]
        icon = (torch.hypot(c.x - cx, c.y - cy) < c.uniform(0.06, 0.14)[:, None, None]).float().unsqueeze(1)
        image = image * (1 - icon) + c.colour((0.6, 1.0), (0.6, 1.0)) * icon
    mask = _inside(c.shape_distance(name), 0.006)
    return image * (1 - mask) + c.colour((0.6, 1.0), (0.5, 0.95), hue=hue + 0.5) * mask


def _clipart(c: _Canvas, name: str) -> Tensor:
    d = c.shape_distance(name)
    white = c.uniform(0.96, 1.0)[:, None, None, None]
    fill = _inside(d, 0.005)
    outline = _line(d, 0.035, 0.005)
    image = white * (1 - fill) + c.colour((0.7, 1.0), (0.75, 1.0)) * fill
    return image * (1 - outline) + 0.05 * outline


def _quickdraw(c: _Canvas, name: str) -> Tensor:
    d = c.shape_distance(name, wobble=0.06, wobble_cells=3)
    stroke = _line(d, 0.014, 0.005) * (c.noise(1, 3) > 0.2).float()
    return (1 - stroke).expand(c.n, 3, c.size, c.size)


def _painting(c: _Canvas, name: str) -> Tensor:
    hue = c.uniform(0, 1)
    canvas = (c.colour((0.3, 0.65), (0.45, 0.85), hue=hue + c.uniform(-0.1, 0.1))
              + 0.22 * (c.strokes(3, long=3, short=12) - 0.5) + 0.12 * (c.noise(3, 6) - 0.5))
    d = c.shape_distance(name, wobble=0.03, wobble_cells=5)
    paint = c.colour((0.5, 0.95), (0.5, 1.0), hue=hue + c.uniform(0.25, 0.75)) + 0.25 * (c.strokes(3, long=4, short=16) - 0.5)
    mask = _inside(d, 0.03)
    image = canvas * (1 - mask) + paint * mask
    weave = 0.03 * torch.sin(c.x * c.size * 1.7) * torch.sin(c.y * c.size * 1.7)
    blur = torch.tensor([0.25, 0.5, 0.25])
    kernel = (blur[:, None] * blur[None, :]).expand(3, 1, 3, 3)
    return F.conv2d(F.pad(image + weave, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)


STYLES: dict[str, Callable[[_Canvas, str], Tensor]] = {
    "clipart": _clipart, "infograph": _infograph, "painting": _painting,
    "quickdraw": _quickdraw, "real": _real, "sketch": _sketch,
}


def _seed(seed: int, *parts: str) -> int:
    """A stable 63-bit seed for one (seed, split, style, class) batch, independent of Python's hash."""
    return (seed * 1_000_003 + zlib.crc32("/".join(parts).encode())) % (2**63 - 1)


def render(name: str, style: str, n: int, size: int = 32, seed: int = 0, split: str = "train") -> Tensor:
    """Render ``n`` images of class ``name`` in ``style``: uint8 (n, 3, size, size), deterministic per seed."""
    if style not in STYLES:
        raise KeyError(f"unknown synthetic style '{style}'; styles are {', '.join(STYLES)}")
    generator = torch.Generator().manual_seed(_seed(seed, split, style, name))
    image = STYLES[style](_Canvas(n, size, generator), name)
    return (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8)


def known_names() -> tuple[list[str], list[str]]:
    return list(CLASSES), list(DOMAINS)


def load(dataset_cfg, options: DataOptions, wanted_domains: list[str] | None = None) -> Catalog:
    """Render the dataset: ``train_per_group`` / ``test_per_group`` images per (class, style) pair."""
    size = int(options.image_size or dataset_cfg.get("image_size", 32))
    counts = {"train": int(dataset_cfg.get("train_per_group", 200)),
              "test": int(dataset_cfg.get("test_per_group", 50))}
    data_seed = int(dataset_cfg.get("seed", 0))
    domains = [d for d in DOMAINS if wanted_domains is None or d in wanted_domains]
    splits = {}
    for split, per_group in counts.items():
        images, class_ids, domain_ids = [], [], []
        for domain in domains:
            for class_id, name in enumerate(CLASSES):
                images.append(render(name, domain, per_group, size, data_seed, split))
                class_ids.append(np.full(per_group, class_id))
                domain_ids.append(np.full(per_group, DOMAINS.index(domain)))
        splits[split] = SplitCatalog(
            np.concatenate(class_ids), np.concatenate(domain_ids), TensorImages(torch.cat(images))
        )
    return Catalog("synthetic", list(CLASSES), list(DOMAINS), channels=3, image_size=size, **splits)


register_source("synthetic", Source(known_names=lambda cfg: known_names(), load=load, channels=3,
                                    native_size=lambda cfg: int(cfg.get("image_size", 32))))
