"""What ``flwr run`` spends building the app's FAB: from the whole clone (Flower's default, the folder
``flwr run`` is given) against from the staged copy of the app's parts (``swarm.server.flower_sim.stage_app``).

Flower's build lists every file under the folder before it filters them, so its cost grows with
what the clone holds (virtual environment, caches, run folders with their node data). Both builds
run side by side in this process, ``--repeat`` times each, alternating.

    python benchmarks/engine_start.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from flwr.cli.build import build_fab_from_disk

from swarm.server import flower_sim


def files_under(root: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(root))


def timed(build) -> tuple[float, int]:
    start = time.perf_counter()
    fab = build()
    return time.perf_counter() - start, len(fab)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    clone = flower_sim.APP_DIR
    print(f"clone {clone}: {files_under(clone):,} files")
    clone_s, staged_s = [], []
    for _ in range(args.repeat):
        seconds, size = timed(lambda: build_fab_from_disk(clone))
        clone_s.append(seconds)
        with tempfile.TemporaryDirectory() as home:
            start = time.perf_counter()
            staged = flower_sim.stage_app(Path(home))
            copy_s = time.perf_counter() - start
            seconds, staged_size = timed(lambda: build_fab_from_disk(staged))
            staged_s.append(copy_s + seconds)
    print(f"FAB from the clone:        {min(clone_s):6.2f} s (best of {args.repeat}; all {', '.join(f'{s:.2f}' for s in clone_s)}), {size:,} bytes")
    print(f"FAB from the staged parts: {min(staged_s):6.2f} s (copy included; all {', '.join(f'{s:.2f}' for s in staged_s)}), "
          f"{staged_size:,} bytes ({', '.join(flower_sim.APP_PARTS)})")
    print(f"ratio clone / staged: {min(clone_s) / min(staged_s):.1f}x")


if __name__ == "__main__":
    main()
