"""The server's fleet loop on Flower's Grid: wait for the nodes, send the model once, run windows.

Written against the Grid interface only (``get_node_ids``, ``send_and_receive``), so the same loop
runs under the simulation engine, the deployment engine, and a fake grid in the tests. Every wait
has a deadline; nothing waits forever.
"""

from __future__ import annotations

import csv
import io as text_io
import logging
import math
import time
from pathlib import Path
from typing import Any, Iterable, Protocol

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from nodes.plan import FleetPlan
from swarm import checkpoints, io
from swarm.errors import SwarmError

log = logging.getLogger("swarm.fleet")

COLUMNS = ["node", "profile", "window", "sim_time_s", "steps", "samples_seen", "flops", "energy_j",
           "acc_P", "acc_F", "acc_PF", "status", "error", "acc_F_groups"]
RECEIVED_WINDOW = -1  # nodes.csv's row of the model as each node received it
STRATEGIES = ("local", "fedavg")


class GridLike(Protocol):
    def get_node_ids(self) -> Iterable[int]: ...

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]: ...


def wait_for_nodes(grid: GridLike, count: int, timeout_s: float, poll_s: float = 0.5) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = list(grid.get_node_ids())
        if len(nodes) >= count:
            return nodes
        if time.monotonic() > deadline:
            raise SwarmError(f"only {len(nodes)} of {count} nodes joined within {timeout_s:.0f} s; "
                             "check that every SuperNode is running (or raise fleet.join_timeout_s)")
        time.sleep(poll_s)


def partition_map(grid: GridLike, node_ids: list[int], timeout_s: float) -> dict[int, int]:
    """Ask every node its partition id: Flower's node ids are random, the plan speaks of partitions."""
    questions = [Message(RecordDict(), dst_node_id=nid, message_type="query.partition") for nid in node_ids]
    mapping = {}
    for reply in grid.send_and_receive(questions, timeout=timeout_s):
        if not reply.has_error():
            mapping[int(reply.content["node"]["partition"])] = reply.metadata.src_node_id
    return mapping


def average(states: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """FedAvg of state dicts that share one (pruned) architecture; integer buffers take the first's."""
    total = sum(weights)
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = sum(s[key] * (w / total) for s, w in zip(states, weights))
        else:
            out[key] = first.clone()
    return out


def _row(reply: Message | None, partition: int, window: int, profile: str, error: str = "") -> dict[str, Any]:
    if reply is None or reply.has_error():
        reason = error or (f"{reply.error.reason}" if reply is not None else "no reply")
        return {"node": partition, "profile": profile, "window": window, "status": "failed", "error": reason,
                **{k: math.nan for k in COLUMNS if k not in ("node", "profile", "window", "status", "error")}}
    metrics, info = reply.content["metrics"], reply.content["info"]
    row = {k: metrics[k] for k in metrics}
    row.update(node=partition, window=window, profile=str(info["profile"]) or profile,
               status=str(info["status"]), error=str(info["error"]))
    return row


def _received_row(reply: Message | None, partition: int, profile: str) -> dict[str, Any] | None:
    """The node's evaluation of the model as it received it (window -1), if the reply carries one."""
    if reply is None or reply.has_error() or "received" not in reply.content:
        return None
    metrics = reply.content["received"]
    row = {k: metrics[k] for k in metrics}
    row.update(node=partition, window=RECEIVED_WINDOW, profile=profile, status="received", error="")
    return row


def _cell(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join("nan" if math.isnan(v) else f"{v:.4f}" for v in value)
    return value


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = text_io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: (r["window"], r["node"])):
        writer.writerow({k: _cell(row.get(k, "")) for k in COLUMNS})
    io.write_text(path, buffer.getvalue())


def run_fleet(grid: GridLike, plan_path: Path, *, strategy: str = "local", join_timeout_s: float = 120,
              window_timeout_s: float = 600, progress=None) -> list[dict[str, Any]]:
    """Run every window of the plan on the grid's nodes; returns (and writes) the nodes.csv rows."""
    if strategy not in STRATEGIES:
        raise SwarmError(f"fleet.strategy must be one of {', '.join(STRATEGIES)}, not '{strategy}'")
    plan = FleetPlan.load(plan_path)
    count = len(plan.nodes)
    node_ids = wait_for_nodes(grid, count, join_timeout_s)
    mapping = partition_map(grid, node_ids, window_timeout_s)
    missing = sorted(set(range(count)) - set(mapping))
    if missing:
        raise SwarmError(f"nodes for partitions {missing} did not answer; the fleet needs partitions 0..{count - 1}")
    model, _, _ = checkpoints.load(Path(plan.checkpoint))
    shared = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rows: list[dict[str, Any]] = []
    failed: dict[int, str] = {}
    csv_path = Path(plan.run_dir) / "nodes.csv"
    for window in range(plan.windows):
        messages = []
        for partition in range(count):
            if partition in failed:
                continue
            content = RecordDict({"config": ConfigRecord({"plan": str(plan_path), "window": window,
                                                          "return_weights": strategy == "fedavg"})})
            if window == 0 or strategy == "fedavg":  # the model travels once (or each round under FedAvg)
                content["arrays"] = ArrayRecord(shared)
            messages.append(Message(content, dst_node_id=mapping[partition], message_type="train.adapt"))
        replies = {reply.metadata.src_node_id: reply for reply in grid.send_and_receive(messages, timeout=window_timeout_s)}
        states, sizes = [], []
        for partition in range(count):
            profile = plan.node(partition).profile
            if partition in failed:
                rows.append(_row(None, partition, window, profile, f"failed earlier: {failed[partition]}"))
                continue
            reply = replies.get(mapping[partition])
            row = _row(reply, partition, window, profile,
                       "" if reply is not None else f"no reply within {window_timeout_s:.0f} s")
            received = _received_row(reply, partition, profile) if window == 0 else None
            if received is not None:
                rows.append(received)
            rows.append(row)
            if row["status"] == "failed":
                failed[partition] = row["error"]
            elif strategy == "fedavg" and "arrays" in reply.content:
                states.append(reply.content["arrays"].to_torch_state_dict())
                sizes.append(max(float(row.get("samples_seen", 0) or 0), 1.0))
        if strategy == "fedavg" and states:
            shared = average(states, sizes)
        write_csv(csv_path, rows)
        window_rows = [r for r in rows if r["window"] == window]
        done = [r for r in window_rows if r["status"] != "failed"]
        mean_f = sum(r["acc_F"] for r in done) / len(done) if done else math.nan
        received = [r["acc_F"] for r in rows if r["window"] == RECEIVED_WINDOW]
        message = (f"window {window + 1}/{plan.windows}: {len(done)}/{count} nodes, "
                   f"{sum(int(r['steps']) for r in done)} steps, mean acc F {mean_f:.3f}"
                   + (f" (as received {sum(received) / len(received):.3f})" if received else ""))
        log.info(message)
        if progress is not None:
            progress(window, window_rows)
    return rows
