"""Errors a user can fix. Entry points print them as one line and exit with code 2; the fleet's
outcomes have their own codes (1: nodes failed, 3: nodes not simulated), after all is written."""

from __future__ import annotations

import sys
from typing import Callable


class SwarmError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2


class FleetFailure(SwarmError):
    """Nodes failed during a fleet run; everything else finished and was written."""

    exit_code = 1


class FleetIncomplete(SwarmError):
    """The simulation engine left node-windows unserved (a hung actor); everything else was written,
    and every fleet mean says over how many nodes it is."""

    exit_code = 3


class DataNotFoundError(SwarmError):
    """A dataset is not where the configuration says it is."""


class CorruptDataError(SwarmError):
    """A data file is not what it claims to be (checksum, format or content)."""


class ScenarioError(SwarmError):
    """A scenario's split declaration is inconsistent with its dataset."""


def run_command(action: Callable[[], str]) -> int:
    """The body of a plain (argparse) entry point: run ``action`` and print the line it returns
    (exit code 0); a :class:`SwarmError` prints as one ``error:`` line and gives its exit code."""
    try:
        done = action()
    except SwarmError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    print(done)
    return 0
