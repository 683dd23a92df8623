"""``python -m swarm.partition PLAN OUT``: every node's own data folder, to copy to its device.

``PLAN`` is a fleet plan (``fleet_plan.json``) or the run folder holding it -- written by
``python -m swarm.simulate`` (or drawn for a deployment the same way); ``OUT`` receives
``node_000/``, ``node_001/``, ...: each the samples that node's stream brings, its replay sample of
P (continual scenarios), its test subsets and a manifest with their digests
(:mod:`swarm.nodes.local_data`); beside the plan, ``evaluation/``: the server's copy of the test subsets,
on which it scores the shared model after every window. The scenario's dataset is read here, once, where it is; a device gets
only its folder, and its SuperNode is started with it::

    flower-supernode ... --node-config 'partition-id=3 num-partitions=8 data-path="/srv/swarm/node_003" state-dir="/srv/swarm/state"'

Bad input (no plan, unreadable dataset) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from swarm.config import data_options, scenario_of
from swarm.nodes.errors import SwarmError, run_command
from swarm.nodes.fleet_plan import FleetPlan
from swarm.nodes.run_folder import EVALUATION_DIR, FLEET_PLAN
from swarm.nodes.settings import from_plain
from swarm.server.data.build import build
from swarm.server.node_folders import write_evaluation_set, write_fleet_data
from swarm.server.settings import SwarmConfig


def plan_path(value: str) -> Path:
    """The plan file named, or the ``fleet_plan.json`` in the folder named."""
    path = Path(value)
    if path.is_dir():
        path = path / FLEET_PLAN
    if not path.is_file():
        raise SwarmError(f"no fleet plan at {path}: give a fleet_plan.json, or the run folder of python -m swarm.simulate "
                         "that holds one (with several model sizes: its iteration_NN/ folder)")
    return path


def partition(plan_file: Path, out: Path) -> list[Path]:
    try:
        plan = FleetPlan.load(plan_file)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise SwarmError(f"{plan_file} is not a fleet plan ({type(error).__name__}: {error})") from None
    try:
        cfg = from_plain(SwarmConfig, plan.config)
    except ValueError as error:
        raise SwarmError(f"{plan_file} holds settings this version cannot read ({error})") from None
    data = build(scenario_of(cfg), data_options(cfg))

    def progress(done: int, total: int) -> None:
        print(f"\rnode folders: {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)

    folders = write_fleet_data(plan, data, out, progress=progress)
    # The server's copy of the test subsets, beside the plan: what it scores the shared model on.
    write_evaluation_set(plan, data, plan_file.parent / EVALUATION_DIR)
    return folders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swarm.partition", description=__doc__.split("\n\n")[0])
    parser.add_argument("plan", help="fleet_plan.json, or the run folder that holds it")
    parser.add_argument("out", help="folder to write node_000/, node_001/, ... into")
    args = parser.parse_args(argv)
    return run_command(lambda: f"{len(partition(plan_path(args.plan), Path(args.out)))} node folders in {args.out}")


if __name__ == "__main__":
    sys.exit(main())
