"""``python -m swarm.register RUN PARTITION PUBLIC_KEY [SUPERLINK]``: a device's key registered and bound to its partition.

Registers the device's public key with the SuperLink (``flwr supernode register PUBLIC_KEY
SUPERLINK --format json``, the flwr CLI's own command, against the connection ``SUPERLINK`` of its
config) and binds the node id the SuperLink gives it to ``PARTITION`` in ``RUN/registered_nodes.json``,
beside the server's plan (:mod:`swarm.server.identities`). From then on only that node gets
partition ``PARTITION``'s work: a registered node that claims another's partition gets none.
``--node-id N`` binds a node registered before, without calling the SuperLink::

    python -m swarm.register /srv/swarm/run 3 device3/supernode_key.pub my-superlink --name device3

Bad input (no plan, a partition out of range or taken, a key the SuperLink refuses) is one line on
stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from swarm.nodes.errors import SwarmError, run_command
from swarm.nodes.fleet_plan import FleetPlan
from swarm.nodes.run_folder import FLEET_PLAN
from swarm.server.identities import bind, check_binding


def register_with_superlink(public_key: Path, superlink: str | None, name: str) -> int:
    """The node id the SuperLink gives ``public_key`` (the flwr CLI's JSON answer)."""
    command = ["flwr", "supernode", "register", str(public_key), *([superlink] if superlink else []),
               "--format", "json", *(["--name", name] if name else [])]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SwarmError(f"could not run flwr supernode register ({type(error).__name__}: {error})") from None
    answer = done.stdout[done.stdout.find("{"):] if "{" in done.stdout else ""
    try:
        node_id = int(json.loads(answer)["node-id"])
    except (ValueError, KeyError, TypeError):
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise SwarmError(f"the SuperLink did not register {public_key}: {last}") from None
    return node_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swarm.register", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="the server's run folder (holding fleet_plan.json)")
    parser.add_argument("partition", type=int, help="the partition this device serves")
    parser.add_argument("public_key", type=Path, help="the device's SuperNode public key")
    parser.add_argument("superlink", nargs="?", default=None, help="the flwr CLI's SuperLink connection (its default if left out)")
    parser.add_argument("--name", default="", help="a name for the SuperNode")
    parser.add_argument("--node-id", type=int, default=None, help="bind this already registered node id instead")
    args = parser.parse_args(argv)

    def action() -> str:
        plan_file = Path(args.run) / FLEET_PLAN
        if not plan_file.is_file():
            raise SwarmError(f"no fleet plan at {plan_file}: give the server's run folder")
        if not args.public_key.is_file():
            raise SwarmError(f"no public key at {args.public_key}")
        partitions = len(FleetPlan.load(plan_file).nodes)
        # Checked before the SuperLink is asked, so that a refused binding leaves no registration behind.
        check_binding(plan_file.parent, args.node_id, args.partition, partitions)
        node_id = (args.node_id if args.node_id is not None
                   else register_with_superlink(args.public_key, args.superlink, args.name))
        bind(plan_file.parent, node_id, args.partition, partitions, args.public_key, args.name)
        return f"node {node_id} bound to partition {args.partition} in {plan_file.parent}"

    return run_command(action)


if __name__ == "__main__":
    sys.exit(main())
