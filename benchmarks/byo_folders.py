"""Write real images as a bring-your-own folder dataset plus a scenario file, to test that path.

    python benchmarks/byo_folders.py /tmp/byo --per-class 300 \\
        --T T-shirt/top Trouser Dress --P Pullover Bag Sneaker Sandal --F Coat "Ankle boot"
    python -m swarm.simulate --config-dir /tmp/byo/configs scenario=byo_continual

Reads Fashion-MNIST's IDX files (Debian's ``dataset-fashion-mnist`` or torchvision's folder) and
writes ``<out>/images/<class>/<n>.png`` (``--per-class`` images of each named class, train and test
together: folder datasets hold out their own test share) and ``<out>/configs/scenario/<name>.yaml``
declaring T, P and F by class with ``mode`` continual (new classes) or finetune.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import yaml
from PIL import Image


def main() -> None:
    from swarm.server.data.options import DataOptions
    from swarm.server.data.sources import fashion_mnist

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--T", nargs="*", default=[])
    parser.add_argument("--P", nargs="+", required=True)
    parser.add_argument("--F", nargs="+", required=True)
    parser.add_argument("--mode", choices=["continual", "finetune"], default="continual")
    parser.add_argument("--name", default="byo_continual")
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    args = parser.parse_args()

    catalog = fashion_mnist.load(DataOptions(root=args.data_root))
    images = catalog.train.images
    labels = np.asarray(catalog.train.class_idx)
    rng = np.random.default_rng(0)
    for name in [*args.T, *args.P, *args.F]:
        index = catalog.classes.index(name)
        folder = args.out / "images" / name.replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        for n, i in enumerate(rng.choice(np.flatnonzero(labels == index), args.per_class, replace=False)):
            pixels = images[int(i)].numpy()
            Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)).save(folder / f"{n:05d}.png")
    clean = lambda names: [n.replace("/", "-") for n in names]  # noqa: E731
    scenario = {"name": args.name, "description": "Fashion-MNIST classes as a folder of PNG files",
                "dataset": {"name": "folder", "root": str((args.out / "images").resolve()), "layout": "classes",
                            "image_size": 28, "test_fraction": 0.2},
                "split_by": "class", "mode": args.mode, "T": clean(args.T), "P": clean(args.P), "F": clean(args.F)}
    target = args.out / "configs" / "scenario" / f"{args.name}.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(scenario, sort_keys=False))
    print(f"wrote {args.per_class} images per class under {args.out / 'images'} and {target}")


if __name__ == "__main__":
    main()
