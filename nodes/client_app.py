"""The Flower ClientApp of an edge node: answers who it is, and adapts for one window when asked.

Messages (Flower's Message API):

* ``query.partition`` -> ``{"node": ConfigRecord{"partition": i}}``: the node's partition id, which
  identifies it in the fleet plan (Flower's own node ids are random).
* ``train.adapt`` with ``{"config": ConfigRecord{"plan": path, "window": w}}`` and, in the node's
  first window (or every window under FedAvg), ``{"arrays": ArrayRecord}`` with the model weights ->
  ``{"metrics": MetricRecord, "info": ConfigRecord{"profile", "status", "error"}}``; when asked for
  (``"evaluate_received"``, the node's first window) also ``{"received": MetricRecord}``, the model
  as received, evaluated before training; and, when asked for (``"return_weights"``), the adapted
  weights and ``{"trained": MetricRecord{"examples_per_output": [n, ...]}}``, the examples of each
  output the window trained on (the server's FedAvg weighs each output row by them).

Large state (model, optimizer, replay buffer) lives on disk under the run directory, not in
Flower's ``Context.state``. A node that raises replies with ``status=failed`` and the error.

Injected faults (``fleet.faults``, drawn into the plan): in its fault's window a ``crash`` node's
app raises (the engine turns that into an error reply), a ``late`` node adapts but its answer is
``late`` (the simulated device missed the deadline: the server uses nothing of it), a ``corrupt``
node returns NaN weights (even partitions) or a mis-shaped array (odd ones), or under ``local``
an accuracy out of range -- what the server's checks must catch.
"""

from __future__ import annotations

import json
import math
import traceback
from functools import lru_cache
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from nodes.node import NodeRuntime, WindowMetrics
from nodes.plan import FleetPlan
from swarm.data.build import ScenarioData, build
from swarm.data.options import DataOptions
from swarm.data.scenario import Scenario

app = ClientApp()

NUMERIC = ("node", "window", "sim_time_s", "steps", "samples_seen", "flops", "energy_j", "acc_P", "acc_F", "acc_PF")
LISTS = ("acc_F_groups",)


class InjectedCrash(RuntimeError):
    """The crash ``fleet.faults.crash`` asks for: raised out of the app, as a real bug would be."""


def partition_of(context: Context) -> int:
    return int(context.node_config["partition-id"])


@lru_cache(maxsize=2)
def _plan(path: str, mtime: float) -> FleetPlan:
    return FleetPlan.load(path)


@lru_cache(maxsize=2)
def _data(settings: str) -> ScenarioData:
    """The scenario's datasets, built once per data setting and process: a Ray actor serves many
    messages, and the plans of one run (one per model size) share their data."""
    config = json.loads(settings)
    data = config["data"]
    options = DataOptions(root=data["root"], download=False, image_size=data["image_size"],
                          max_per_class=data["max_per_class"], val_fraction=float(data["val_fraction"]),
                          seed=int(config["seed"]), verify_checksums=bool(data.get("verify_checksums", True)))
    return build(Scenario.from_config(config["scenario"], config["pretrain"]), options)


def load_plan_and_data(path: str) -> tuple[FleetPlan, ScenarioData]:
    plan = _plan(path, Path(path).stat().st_mtime)
    # Not sort_keys: a scenario's label_groups are ordered (their order is the label index).
    settings = json.dumps({k: plan.config[k] for k in ("scenario", "pretrain", "data", "seed")})
    return plan, _data(settings)


def metrics_record(metrics: WindowMetrics) -> MetricRecord:
    values = {}
    for key in NUMERIC:
        value = getattr(metrics, key)
        values[key] = float(value) if isinstance(value, float) else int(value)
    for key in LISTS:
        values[key] = [float(v) for v in getattr(metrics, key)]
    return MetricRecord(values)


@app.query("partition")
def partition(msg: Message, context: Context) -> Message:
    return Message(RecordDict({"node": ConfigRecord({"partition": partition_of(context)})}), reply_to=msg)


@app.train("adapt")
def adapt(msg: Message, context: Context) -> Message:
    node = partition_of(context)
    config = msg.content["config"]
    window = int(config["window"])
    profile, fault = "", ""
    received = None
    try:
        plan, data = load_plan_and_data(str(config["plan"]))
        profile = plan.node(node).profile
        fault = plan.node(node).fault_in(window)
        if fault == "crash":
            raise InjectedCrash(f"injected fault (fleet.faults.crash) in window {window}")
        weights = msg.content["arrays"].to_torch_state_dict() if "arrays" in msg.content else None
        runtime = NodeRuntime(plan, node, data)
        if bool(config.get("evaluate_received", window == 0)):
            received = runtime.received(weights)
        metrics, model = runtime.run_window(window, weights)
    except InjectedCrash:
        raise
    except Exception as error:  # reported, so that the other nodes finish and the run says what broke
        nan = math.nan
        metrics = WindowMetrics(node, profile, window, nan, 0, 0, 0.0, 0.0, nan, nan, nan, "failed",
                                f"{type(error).__name__}: {error}")
        traceback.print_exc()
        model = None
    if fault == "late":
        return _late_reply(msg, metrics, window)
    content = RecordDict({
        "metrics": metrics_record(metrics),
        "info": ConfigRecord({"profile": metrics.profile, "status": metrics.status, "error": metrics.error}),
    })
    if received is not None:
        content["received"] = metrics_record(received)
    if model is not None and bool(config.get("return_weights", False)):
        content["arrays"] = ArrayRecord(model.state_dict())
        content["trained"] = MetricRecord({"examples_per_output": [int(n) for n in runtime.trained_per_output]})
    if fault == "corrupt":
        _corrupt(content, node)
    return Message(content, reply_to=msg)


def _late_reply(msg: Message, metrics: WindowMetrics, window: int) -> Message:
    """A ``late`` node's answer: the device adapted (its state is saved), but its result missed the
    window's deadline, so it carries no measurement and no weights."""
    nan = math.nan
    late = WindowMetrics(metrics.node, metrics.profile, window, nan, 0, 0, 0.0, 0.0, nan, nan, nan, "late",
                         f"injected fault (fleet.faults.late) in window {window}: the answer missed the deadline")
    return Message(RecordDict({"metrics": metrics_record(late), "info": ConfigRecord(
        {"profile": late.profile, "status": late.status, "error": late.error})}), reply_to=msg)


def _corrupt(content: RecordDict, node: int) -> None:
    """Damage a reply as a faulty device might: NaN weights or a mis-shaped array (with weights),
    else an accuracy out of range."""
    if "arrays" in content:
        state = content["arrays"].to_torch_state_dict()
        name = next(k for k, v in state.items() if v.is_floating_point())
        state[name] = state[name].clone().fill_(math.nan) if node % 2 == 0 else state[name].reshape(-1)[:-1].clone()
        content["arrays"] = ArrayRecord(state)
    else:
        metrics = content["metrics"]
        metrics["acc_F"] = 7.0

