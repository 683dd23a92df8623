"""The server loop against what can go wrong: bad replies, silent nodes, duplicate claims, hostile text.

Every case runs the real ClientApp on the engine-free ``FakeGrid``; the reply is then damaged on
its way back, or never sent. The run must go on, the damaged node must be marked with a reason,
and the other nodes must be untouched.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from flwr.app import Array, ConfigRecord, MetricRecord

from swarm.fleet_report import write_report
from swarm.server import fleet
from swarm.server.replies import safe_text
from tests.conftest import (FLEET_TINY as TINY, FakeGrid, compose_config, nodes_of, use_fake_engine,
                            write_fleet_plan)



# fleet.window_timeout_s of the tests that wait for a deadline (a late node holds its reply 1.5 times it).
LATE_TEST_DEADLINE_S = 1.0
SHORT_DEADLINE_S = 0.3


@pytest.fixture(autouse=True)
def _engine_identity(task_identity):
    """Every test here sends Messages without an engine."""


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    """One plan of 3 nodes and 2 windows; each test runs it in a fresh copy of its run folder."""
    return write_fleet_plan(compose_config(*TINY, "fleet.nodes=3"), tmp_path_factory.mktemp("faults"), "run",
                            windows=2)[0]


def fresh(plan_path):
    """Forget the nodes' state and results of an earlier test on the same plan."""
    import shutil

    for state in (plan_path.parent / "nodes").glob("node_*/state"):
        shutil.rmtree(state)
    (plan_path.parent / "nodes.csv").unlink(missing_ok=True)
    (plan_path.parent / "fleet_progress.json").unlink(missing_ok=True)
    return plan_path


def rows_of(path):
    with open(path.parent / "nodes.csv") as f:
        return list(csv.DictReader(f))


def _set_metric(key, value):
    def tamper(reply, partition):
        if partition == 1:
            reply.content["metrics"][key] = value
        return reply
    return tamper


def _drop(record):
    def tamper(reply, partition):
        if partition == 1:
            del reply.content[record]
        return reply
    return tamper


def _metrics_as_config(reply, partition):
    """Text where a number belongs: a MetricRecord refuses text itself, so the row comes as config."""
    if partition == 1:
        metrics = dict(reply.content["metrics"])
        del reply.content["metrics"]
        reply.content["metrics"] = ConfigRecord({**metrics, "steps": "many"})
    return reply


def _status(value):
    def tamper(reply, partition):
        if partition == 1:
            reply.content["info"] = ConfigRecord({"profile": reply.content["info"]["profile"], "status": value,
                                                  "error": ""})
        return reply
    return tamper


def _weights(change):
    """Node 1's first weight array replaced by ``change(its values)``: an array, or an Array as sent."""
    def tamper(reply, partition):
        if partition == 1:
            arrays = reply.content["arrays"]
            name = next(k for k in arrays.keys() if k.endswith("weight"))
            changed = change(arrays[name].numpy().copy())
            arrays[name] = changed if isinstance(changed, Array) else Array(changed)
        return reply
    return tamper


def _payload(declared_like, data_like):
    """An array that declares one array's dtype and shape and carries another's bytes."""
    def change(values):
        declared, data = declared_like(values), data_like(values)
        return Array(dtype=str(declared.dtype), shape=tuple(declared.shape), stype="numpy.ndarray",
                     data=Array(data).data if isinstance(data, np.ndarray) else data)
    return change


def _examples(values):
    def tamper(reply, partition):
        if partition == 1:
            reply.content["trained"] = MetricRecord({"examples_per_output": values})
        return reply
    return tamper


def _timing(**values):
    def tamper(reply, partition):
        if partition == 1:
            reply.content["timing"] = MetricRecord({**dict(reply.content["timing"]), **values})
        return reply
    return tamper


BAD_REPLIES = {
    "missing metric": (_drop("metrics"), "its metrics are missing"),
    "accuracy out of range": (_set_metric("acc_F", 2.0), "acc_F = 2.0 is not an accuracy"),
    "text where a number belongs": (_metrics_as_config, "its metrics are not a MetricRecord"),
    "negative energy": (_set_metric("energy_j", -1.0), "energy_j = -1.0 is not a finite non-negative"),
    "infinite flops": (_set_metric("flops", math.inf), "flops = inf"),
    "another node's row": (_set_metric("node", 2.0), "it says node 2"),
    "unknown status": (_status("great"), "status 'great' is not one of"),
    "NaN weights": (_weights(lambda v: np.full_like(v, np.nan)), "holds NaN or infinite values"),
    "wrong weight shape": (_weights(lambda v: v[:1]), "has shape"),
    "bytes of a smaller array": (_weights(_payload(lambda v: v, lambda v: v.reshape(-1)[:1])), "decodes to"),
    "bytes of another dtype": (_weights(_payload(lambda v: v, lambda v: v.astype(np.float64))), "decodes to float64"),
    "bytes of another shape, same size": (_weights(_payload(lambda v: v, lambda v: v.reshape(-1))), "decodes to"),
    "bytes that are not an array": (_weights(_payload(lambda v: v, lambda v: b"\x93NUMPY garbage")), "does not decode"),
    "declared dtype of another kind": (_weights(_payload(lambda v: v.astype(np.int32), lambda v: v.astype(np.int32))),
                                       "decodes to int32"),
    "no examples per output": (_drop("trained"), "examples per output were asked for"),
    "examples for another model": (_examples([1, 2]), "is not a list of"),
    "negative examples": (_examples([-1] * 12), "not a whole non-negative number"),
    "negative seconds": (_timing(train_s=-1.0), "timing"),
    "training longer than the window": (_timing(train_s=1e6), "took longer than the whole window"),
    "held longer than the window": (_timing(held_s=1e6), "held its answer longer than the whole window"),
}


@pytest.fixture(scope="module")
def without_node_1(plan, module_task_identity):
    """The shared model's scores after window 0 when node 1 never answers it (a device gone): what
    the fleet must hold when node 1's reply is refused."""
    import json

    path = fresh(plan)
    grid = FakeGrid(3, silent={1}, root=nodes_of(path))
    fleet.run_fleet(grid, path, strategy="fedavg", join_timeout_s=5, window_timeout_s=SHORT_DEADLINE_S)
    return json.loads((path.parent / "shared_model.json").read_text())[0]


@pytest.mark.parametrize("case", BAD_REPLIES)
def test_an_invalid_reply_fails_its_node_and_the_run_goes_on(plan, case, without_node_1):
    import json

    path = fresh(plan)
    tamper, reason = BAD_REPLIES[case]
    rows = fleet.run_fleet(FakeGrid(3, tamper=tamper, root=nodes_of(path)), path, strategy="fedavg",
                           join_timeout_s=5)
    mine = [r for r in rows if r["node"] == 1 and r["window"] >= 0]
    assert [r["status"] for r in mine] == ["failed", "failed"]
    assert mine[0]["error"].startswith("invalid reply: ") and reason in mine[0]["error"]
    assert mine[1]["error"].startswith("failed earlier: invalid reply")
    others = [r for r in rows if r["node"] != 1 and r["window"] >= 0]
    assert len(others) == 4 and all(r["status"] not in fleet.NO_RESULT for r in others)
    # Nothing of the refused reply reached the shared model: after window 0 it scores exactly as
    # the fleet's without node 1.
    assert json.loads((path.parent / "shared_model.json").read_text())[0] == without_node_1


def test_a_duplicate_partition_claim_gets_no_work(plan):
    path = fresh(plan)
    grid = FakeGrid(4, root=nodes_of(path))  # four SuperNodes for a plan of three; the fourth claims partition 0 again
    grid.claims = {grid.ids[3]: 0}
    fleet.run_fleet(grid, path, join_timeout_s=5)
    adapted = [m.metadata.dst_node_id for m in grid.sent if m.metadata.message_type == "train.adapt"]
    assert grid.ids[3] not in adapted and sorted(set(adapted)) == grid.ids[:3]


def test_in_simulation_a_silent_node_is_not_simulated_and_said_so(plan):
    path = fresh(plan)
    rows = fleet.run_fleet(FakeGrid(3, silent={2}, root=nodes_of(path)), path, join_timeout_s=5,
                           window_timeout_s=SHORT_DEADLINE_S, simulated=True)
    mine = [r for r in rows if r["node"] == 2]
    assert [r["status"] for r in mine] == ["not_simulated", "not_simulated"]
    assert "simulation engine returned no reply" in mine[0]["error"]
    summary = write_report(path.parent, "silent")
    assert summary["coverage"] == {"nodes": 3, "nodes_with_result": 2, "nodes_in_last_window": 2,
                                   "failed_node_windows": 0, "late_node_windows": 0, "not_simulated_node_windows": 2,
                                   "complete": False}
    assert summary["totals"]["not_simulated_node_windows"] == 2 and summary["totals"]["failed_node_windows"] == 0
    report = (path.parent / "report.md").read_text()
    assert "INCOMPLETE FLEET: 2 node-windows were NOT SIMULATED" in report and "2 of 3 nodes" in report
    assert summary["idle_nodes"]["2"].startswith("the simulation engine never served it")


def test_on_real_devices_a_late_node_is_late_that_window_and_rejoins(plan):
    path = fresh(plan)
    grid = FakeGrid(3, silent={2}, root=nodes_of(path))
    rows = fleet.run_fleet(grid, path, join_timeout_s=5, window_timeout_s=SHORT_DEADLINE_S,
                           progress=lambda window, _: grid.silent.clear())  # back after window 0
    mine = [(r["window"], r["status"], r["error"]) for r in rows if r["node"] == 2]
    assert mine[0] == (0, "late", f"no reply within {SHORT_DEADLINE_S:g} s")
    mine = [(w, status) for w, status, _ in mine]
    assert (-1, "received") in mine and mine[-1][0] == 1 and mine[-1][1] not in fleet.NO_RESULT
    second = [m for m in grid.sent if m.metadata.dst_node_id == grid.ids[2] and m.metadata.message_type == "train.adapt"]
    assert len(second) == 2 and "arrays" in second[1].content  # it never had the model: sent again
    assert all(r["status"] not in fleet.NO_RESULT for r in rows if r["node"] != 2)


def test_node_text_cannot_break_a_report(plan, monkeypatch):
    from swarm.nodes.node import NodeRuntime

    def hostile(self, window, weights=None):
        raise RuntimeError("=HYPERLINK(\"x\")|`rm -rf`\n| fake | row |")

    monkeypatch.setattr(NodeRuntime, "run_window", hostile)
    path = fresh(plan)
    fleet.run_fleet(FakeGrid(3, root=nodes_of(path)), path, join_timeout_s=5)
    errors = [r["error"] for r in rows_of(path) if r["error"]]
    assert errors and all("\n" not in e and "|" not in e and "`" not in e for e in errors)
    assert not any(e.startswith(("=", "+", "-", "@")) for e in errors)
    write_report(path.parent, "hostile")
    lines = (path.parent / "report.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| node |"))
    node_rows = [line for line in lines if line.startswith("| 1 |")]
    assert len(node_rows) == 1 and node_rows[0].count("|") == header.count("|")


def test_safe_text_is_one_short_printable_line():
    assert safe_text("a\nb\tc|d`e") == "a b c/d'e"
    assert safe_text("=1+1") == "'=1+1" and safe_text("-cmd") == "'-cmd"
    assert len(safe_text("x" * 5000)) == 300


def test_reply_from_the_wrong_node_is_ignored():
    """A reply counts only for the message it answers, and only from the node that was asked."""
    from flwr.app import Message, RecordDict

    class Grid:
        def __init__(self):
            self.pulled = 0

        def push_messages(self, messages):
            for m in messages:
                m.metadata.__dict__["_message_id"] = f"id-{m.metadata.dst_node_id}"
            return [m.metadata.message_id for m in messages]

        def pull_messages(self, ids):
            self.pulled += 1
            if self.pulled > 1:
                return []
            reply = Message(RecordDict(), reply_to=question)
            reply.metadata.__dict__["_src_node_id"] = 99  # an impostor answers for node 7
            return [reply]

    question = Message(RecordDict(), dst_node_id=7, message_type="query.partition")
    question.metadata.__dict__["_message_id"] = "id-7"
    got = fleet.collect(Grid(), [question], fleet.Deadline(0.2), poll_s=0.01)
    assert got == {}


def test_simulate_says_loudly_when_nodes_were_not_simulated_and_exits_3(make_cfg, tmp_path, monkeypatch, capsys):
    """swarm.simulate end to end with the engine swapped for a fake one whose actor for node 1 hangs."""
    import json

    from swarm import simulate
    from swarm.nodes.errors import FleetIncomplete
    from swarm.server import server_app

    monkeypatch.setattr(server_app, "is_simulation", lambda grid: True)
    use_fake_engine(monkeypatch, silent={1})
    cfg = make_cfg(*TINY, "fleet.nodes=2", "fleet.windows=2", "prune.iterations=0", "train.max_epochs=1",
                   "reference.adapt=false", f"fleet.window_timeout_s={SHORT_DEADLINE_S}", f"cache_dir={tmp_path / 'cache'}")
    with pytest.raises(FleetIncomplete, match=r"iteration 0: 1 nodes not simulated") as caught:
        simulate.run(cfg, tmp_path / "run")
    assert caught.value.exit_code == 3
    out = capsys.readouterr().out
    assert "INCOMPLETE FLEET: 2 node-windows were NOT SIMULATED" in out and "1 of 2 nodes" in out
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["not_simulated_nodes"] == [1] and record["failed_nodes"] == []
    assert not (tmp_path / "cache" / "fleet").exists()  # an incomplete fleet is not cached


# ---------------------------------------------------------------- fault injection (fleet.faults)

def test_faults_are_drawn_from_the_seed_one_per_node():
    from swarm.nodes.fleet_plan import NodePlan, check_faults, draw_faults
    from swarm.nodes.settings import FaultsConfig

    def draw(seed):
        nodes = [NodePlan(i, "smartphone", 0.0, 0.0, [], 0) for i in range(20)]
        draw_faults(nodes, check_faults(FaultsConfig(crash=0.1, late=0.2, corrupt=0.05, poison=0.1, inflate=0.05)),
                    4, seed)
        return [(n.fault, n.fault_window) for n in nodes]

    faults = draw(3)
    assert faults == draw(3) and faults != draw(4)
    kinds = [kind for kind, _ in faults]
    assert [kinds.count(k) for k in ("crash", "late", "corrupt", "poison", "inflate", "")] == [2, 4, 1, 2, 1, 10]
    assert all(0 <= w < 4 for kind, w in faults if kind) and all(w == -1 for kind, w in faults if not kind)


@pytest.mark.parametrize("overrides, message", [
    (["+fleet.faults.meteor=0.1"], "fleet.faults.meteor is not a setting; fleet.faults has crash, late, corrupt, "
                                   "poison, inflate"),
    (["fleet.faults.meteor=0.1"], "fleet.faults.meteor: Key 'meteor' not in 'FaultsConfig'"),
    (["fleet.faults.crash=1.5"], "fleet.faults.crash=1.5: a number >= 0 and <= 1"),
    (["fleet.faults.crash=0.6", "fleet.faults.late=0.6"], "fleet.faults add up to 1.2")])
def test_bad_fault_settings_are_one_clear_error(overrides, message):
    line = _rejection(overrides)
    assert message in line and "\n" not in line, line


def _rejection(overrides: list[str], then=None) -> str:
    """The one line with which composing ``overrides`` (and running ``then(cfg)``, a check of a
    later stage) is rejected: Hydra's error made one line, or a SwarmError's."""
    from hydra.errors import HydraException

    from swarm.config import composition_error, compose_config
    from swarm.nodes.errors import SwarmError

    try:
        cfg = compose_config(overrides)
        if then is not None:
            then(cfg)
    except SwarmError as error:
        return str(error)
    except HydraException as error:
        return composition_error(error)
    raise AssertionError(f"{overrides} were accepted")


@pytest.fixture(scope="module")
def faulty_plan(tmp_path_factory):
    """Six nodes, three windows: one node of each fault kind, in its own window."""
    from swarm.nodes.fleet_plan import FleetPlan

    path = write_fleet_plan(compose_config(*TINY, "fleet.nodes=6"), tmp_path_factory.mktemp("injected"), "run",
                            windows=3)[0]
    plan = FleetPlan.load(path)
    for partition, (kind, window) in {1: ("crash", 1), 2: ("late", 0), 3: ("corrupt", 1), 4: ("corrupt", 2)}.items():
        plan.nodes[partition].fault, plan.nodes[partition].fault_window = kind, window
    plan.save(path)
    return path


@pytest.mark.parametrize("strategy, simulated", [("local", False), ("fedavg", False), ("fedavg", True)])
def test_injected_faults_are_survived_and_reported_per_node(faulty_plan, strategy, simulated):
    import torch

    from swarm.nodes import io

    path = fresh(faulty_plan)
    rows = fleet.run_fleet(FakeGrid(6, root=nodes_of(path)), path, strategy=strategy, join_timeout_s=5,
                           window_timeout_s=LATE_TEST_DEADLINE_S, simulated=simulated)
    trained = [r for r in rows if r["window"] >= 0]
    assert len(trained) == 6 * 3  # every node, every window: a row
    status = {(r["node"], r["window"]): (r["status"], r["error"]) for r in trained}
    assert status[1, 0][0] not in fleet.NO_RESULT
    assert status[1, 1] == ("failed", "the node's app raised: InjectedCrash: injected fault (fleet.faults.crash) "
                                      "in window 1")
    assert status[1, 2][0] == "failed" and status[1, 2][1].startswith("failed earlier: ")
    # The late node really answered past the deadline (it held its reply 1.5 deadlines); the window waited for it.
    assert status[2, 0][0] == "late" and f"past the {LATE_TEST_DEADLINE_S:g} s deadline" in status[2, 0][1]
    with open(path.parent / "timings.csv") as f:
        first = [r for r in csv.DictReader(f) if r["window"] == "0"]
    assert float(first[0]["window_wall_s"]) >= 1.5 * LATE_TEST_DEADLINE_S
    assert float(next(r for r in first if r["node"] == "2")["node_s"]) >= 1.5 * LATE_TEST_DEADLINE_S
    assert status[2, 1][0] not in fleet.NO_RESULT and status[2, 2][0] not in fleet.NO_RESULT  # it rejoined
    odd, even = {"local": ("is not an accuracy",) * 2, "fedavg": ("decodes to", "holds NaN")}[strategy]
    assert status[3, 1][0] == "failed" and odd in status[3, 1][1]
    assert status[4, 2][0] == "failed" and even in status[4, 2][1]
    for node in (0, 5):
        assert all(status[node, w][0] not in fleet.NO_RESULT for w in range(3))
    assert all(0 <= r["acc_F"] <= 1 for r in trained if r["status"] not in fleet.NO_RESULT)
    if strategy == "fedavg":  # the shared model the fleet holds after the last window
        shared = io.load_tensors(next(path.parent.glob("fleet_shared_w*.pt")))
        assert all(torch.isfinite(v).all() for v in shared.values() if v.is_floating_point())
    summary = write_report(path.parent, "faults", faults={1: "crash in window 1", 2: "late in window 0"})
    assert summary["coverage"]["late_node_windows"] == 1 and not summary["coverage"]["complete"]
    report = (path.parent / "report.md").read_text()
    assert "1 node-windows were late" in report and "node 1: crash in window 1" in report


def test_simulate_with_faults_writes_every_row_and_exits_1(make_cfg, tmp_path, monkeypatch, capsys):
    import json

    from swarm import simulate
    from swarm.nodes.errors import FleetFailure

    use_fake_engine(monkeypatch)
    cfg = make_cfg(*TINY, "fleet.nodes=4", "fleet.windows=2", "prune.iterations=0", "train.max_epochs=1",
                   "reference.adapt=false", "fleet.faults.crash=0.25", "fleet.faults.late=0.25",
                   f"fleet.window_timeout_s={LATE_TEST_DEADLINE_S}",
                   "fleet.faults.corrupt=0.25", f"cache_dir={tmp_path / 'cache'}")
    with pytest.raises(FleetFailure) as caught:
        simulate.run(cfg, tmp_path / "run")
    assert caught.value.exit_code == 1
    plan = json.loads((tmp_path / "run" / "fleet_plan.json").read_text())
    injected = {n["partition"]: n["fault"] for n in plan["nodes"] if n["fault"]}
    assert sorted(injected.values()) == ["corrupt", "crash", "late"]
    rows = rows_of(tmp_path / "run" / "fleet_plan.json")
    assert len([r for r in rows if r["window"] != "-1"]) == 4 * 2
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert sorted(record["failed_nodes"]) == sorted(injected)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Injected faults" in report and all(f"node {n}: {k}" in report for n, k in injected.items())
    assert not (tmp_path / "cache" / "fleet").exists()  # a run with faults is not cached


# ---------------------------------------------------------------- settings checked before any work

BAD_SETTINGS = [
    ("fleet.strategy=gossip", "fleet.strategy=gossip: choose one of local, fedavg, fedprox"),
    ("fleet.replay.policy=bogus", "fleet.replay.policy=bogus: choose one of reservoir, class_balanced"),
    ("fleet.drift.kind=sometimes", "fleet.drift.kind=sometimes: choose one of fixed, uniform, exponential"),
    ("fleet.budget.energy_j=-1", "fleet.budget.energy_j=-1.0: a number >= 0, or null"),
    ("fleet.nodes=0", "fleet.nodes=0: a whole number >= 1"),
    ("fleet.nodes=100000", "fleet.nodes=100000: F has"),
    ("fleet.profiles=[toaster]", "fleet.profiles: unknown device profile 'toaster'; choose one of jetson_nano"),
    ("pruning.composite=nope", "pruning.composite=nope: choose one of beta_smooth"),
    ("prune.ratio=1.5", "prune.ratio=1.5: a number > 0 and < 1"),
    ("scenario=nope", "Could not find 'scenario/nope'; choose one of cifar100_new_classes"),
    ("fleet.nodez=3", "fleet.nodez: Key 'nodez' not in 'FleetConfig'"),
    # Checked while composing, and nowhere after (settings are typed once: issue 26).
    ("prune.scope=some", "prune.scope=some: choose one of inner, all"),
    ("reference.new_class_outputs=zero", "reference.new_class_outputs=zero: choose one of reset, keep"),
    ("pretrain=nope", "Could not find 'pretrain/nope'; choose one of extra, task_only"),
    ("train.patience=0", "train.patience=0: a whole number >= 1"),
    ("fleet.participation=0", "fleet.participation=0: a fraction in (0, 1] (0.25), or a whole number of nodes >= 1"),
    ("fleet.participation=1.5", "fleet.participation=1.5: a fraction in (0, 1]"),
    ("fleet.aggregate=mode", "fleet.aggregate=mode: choose one of mean, trimmed_mean, median, multikrum"),
    ("fleet.trim_fraction=0.5", "fleet.trim_fraction=0.5: a number >= 0 and < 0.5"),
    ("fleet.update=all", "fleet.update=all: choose one of full, bias, head, fisher, relevant"),
    ("fleet.update=fisher", "fleet.update=fisher chooses channels within a memory budget: set fleet.update_budget_kb"),
    ("fleet.update_budget_kb=0", "fleet.update_budget_kb=0.0: a number > 0, or null"),
    ("fleet.clip_norm=0", "fleet.clip_norm=0.0: a number > 0, or null"),
    ("fleet.faults.poison=1.5", "fleet.faults.poison=1.5: a number >= 0 and <= 1"),
]


@pytest.mark.parametrize("override, message", BAD_SETTINGS, ids=[o for o, _ in BAD_SETTINGS])
def test_a_bad_setting_is_one_line_naming_it(override, message):
    """Issue 11's list, through what every entry point runs before its task: Hydra's composition
    (its error made one line) and swarm.config.prepare (checks, device profiles). The registries'
    checks (pruning.composite=nope, swarm.server.criteria.check_pruning; fleet.strategy=gossip,
    swarm.nodes.strategies.check_strategy) run before the data is read, the
    data-bound one (fleet.nodes=100000) right after it is built, both before any training."""
    def later_checks(cfg) -> None:
        if override.startswith("pruning.composite"):
            from swarm.server.criteria import check_pruning

            check_pruning(cfg.pruning)
        if override.startswith("fleet.strategy"):
            from swarm.nodes.strategies import check_strategy

            check_strategy(cfg.fleet.strategy)
        if override == "fleet.nodes=100000":
            from swarm.config import data_options, scenario_of
            from swarm.server.data.build import build
            from swarm.server.plan_drawing import check_fleet_fits

            check_fleet_fits(cfg.fleet, build(scenario_of(cfg), data_options(cfg)))

    line = _rejection(["scenario.dataset.train_per_group=6", override], then=later_checks)
    assert message in line and "\n" not in line, line


@pytest.mark.parametrize("override, message", [BAD_SETTINGS[i] for i in (0, 5, 6)],
                         ids=[BAD_SETTINGS[i][0] for i in (0, 5, 6)])
def test_a_bad_setting_stops_simulate_before_any_work(tmp_path, override, message):
    """As a user meets it (one of each place it is caught: while Hydra composes, right after the
    data is built, while the device profiles load): with an empty cache, exit 2 within seconds, one line naming the
    problem, no traceback, nothing trained (the cache stays empty)."""
    import time

    from tests.conftest import run_module

    started = time.monotonic()
    result = run_module("swarm.simulate", override, f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}")
    seconds = time.monotonic() - started
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "cache").exists() and seconds < 15, seconds


def test_a_gpu_share_without_a_gpu_stops_before_any_work(tmp_path):
    """``fleet.ray.gpus_per_node`` > 0 where torch sees no CUDA GPU: one line, exit 2, nothing trained."""
    import torch

    from tests.conftest import run_module

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    result = run_module("swarm.simulate", "fleet.ray.gpus_per_node=0.25", f"cache_dir={tmp_path / 'cache'}",
                        f"hydra.run.dir={tmp_path / 'run'}")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert "fleet.ray.gpus_per_node=0.25" in lines[0] and "no CUDA GPU" in lines[0]
    assert not (tmp_path / "cache").exists()


def test_a_gpu_fleet_is_cached_apart_and_a_cpu_fleet_keeps_its_key():
    from dataclasses import replace

    from swarm.config import compose_config
    from swarm.server.cache import fleet_key

    fleet = compose_config([]).fleet
    on_cpu = fleet_key("m", 5, fleet, 0)
    assert fleet.ray.gpus_per_node == 0 and fleet_key("m", 5, replace(fleet, ray=replace(fleet.ray, cpus_per_node=2)), 0) == on_cpu
    assert fleet_key("m", 5, replace(fleet, ray=replace(fleet.ray, gpus_per_node=0.25)), 0) != on_cpu


def test_a_device_profile_s_citation_changes_neither_the_fleet_key_nor_how_results_group():
    """A profile's description, sources and peak (a bound on effective_flops only) never enter the
    simulation: correcting them keeps cached fleets and puts old and new runs in one group."""
    from dataclasses import replace

    from swarm.config import compose_config
    from swarm.nodes.device import as_simulated
    from swarm.nodes.settings import to_plain
    from swarm.server.cache import fleet_key

    pi = {"name": "raspberry_pi_4", "peak_flops": 1.19e10, "effective_flops": 3.6e9, "sources": {"peak_flops": "a"}}
    fleet = replace(compose_config([]).fleet, devices={"raspberry_pi_4": pi})
    cited = replace(fleet, devices={"raspberry_pi_4": {**pi, "peak_flops": 8e9, "sources": {"peak_flops": "b"}}})
    assert fleet_key("m", 5, cited, 0) == fleet_key("m", 5, fleet, 0)
    assert as_simulated(to_plain(cited)) == as_simulated(to_plain(fleet))
    slower = replace(fleet, devices={"raspberry_pi_4": {**pi, "effective_flops": 1e9}})
    assert fleet_key("m", 5, slower, 0) != fleet_key("m", 5, fleet, 0)
