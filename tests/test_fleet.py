"""The server loop and the ClientApp together on a fake Grid (no engine), plus the server's guards."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord

from swarm.nodes.errors import SwarmError
from swarm.nodes.node import NodeRuntime
from swarm.nodes.protocol import COLUMNS, read_timings
from swarm.nodes import strategies
from swarm.server import fleet
from tests.conftest import FLEET_TINY as TINY, DiesInWindow2, FakeGrid, Killed, nodes_of, use_fake_engine, write_fleet_plan



@pytest.fixture(autouse=True)
def _engine_identity(task_identity):
    """Every test here sends Messages without an engine."""


@pytest.fixture
def plan_file(make_cfg, tmp_path):
    def make(nodes: int = 3, *overrides, windows: int = 2):
        cfg = make_cfg(*TINY, f"fleet.nodes={nodes}", *overrides)
        return write_fleet_plan(cfg, tmp_path, f"run-{nodes}-{len(overrides)}", windows=windows)[0]
    return make


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_every_node_reports_every_window(plan_file):
    path = plan_file(3)
    rows = fleet.run_fleet(FakeGrid(3, root=nodes_of(path)), path, join_timeout_s=5, window_timeout_s=60)
    assert len(rows) == 9 and {r["status"] for r in rows} <= {"received", "ok", "budget_exhausted", "data_exhausted"}
    on_disk = read_rows(path.parent / "nodes.csv")
    assert tuple(on_disk[0]) == COLUMNS
    # First each node's evaluation of the model as received (window -1), then every window.
    assert [(int(r["window"]), int(r["node"])) for r in on_disk] == [(w, n) for w in range(-1, 2) for n in range(3)]
    received = [r for r in on_disk if r["window"] == "-1"]
    assert {(r["status"], r["steps"], r["energy_j"]) for r in received} == {("received", "0", "0.0")}
    assert len({r["acc_F"] for r in received}) == 1  # the same model on the same test subset
    assert {r["profile"] for r in on_disk} == {"raspberry_pi_4", "smartphone", "jetson_nano"}
    assert all(r["acc_PF"] == "" for r in on_disk)  # a finetune scenario has no P ∪ F accuracy


def test_every_node_window_s_seconds_are_recorded_apart_from_the_results(plan_file):
    path = plan_file(3)
    fleet.run_fleet(FakeGrid(3, root=nodes_of(path)), path, join_timeout_s=5, window_timeout_s=60)
    timings = read_timings(path.parent / "timings.csv")
    assert [(t["window"], t["node"]) for t in timings] == [(w, n) for w in range(2) for n in range(3)]
    for t in timings:
        assert 0 < t["train_s"] + t["eval_s"] <= t["node_s"] + 1e-3 and t["eval_s"] > 0
        assert t["window_wall_s"] >= t["node_s"] - 1e-3  # the fake grid serves nodes one by one
    assert "train_s" not in read_rows(path.parent / "nodes.csv")[0]  # results stay free of wall clocks


def test_same_seed_same_nodes_csv(plan_file, tmp_path):
    first = plan_file(2)
    fleet.run_fleet(FakeGrid(2, root=nodes_of(first)), first, join_timeout_s=5)
    rows = read_rows(first.parent / "nodes.csv")
    for state in nodes_of(first).glob("node_*/state"):
        shutil.rmtree(state)
    (first.parent / "fleet_progress.json").unlink()  # run it again from the start
    fleet.run_fleet(FakeGrid(2, root=nodes_of(first)), first, join_timeout_s=5)
    assert read_rows(first.parent / "nodes.csv") == rows


@pytest.mark.parametrize("participation", ["fleet.participation=1.0", "fleet.participation=0.5"])
def test_a_killed_fleet_resumes_after_its_last_finished_window(plan_file, tmp_path, participation):
    """Also with partial participation: the resumed windows draw the same nodes (issue 27)."""
    path = plan_file(3, "fleet.strategy=fedavg", participation, windows=3)
    whole = fleet.run_fleet(FakeGrid(3, root=nodes_of(path)), path, strategy="fedavg", join_timeout_s=5)
    expected = (path.parent / "nodes.csv").read_text()
    for state in nodes_of(path).glob("node_*/state"):
        shutil.rmtree(state)
    (path.parent / "fleet_progress.json").unlink()

    with pytest.raises(Killed):
        fleet.run_fleet(DiesInWindow2(3, root=nodes_of(path)), path, strategy="fedavg", join_timeout_s=5)
    assert json.loads((path.parent / "fleet_progress.json").read_text())["windows_done"] == 1
    resumed = FakeGrid(3, root=nodes_of(path))
    rows = fleet.run_fleet(resumed, path, strategy="fedavg", join_timeout_s=5)
    assert len(rows) == len(whole) and (path.parent / "nodes.csv").read_text() == expected
    windows = {m.content["config"]["window"] for m in resumed.sent if m.metadata.message_type == "train.adapt"}
    assert windows == {1, 2}  # window 1 (index 0) was not run again


@pytest.fixture
def node_1_fails(monkeypatch):
    """Node 1 raises in every window; the others run for real."""
    real = NodeRuntime.run_window

    def flaky(self, window, weights=None):
        if self.me.partition == 1:
            raise RuntimeError("sensor on fire")
        return real(self, window, weights)

    monkeypatch.setattr(NodeRuntime, "run_window", flaky)


def test_a_node_that_raises_is_reported_and_the_others_finish(plan_file, node_1_fails):
    rows = fleet.run_fleet(FakeGrid(3, root=nodes_of(path := plan_file(3))), path, join_timeout_s=5)
    failed = [r for r in rows if r["status"] == "failed"]
    assert {r["node"] for r in failed} == {1} and len(failed) == 2
    assert "sensor on fire" in failed[0]["error"]
    assert all(r["status"] != "failed" for r in rows if r["node"] != 1)


def test_simulate_with_a_failing_node_writes_everything_and_exits_1(make_cfg, tmp_path, monkeypatch, node_1_fails):
    """swarm.simulate end to end with the engine swapped for the fake grid: the real ServerApp runs
    both plans of fleet.checkpoint=all, node 1 raises in every window of every plan."""
    import json

    from swarm import simulate
    from swarm.nodes.errors import FleetFailure

    use_fake_engine(monkeypatch)
    cfg = make_cfg(*TINY, "fleet.nodes=2", "fleet.windows=2", "fleet.checkpoint=all", "prune.iterations=1",
                   "train.max_epochs=1", "reference.max_epochs=2", f"cache_dir={tmp_path / 'cache'}")
    with pytest.raises(FleetFailure, match=r"iteration 0: nodes \[1\]; iteration 1: nodes \[1\] failed") as caught:
        simulate.run(cfg, tmp_path / "run")
    assert caught.value.exit_code == 1
    for iteration in (0, 1):
        out = tmp_path / "run" / f"iteration_{iteration:02d}"
        rows = read_rows(out / "nodes.csv")
        assert [r["status"] for r in rows if r["node"] == "1"] == ["received", "failed", "failed"]
        assert all(r["status"] != "failed" for r in rows if r["node"] == "0")
        assert "sensor on fire" in (out / "report.md").read_text()
        assert json.loads((out / "run.json").read_text())["failed_nodes"] == [1]
    assert not (tmp_path / "cache" / "fleet").exists()  # a failed run is not cached: the next run retries
    # Both adapted checkpoints carry the paper's reference adaptation, in the run's coordinator.json.
    record = json.loads((tmp_path / "run" / "coordinator.json").read_text())
    for entry in record["iterations"]:
        assert set(entry["reference"]) == {"before", "after", "epochs"}
        assert set(entry["reference"]["after"]) == {"acc_P", "acc_F"} and entry["reference"]["epochs"] <= 2


def average(records, weights, sent, per_output=None):
    """The server's FedAvg (:class:`swarm.nodes.strategies.RunningFedAvg`) of all replies at once;
    ``per_output``: (the output layer's name, each node's examples per output)."""
    running = strategies.RunningFedAvg(sent, head=per_output[0] if per_output else None)
    for i, (record, weight) in enumerate(zip(records, weights)):
        running.add(record, weight, per_output[1][i] if per_output else None)
    return running.result()


def test_fedavg_averages_the_adapted_models(plan_file):
    path = plan_file(2, "fleet.strategy=fedavg")
    rows = fleet.run_fleet(FakeGrid(2, root=nodes_of(path)), path, strategy="fedavg", join_timeout_s=5)
    assert len(rows) == 6
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(9)}
    avg = average([ArrayRecord(a), ArrayRecord(b)], [1.0, 3.0], sent=a)  # Flower's helper
    assert torch.allclose(avg["w"], torch.tensor([2.5, 4.5]))
    assert avg["n"].dtype == torch.int64 and int(avg["n"]) == 8  # the batch counter keeps its dtype


def test_a_strategy_is_a_plug_in(plan_file, monkeypatch):
    """A strategy registered with ``@strategy(name)`` outside the server's code is a valid
    ``fleet.strategy``: it is given each trained node's weights in partition order, and what it
    returns is what every node is sent in the next window."""
    monkeypatch.setattr(strategies, "STRATEGIES", dict(strategies.STRATEGIES))  # registered for this test only

    @strategies.strategy("first_node")
    class FirstNode(strategies.FleetStrategy):
        """The next shared model is the first trained node's."""

        shares_model = True
        returned: list[dict[str, torch.Tensor]] = []

        def begin(self, shared):
            self.first = None

        def add(self, arrays, weight, examples_per_output):
            self.first = arrays.to_torch_state_dict() if self.first is None else self.first

        def end(self, shared):
            self.returned.append(self.first if self.first is not None else shared)
            return self.returned[-1]

    path = plan_file(2, "fleet.strategy=fedavg", windows=2)
    grid = FakeGrid(2, root=nodes_of(path))
    fleet.run_fleet(grid, path, strategy="first_node", join_timeout_s=5)
    assert len(FirstNode.returned) == 2
    second = [m for m in grid.sent if m.metadata.message_type == "train.adapt" and m.content["config"]["window"] == 1]
    assert len(second) == 2
    for message in second:
        arrays = message.content["arrays"].to_torch_state_dict()
        assert all(torch.equal(arrays[k], FirstNode.returned[0][k]) for k in arrays)
    assert len(json.loads((path.parent / "shared_model.json").read_text())) == 2  # a shared model is scored
    with pytest.raises(SwarmError, match="fleet.strategy=gossip: choose one of local, fedavg, fedprox, first_node"):
        fleet.run_fleet(grid, path, strategy="gossip")


def test_the_shared_model_is_scored_after_every_window_on_the_nodes_test_subsets(plan_file):
    from swarm.nodes import io
    from swarm.nodes.checkpoints import received_model
    from swarm.nodes.evaluation import accuracies
    from swarm.nodes.fleet_plan import FleetPlan
    from swarm.nodes.node import local_runtime

    path = plan_file(2, "fleet.strategy=fedavg", windows=3)
    fleet.run_fleet(FakeGrid(2, root=nodes_of(path)), path, strategy="fedavg", join_timeout_s=5)
    scores = json.loads((path.parent / "shared_model.json").read_text())
    assert [s["window"] for s in scores] == [0, 1, 2]
    assert set(scores[0]) == {"window", "acc_P", "acc_F", "acc_PF", "acc_F_groups"} and scores[0]["acc_PF"] is None
    # The last entry is the model FedAvg built after the last window (kept for resume), scored as a
    # node scores its own model: the same function on the same test subsets.
    plan = FleetPlan.load(path)
    model = received_model(plan)
    model.load_state_dict(io.load_tensors(path.parent / "fleet_shared_w0003.pt"))
    node = local_runtime(plan, 0, nodes_of(path))
    expected = accuracies(model, node.tests)
    assert scores[-1]["acc_F"] == pytest.approx(expected["acc_F"]) and scores[-1]["acc_P"] == pytest.approx(expected["acc_P"])
    assert scores[-1]["acc_F_groups"] == pytest.approx(expected["acc_F_groups"])
    # The model as received, scored by the server, is every node's received row.
    received = [r for r in read_rows(path.parent / "nodes.csv") if r["window"] == "-1"]
    server_view = fleet.score(received_model(plan), received_model(plan).state_dict(),
                              fleet.load_evaluation_set(path.parent / "evaluation", plan.evaluation_id()))
    assert [float(r["acc_F"]) for r in received] == [pytest.approx(server_view["acc_F"])] * 2


def test_a_fedavg_fleet_without_the_server_s_test_subsets_stops_with_one_line(plan_file):
    path = plan_file(2, "fleet.strategy=fedavg")
    shutil.rmtree(path.parent / "evaluation")
    with pytest.raises(SwarmError, match="evaluation: no readable manifest.json"):
        fleet.run_fleet(FakeGrid(2, root=nodes_of(path)), path, strategy="fedavg", join_timeout_s=5)


def test_fedavg_averages_each_output_over_the_nodes_that_trained_it():
    sent = {"body": torch.zeros(2), "fc.weight": torch.zeros(3, 2), "fc.bias": torch.zeros(3)}
    # Node a trained outputs 0 and 1, node b only output 1; nobody trained output 2. Under the
    # masked loss a node returns the rows of the outputs it did not train as they were sent.
    a = {"body": torch.tensor([1.0, 1.0]), "fc.weight": torch.tensor([[4.0, 4.0], [2.0, 2.0], [0.0, 0.0]]),
         "fc.bias": torch.tensor([4.0, 2.0, 0.0])}
    b = {"body": torch.tensor([3.0, 3.0]), "fc.weight": torch.tensor([[0.0, 0.0], [6.0, 6.0], [0.0, 0.0]]),
         "fc.bias": torch.tensor([0.0, 6.0, 0.0])}
    counts = [np.array([10, 10, 0]), np.array([0, 30, 0])]
    avg = average([ArrayRecord(a), ArrayRecord(b)], [20.0, 20.0], sent, per_output=("fc", counts))
    assert torch.allclose(avg["body"], torch.tensor([2.0, 2.0]))  # the body: plain FedAvg
    # Output 0: node a alone (the plain average would halve what it learned); output 1: 10:30.
    assert torch.allclose(avg["fc.bias"], torch.tensor([4.0, 5.0, 0.0]))
    assert torch.allclose(avg["fc.weight"], torch.tensor([[4.0, 4.0], [5.0, 5.0], [0.0, 0.0]]))
    plain = average([ArrayRecord(a), ArrayRecord(b)], [20.0, 20.0], sent)
    assert torch.allclose(plain["fc.bias"], torch.tensor([2.0, 4.0, 0.0]))


def test_the_server_does_not_wait_forever(plan_file):
    with pytest.raises(SwarmError, match="only 1 of 3 nodes joined within 1 s"):
        fleet.run_fleet(FakeGrid(3, joined=1, root=nodes_of(path := plan_file(3))), path, join_timeout_s=1)
    with pytest.raises(SwarmError, match="fleet.strategy"):
        fleet.run_fleet(FakeGrid(3, root=nodes_of(path := plan_file(3))), path, strategy="gossip")


def test_nodes_hold_the_coordinator_s_labels(make_cfg, tmp_path, cifar10_root):
    """Label groups are ordered (vehicle = 0, animal = 1): a node's data must keep the coordinator's targets."""
    from swarm.nodes.fleet_plan import FleetPlan
    from swarm.nodes.local_data import load_node_data, simulated_folders
    from swarm.server.data.evaluation_sets import test_sets

    cfg = make_cfg("scenario=cifar10_new_subclasses", f"data.root={cifar10_root}", "data.verify_checksums=false", "fleet.nodes=2")
    path, coordinator_data = write_fleet_plan(cfg, tmp_path, "run", windows=1)
    plan = FleetPlan.load(path)
    assert coordinator_data.label_names == ["vehicle", "animal"]
    expected = test_sets(coordinator_data, plan.continual, plan.fleet.eval_samples)
    for partition in range(2):
        mine = load_node_data(simulated_folders(nodes_of(path), partition)[0], partition=partition,
                              data_id=plan.data_id(partition))
        for name, dataset in expected.sets.items():
            assert mine.tests.sets[name].targets.tolist() == [int(y) for _, y in dataset]


def test_drift_events_give_an_accuracy_matrix_end_to_end(plan_file):
    from swarm.fleet_report import write_report
    from swarm.simulate import _events

    path = plan_file(2, "scenario.mode=continual", "scenario.split_by=class", "scenario.T=[]",
                     "scenario.P=[circle,square]", "scenario.F=[ring,star,diamond,hexagon]",
                     "fleet.drift.events=2", "fleet.drift.event_gap_s=150", "fleet.drift.high=20")
    fleet.run_fleet(FakeGrid(2, root=nodes_of(path)), path, join_timeout_s=5)
    summary = write_report(path.parent, "events", target="acc_PF", f_group_names=["ring", "star", "diamond", "hexagon"],
                           events=_events(path))
    matrix = summary["accuracy_matrix"]
    assert matrix["columns"] == ["P", "task 1", "task 2"] and matrix["nodes"] == 2
    assert matrix["rows"] == ["as received", "after event 1", "after event 2"]
    assert all(0 <= v <= 1 for row in matrix["matrix"] for v in row)  # every event ended inside the run
    assert "Accuracy matrix over drift events" in (path.parent / "report.md").read_text()
    assert set(summary["f_groups"]) == {"ring", "star", "diamond", "hexagon"}


def test_collect_keeps_at_most_in_flight_messages_in_the_grid():
    """Under the simulation engine a window's messages go out as replies come back (Flower's
    in-memory LinkState scans every stored message for every node), and each is built only then;
    real devices get all at once."""
    from flwr.app import Message, RecordDict

    class Grid:
        def __init__(self):
            self.waiting, self.most = {}, 0

        def push_messages(self, messages):
            for m in messages:
                m.metadata.__dict__["_message_id"] = f"id-{m.metadata.dst_node_id:02d}"
                self.waiting[m.metadata.message_id] = m
            self.most = max(self.most, len(self.waiting))
            return [m.metadata.message_id for m in messages]

        def pull_messages(self, ids):  # two answers per poll
            return [Message(RecordDict(), reply_to=self.waiting.pop(i)) for i in sorted(ids)[:2]]

    built = []

    def questions():
        for node in range(20):
            built.append(node)
            yield Message(RecordDict(), dst_node_id=node, message_type="query.partition")

    grid = Grid()
    assert sorted(fleet.collect(grid, questions(), fleet.Deadline(5), poll_s=0, in_flight=3)) == list(range(20))
    assert grid.most == 3 and len(built) == 20
    grid = Grid()
    assert len(fleet.collect(grid, questions(), fleet.Deadline(5), poll_s=0)) == 20 and grid.most == 20


def test_a_running_plan_touches_its_log_so_the_caller_need_not_ask_flower(tmp_path):
    import os
    import time

    from swarm.server import flower_sim, server_app

    log = tmp_path / "fleet.log"
    log.write_text("")
    os.utime(log, (0, 0))
    tails = [flower_sim.LogTail(log)]
    assert not flower_sim._beating(tails)  # stale: the caller would ask `flwr ls`
    with server_app.heartbeat(log, every_s=0.05):
        time.sleep(0.3)
    assert flower_sim._beating(tails)


def test_the_app_flower_builds_holds_the_apps_modules_and_nothing_of_the_clone(tmp_path):
    """`flwr run` builds its FAB from a copy of the app's parts, not from the clone (whose virtual
    environment, caches and run folders Flower's build would walk file by file)."""
    import io
    import zipfile

    from flwr.cli.build import build_fab_from_disk

    from swarm.server import flower_sim

    (flower_sim.APP_DIR / "swarm" / "__pycache__").mkdir(exist_ok=True)
    staged = flower_sim.stage_app(tmp_path)
    assert sorted(p.name for p in staged.iterdir()) == sorted(flower_sim.APP_PARTS)
    fab = set(zipfile.ZipFile(io.BytesIO(build_fab_from_disk(staged))).namelist())
    # swarm's own modules, and the three folders it links as its sub-packages, under swarm/
    root = flower_sim.APP_DIR
    wanted = {p.relative_to(root).as_posix() for p in (root / "swarm").glob("*.py")}
    wanted |= {"swarm/" + p.relative_to(root).as_posix() for folder in ("server", "nodes", "scenarios")
               for pattern in ("*.py", "*.yaml") for p in (root / folder).rglob(pattern) if "__pycache__" not in p.parts}
    assert wanted <= fab
    assert "swarm/nodes/client_app.py" in fab and "swarm/scenarios/device/raspberry_pi_4.yaml" in fab
    assert not any("__pycache__" in name or name.startswith((".venv", "tests/", "benchmarks/")) for name in fab)


def test_fedavg_folded_in_chunks_is_the_average_of_all():
    """The server folds replies into FedAvg as they come, a chunk at a time: the same weighted mean
    (and the same per-output mixing) as averaging every reply at once."""
    generator = torch.Generator().manual_seed(0)
    sent = {"body": torch.zeros(4, 3), "fc.weight": torch.zeros(5, 3), "fc.bias": torch.zeros(5), "n": torch.tensor(0)}
    replies = [{k: (torch.randn(v.shape, generator=generator) if v.is_floating_point() else torch.tensor(i))
                for k, v in sent.items()} for i in range(7)]
    weights = [float(w) for w in torch.randint(1, 50, (7,), generator=generator)]
    examples = [np.array([i % 2, 3, 0, i, 1]) for i in range(7)]
    results = []
    for chunk in (2, 3, 100):
        running = strategies.RunningFedAvg(sent, head="fc", chunk=chunk)
        for reply, weight, counts in zip(replies, weights, examples):
            running.add(ArrayRecord(reply), weight, counts)
        results.append(running.result())
    for result in results[:-1]:
        for key in sent:
            assert result[key].dtype == sent[key].dtype
            assert torch.allclose(result[key].float(), results[-1][key].float(), atol=1e-6), key
    body = sum(w * r["body"] for w, r in zip(weights, replies)) / sum(weights)
    assert torch.allclose(results[-1]["body"], body, atol=1e-6)
    assert torch.equal(results[-1]["fc.bias"][2], sent["fc.bias"][2])  # no node trained output 2


def test_fedprox_with_mu_0_is_fedavg_and_its_proximal_term_changes_the_fleet(plan_file):
    """FedProx (issue 27): with ``prox_mu=0`` every node trains exactly as under FedAvg (the same
    ``nodes.csv``); with ``prox_mu > 0`` its loss adds (mu / 2) ||w - w_t||^2 and the fleet differs."""
    def nodes_csv(*overrides):
        path = plan_file(3, *overrides, windows=2)
        fleet.run_fleet(FakeGrid(3, root=nodes_of(path)), path, strategy=overrides[0].split("=")[1], join_timeout_s=5)
        return (path.parent / "nodes.csv").read_text()

    fedavg = nodes_csv("fleet.strategy=fedavg")
    assert nodes_csv("fleet.strategy=fedprox", "fleet.prox_mu=0") == fedavg
    assert nodes_csv("fleet.strategy=fedprox", "fleet.prox_mu=1.0") != fedavg


def test_fedprox_s_penalty_is_the_proximal_term():
    from swarm.config import compose_config

    model = torch.nn.Linear(3, 2)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        model.weight += 0.5  # 6 weights moved by 0.5: ||w - w_t||^2 = 1.5
    prox = strategies.make_strategy("fedprox", dataclasses.replace(compose_config([]).fleet, prox_mu=0.2))
    assert prox.penalty(model, start).item() == pytest.approx(0.2 / 2 * 1.5)
    assert strategies.make_strategy("fedavg", compose_config([]).fleet).penalty(model, start) is None


def test_a_node_pays_for_the_model_s_transfer_as_the_message_carries_it(plan_file):
    from swarm.nodes.device import DeviceProfile
    from swarm.nodes.fleet_plan import FleetPlan
    from swarm.nodes.node import message_bytes

    class KeepsReplies(FakeGrid):
        def pull_messages(self, message_ids):
            replies = list(super().pull_messages(message_ids))
            self.pulled = getattr(self, "pulled", []) + replies
            return replies

    path = plan_file(3, "fleet.strategy=fedavg")
    grid = KeepsReplies(3, root=nodes_of(path))
    rows = fleet.run_fleet(grid, path, strategy="fedavg", join_timeout_s=5)
    plan = FleetPlan.load(path)
    sent = {(int(m.content["config"]["window"]), grid.partition[m.metadata.dst_node_id]): message_bytes(m.content["arrays"])
            for m in grid.sent if m.metadata.message_type == "train.adapt"}
    returned = {(int(r.content["metrics"]["window"]), int(r.content["metrics"]["node"])): message_bytes(r.content["arrays"])
                for r in grid.pulled if "arrays" in r.content}
    trained = [r for r in rows if r["window"] >= 0]
    assert len(sent) == len(trained) == 6
    for row in trained:
        profile = DeviceProfile.from_mapping(plan.fleet.devices[row["profile"]])
        assert row["bytes_down"] == sent[row["window"], row["node"]]  # the model as the message carried it
        if row["steps"]:  # a node that trained sends its update back, as large as the reply carrying it
            assert row["bytes_up"] == pytest.approx(returned[row["window"], row["node"]], rel=0.01)
        else:
            assert row["bytes_up"] == 0 and (row["window"], row["node"]) not in returned
        moved = row["bytes_down"] / profile.downlink_bps + row["bytes_up"] / profile.uplink_bps
        assert row["comm_s"] == pytest.approx(8 * moved)
        assert row["energy_j"] == pytest.approx(row["compute_s"] * profile.active_power_w + row["comm_j"])
    # Flower sends an ArrayRecord as its objects (the record, each array, each array's chunks), each
    # distinct one once: this untrained model's equal arrays (zero biases, unit variances) travel once.
    record = next(m.content["arrays"] for m in grid.sent if "arrays" in m.content)

    every = message_bytes(record, distinct=False)  # equal arrays counted each time
    assert sum(len(array.data) for array in record.values()) < every and message_bytes(record) < every
    # The report splits each device class's time and energy into compute and communication.
    from swarm.fleet_report import write_report

    summary = write_report(path.parent, "link")
    for profile, costs in summary["costs_by_profile"].items():
        mine = [r for r in trained if r["profile"] == profile]
        assert costs["comm_j"] == pytest.approx(sum(r["comm_j"] for r in mine))
        assert costs["compute_j"] + costs["comm_j"] == pytest.approx(sum(r["energy_j"] for r in mine))
        assert costs["bytes_down"] == sum(r["bytes_down"] for r in mine)
    text = (path.parent / "report.md").read_text()
    assert "## Time and energy by device class: compute and communication" in text
    assert f"| smartphone | 1 | 2 | " in text


def test_a_node_whose_link_cannot_bring_the_model_in_a_window_says_so_and_gets_it_again(plan_file):
    path = plan_file(3)
    record = json.loads(path.read_text())
    for profile in record["config"]["fleet"]["devices"].values():  # a 1 kbit/s link: the model takes days
        profile.update(downlink_bps=1e3, uplink_bps=1e3, radio_rx_w=0.5, radio_tx_w=0.5)
    path.write_text(json.dumps(record))
    grid = FakeGrid(3, root=nodes_of(path))
    rows = fleet.run_fleet(grid, path, join_timeout_s=5, window_timeout_s=60)
    windows = [r for r in rows if r["window"] >= 0]
    assert {r["status"] for r in windows} == {"not_received"} and len(windows) == 6
    assert all(r["steps"] == 0 and np.isnan(r["acc_F"]) and "did not arrive" in r["error"] for r in windows)
    assert all(r["comm_s"] == pytest.approx(100.0) and r["comm_j"] == pytest.approx(50.0) for r in windows)
    assert len([r for r in rows if r["window"] == -1]) == 3  # the model as sent is scored once per node
    adapt = [m for m in grid.sent if m.metadata.message_type == "train.adapt"]
    assert len(adapt) == 6 and all("arrays" in m.content for m in adapt)  # sent again: it never arrived


def test_a_trace_replaces_the_cycles_end_to_end(plan_file, make_cfg, tmp_path):
    from swarm.nodes.fleet_plan import FleetPlan
    from swarm.server.cache import fleet_identity
    from swarm.nodes.settings import to_plain

    trace = tmp_path / "trace.csv"
    # Node 0 online in the second window only; node 1 never during the run; the others (jetsons) always.
    trace.write_text("who,start_s,end_s\n0,100,200\n1,5000,6000\nsmartphone,0,1000\njetson_nano,0,1000\n")
    path = plan_file(3, f"fleet.availability.trace={trace}", "fleet.participation=1.0")
    plan = FleetPlan.load(path)
    assert [n.online for n in plan.nodes] == [[[100.0, 200.0]], [[5000.0, 6000.0]], [[0.0, 1000.0]]]
    rows = [r for r in fleet.run_fleet(FakeGrid(3, root=nodes_of(path)), path, join_timeout_s=5, window_timeout_s=60)
            if r["window"] >= 0]
    status = {(r["node"], r["window"]): r["status"] for r in rows}
    steps = {(r["node"], r["window"]): r["steps"] for r in rows}
    # Offline when the model was sent: it did not arrive (sent again next window).
    assert status[0, 0] == status[1, 0] == status[1, 1] == "not_received"
    assert steps[0, 0] == steps[1, 0] == steps[1, 1] == 0 and steps[0, 1] > 0 and steps[2, 0] > 0
    # The trace's contents key the fleet, not its path; a changed trace is refused before it is used.
    identity = fleet_identity(to_plain(plan.fleet))
    assert "availability" not in identity and len(identity["availability_trace"]) == 16
    trace.write_text("who,start_s,end_s\n0,0,200\n1,0,6000\nsmartphone,0,1000\njetson_nano,0,1000\n")
    from swarm.server.plan_drawing import traced

    with pytest.raises(SwarmError, match="changed since the run was set up"):
        traced(plan.fleet)
    # Malformed or short of a node's rows: one line while the config is checked, before any work.
    trace.write_text("who,start_s,end_s\n0,10,5\n")
    with pytest.raises(SwarmError, match="line 2: need 0 <= start_s < end_s"):
        make_cfg(f"fleet.availability.trace={trace}")
    trace.write_text("who,start_s,end_s\n0,0,10\n")
    with pytest.raises(SwarmError, match="no rows for node 1 nor for its device class 'smartphone'"):
        make_cfg(f"fleet.availability.trace={trace}", "fleet.nodes=3")
