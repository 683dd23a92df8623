"""``python -m swarm.archive SOURCE TARGET``: keep a sweep's results, not its bulk.

A sweep's run folders hold the nodes' data folders, the server's test subsets and plots beside the
few small files every table is built from. This copies, for every finished fleet run under
``SOURCE`` (a ``run.json`` with its ``nodes.csv``), those small files (``run.json``, ``nodes.csv``,
``shared_model.json``, ``summary.json``) to the same relative path under ``TARGET``: what a
published result commits, so that ``python -m swarm.report TARGET`` rebuilds every table and
figure on a machine without the sweep's caches. A run already in ``TARGET`` is overwritten by the
newer copy (a re-run of the same point writes the same files).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from swarm.nodes import io
from swarm.nodes.errors import SwarmError, run_command
from swarm.nodes.run_folder import NODES_CSV, RUN_RECORD, SHARED_MODEL, SUMMARY

KEPT = (RUN_RECORD, NODES_CSV, SHARED_MODEL, SUMMARY)


def archive(source: Path, target: Path) -> int:
    """Copy the kept files of every finished run under ``source``; returns how many runs."""
    source, target = Path(source), Path(target)
    if not source.is_dir():
        raise SwarmError(f"{source} is not a folder; pass a run or multirun folder of python -m swarm.simulate")
    runs = 0
    for record in sorted(source.rglob(RUN_RECORD)):
        folder = record.parent
        if not (folder / NODES_CSV).exists():
            continue
        for name in KEPT:
            if (folder / name).exists():
                io.write_bytes(target / folder.relative_to(source) / name, (folder / name).read_bytes())
        runs += 1
    if not runs:
        raise SwarmError(f"no finished fleet runs (run.json with nodes.csv) under {source}")
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swarm.archive", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a run or multirun folder of python -m swarm.simulate")
    parser.add_argument("target", type=Path, help="where the small files go (same relative paths)")
    args = parser.parse_args(argv)
    return run_command(lambda: f"{archive(args.source, args.target)} fleet runs -> {args.target}")


if __name__ == "__main__":
    sys.exit(main())
