"""Partial participation (``fleet.participation``, issue 27): in each window the server draws, from
the seed, which of the available nodes take part; the others neither train nor report, and their
rows say why."""

from __future__ import annotations

from collections import Counter

import pytest

from swarm.nodes.fleet_plan import FleetPlan
from swarm.nodes.protocol import Status
from swarm.server import fleet
from swarm.server.participation import draw_participants
from tests.conftest import FLEET_TINY as TINY, FakeGrid, nodes_of, write_fleet_plan

ALWAYS_ON = ["fleet.profiles=[raspberry_pi_4,jetson_nano]"]  # both available all the time


@pytest.fixture(autouse=True)
def _engine_identity(task_identity):
    """Messages need the run and node ids an engine would set."""


@pytest.fixture
def plan_file(make_cfg, tmp_path):
    def make(nodes: int, *overrides: str, windows: int = 2, name: str = "run"):
        cfg = make_cfg(*TINY, f"fleet.nodes={nodes}", *overrides)
        return write_fleet_plan(cfg, tmp_path, name, windows=windows)[0]
    return make


def _takers(rows: list[dict], window: int) -> list[int]:
    return sorted(r["node"] for r in rows if r["window"] == window and r["status"] != Status.not_selected)


def test_a_quarter_of_16_nodes_take_part_in_each_window_drawn_from_the_seed(plan_file):
    path = plan_file(16, *ALWAYS_ON, "fleet.participation=0.25", windows=3)
    grid = FakeGrid(16, root=nodes_of(path))
    rows = fleet.run_fleet(grid, path, strategy="fedavg", join_timeout_s=5)
    takers = [_takers(rows, w) for w in range(3)]
    assert [len(t) for t in takers] == [4, 4, 4] and len({tuple(t) for t in takers}) > 1  # drawn afresh
    trained = [r for r in rows if r["window"] >= 0 and r["status"] != Status.not_selected]
    assert all(r["steps"] > 0 for r in trained), trained  # each one drawn trains
    left_out = [r for r in rows if r["status"] == Status.not_selected]
    assert len(left_out) == 3 * 12 and all("not drawn (fleet.participation=0.25: 4 of the 16" in r["error"]
                                            for r in left_out)
    # Only the drawn nodes were sent a window's work.
    sent = Counter(m.content["config"]["window"] for m in grid.sent if m.metadata.message_type == "train.adapt")
    assert sent == {0: 4, 1: 4, 2: 4}
    # The same seed draws the same nodes; another seed others.
    plan = FleetPlan.load(path)
    again = [sorted(p for p, why in draw_participants(plan, w, range(16)).items() if not why) for w in range(3)]
    assert again == takers
    plan.seed += 1
    assert [sorted(p for p, why in draw_participants(plan, w, range(16)).items() if not why) for w in range(3)] != takers


def test_a_count_and_the_availability_cycle_bound_the_draw(plan_file):
    """A whole number is a count of nodes; nodes offline for the whole window are never drawn."""
    path = plan_file(6, "fleet.profiles=[smartphone]", "fleet.participation=2", windows=1)
    plan = FleetPlan.load(path)
    from swarm.server.participation import available_in

    online = available_in(plan, 0, range(6))
    drawn = draw_participants(plan, 0, range(6))
    takers = [p for p, why in drawn.items() if not why]
    assert len(takers) == min(2, len(online)) and set(takers) <= set(online)
    assert all("offline all window" in drawn[p] for p in range(6) if p not in online)


def test_every_node_takes_part_by_default(plan_file):
    path = plan_file(4, *ALWAYS_ON, windows=1)
    plan = FleetPlan.load(path)
    assert plan.fleet.participation == 1.0 and draw_participants(plan, 0, range(4)) == {p: "" for p in range(4)}


def test_the_draw_follows_an_availability_trace(plan_file, tmp_path):
    """Under a trace only the nodes it puts online in a window are drawn from (the same intervals
    the nodes' SimPy model replays)."""
    trace = tmp_path / "trace.csv"
    trace.write_text("who,start_s,end_s\n0,0,50\n1,150,200\n2,0,200\n3,120,130\nraspberry_pi_4,0,1\njetson_nano,0,1\n")
    path = plan_file(4, *ALWAYS_ON, f"fleet.availability.trace={trace}", "fleet.participation=1")
    plan = FleetPlan.load(path)  # 100 s windows
    for window, online in ((0, {0, 2}), (1, {1, 2, 3})):
        drawn = draw_participants(plan, window, range(4))
        assert len([p for p, why in drawn.items() if not why]) == 1
        assert {p for p, why in drawn.items() if "offline all window" not in why} == online
        assert f"1 of the {len(online)} nodes available" in next(why for why in drawn.values() if why)
