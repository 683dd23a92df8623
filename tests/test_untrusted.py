"""Nodes that lie: a claim of more training than the plan allows, a poisoned update, a payload that
does not decode to what it declares. Each is compared with what the same fleet does without it.

The fleets run the real ClientApp on the engine-free ``FakeGrid`` (``tests.conftest``).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import MultiKrum as FlowerMultiKrum

from swarm.nodes import io
from swarm.nodes.choices import Aggregate
from swarm.nodes.fleet_plan import FleetPlan
from swarm.nodes.strategies import MultiKrum, RobustAggregate, RunningFedAvg, clip_update
from swarm.server import fleet
from swarm.server.claims import StepCeilings
from tests.conftest import FLEET_TINY as TINY, FakeGrid, compose_config, nodes_of, write_fleet_plan


@pytest.fixture(autouse=True)
def _engine_identity(task_identity):
    """Every test here sends Messages without an engine."""


@pytest.fixture(scope="module")
def base_plan(tmp_path_factory):
    """Four nodes of one device class, two windows, FedAvg; every test runs a copy of it with its own changes."""
    return write_fleet_plan(compose_config(*TINY, "fleet.nodes=4", "fleet.strategy=fedavg",
                                           "fleet.profiles=[raspberry_pi_4]"),
                            tmp_path_factory.mktemp("untrusted"), "run", windows=2)[0]


def variant(base, tmp_path, faults=None, windows=None, **fleet_settings):
    """A copy of the base plan's run folder (its nodes' data, no state), with ``faults``
    ({partition: kind}), the number of windows and fleet settings changed in the plan."""
    run = tmp_path / "run"
    shutil.copytree(base.parent, run, ignore=shutil.ignore_patterns(
        "state", "nodes.csv", "fleet_progress.json", "fleet_shared_w*", "shared_model.json", "timings.csv"))
    plan = FleetPlan.load(run / "fleet_plan.json")
    plan.run_dir = str(run)
    for partition, kind in (faults or {}).items():
        plan.nodes[partition].fault, plan.nodes[partition].fault_window = kind, 0
    plan.config["fleet"].update(fleet_settings)
    plan.windows = windows or plan.windows
    plan.save(run / "fleet_plan.json")
    return run / "fleet_plan.json"


def run(path):
    rows = fleet.run_fleet(FakeGrid(4, root=nodes_of(path)), path, strategy="fedavg", join_timeout_s=5)
    shared = io.load_tensors(next(path.parent.glob("fleet_shared_w*.pt")))
    return rows, shared


def distance(a, b):
    return float(torch.sqrt(sum(((a[k].double() - b[k].double()) ** 2).sum() for k in a if a[k].is_floating_point())))


# ---------------------------------------------------------------- claims the server can verify

@pytest.mark.parametrize("update", ["full", "head"])  # the ceiling charges a step what the node's mode costs
def test_an_honest_fleet_never_claims_more_than_its_plan_allows(base_plan, tmp_path, update):
    path = variant(base_plan, tmp_path, update=update)
    rows, _ = run(path)
    trained = [r for r in rows if r["window"] >= 0 and r["steps"] > 0]
    assert trained and not any("claimed" in r["error"] for r in trained)
    plan = FleetPlan.load(path)
    ceilings = StepCeilings(plan, fleet.received_model(plan))
    for r in sorted(trained, key=lambda r: (r["window"], r["node"])):
        assert r["steps"] <= ceilings.ceiling(r["node"], r["window"])
        ceilings.check(r["node"], r["window"], r["steps"], None)  # counted toward its next window


def test_the_data_bound_is_tight_for_nodes_that_used_their_data_up(base_plan, tmp_path):
    """Without a compute budget the device allows far more steps than the stream holds data for:
    the data bound is then what caps a claim, and it sits close to what honest nodes that used
    their data up really trained -- no formality."""
    budget = {**FleetPlan.load(base_plan).config["fleet"]["budget"], "compute_s": None}
    path = variant(base_plan, tmp_path, budget=budget)
    rows, _ = run(path)
    plan = FleetPlan.load(path)
    ceilings = StepCeilings(plan, fleet.received_model(plan))
    exhausted = [r for r in rows if r["window"] == 0 and r["status"] == "data_exhausted"]
    assert exhausted, [r["status"] for r in rows]
    for r in exhausted:
        assert ceilings.by_data(r["node"], 0) < ceilings.by_device(r["node"], 0)
        assert r["steps"] <= ceilings.ceiling(r["node"], 0) <= 2 * r["steps"] + 2, (r, ceilings.ceiling(r["node"], 0))
    node = exhausted[0]["node"]
    before = ceilings.by_data(node, 1)
    ceilings.check(node, 0, 3, None)
    assert ceilings.by_data(node, 1) == max(before - 3, 0)  # steps accepted earlier count against later windows


def test_an_inflated_claim_is_cut_and_said_and_the_shared_model_barely_moves(base_plan, tmp_path, monkeypatch):
    clean_rows, clean = run(variant(base_plan, tmp_path / "clean"))
    rows, capped = run(variant(base_plan, tmp_path / "inflated", faults={1: "inflate"}))
    honest = {(r["node"], r["window"]): r["steps"] for r in clean_rows if r["window"] >= 0}
    mine = [r for r in rows if r["node"] == 1 and r["window"] >= 0 and r["steps"] > 0]
    assert mine and all("claimed" in r["error"] and "weighted as" in r["error"] for r in mine)
    assert all(r["steps"] < 100 * honest[1, r["window"]] for r in mine)
    assert not any("claimed" in r["error"] for r in rows if r["node"] != 1)
    # The same attack with the cap lifted: node 1 owns ~97% of every mean.
    monkeypatch.setattr(StepCeilings, "ceiling", lambda self, partition, window: 10**9)
    _, uncapped = run(variant(base_plan, tmp_path / "uncapped", faults={1: "inflate"}))
    assert distance(capped, clean) < 0.3 * distance(uncapped, clean)


# ---------------------------------------------------------------- robust aggregation

def _record(**values):
    return ArrayRecord({k: Array(np.asarray(v, dtype=np.float32)) for k, v in values.items()})


def test_median_and_trimmed_mean_ignore_an_outlier_and_the_claimed_weight():
    sent = {"w": torch.zeros(2), "head.weight": torch.zeros(3, 1)}
    updates = [([1, 1], [[1], [0], [0]], [4, 0, 0]), ([2, 3], [[3], [0], [0]], [4, 0, 0]),
               ([3, 2], [[0], [5], [0]], [0, 4, 0]), ([100, -100], [[99], [0], [0]], [4, 0, 0])]
    median = RobustAggregate(sent, Aggregate.median, 0.25, head="head")
    trimmed = RobustAggregate(sent, Aggregate.trimmed_mean, 0.25, head="head")
    for i, (w, head, examples) in enumerate(updates):
        for rule in (median, trimmed):
            rule.add(_record(w=w, **{"head.weight": head}), 1e9 if i == 3 else 1.0, np.asarray(examples))
    m, t = median.result(), trimmed.result()
    assert m["w"].tolist() == [2.5, 1.5] and t["w"].tolist() == [2.5, 1.5]  # the middle two of four
    # Output 0 trained by nodes 0, 1, 3: its median over them; output 1 by node 2 alone; output 2 by none: as sent.
    assert m["head.weight"][:, 0].tolist() == [3.0, 5.0, 0.0]
    assert t["head.weight"][:, 0].tolist() == [pytest.approx(103 / 3), 5.0, 0.0]  # 3 nodes: nothing to cut at 0.25


def test_clipping_bounds_the_update_norm_and_keeps_its_direction():
    sent = {"w": torch.zeros(2), "n": torch.tensor(3)}
    far = ArrayRecord({"w": Array(np.asarray([30.0, 40.0], dtype=np.float32)), "n": Array(np.asarray(7))})
    clipped = clip_update(far, sent, 5.0).to_torch_state_dict()
    assert clipped["w"].tolist() == pytest.approx([3.0, 4.0]) and int(clipped["n"]) == 7
    near = ArrayRecord({"w": Array(np.asarray([0.3, 0.4], dtype=np.float32)), "n": Array(np.asarray(7))})
    assert clip_update(near, sent, 5.0) is near


def _updates(nodes, seed=0, poisoned=()):
    """``nodes`` replies near 1 (a float array and an integer counter that differs per node), those
    in ``poisoned`` sign-flipped and scaled by 10, and weights 1, 2, ..."""
    generator = np.random.default_rng(seed)
    out = []
    for i in range(nodes):
        w = 1 + 0.1 * generator.normal(size=3)
        out.append((ArrayRecord({"w": Array((-10 * w if i in poisoned else w).astype(np.float32)),
                                 "n": Array(np.asarray(5 + 1000 * i))}), float(i + 1)))
    return out


def test_multikrum_drops_the_poisoned_updates_and_averages_the_rest_as_flower_does():
    sent = {"w": torch.zeros(3), "n": torch.tensor(5)}
    krum = MultiKrum(sent, 0.25)
    for arrays, weight in _updates(8, poisoned=(2, 5)):
        krum.add(arrays, weight)
    result = krum.result()
    # Two of eight dropped, the poisoned two, although the counter "n" (up to 7,005) differs far more
    # between nodes than "w" does: the selection looks at floating arrays only.
    assert krum.kept == [0, 1, 3, 4, 6, 7]
    # Flower's own MultiKrum, on the same float arrays, keeps the same nodes and averages them alike.
    flower = FlowerMultiKrum(num_malicious_nodes=2, num_nodes_to_select=6, weighted_by_key="examples")
    replies = [Message(RecordDict({"arrays": ArrayRecord({"w": arrays["w"]}),
                                   "metrics": MetricRecord({"examples": weight})}),
                       dst_node_id=0, message_type=MessageType.TRAIN)
               for arrays, weight in _updates(8, poisoned=(2, 5))]
    expected, _ = flower.aggregate_train(0, replies)
    assert torch.allclose(result["w"], expected.to_torch_state_dict()["w"], atol=1e-6)


def test_multikrum_keeps_every_node_when_too_few_answer_and_a_rare_class_row_it_keeps():
    sent = {"w": torch.zeros(3), "n": torch.tensor(5), "head.weight": torch.zeros(3, 1)}
    krum = MultiKrum(sent, 0.25, head="head")
    for i, (arrays, weight) in enumerate(_updates(3)):  # 3 nodes: no n - f - 2 >= 1 neighbourhood
        head = np.asarray([[1.0], [7.0 if i == 2 else 0.0], [0.0]], dtype=np.float32)
        krum.add(ArrayRecord({**{k: arrays[k] for k in arrays.keys()}, "head.weight": Array(head)}), weight,
                 np.asarray([4, 9 if i == 2 else 0, 0]))
    result = krum.result()
    assert krum.kept == [0, 1, 2]
    assert result["head.weight"][:, 0].tolist() == [1.0, 7.0, 0.0]  # output 1: node 2's row alone; output 2: as sent


def test_mean_of_a_clean_fleet_is_still_flowers_weighted_mean():
    sent = {"w": torch.zeros(2)}
    running = RunningFedAvg(sent)
    running.add(_record(w=[1, 2]), 1.0)
    running.add(_record(w=[3, 6]), 3.0)
    assert running.result()["w"].tolist() == [2.5, 5.0]


@pytest.fixture(scope="module")
def poisoned_fleets(base_plan, tmp_path_factory, module_task_identity):
    """The shared model after one window (one aggregation of the same honest updates), clean and
    with node 1 poisoning, under each aggregate (every node the same device: each trains as many
    steps, so the mean gives the poisoned update a quarter of the say)."""
    out = {}
    for rule in ("mean", "median", "trimmed_mean", "multikrum"):
        for faults in ({}, {1: "poison"}):
            where = tmp_path_factory.mktemp(f"{rule}{len(faults)}")
            out[rule, bool(faults)] = run(variant(base_plan, where, faults=faults, windows=1, aggregate=rule))[1]
    return out


def test_a_poisoned_update_drags_the_mean_and_not_the_robust_rules(poisoned_fleets):
    moved = {rule: distance(poisoned_fleets[rule, True], poisoned_fleets[rule, False])
             for rule in ("mean", "median", "trimmed_mean", "multikrum")}
    assert all(moved[rule] < 0.3 * moved["mean"] for rule in ("median", "trimmed_mean", "multikrum")), moved


def test_a_poisoning_node_attacks_in_every_window_and_passes_every_check_on_form(base_plan, tmp_path):
    rows, _ = run(variant(base_plan, tmp_path, faults={1: "poison"}))
    mine = [r for r in rows if r["node"] == 1 and r["window"] >= 0]
    assert len(mine) == 2 and all(r["status"] not in fleet.NO_RESULT for r in mine)
    plan = FleetPlan.load(variant(base_plan, tmp_path / "again", faults={1: "poison"}))
    assert [plan.nodes[1].fault_in(w) for w in range(2)] == ["poison", "poison"]


# ---------------------------------------------------------------- identities and deadlines on real devices

def clear(path):
    """Forget a finished run of the plan (its results and progress), so that it runs again."""
    for name in ("nodes.csv", "fleet_progress.json", "shared_model.json", "timings.csv"):
        (path.parent / name).unlink(missing_ok=True)


@pytest.fixture
def three(tmp_path_factory):
    return write_fleet_plan(compose_config(*TINY, "fleet.nodes=3"), tmp_path_factory.mktemp("bound"), "run", windows=1)[0]


def test_a_registered_node_that_claims_another_partition_gets_no_work(three):
    from swarm.server.identities import REGISTERED_NODES, bind

    def adapted(grid):
        return {m.metadata.dst_node_id for m in grid.sent if m.metadata.message_type == "train.adapt"}

    grid = FakeGrid(4, root=nodes_of(three))  # ids[0], registered with the SuperLink but bound to nothing, claims 0
    grid.claims = {grid.ids[0]: 0, grid.ids[1]: 0, grid.ids[2]: 1, grid.ids[3]: 2}
    fleet.run_fleet(grid, three, join_timeout_s=5)
    assert grid.ids[0] in adapted(grid) and grid.ids[1] not in adapted(grid)  # unbound: the first claim wins
    clear(three)
    for partition, node_id in enumerate(grid.ids[1:]):
        bind(three.parent, node_id, partition, 3)
    assert (three.parent / REGISTERED_NODES).exists()
    grid = FakeGrid(4, root=nodes_of(three))
    grid.claims = {grid.ids[0]: 0, grid.ids[1]: 0, grid.ids[2]: 1, grid.ids[3]: 2}
    rows = fleet.run_fleet(grid, three, join_timeout_s=5)
    assert adapted(grid) == set(grid.ids[1:])
    assert all(r["status"] not in fleet.NO_RESULT for r in rows)


def test_binding_refuses_a_taken_partition_and_a_damaged_file(three):
    from swarm.nodes.errors import SwarmError
    from swarm.server.identities import REGISTERED_NODES, bind, read_bindings

    bind(three.parent, 7, 0, 3)
    bind(three.parent, 7, 0, 3)  # the same binding again is no change
    with pytest.raises(SwarmError, match="partition 0 is already bound to node 7"):
        bind(three.parent, 8, 0, 3)
    with pytest.raises(SwarmError, match="node 7 is already bound to partition 0"):
        bind(three.parent, 7, 1, 3)
    with pytest.raises(SwarmError, match=r"partition 3 is not in 0..2"):
        bind(three.parent, 9, 3, 3)
    assert read_bindings(three.parent) == {7: 0}
    (three.parent / REGISTERED_NODES).write_text('{"format": 1, "nodes": [{"node_id": 1, "partition": 0}, '
                                                  '{"node_id": 2, "partition": 0}]}')
    with pytest.raises(SwarmError, match="binds a node or a partition twice"):
        fleet.run_fleet(FakeGrid(3, root=nodes_of(three)), three, join_timeout_s=5)


def test_the_register_command_binds_a_node_id_and_refuses_bad_input(three, tmp_path, capsys):
    from swarm import register
    from swarm.server.identities import read_bindings

    key = tmp_path / "supernode_key.pub"
    key.write_text("ecdsa-sha2-nistp384 AAAA device0\n")
    assert register.main([str(three.parent), "2", str(key), "--node-id", "41"]) == 0
    assert read_bindings(three.parent) == {41: 2} and "node 41 bound to partition 2" in capsys.readouterr().out
    for args, message in [([str(three.parent), "5", str(key), "--node-id", "42"], "partition 5 is not in 0..2"),
                          ([str(three.parent), "2", str(key), "--node-id", "42"], "partition 2 is already bound to node 41"),
                          ([str(tmp_path), "0", str(key), "--node-id", "42"], "no fleet plan at"),
                          ([str(three.parent), "0", str(tmp_path / "nokey.pub")], "no public key at")]:
        assert register.main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_on_real_devices_messages_live_as_long_as_the_deadline(three):
    grid = FakeGrid(3, root=nodes_of(three))
    fleet.run_fleet(grid, three, join_timeout_s=5, window_timeout_s=42)
    ttls = {m.metadata.message_type: m.metadata.ttl for m in grid.sent}
    assert ttls == {"query.partition": 5, "train.adapt": 42}
    clear(three)
    grid = FakeGrid(3, root=nodes_of(three))
    fleet.run_fleet(grid, three, join_timeout_s=5, window_timeout_s=42, simulated=True)
    assert all(m.metadata.ttl > 3600 for m in grid.sent)  # Flower's default: queued messages must not expire
