"""What the tests of :mod:`swarm.isolated` run in a process of its own (imported there by name, so
kept light: no torch, no test fixtures)."""

from __future__ import annotations

import os
import time

from swarm.nodes.errors import FleetIncomplete


def double(value: int) -> int:
    return 2 * value


def refuse() -> None:
    raise FleetIncomplete("3 nodes not simulated: see report.md")


def crash() -> None:
    raise ValueError("a bug in the preparation")


def wait_forever(pid_file: str) -> None:
    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)
