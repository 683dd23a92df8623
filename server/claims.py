"""What the server can verify of a node's claim to have trained: the most steps the plan lets it take.

Under a strategy that shares a model, a node's say in the mean is the examples it reports having
trained on (its steps x the batch, and per output), numbers only the node knows. One that claims a
million steps would own the average. The server cannot see the training, but it knows what bounds
it, from the plan alone:

* **the device and the budget**: the device model (:func:`swarm.nodes.device.simulate_window`) run
  for the node's profile, the window's budget and the node's availability with data never lacking
  -- the most steps the node's hardware could be granted in that window;
* **the data**, when each sample may be trained on at most ``fleet.passes`` times: the samples the
  node's stream has brought by the window's end (drawn from the plan exactly as the node draws it,
  :func:`swarm.nodes.local_data.stream_of`) allow ``passes x samples / (stream samples a step
  uses)`` steps in all, less the steps already accepted from it in earlier windows.

A claim above the smaller bound is cut to it (the per-output counts scaled down alike) and the
node's row says so; an honest node's claim is never above it (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from swarm.nodes.choices import Update
from swarm.nodes.device import budget_of, profile_of, simulate_window, step_flops
from swarm.nodes.fleet_plan import FleetPlan
from swarm.nodes.local_data import stream_of
from swarm.nodes.node import model_costs
from swarm.nodes.selection import SELECTING


@dataclass(frozen=True)
class Claim:
    """A node's claim as the server uses it: its steps and per-output examples after the cap, and
    the note its row gets when the claim was cut ("" when it was not)."""

    steps: int
    examples_per_output: np.ndarray | None
    note: str = ""


class StepCeilings:
    """The most steps each node may claim in each window (see the module docstring)."""

    def __init__(self, plan: FleetPlan, model: torch.nn.Module, accepted: dict[int, int] | None = None) -> None:
        """``accepted``: steps already accepted from each node in earlier windows (a resumed run's rows)."""
        self.plan, self.fleet = plan, plan.fleet
        # As the node counts a step; a node that chooses its channels is charged at least its output
        # layer's step (the cheapest it can take), so an honest claim is never above the ceiling.
        mode = Update.head if self.fleet.update in SELECTING else self.fleet.update
        self.macs, self.cost = model_costs(model, plan.architecture, mode)
        self.accepted = dict(accepted or {})
        self.replay_share = self.fleet.replay.fraction if (plan.continual or self.fleet.replay.finetune) else 0.0

    def batch(self, partition: int) -> int:
        """The batch of a step on the node's device (its profile's own, else the fleet's)."""
        return profile_of(self.fleet, self.plan.node(partition).profile).batch_size_for(self.fleet.batch_size)

    def stream_per_step(self, partition: int) -> int:
        """The fewest stream samples a step of the node takes (the rest of its batch replayed from P)."""
        batch = self.batch(partition)
        return batch - int(round(batch * self.replay_share))

    def by_device(self, partition: int, window: int) -> int:
        """The steps the node's device, budget and availability allow in ``window``, data never lacking."""
        node = self.plan.node(partition)
        flops_per_step = step_flops(2.0 * self.macs, self.batch(partition), self.cost.backward_share)
        report = simulate_window(profile_of(self.fleet, node.profile), budget_of(self.fleet, self.plan.window_s),
                                 flops_per_step, start_s=window * self.plan.window_s, samples_before=1,
                                 phase_s=node.phase_s, online=node.online)
        return report.steps

    def by_data(self, partition: int, window: int) -> float:
        """The steps the node's stream allows in ``window`` (infinite when ``fleet.passes`` is null,
        a step's batch is all replay, or the plan does not record the size of P's training split)."""
        passes, per_step = self.fleet.passes, self.stream_per_step(partition)
        if passes is None or per_step <= 0 or not self.plan.p_train_size:
            return math.inf
        times, _, _ = stream_of(self.plan, partition, self.plan.p_train_size)
        arrived = int(np.searchsorted(times, (window + 1) * self.plan.window_s, side="left"))
        return max(math.floor(int(passes) * arrived / per_step) - self.accepted.get(partition, 0), 0)

    def ceiling(self, partition: int, window: int) -> int:
        by_data = self.by_data(partition, window)
        by_device = self.by_device(partition, window)
        return int(min(by_device, by_data))

    def check(self, partition: int, window: int, steps: int, examples_per_output: np.ndarray | None) -> Claim:
        """The claim as used: its steps cut to the ceiling (its per-output examples scaled down
        alike), and no output with more examples than those steps hold (an output may have as
        many as every example: under the masked loss T's outputs learn from each one); a note of
        each cut; the steps counted toward the node's later windows."""
        ceiling, batch = self.ceiling(partition, window), self.batch(partition)
        used, notes, examples = min(steps, ceiling), [], examples_per_output
        if steps > ceiling:
            notes.append(f"claimed {steps} steps, the plan allows at most {ceiling} in this window")
            if examples is not None:
                examples = np.floor(examples * (used / steps)).astype(np.int64)
        if examples is not None and (examples > used * batch).any():
            notes.append(f"claimed {int(examples.max())} examples of one output in {used} steps of {batch}")
            examples = np.minimum(examples, used * batch)
        self.accepted[partition] = self.accepted.get(partition, 0) + used
        return Claim(used, examples, "; ".join(notes) + (f": weighted as {used} steps" if notes else ""))
