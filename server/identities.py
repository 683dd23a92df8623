"""Which SuperNode serves which partition, bound to the key it authenticated with.

In a deployment every SuperNode proves who it is with a key registered on the SuperLink (``flwr
supernode register``, which gives the node its id). Its partition, though, is what the node says it
is (``partition-id`` in its ``--node-config``): a registered node could claim another's partition
and be sent that node's work. ``python -m swarm.register`` registers a device's key and binds the
node id the SuperLink gives it to a partition, in ``registered_nodes.json`` beside the server's
plan. When that file exists the fleet waits for the bound nodes and gives work only to a node whose
claim is its binding (:func:`swarm.server.fleet.partition_map`). Under the simulation engine node
ids are drawn afresh each run and there is no file: nodes are who they say they are.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from swarm.nodes import io
from swarm.nodes.errors import SwarmError

REGISTERED_NODES = "registered_nodes.json"
FORMAT = 1


def read_bindings(run_dir: Path) -> dict[int, int] | None:
    """Node id -> partition from the run folder's ``registered_nodes.json``; None when there is none.
    A file that is not one, or binds a node or a partition twice, is an error (never ignored)."""
    path = Path(run_dir) / REGISTERED_NODES
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        entries = [(int(e["node_id"]), int(e["partition"])) for e in data["nodes"]] if data.get("format") == FORMAT else None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise SwarmError(f"{path} is not a file of registered nodes ({type(error).__name__}: {error})") from None
    if entries is None:
        raise SwarmError(f"{path} is not format {FORMAT}; register the nodes again with python -m swarm.register")
    bindings = dict(entries)
    if len(bindings) != len(entries) or len(set(bindings.values())) != len(entries):
        raise SwarmError(f"{path} binds a node or a partition twice")
    return bindings


def check_binding(run_dir: Path, node_id: int | None, partition: int, partitions: int) -> None:
    """Refuse binding ``partition`` (of ``partitions``) to ``node_id`` (None: a node not registered
    yet): a partition out of range or bound to another node, or a node bound to another partition."""
    if not 0 <= partition < partitions:
        raise SwarmError(f"partition {partition} is not in 0..{partitions - 1} (the plan has {partitions} nodes)")
    for other, bound in (read_bindings(run_dir) or {}).items():
        if bound == partition and other != node_id:
            raise SwarmError(f"partition {partition} is already bound to node {other}")
        if other == node_id and bound != partition:
            raise SwarmError(f"node {node_id} is already bound to partition {bound}")


def bind(run_dir: Path, node_id: int, partition: int, partitions: int, public_key: Path | None = None,
         name: str = "") -> None:
    """Record that node ``node_id`` serves ``partition`` (of ``partitions``), with the digest of its
    public key (:func:`check_binding` first)."""
    check_binding(run_dir, node_id, partition, partitions)
    path = Path(run_dir) / REGISTERED_NODES
    entries = json.loads(path.read_text())["nodes"] if path.exists() else []
    entries = [e for e in entries if int(e["node_id"]) != node_id]
    digest = hashlib.sha256(Path(public_key).read_bytes()).hexdigest() if public_key else ""
    entries.append({"node_id": int(node_id), "partition": int(partition), "name": name, "key_sha256": digest})
    io.write_json(path, {"format": FORMAT, "nodes": sorted(entries, key=lambda e: e["partition"])})
