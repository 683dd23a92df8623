"""Peak memory growth of one pass of the DomainNet loader over a generated tree of 20k images.

    python benchmarks/domainnet_loader_memory.py [--images 20000] [--workdir /tmp/dn-bench]

Writes a DomainNet-layout tree (<domain>/<class>/<file>.jpg plus <domain>_{train,test}.txt, 64 px
JPEGs) once, then, in a fresh process, builds the `domainnet` scenario on it and reads every
image of every role and split once. Reports the growth of peak RSS over the process's state after
imports. Goal (issue: foundation): < 200 MB, i.e. images are loaded lazily.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path


def make_tree(root: Path, images: int) -> None:
    import numpy as np
    from PIL import Image

    from swarm.server.data.sources.domainnet import DOMAINS, classes

    names = classes()
    per_domain = images // len(DOMAINS)
    rng = np.random.default_rng(0)
    for domain in DOMAINS:
        lines = {"train": [], "test": []}
        for i in range(per_domain):
            label = i % len(names)
            relative = f"{domain}/{names[label]}/{domain}_{label:03d}_{i:06d}.jpg"
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, quality=80)
            lines["test" if i % 5 == 0 else "train"].append(f"{relative} {label}")
        for split, rows in lines.items():
            (root / f"{domain}_{split}.txt").write_text("\n".join(rows) + "\n")
    (root / ".complete").write_text(str(images))


def measure(data_root: Path, image_size: int) -> None:
    from swarm.config import compose_config, data_options, scenario_of
    from swarm.server.data.build import SPLITS, build

    cfg = compose_config(["scenario=domainnet", f"data.root={data_root}", f"data.image_size={image_size}"])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    data = build(scenario_of(cfg), data_options(cfg))
    seen = 0
    for role in data.datasets:
        for split in SPLITS:
            dataset = data.datasets[role][split]
            for i in range(len(dataset)):
                dataset[i]
                seen += 1
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"read {seen} images at {image_size} px in {seconds:.1f} s ({seen / seconds:,.0f}/s); "
          f"peak RSS {before:.0f} MB after imports -> {after:.0f} MB: grew {after - before:.0f} MB (goal < 200 MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/swarm-domainnet-bench"))
    parser.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    tree = args.workdir / "domainnet"
    if args.measure_only:
        measure(args.workdir, args.image_size)
        return
    marker = tree / ".complete"
    if not marker.exists() or marker.read_text() != str(args.images):
        print(f"writing {args.images} JPEGs to {tree} ...")
        make_tree(tree, args.images)
    subprocess.run([sys.executable, __file__, "--measure-only", "--workdir", str(args.workdir),
                    "--image-size", str(args.image_size)], check=True)


if __name__ == "__main__":
    main()
