"""The device model: how much on-device training a node's hardware and budget allow in one window.

A SimPy simulation of one adaptation window on one node. Three processes share the clock:

* **availability** -- the device alternates between available and unavailable periods
  (``availability`` of every ``availability_cycle_s``, with a per-node phase; or the intervals a
  trace gives the node: :mod:`swarm.nodes.availability`);
* **arrivals** -- local samples stream in at the times the node's drifting stream gives;
* **node** -- first receives the model over the device's link (when the server sends one that
  window: ``bytes_down`` at ``downlink_bps``, drawing ``radio_rx_w``); then, while available and
  with data to learn from, runs training steps one after another; last sends its update
  (``bytes_up`` at ``uplink_bps``, drawing ``radio_tx_w``). A step costs ``3 × forward FLOPs ×
  batch`` (FedScale; Kaplan et al.) when every weight trains, less under a partial update
  (``fleet.update``, :mod:`swarm.nodes.trainable`), and takes ``step FLOPs / effective FLOP/s`` seconds at
  ``active_power_w``; it starts only if the window's remaining budget (energy in J, radio
  included; compute seconds; FLOPs) covers it with the update's transfer still to come, and it
  ends while the device is still available and early enough for that transfer to finish before
  the window does.

Transfers run only while the device is available (a transfer cut by the cycle resumes when the
device is back). A model that does not arrive inside the window leaves the node ``not_received``
(it trains nothing); an update that cannot be sent before the window ends leaves it ``late``.

The result says how many steps were granted; the node's real PyTorch training then does exactly
that many. Before any of this, :func:`memory_check` decides whether training fits in RAM at all.
"""

from __future__ import annotations

import math
from importlib import resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import simpy
import yaml

from swarm.nodes.availability import Schedule, schedule
from swarm.nodes.errors import SwarmError
from swarm.nodes.protocol import Status
from swarm.nodes.settings import FleetConfig

# Profiles ship in the installed config tree (Hydra group `device`).
PROFILE_DIR = Path(str(resources.files("swarm.scenarios") / "device"))


@dataclass(frozen=True)
class DeviceProfile:
    """A class of device. Every number's source is recorded in its YAML file."""

    name: str
    peak_flops: float  # FLOP/s the hardware can do in theory
    effective_flops: float  # FLOP/s PyTorch-style training actually reaches on it
    active_power_w: float
    idle_power_w: float
    ram_mb: float  # memory available to the training process
    availability: float = 1.0  # share of each cycle the device can train
    availability_cycle_s: float = 3600.0
    # The device's link: application throughput (bit/s) each way, and the device's power while
    # receiving and while sending. None: the profile models no link (transfers cost nothing).
    downlink_bps: float | None = None
    uplink_bps: float | None = None
    radio_rx_w: float | None = None
    radio_tx_w: float | None = None
    # Flash (MB) that holds the weights training leaves frozen, as microcontroller training engines
    # keep them (only the trained ones are copied to RAM); None: every weight is in RAM.
    flash_mb: float | None = None
    # The batch a step trains on this device, where the fleet's (fleet.batch_size) cannot fit its
    # RAM; None: the fleet's.
    batch_size: int | None = None
    description: str = ""
    sources: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.effective_flops <= self.peak_flops:
            raise SwarmError(f"device {self.name}: need 0 < effective_flops <= peak_flops")
        if self.active_power_w <= 0 or self.idle_power_w < 0 or self.ram_mb <= 0:
            raise SwarmError(f"device {self.name}: power and RAM must be positive")
        if not 0 <= self.availability <= 1 or self.availability_cycle_s <= 0:
            raise SwarmError(f"device {self.name}: availability must be in [0, 1] with a positive cycle")
        link = [self.downlink_bps, self.uplink_bps, self.radio_rx_w, self.radio_tx_w]
        if any(v is None for v in link) and any(v is not None for v in link):
            raise SwarmError(f"device {self.name}: a link needs all of downlink_bps, uplink_bps, radio_rx_w "
                             "and radio_tx_w (or none of them)")
        if self.has_link and (min(self.downlink_bps, self.uplink_bps) <= 0 or min(self.radio_rx_w, self.radio_tx_w) < 0):
            raise SwarmError(f"device {self.name}: link rates must be positive and radio powers >= 0")
        if self.flash_mb is not None and self.flash_mb <= 0:
            raise SwarmError(f"device {self.name}: flash_mb must be positive (or absent: weights in RAM)")
        if self.batch_size is not None and (self.batch_size != int(self.batch_size) or self.batch_size < 1):
            raise SwarmError(f"device {self.name}: batch_size must be a whole number >= 1, not {self.batch_size}")

    @property
    def has_link(self) -> bool:
        """Whether the profile models its link (else transfers take no time and no energy)."""
        return self.downlink_bps is not None

    def receive_s(self, nbytes: int) -> float:
        return 8.0 * nbytes / self.downlink_bps if self.has_link and nbytes else 0.0

    def send_s(self, nbytes: int) -> float:
        return 8.0 * nbytes / self.uplink_bps if self.has_link and nbytes else 0.0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> DeviceProfile:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        kept = ("name", "description", "sources", "batch_size")  # not converted to float
        try:
            profile = cls(**{k: (float(v) if k not in kept and v is not None else v) for k, v in fields.items()})
        except (TypeError, ValueError) as error:
            raise SwarmError(f"device profile {data.get('name', '?')}: {error}") from None
        return profile

    def batch_size_for(self, fleet_batch_size: int) -> int:
        """The batch a training step uses on this device: its own, else the fleet's."""
        return int(self.batch_size) if self.batch_size is not None else int(fleet_batch_size)


# Profile fields that describe a device without entering the simulation: its description, the
# sources of its figures, and the peak that only bounds effective_flops. A fleet's cache key and the
# grouping of its results ignore them, so that a corrected citation does not split results that
# simulate the same device.
NOT_SIMULATED = ("description", "sources", "peak_flops")


def as_simulated(fleet: Mapping[str, Any]) -> dict[str, Any]:
    """``fleet`` settings with each device profile (``fleet.devices``) reduced to what the simulation uses."""
    out = dict(fleet)
    if out.get("devices"):
        out["devices"] = {name: {k: v for k, v in profile.items() if k not in NOT_SIMULATED}
                          for name, profile in out["devices"].items()}
    return out


def profile_of(fleet: FleetConfig, name: str) -> DeviceProfile:
    """A profile from a plan's fleet settings (``fleet.devices``: the contents the entry point
    loaded from the ``device`` config group), so a node never looks a profile up by itself."""
    devices = fleet.devices
    if name not in devices:
        raise SwarmError(f"the fleet plan has no device profile '{name}' in fleet.devices "
                         f"(it has {', '.join(sorted(devices)) or 'none'}); draw the plan again")
    return DeviceProfile.from_mapping(devices[name])


def available_profiles(directory: Path = PROFILE_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


def load_profile(name: str, directory: Path = PROFILE_DIR) -> DeviceProfile:
    """A shipped profile by name (for scripts and tests; runs take theirs from the config group
    through :func:`swarm.config.device_profiles`); an unknown name lists the shipped ones."""
    path = directory / f"{name}.yaml"
    if not path.exists():
        raise SwarmError(f"unknown device profile '{name}'; profiles: {', '.join(available_profiles(directory))}")
    return DeviceProfile.from_mapping(yaml.safe_load(path.read_text()))


# The kinds of limit a window's training may have, defined once: each is a field of Budget and of
# ``fleet.budget``, with the unit a report writes after a value and the label of a budget axis.
BUDGET_KINDS: dict[str, tuple[str, str]] = {
    "energy_j": ("J/window", "training energy per window (J)"),
    "compute_s": ("s/window", "compute time per window (s)"),
    "flops": ("FLOP/window", "training FLOPs per window"),
    "duty_cycle": ("duty cycle", "training duty cycle (share of each window)"),
}


@dataclass(frozen=True)
class Budget:
    """What one window may spend on training. None = unlimited; the window length always applies.

    ``duty_cycle`` is the share of the window a device may spend training (a background job that
    leaves the device to its main work most of the time); it caps compute seconds like
    ``compute_s``, so a fast device does more steps in it than a slow one, at its own power."""

    window_s: float
    energy_j: float | None = None
    compute_s: float | None = None
    flops: float | None = None
    duty_cycle: float | None = None

    def __post_init__(self) -> None:
        if self.window_s <= 0:
            raise SwarmError("the window length must be positive")
        for name in BUDGET_KINDS:
            value = getattr(self, name)
            if value is not None and value < 0:
                raise SwarmError(f"budget {name} must be >= 0, not {value}")
        if self.duty_cycle is not None and self.duty_cycle > 1:
            raise SwarmError(f"budget duty_cycle is a share of the window, in [0, 1], not {self.duty_cycle}")

    @property
    def seconds(self) -> float | None:
        """Compute seconds a window allows (the tighter of ``compute_s`` and the duty cycle)."""
        limits = [v for v in (self.compute_s, None if self.duty_cycle is None else self.duty_cycle * self.window_s)
                  if v is not None]
        return min(limits) if limits else None


@dataclass(frozen=True)
class Transfers:
    """What a window moves over the link: the model received at its start (0: none was sent this
    window) and the update sent at its end (0: the node sends no weights back), in bytes as
    serialized in the messages."""

    down: int = 0
    up: int = 0


@dataclass
class WindowReport:
    """What the simulated window granted and charged."""

    steps: int = 0
    busy_s: float = 0.0  # seconds computing (training steps)
    energy_j: float = 0.0  # all energy spent on the window's work: training (active power) + the radio
    comm_s: float = 0.0  # seconds receiving and sending
    comm_j: float = 0.0  # the radio's share of energy_j
    bytes_down: int = 0  # received (only when the whole model arrived)
    bytes_up: int = 0  # sent (only when the whole update left inside the window)
    idle_energy_j: float = 0.0  # idle power while neither training nor transferring
    flops: float = 0.0
    available_s: float = 0.0
    samples_arrived: int = 0
    status: str = Status.ok
    step_starts: list[float] = field(default_factory=list)  # when each granted step began


def step_flops(forward_flops_per_sample: float, batch_size: int, backward_share: float = 2.0) -> float:
    """One training step: the forward pass and the backward pass, ``backward_share`` x the forward
    (2 when every weight trains, so a step is ≈ 3 x the forward; less when only some do:
    :mod:`swarm.nodes.trainable`), for every sample of the batch."""
    return (1.0 + backward_share) * forward_flops_per_sample * batch_size


@dataclass(frozen=True)
class StreamCredit:
    """How much training the local data allows: every sample that arrives may be trained on
    ``passes`` times (an epoch budget over the device's own data), a step uses ``per_step`` sample
    visits, and ``left`` visits remain from earlier windows. ``passes=None``: unlimited, a step only
    needs one sample to exist."""

    passes: float | None
    per_step: int
    left: float

    @classmethod
    def unlimited(cls, samples_before: int = 0) -> StreamCredit:
        return cls(None, 1, float(samples_before))


def simulate_window(profile: DeviceProfile, budget: Budget, flops_per_step: float, *, start_s: float = 0.0,
                    arrivals: Sequence[float] = (), samples_before: int = 0, phase_s: float = 0.0,
                    credit: StreamCredit | None = None, transfers: Transfers = Transfers(),
                    train: bool = True, online: Sequence[Sequence[float]] | None = None,
                    setup_flops: float = 0.0) -> WindowReport:
    """Run one window [start_s, start_s + window_s) of the device model and return what it granted.

    ``arrivals`` are the simulated times at which new local samples arrive. With ``credit`` (see
    :class:`StreamCredit`) a step spends sample visits and the device waits for new samples when
    it has used its data up; without, a step needs at least one sample (arrived now or
    ``samples_before`` the window). ``phase_s`` shifts the node's availability cycle so that a
    fleet is not in lockstep; ``online``: the node's intervals from an availability trace, which
    replace the cycle. ``transfers``: the bytes received first and sent last (the update
    only if the node trained: a node that took no step has nothing to send). ``train=False``: the
    node only receives (its training does not fit in memory). ``setup_flops``: work done once,
    before the first step and charged with it (a node choosing what to train: :mod:`swarm.nodes.selection`).
    """
    if flops_per_step <= 0:
        raise SwarmError("a training step must cost a positive number of FLOPs")
    window = _Window(profile, budget, flops_per_step, start_s,
                     schedule(profile.availability, profile.availability_cycle_s, phase_s, online),
                     credit or StreamCredit.unlimited(samples_before), transfers, train, setup_flops)
    window.run([a for a in arrivals if start_s <= a < window.end])
    return window.report


class _Window:
    """One window of one device as SimPy processes: its availability cycle, its samples arriving,
    and the node, which receives the model, takes a step whenever the device is available, holds
    enough data and can afford the step within the budget, and sends its update."""

    def __init__(self, profile: DeviceProfile, budget: Budget, flops_per_step: float, start_s: float,
                 availability: Schedule, credit: StreamCredit, transfers: Transfers, train: bool,
                 setup_flops: float = 0.0) -> None:
        self.profile, self.budget, self.flops_per_step = profile, budget, flops_per_step
        self.setup_flops = setup_flops  # charged with the first step
        self.transfers, self.train = transfers, train
        self.send_s = profile.send_s(transfers.up)
        self.send_j = self.send_s * (profile.radio_tx_w or 0.0)
        self.start_s, self.schedule, self.credit = start_s, availability, credit
        self.consumes = credit.passes is not None
        self.need = max(credit.per_step, 1) if self.consumes else 1
        self.env = simpy.Environment(initial_time=start_s)
        self.end = start_s + budget.window_s
        self.step_s = flops_per_step / profile.effective_flops
        self.report = WindowReport()
        self.data = simpy.Container(self.env, init=max(credit.left, 0.0), capacity=math.inf)
        self.available = availability.state_at(start_s)[0]
        self.became_available = self.env.event()

    def run(self, arrivals: list[float]) -> None:
        self.env.process(self.availability())
        self.env.process(self.arrivals(arrivals))
        # Run until the node is done: its training stops when no further step can finish inside the
        # window with the update's transfer after it (a transfer ending exactly at the window's end counts).
        self.env.run(until=self.env.process(self.node()))
        report, profile, budget = self.report, self.profile, self.budget
        report.available_s = self.schedule.seconds(self.start_s, self.end)
        report.samples_arrived = len(arrivals)
        if report.steps == 0 and report.status == Status.ok and self.train:
            if report.available_s == 0:
                report.status = Status.unavailable
            elif self.next_step()[1] > budget.window_s:
                report.status = Status.budget_exhausted  # not even one step fits in the window
        report.idle_energy_j = max(budget.window_s - report.busy_s - report.comm_s, 0.0) * profile.idle_power_w

    def availability(self):
        while True:
            now_available, until = self.schedule.state_at(self.env.now)
            if now_available and not self.available:
                self.became_available.succeed()
                self.became_available = self.env.event()
            self.available = now_available
            if math.isinf(until) or until >= self.end:
                return
            yield self.env.timeout(max(until - self.env.now, 1e-9))

    def arrivals(self, times: list[float]):
        per_arrival = float(self.credit.passes) if self.consumes else 1.0
        for t in sorted(times):
            yield self.env.timeout(t - self.env.now)
            yield self.data.put(per_arrival)

    def node(self):
        """Receive the model, train, send the update."""
        report = self.report
        if self.transfers.down:
            seconds = self.profile.receive_s(self.transfers.down)
            if not (yield from self.transfer(seconds, self.profile.radio_rx_w or 0.0)):
                report.status = Status.not_received
                return
            report.bytes_down = self.transfers.down
        if not self.train:
            return
        yield from self.trainer()
        if self.transfers.up and report.steps:
            if not (yield from self.transfer(self.send_s, self.profile.radio_tx_w or 0.0)):
                report.status = Status.late  # the update did not leave before the window ended
                return
            report.bytes_up = self.transfers.up

    def transfer(self, seconds: float, power_w: float):
        """Move data for ``seconds`` of available time at ``power_w``; whether it finished in the window."""
        env, report = self.env, self.report
        left = seconds
        while left > 1e-12:
            if env.now >= self.end:
                return False
            if not self.available:
                yield self.became_available | env.timeout(self.end - env.now)
                continue
            chunk = min(left, self.available_for(), self.end - env.now)
            yield env.timeout(chunk)
            left -= chunk
            report.comm_s += chunk
            report.comm_j += chunk * power_w
            report.energy_j += chunk * power_w
        return True

    def available_for(self) -> float:
        """Seconds the device stays available from now on, at most to the window's end."""
        return max(min(self.schedule.state_at(self.env.now)[1], self.end) - self.env.now, 1e-9)

    def next_step(self) -> tuple[float, float, float]:
        """(FLOPs, seconds, joules) of the next step: the first one carries the setup work."""
        flops = self.flops_per_step + (self.setup_flops if self.report.steps == 0 else 0.0)
        seconds = flops / self.profile.effective_flops
        return flops, seconds, seconds * self.profile.active_power_w

    def affordable(self) -> bool:
        budget, report, seconds = self.budget, self.report, self.budget.seconds
        flops, step_s, step_j = self.next_step()
        energy_after = report.energy_j + step_j + self.send_j  # the update's transfer still to pay
        return not ((budget.energy_j is not None and energy_after > budget.energy_j + 1e-12)
                    or (seconds is not None and report.busy_s + step_s > seconds + 1e-12)
                    or (budget.flops is not None and report.flops + flops > budget.flops + 1e-6))

    def trainer(self):
        env, report, data = self.env, self.report, self.data
        end = self.end - self.send_s  # the update must still leave inside the window
        while env.now + self.next_step()[1] <= end:
            if not self.available:
                yield self.became_available | env.timeout(max(end - env.now, 0.0))
                continue
            if data.level < self.need:
                request = data.get(self.need)  # wait for enough data
                yield request | env.timeout(max(end - env.now, 0.0))
                if not request.triggered:
                    request.cancel()
                    if self.consumes and report.status == Status.ok:
                        report.status = Status.data_exhausted  # trained its data as often as allowed
                    break
                yield data.put(self.need)  # it was only a wait: the data is used when a step starts
                continue
            if not self.affordable():
                report.status = Status.budget_exhausted
                break
            flops, step_s, step_j = self.next_step()
            online_until = self.schedule.state_at(env.now)[1]
            if env.now + step_s > online_until + 1e-9:  # the device goes away before the step would end
                yield env.timeout(max(min(online_until, end) - env.now, 1e-9))
                continue
            if self.consumes:
                yield data.get(self.credit.per_step)
            report.step_starts.append(env.now)
            yield env.timeout(step_s)
            report.steps += 1
            report.busy_s += step_s
            report.energy_j += step_j
            report.flops += flops


def settle_upload(report: WindowReport, profile: DeviceProfile, sent: int) -> None:
    """The update as sent: ``sent`` bytes, at most what the window reserved for it (``bytes_up``);
    the seconds and joules of the difference are given back (the device finished sooner)."""
    if not 0 < sent <= report.bytes_up:
        raise SwarmError(f"the update takes {sent} bytes, more than the {report.bytes_up} its window reserved")
    spared_s = profile.send_s(report.bytes_up) - profile.send_s(sent)
    spared_j = spared_s * (profile.radio_tx_w or 0.0)
    report.comm_s -= spared_s
    report.comm_j -= spared_j
    report.energy_j -= spared_j
    report.bytes_up = sent


def link_note(profile: DeviceProfile, report: WindowReport, transfers: Transfers) -> str:
    """Why a window's transfer failed, in one line for the node's row ('' when none did)."""
    if report.status == Status.not_received and report.available_s == 0:
        return f"the device was offline all window: the model ({transfers.down / 1e6:.3f} MB) did not arrive"
    if report.status == Status.not_received:
        return (f"the model ({transfers.down / 1e6:.3f} MB) needs {profile.receive_s(transfers.down):.1f} s of "
                f"available time at {profile.downlink_bps / 1e6:g} Mbit/s; it did not arrive inside the window")
    if report.status == Status.late and transfers.up and report.steps:
        return (f"the update ({transfers.up / 1e6:.3f} MB) needs {profile.send_s(transfers.up):.1f} s at "
                f"{profile.uplink_bps / 1e6:g} Mbit/s; it did not leave before the window ended")
    return ""


def available_seconds(profile: DeviceProfile, start_s: float, end_s: float, phase_s: float = 0.0,
                      online: Sequence[Sequence[float]] | None = None) -> float:
    """Seconds of [start_s, end_s) during which the device may work: its availability cycle
    (shifted by ``phase_s``), or its trace's ``online`` intervals."""
    return schedule(profile.availability, profile.availability_cycle_s, phase_s, online).seconds(start_s, end_s)


# ----------------------------------------------------------------------------- memory
@dataclass(frozen=True)
class MemoryNeed:
    """What training takes of a device's RAM (``total_mb``) and, where frozen weights stay in
    flash, of its flash (``flash_mb``), in MB."""

    weights_mb: float  # the weights held in RAM
    gradients_mb: float
    optimizer_mb: float
    activations_mb: float
    replay_mb: float
    flash_mb: float = 0.0  # frozen weights read from flash

    @property
    def total_mb(self) -> float:
        return self.weights_mb + self.gradients_mb + self.optimizer_mb + self.activations_mb + self.replay_mb


def memory_need(parameters: int, activation_bytes: int, batch_size: int, replay_samples: int,
                sample_bytes: int, optimizer_slots: int = 2, bytes_per_value: int = 4,
                trained_parameters: int | None = None, frozen_in_flash: bool = False) -> MemoryNeed:
    """Training memory: weights + gradients + optimizer state (Adam: 2 slots) + activations + replay;
    gradients and optimizer state only for the ``trained_parameters`` (default: all of them).
    ``frozen_in_flash``: the weights not trained are read from flash, only the trained ones in RAM."""
    mb = 1024 * 1024
    trained_count = parameters if trained_parameters is None else trained_parameters
    weights = parameters * bytes_per_value / mb
    trained = trained_count * bytes_per_value / mb
    in_flash = (parameters - trained_count) * bytes_per_value / mb if frozen_in_flash else 0.0
    return MemoryNeed(weights - in_flash, trained, optimizer_slots * trained, activation_bytes * batch_size / mb,
                      replay_samples * sample_bytes / mb, in_flash)


def scoring_need(parameters: int, activation_bytes: int, batch_size: int, replay_samples: int,
                 sample_bytes: int, held_gradients: int, frozen_in_flash: bool = False,
                 bytes_per_value: int = 4) -> MemoryNeed:
    """Memory of a pass that reads gradients and trains nothing (``fleet.update=fisher`` choosing
    its channels): every weight frozen (read from flash where the device has it, else in RAM),
    ``held_gradients`` gradient values at once, no optimizer state; activations and replay as in
    :func:`memory_need`."""
    mb = 1024 * 1024
    weights = parameters * bytes_per_value / mb
    return MemoryNeed(0.0 if frozen_in_flash else weights, held_gradients * bytes_per_value / mb, 0.0,
                      activation_bytes * batch_size / mb, replay_samples * sample_bytes / mb,
                      weights if frozen_in_flash else 0.0)


def memory_check(profile: DeviceProfile, need: MemoryNeed) -> bool:
    """Whether training fits: its RAM need in the device's RAM, its frozen weights in its flash."""
    return need.total_mb <= profile.ram_mb and need.flash_mb <= (profile.flash_mb or 0.0)


def budget_of(fleet: FleetConfig, window_s: float) -> Budget:
    """The window's budget from the fleet settings (``fleet.budget``; a null kind: no limit)."""
    return Budget(window_s=window_s, **{kind: getattr(fleet.budget, kind) for kind in BUDGET_KINDS})
