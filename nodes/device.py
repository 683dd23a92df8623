"""The device model: how much on-device training a node's hardware and budget allow in one window.

A SimPy simulation of one adaptation window on one node. Three processes share the clock:

* **availability** -- the device alternates between available and unavailable periods
  (``availability`` of every ``availability_cycle_s``, with a per-node phase);
* **arrivals** -- local samples stream in at the times the node's drifting stream gives;
* **trainer** -- while available and with data to learn from, runs training steps one after
  another. A step costs ``3 × forward FLOPs × batch`` (FedScale; Kaplan et al.) and takes
  ``step FLOPs / effective FLOP/s`` seconds at ``active_power_w``; it starts only if the window's
  remaining budget (training energy in J, compute seconds, or FLOPs) covers it and it ends before
  the window does.

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
    description: str = ""
    sources: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.effective_flops <= self.peak_flops:
            raise SwarmError(f"device {self.name}: need 0 < effective_flops <= peak_flops")
        if self.active_power_w <= 0 or self.idle_power_w < 0 or self.ram_mb <= 0:
            raise SwarmError(f"device {self.name}: power and RAM must be positive")
        if not 0 <= self.availability <= 1 or self.availability_cycle_s <= 0:
            raise SwarmError(f"device {self.name}: availability must be in [0, 1] with a positive cycle")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> DeviceProfile:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        try:
            return cls(**{k: (float(v) if k not in ("name", "description", "sources") else v)
                          for k, v in fields.items()})
        except TypeError as error:
            raise SwarmError(f"device profile {data.get('name', '?')}: {error}") from None


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


@dataclass
class WindowReport:
    """What the simulated window granted and charged."""

    steps: int = 0
    busy_s: float = 0.0
    energy_j: float = 0.0  # training energy (active power while training)
    idle_energy_j: float = 0.0  # idle power while not training
    flops: float = 0.0
    available_s: float = 0.0
    samples_arrived: int = 0
    status: str = Status.ok
    step_starts: list[float] = field(default_factory=list)  # when each granted step began


def step_flops(forward_flops_per_sample: float, batch_size: int) -> float:
    """One training step: forward + backward ≈ 3 × the forward pass, for every sample of the batch."""
    return 3.0 * forward_flops_per_sample * batch_size


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
                    credit: StreamCredit | None = None) -> WindowReport:
    """Run one window [start_s, start_s + window_s) of the device model and return what it granted.

    ``arrivals`` are the simulated times at which new local samples arrive. With ``credit`` (see
    :class:`StreamCredit`) a step spends sample visits and the device waits for new samples when
    it has used its data up; without, a step needs at least one sample (arrived now or
    ``samples_before`` the window). ``phase_s`` shifts the node's availability cycle so that a
    fleet is not in lockstep.
    """
    if flops_per_step <= 0:
        raise SwarmError("a training step must cost a positive number of FLOPs")
    window = _Window(profile, budget, flops_per_step, start_s, phase_s,
                     credit or StreamCredit.unlimited(samples_before))
    window.run([a for a in arrivals if start_s <= a < window.end])
    return window.report


class _Window:
    """One window of one device as SimPy processes: its availability cycle, its samples arriving,
    and its trainer, which takes a step whenever the device is available, holds enough data and
    can afford the step within the budget."""

    def __init__(self, profile: DeviceProfile, budget: Budget, flops_per_step: float, start_s: float,
                 phase_s: float, credit: StreamCredit) -> None:
        self.profile, self.budget, self.flops_per_step = profile, budget, flops_per_step
        self.start_s, self.phase_s, self.credit = start_s, phase_s, credit
        self.consumes = credit.passes is not None
        self.need = max(credit.per_step, 1) if self.consumes else 1
        self.env = simpy.Environment(initial_time=start_s)
        self.end = start_s + budget.window_s
        self.step_s = flops_per_step / profile.effective_flops
        self.step_j = self.step_s * profile.active_power_w
        self.report = WindowReport()
        self.data = simpy.Container(self.env, init=max(credit.left, 0.0), capacity=math.inf)
        self.available = profile.availability >= 1.0
        self.became_available = self.env.event()

    def run(self, arrivals: list[float]) -> None:
        self.env.process(self.availability())
        self.env.process(self.arrivals(arrivals))
        # Run until the trainer is done: it stops when no further step can finish inside the window
        # (a step ending exactly at the window's end counts).
        self.env.run(until=self.env.process(self.trainer()))
        report, profile, budget = self.report, self.profile, self.budget
        report.available_s = available_seconds(profile, self.start_s, self.end, self.phase_s)
        report.samples_arrived = len(arrivals)
        if report.steps == 0 and report.status == Status.ok:
            if report.available_s == 0:
                report.status = Status.unavailable
            elif self.step_s > budget.window_s:
                report.status = Status.budget_exhausted  # not even one step fits in the window
        report.idle_energy_j = (budget.window_s - report.busy_s) * profile.idle_power_w

    def availability(self):
        profile = self.profile
        if profile.availability >= 1.0:
            return
        cycle = profile.availability_cycle_s
        on_s = profile.availability * cycle
        while True:
            position = (self.env.now + self.phase_s) % cycle
            now_available = position < on_s
            if now_available and not self.available:
                self.became_available.succeed()
                self.became_available = self.env.event()
            self.available = now_available
            until = (on_s - position) if now_available else (cycle - position)
            yield self.env.timeout(max(until, 1e-9))

    def arrivals(self, times: list[float]):
        per_arrival = float(self.credit.passes) if self.consumes else 1.0
        for t in sorted(times):
            yield self.env.timeout(t - self.env.now)
            yield self.data.put(per_arrival)

    def affordable(self) -> bool:
        budget, report, seconds = self.budget, self.report, self.budget.seconds
        return not ((budget.energy_j is not None and report.energy_j + self.step_j > budget.energy_j + 1e-12)
                    or (seconds is not None and report.busy_s + self.step_s > seconds + 1e-12)
                    or (budget.flops is not None and report.flops + self.flops_per_step > budget.flops + 1e-6))

    def trainer(self):
        env, report, data = self.env, self.report, self.data
        while env.now + self.step_s <= self.end:
            if not self.available:
                yield self.became_available | env.timeout(self.end - env.now)
                continue
            if data.level < self.need:
                request = data.get(self.need)  # wait for enough data
                yield request | env.timeout(self.end - env.now)
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
            if self.consumes:
                yield data.get(self.credit.per_step)
            report.step_starts.append(env.now)
            yield env.timeout(self.step_s)
            report.steps += 1
            report.busy_s += self.step_s
            report.energy_j += self.step_j
            report.flops += self.flops_per_step


def available_seconds(profile: DeviceProfile, start_s: float, end_s: float, phase_s: float = 0.0) -> float:
    """Seconds of [start_s, end_s) during which the device's availability cycle lets it train."""
    if profile.availability >= 1.0:
        return end_s - start_s
    cycle, on_s = profile.availability_cycle_s, profile.availability * profile.availability_cycle_s

    def up_to(t: float) -> float:  # available seconds in [-phase, t)
        shifted = t + phase_s
        return math.floor(shifted / cycle) * on_s + min(shifted % cycle, on_s)

    return up_to(end_s) - up_to(start_s)


# ----------------------------------------------------------------------------- memory
@dataclass(frozen=True)
class MemoryNeed:
    weights_mb: float
    gradients_mb: float
    optimizer_mb: float
    activations_mb: float
    replay_mb: float

    @property
    def total_mb(self) -> float:
        return self.weights_mb + self.gradients_mb + self.optimizer_mb + self.activations_mb + self.replay_mb


def memory_need(parameters: int, activation_bytes: int, batch_size: int, replay_samples: int,
                sample_bytes: int, optimizer_slots: int = 2, bytes_per_value: int = 4) -> MemoryNeed:
    """Training memory: weights + gradients + optimizer state (Adam: 2 slots) + activations + replay."""
    mb = 1024 * 1024
    weights = parameters * bytes_per_value / mb
    return MemoryNeed(weights, weights, optimizer_slots * weights, activation_bytes * batch_size / mb,
                      replay_samples * sample_bytes / mb)


def memory_check(profile: DeviceProfile, need: MemoryNeed) -> bool:
    return need.total_mb <= profile.ram_mb


def budget_of(fleet: FleetConfig, window_s: float) -> Budget:
    """The window's budget from the fleet settings (``fleet.budget``; a null kind: no limit)."""
    return Budget(window_s=window_s, **{kind: getattr(fleet.budget, kind) for kind in BUDGET_KINDS})
