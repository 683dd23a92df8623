"""The Flower ClientApp of an edge node: answers who it is, and adapts for one window when asked.

Messages (Flower's Message API):

* ``query.partition`` -> ``{"node": ConfigRecord{"partition": i}}``: the node's partition id, which
  identifies it in the fleet plan (Flower's own node ids are random).
* ``train.adapt`` with ``{"config": ConfigRecord{"window": w, ...}, "task": ConfigRecord}`` (the
  node's part of the plan, :class:`swarm.nodes.fleet_plan.NodeTask`) and, in the node's first window (or every
  window under FedAvg), ``{"arrays": ArrayRecord}`` with the model weights ->
  ``{"metrics": MetricRecord, "info": ConfigRecord{"profile", "status", "error"}}``; when asked for
  (``"evaluate_received"``, the node's first window) also ``{"received": MetricRecord}``, the model
  as received, evaluated before training; and, when asked for (``"return_weights"``), the adapted
  weights (only from a node that trained: one that took no step has nothing to send) and
  ``{"trained": MetricRecord{"examples_per_output": [n, ...]}}``, the examples of each output the
  window trained on (the server's FedAvg weighs each output row by them); and always
  ``{"timing": MetricRecord}``: the wall seconds the node spent on the message, in training and in
  evaluation (:data:`swarm.nodes.protocol.TIMING`; the server's split of a fleet's time).

Where a node's files are is the node's own setting, never the server's: ``data-path`` (its data
folder, written by ``swarm.partition``) and ``state-dir`` (where it keeps its model, optimizer and
replay buffer between windows) in its ``node_config`` (``flower-supernode --node-config``). Under
the simulation engine, whose nodes have only ``partition-id`` in ``node_config``, both come from
``SWARM_NODE_ROOT`` (set by ``swarm.simulate``): ``<root>/node_NNN/data`` and ``.../state``.
Nothing of this lives in Flower's ``Context.state``. A node that raises replies with
``status=failed`` and the error.

Injected faults (``fleet.faults``, drawn into the plan): in its fault's window a ``crash`` node's
app raises (the engine turns that into an error reply), a ``late`` node adapts and then holds its
answer for 1.5 times the server's deadline (``deadline_s`` in the message's config), so that it
really comes late (the server marks it ``late`` and uses nothing of it), a ``corrupt``
node returns NaN weights (even partitions) or an array whose bytes decode to another size than it
declares (odd ones), or under ``local``
an accuracy out of range -- what the server's checks must catch. Attacks, in every window: a
``poison`` node sends a finite update sign-flipped and scaled (what only a robust
``fleet.aggregate`` withstands), an ``inflate`` node claims 100x the steps and examples it
trained (what the server's cap on claims withstands).
"""

from __future__ import annotations

import os
import time
import traceback
from functools import lru_cache
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from swarm.nodes.errors import SwarmError
from swarm.nodes.fleet_plan import NodeTask
from swarm.nodes.local_data import NodeData, load_node_data, simulated_folders
from swarm.nodes.node import NodeRuntime
from swarm.nodes.protocol import Status, WindowRow
from swarm.nodes.run_folder import NODE_ROOT

app = ClientApp()



class InjectedCrash(RuntimeError):
    """The crash ``fleet.faults.crash`` asks for: raised out of the app, as a real bug would be."""


def partition_of(context: Context) -> int:
    return int(context.node_config["partition-id"])


def node_paths(context: Context) -> tuple[Path, Path]:
    """(data folder, state folder) of this node: its own ``node_config`` settings, or under the
    simulation's ``SWARM_NODE_ROOT``."""
    config = context.node_config
    if "data-path" in config and "state-dir" in config:
        return Path(str(config["data-path"])), Path(str(config["state-dir"]))
    root = os.environ.get(NODE_ROOT)
    if not root:
        raise SwarmError("this node has no data: start it with --node-config 'data-path=\"...\" "
                         "state-dir=\"...\"' (its folder from python -m swarm.partition)")
    return simulated_folders(Path(root), partition_of(context))


@lru_cache(maxsize=4)
def _node_data(folder: str, partition: int, data_id: str, manifest_mtime: float) -> NodeData:
    """A node's data, read and checked once per process and folder version: an engine's actor
    serves many messages (under the simulation engine, of many nodes)."""
    return load_node_data(Path(folder), partition=partition, data_id=data_id)


def node_data(folder: Path, partition: int, data_id: str) -> NodeData:
    manifest = folder / "manifest.json"
    mtime = manifest.stat().st_mtime if manifest.exists() else -1.0
    return _node_data(str(folder), partition, data_id, mtime)


def metrics_record(row: WindowRow) -> MetricRecord:
    return MetricRecord(row.metrics())


@app.query("partition")
def partition(msg: Message, context: Context) -> Message:
    return Message(RecordDict({"node": ConfigRecord({"partition": partition_of(context)})}), reply_to=msg)


@app.train("adapt")
def adapt(msg: Message, context: Context) -> Message:
    started = time.perf_counter()
    node = partition_of(context)
    config = msg.content["config"]
    window = int(config["window"])
    profile, fault = "", ""
    received = None
    runtime: NodeRuntime | None = None
    try:
        task = NodeTask.from_config(msg.content["task"])
        if task.node.partition != node:
            raise SwarmError(f"the task is for partition {task.node.partition}, this node is partition {node}")
        profile = task.node.profile
        fault = task.node.fault_in(window)
        if fault == "crash":
            raise InjectedCrash(f"injected fault (fleet.faults.crash) in window {window}")
        data_path, state_dir = node_paths(context)
        weights = msg.content["arrays"].to_torch_state_dict() if "arrays" in msg.content else None
        runtime = NodeRuntime(task, node_data(data_path, node, task.data_id), state_dir)
        if bool(config.get("evaluate_received", window == 0)):
            received = runtime.received(weights)
        metrics, model = runtime.run_window(window, weights)
    except InjectedCrash:
        raise
    except Exception as error:  # reported, so that the other nodes finish and the run says what broke
        metrics = WindowRow.untrained(node, profile, window, Status.failed, f"{type(error).__name__}: {error}")
        traceback.print_exc()
        model = None
    # A late device answers past the server's deadline, as a slow or unreachable one would.
    held = LATE_HOLD * float(config.get("deadline_s", runtime.task.fleet.window_timeout_s if runtime else 0.0)) \
        if fault == "late" else 0.0
    time.sleep(held)
    content = RecordDict({
        "metrics": metrics_record(metrics),
        "info": ConfigRecord({"profile": metrics.profile, "status": str(metrics.status), "error": metrics.error}),
        "timing": MetricRecord({"train_s": runtime.train_s if runtime else 0.0,
                                "eval_s": runtime.eval_s if runtime else 0.0,
                                "node_s": time.perf_counter() - started, **({"held_s": held} if held else {})}),
    })
    if received is not None:
        content["received"] = metrics_record(received)
    if model is not None and metrics.steps > 0 and bool(config.get("return_weights", False)):
        content["arrays"] = ArrayRecord(model.state_dict())
        content["trained"] = MetricRecord({"examples_per_output": [int(n) for n in runtime.trained_per_output]})
    if fault == "corrupt":
        _corrupt(content, node)
    if fault == "poison" and "arrays" in content and weights is not None:
        content["arrays"] = ArrayRecord(poisoned(content["arrays"].to_torch_state_dict(), weights))
    if fault == "inflate" and "arrays" in content:
        _inflate(content)
    return Message(content, reply_to=msg)


LATE_HOLD = 1.5  # a late node holds its reply this many deadlines (fleet.window_timeout_s, sent with the message)
POISON_SCALE = -10.0  # the update a poisoning node sends: its own, sign-flipped and scaled (an assumption)
INFLATE_FACTOR = 100  # how many times its real work an inflating node claims


def poisoned(trained: dict, sent: dict) -> dict:
    """A model-poisoning update (``fleet.faults.poison``): the sent model plus the node's own update
    times :data:`POISON_SCALE` -- finite and of the right shape, so it passes every check on form,
    and pulls a plain mean away from what the honest nodes learned."""
    return {name: sent[name] + POISON_SCALE * (value - sent[name]) if value.is_floating_point() else value
            for name, value in trained.items()}


def _inflate(content: RecordDict) -> None:
    """``fleet.faults.inflate``: claim :data:`INFLATE_FACTOR` times the steps and examples trained,
    to own more of a weighted mean."""
    content["metrics"]["steps"] = content["metrics"]["steps"] * INFLATE_FACTOR
    trained = content["trained"]["examples_per_output"]
    content["trained"]["examples_per_output"] = [n * INFLATE_FACTOR for n in trained]


def _corrupt(content: RecordDict, node: int) -> None:
    """Damage a reply as a faulty device might: NaN weights, or an array whose bytes decode to
    fewer values than its declared shape holds (with weights), else an accuracy out of range."""
    if "arrays" in content:
        arrays = content["arrays"]
        name = next(k for k in arrays.keys() if arrays[k].dtype.startswith("float"))
        values = arrays[name].numpy()
        if node % 2 == 0:
            arrays[name] = Array(np.full_like(values, np.nan))
        else:  # the declared dtype and shape kept, the bytes of a shorter array
            arrays[name] = Array(dtype=arrays[name].dtype, shape=arrays[name].shape, stype=arrays[name].stype,
                                 data=Array(values.reshape(-1)[:-1].copy()).data)
    else:
        metrics = content["metrics"]
        metrics["acc_F"] = 7.0

