"""The SimPy device model: steps granted, energy charged, availability, memory check, profiles."""

from __future__ import annotations

import pytest
import torch

from swarm.nodes.device import (Budget, DeviceProfile, StreamCredit, Transfers, available_profiles, available_seconds,
                                link_note,                                 load_profile, memory_check, memory_need, simulate_window, step_flops)
from swarm.nodes.errors import SwarmError
from swarm.nodes.protocol import Status
from swarm.nodes.models import build_model
from swarm.nodes.node import activation_bytes_per_sample

# 1 GFLOP/s effective, 5 W active, 1 W idle: a step of 2 GFLOP takes 2 s and 10 J.
BOARD = DeviceProfile("board", peak_flops=2e9, effective_flops=1e9, active_power_w=5.0, idle_power_w=1.0, ram_mb=512)
STEP = 2e9


def test_steps_fill_the_window_and_energy_is_charged():
    report = simulate_window(BOARD, Budget(window_s=60), STEP, samples_before=1)
    assert report.steps == 30 and report.status == "ok"
    assert report.busy_s == pytest.approx(60) and report.energy_j == pytest.approx(300)
    assert report.flops == pytest.approx(60e9) and report.idle_energy_j == pytest.approx(0)


@pytest.mark.parametrize("budget, steps", [
    (Budget(window_s=60, energy_j=95), 9),      # 9 x 10 J fit, a 10th would need 100 J
    (Budget(window_s=60, compute_s=7), 3),      # 3 x 2 s
    (Budget(window_s=60, flops=5e9), 2),        # 2 x 2 GFLOP
])
def test_budgets_stop_training(budget, steps):
    report = simulate_window(BOARD, budget, STEP, samples_before=1)
    assert report.steps == steps and report.status == "budget_exhausted"
    assert report.idle_energy_j == pytest.approx((60 - 2 * steps) * 1.0)


def test_a_duty_cycle_is_a_share_of_the_window_on_every_device():
    assert Budget(window_s=60, duty_cycle=0.25).seconds == 15
    assert Budget(window_s=60, duty_cycle=0.25, compute_s=6).seconds == 6  # the tighter one
    report = simulate_window(BOARD, Budget(window_s=60, duty_cycle=0.25), STEP, samples_before=1)
    assert report.steps == 7 and report.busy_s == pytest.approx(14) and report.status == "budget_exhausted"
    fast = DeviceProfile("fast", 2e10, 1e10, 5.0, 1.0, 512)  # ten times the speed: ten times the steps
    assert simulate_window(fast, Budget(window_s=60, duty_cycle=0.25), STEP, samples_before=1).steps == 75
    with pytest.raises(SwarmError, match="duty_cycle is a share"):
        Budget(window_s=60, duty_cycle=1.5)


def test_stream_credit_bounds_training_by_the_data():
    # 4 samples before the window, each may be trained on 3 times; a step uses 4 sample visits.
    credit = StreamCredit(passes=3, per_step=4, left=4 * 3)
    report = simulate_window(BOARD, Budget(window_s=60), STEP, credit=credit)
    assert report.steps == 3 and report.status == "data_exhausted"
    # Arrivals add credit: two samples at 20 s give 6 visits, one more step (and 2 visits left over).
    report = simulate_window(BOARD, Budget(window_s=60), STEP, credit=credit, arrivals=[20.0, 20.0])
    assert report.steps == 4 and report.step_starts == [0.0, 2.0, 4.0, 20.0]
    # Visits used in earlier windows count: nothing left, nothing arrives, no step.
    assert simulate_window(BOARD, Budget(window_s=60), STEP, credit=StreamCredit(3, 4, 0.0)).steps == 0


def test_a_budget_too_small_for_one_step_reports_zero_steps():
    assert simulate_window(BOARD, Budget(window_s=60, energy_j=5), STEP, samples_before=1).steps == 0
    report = simulate_window(BOARD, Budget(window_s=1), STEP, samples_before=1)  # a step outlasts the window
    assert report.steps == 0 and report.status == "budget_exhausted"


def test_training_waits_for_data():
    report = simulate_window(BOARD, Budget(window_s=60), STEP, arrivals=[30.5, 40.0, 99.0])
    assert report.samples_arrived == 2  # 99 s is after the window
    assert report.steps == 14  # from 30.5 s: 14 whole steps of 2 s end by 58.5 s
    assert simulate_window(BOARD, Budget(window_s=60), STEP).steps == 0  # no data at all


def test_availability_cycles_and_unavailable_nodes():
    part_time = DeviceProfile("pt", 2e9, 1e9, 5.0, 1.0, 512, availability=0.5, availability_cycle_s=20)
    report = simulate_window(part_time, Budget(window_s=60), STEP, samples_before=1)
    assert report.available_s == pytest.approx(30)
    assert report.steps == 15  # 5 steps in each of [0,10), [20,30), [40,50)
    shifted = simulate_window(part_time, Budget(window_s=60), STEP, samples_before=1, phase_s=10)
    assert shifted.steps == 15 and shifted.available_s == pytest.approx(30)
    never = DeviceProfile("off", 2e9, 1e9, 5.0, 1.0, 512, availability=0.0, availability_cycle_s=20)
    report = simulate_window(never, Budget(window_s=60), STEP, samples_before=1)
    assert report.steps == 0 and report.status == "unavailable"
    assert available_seconds(part_time, 5, 45) == pytest.approx(20)


def test_windows_continue_the_clock():
    first = simulate_window(BOARD, Budget(window_s=10), STEP, start_s=100, arrivals=[104.0])
    assert first.steps == 3  # 104-106, 106-108, 108-110


def test_step_cost_is_three_forward_passes_per_sample():
    assert step_flops(1e6, 32) == pytest.approx(96e6)


def test_memory_check():
    model = build_model({"name": "resnet_small", "stem": "auto"}, 10, 3, 32)
    activations = activation_bytes_per_sample(model, torch.randn(2, 3, 32, 32))
    assert 100_000 < activations < 10_000_000
    params = sum(p.numel() for p in model.parameters())
    need = memory_need(params, activations, batch_size=32, replay_samples=1000, sample_bytes=3 * 32 * 32)
    assert need.weights_mb == pytest.approx(params * 4 / 2**20)
    assert need.optimizer_mb == pytest.approx(2 * need.weights_mb)
    assert need.total_mb == pytest.approx(need.weights_mb * 4 + activations * 32 / 2**20 + 3072000 / 2**20)
    assert memory_check(load_profile("raspberry_pi_4"), need)
    assert not memory_check(load_profile("microcontroller"), need)


def test_shipped_profiles_have_sources():
    names = available_profiles()
    assert {"microcontroller", "raspberry_pi_4", "jetson_nano", "smartphone"} <= set(names)
    for name in names:
        profile = load_profile(name)
        for key in ("effective_flops", "active_power_w", "ram_mb"):
            assert key in profile.sources, (name, key)


def test_bad_profiles_and_budgets():
    with pytest.raises(SwarmError, match="unknown device profile 'toaster'; profiles: jetson_nano"):
        load_profile("toaster")
    with pytest.raises(SwarmError, match="effective_flops"):
        DeviceProfile("x", 1e9, 2e9, 1.0, 0.1, 10)
    with pytest.raises(SwarmError, match="energy_j"):
        Budget(window_s=10, energy_j=-1)


def test_arrivals_are_counted_even_after_the_budget_ran_out():
    report = simulate_window(BOARD, Budget(window_s=60, energy_j=10), STEP, arrivals=[1.0, 20.0, 50.0])
    assert report.steps == 1 and report.samples_arrived == 3


def test_the_budget_kinds_are_defined_once():
    """Every budget kind is a field of the schema's fleet.budget, of Budget, and has its unit and
    axis label for the reports: one list (nodes.device.BUDGET_KINDS), checked against the others."""
    import dataclasses

    from swarm.nodes.device import BUDGET_KINDS, Budget, budget_of
    from swarm.nodes.settings import BudgetConfig, FleetConfig

    assert {f.name for f in dataclasses.fields(BudgetConfig)} == set(BUDGET_KINDS)
    assert {f.name for f in dataclasses.fields(Budget)} == set(BUDGET_KINDS) | {"window_s"}
    budget = budget_of(FleetConfig(budget=BudgetConfig(energy_j=5.0, duty_cycle=None, compute_s=None, flops=None)),
                       window_s=60)
    assert budget.energy_j == 5.0 and budget.duty_cycle is None and budget.compute_s is None


# --------------------------------------------------------------------------- the link
LINKED = DeviceProfile("linked", peak_flops=2e9, effective_flops=1e9, active_power_w=5.0, idle_power_w=1.0, ram_mb=512,
                       downlink_bps=8e6, uplink_bps=4e6, radio_rx_w=2.0, radio_tx_w=3.0)  # 1 MB/s down, 0.5 MB/s up


def test_the_model_arrives_first_and_the_update_leaves_last():
    # 2 MB down = 2 s at 2 W, 1 MB up = 2 s at 3 W; 2 s steps at 5 W in between.
    report = simulate_window(LINKED, Budget(window_s=20), STEP, samples_before=1,
                             transfers=Transfers(down=2_000_000, up=1_000_000))
    assert report.step_starts[0] == pytest.approx(2.0)  # training waits for the model
    assert report.steps == 8  # 20 s - 2 s receiving - 2 s sending
    assert report.comm_s == pytest.approx(4.0) and report.comm_j == pytest.approx(2 * 2.0 + 2 * 3.0)
    assert report.energy_j == pytest.approx(8 * 10.0 + 10.0)  # energy_j is the total, radio included
    assert report.bytes_down == 2_000_000 and report.bytes_up == 1_000_000
    assert report.idle_energy_j == pytest.approx(0.0)
    # Without a link the same window trains 20 steps and moves nothing it pays for.
    free = simulate_window(BOARD, Budget(window_s=20), STEP, samples_before=1,
                           transfers=Transfers(down=2_000_000, up=1_000_000))
    assert free.steps == 10 and free.comm_s == 0 and free.comm_j == 0


def test_a_model_that_cannot_arrive_in_the_window_is_not_received():
    report = simulate_window(LINKED, Budget(window_s=10), STEP, samples_before=1, transfers=Transfers(down=12_000_000))
    assert report.status == Status.not_received and report.steps == 0 and report.bytes_down == 0
    assert report.comm_s == pytest.approx(10.0) and report.energy_j == pytest.approx(20.0)  # it tried all window
    assert "did not arrive" in link_note(LINKED, report, Transfers(down=12_000_000))
    pruned = simulate_window(LINKED, Budget(window_s=10), STEP, samples_before=1, transfers=Transfers(down=3_000_000))
    assert pruned.status == Status.ok and pruned.steps == 3  # 3 s receiving, 3 steps of 2 s


def test_the_energy_budget_pays_the_radio_and_keeps_the_update_s_share():
    # 40 J: 4 J receiving, then steps of 10 J while 6 J stay for the update: 3 steps (4 + 30 + 6 = 40).
    report = simulate_window(LINKED, Budget(window_s=60, energy_j=40), STEP, samples_before=1,
                             transfers=Transfers(down=2_000_000, up=1_000_000))
    assert report.steps == 3 and report.energy_j == pytest.approx(40.0) and report.status == Status.budget_exhausted


def test_no_step_no_update_and_an_update_cut_by_the_cycle_is_late():
    idle = simulate_window(LINKED, Budget(window_s=20), STEP, transfers=Transfers(down=1_000_000, up=1_000_000))
    assert idle.steps == 0 and idle.bytes_up == 0 and idle.comm_s == pytest.approx(1.0)  # no data: nothing to send
    # Available 12 s of every 100: the model (1 s) arrives, steps run 1-11 s (a step starts only if
    # it ends while the device is available), the update gets 1 of its 2 s before the device goes
    # away at 12 s, until after the window's end at 30 s.
    part_time = DeviceProfile("part", 2e9, 1e9, 5.0, 1.0, 512, availability=0.12, availability_cycle_s=100,
                              downlink_bps=8e6, uplink_bps=4e6, radio_rx_w=2.0, radio_tx_w=3.0)
    report = simulate_window(part_time, Budget(window_s=30), STEP, samples_before=1,
                             transfers=Transfers(down=1_000_000, up=1_000_000))
    assert report.steps == 5 and report.status == Status.late and report.bytes_up == 0
    assert "did not leave" in link_note(part_time, report, Transfers(down=1_000_000, up=1_000_000))


def test_a_link_is_all_or_nothing():
    with pytest.raises(SwarmError, match="a link needs all of"):
        DeviceProfile("x", 2e9, 1e9, 1.0, 0.1, 10, downlink_bps=1e6)
    with pytest.raises(SwarmError, match="link rates must be positive"):
        DeviceProfile("x", 2e9, 1e9, 1.0, 0.1, 10, downlink_bps=0, uplink_bps=1e6, radio_rx_w=1, radio_tx_w=1)
    for name in available_profiles():  # every shipped profile has its link, each figure sourced
        profile = load_profile(name)
        assert profile.has_link, name
        for key in ("downlink_bps", "uplink_bps", "radio_rx_w", "radio_tx_w"):
            assert key in profile.sources, (name, key)


# --------------------------------------------------------------------------- availability traces
def test_a_traced_node_is_never_granted_a_step_outside_its_online_time():
    online = [[5.0, 11.0], [20.0, 23.0], [40.0, 47.0]]
    report = simulate_window(BOARD, Budget(window_s=60), STEP, samples_before=1, online=online)
    assert report.step_starts == [5.0, 7.0, 9.0, 20.0, 40.0, 42.0, 44.0]  # 2 s steps that end inside
    assert all(any(s <= t and t + 2.0 <= e for s, e in online) for t in report.step_starts)
    assert report.available_s == pytest.approx(16.0)
    # The trace replaces the profile's cycle: an always-available profile is offline outside it.
    assert simulate_window(BOARD, Budget(window_s=60), STEP, samples_before=1, online=[[100.0, 200.0]]).status == \
        Status.unavailable
    # A transfer waits for the device too: the model arrives in 20-21 s, training starts after it.
    linked = simulate_window(LINKED, Budget(window_s=60), STEP, samples_before=1, transfers=Transfers(down=1_000_000),
                             online=[[20.0, 30.0]])
    assert linked.step_starts[0] == pytest.approx(21.0) and linked.steps == 4


def test_a_malformed_trace_is_one_line(tmp_path):
    from swarm.nodes.availability import node_intervals, read_trace

    cases = {
        "start,end\n0,1\n": "line 1: the header must be who,start_s,end_s",
        "who,start_s,end_s\n3,0\n": "line 2: 2 fields, need 3",
        "who,start_s,end_s\n3,zero,10\n": "line 2: start_s and end_s must be numbers",
        "who,start_s,end_s\n3,0,10\n3,20,10\n": "line 3: need 0 <= start_s < end_s",
        "who,start_s,end_s\n3,-5,10\n": "need 0 <= start_s < end_s",
        "who,start_s,end_s\n3,nan,10\n": "finite",
        "who,start_s,end_s\n3,0,10\n3,5,12\n": "the intervals of '3' overlap",
        "who,start_s,end_s\n": "no intervals",
        "who,start_s,end_s\n,0,10\n": "'who' is empty",
    }
    for text, message in cases.items():
        path = tmp_path / "trace.csv"
        path.write_text(text)
        with pytest.raises(SwarmError, match=message) as error:
            read_trace(path)
        assert "\n" not in str(error.value) and str(path) in str(error.value)
    with pytest.raises(SwarmError, match="no such file"):
        read_trace(tmp_path / "missing.csv")
    path.write_text("who,start_s,end_s\n2,30,40\n2,0,10\nsmartphone,0,5\n")
    trace = read_trace(path)
    assert node_intervals(trace, 2, "smartphone") == [[0.0, 10.0], [30.0, 40.0]]  # its own rows, sorted
    assert node_intervals(trace, 7, "smartphone") == [[0.0, 5.0]]  # its class's
    with pytest.raises(SwarmError, match="no rows for node 8 nor for its device class 'jetson_nano'"):
        node_intervals(trace, 8, "jetson_nano")
