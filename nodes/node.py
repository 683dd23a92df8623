"""One edge node's on-device adaptation, one window at a time, independent of Flower.

A node knows its task (:class:`swarm.nodes.fleet_plan.NodeTask`, sent by the server), its own data
(:class:`swarm.nodes.local_data.NodeData`, its data folder) and its state folder; nothing else of the run.
Each call to :meth:`NodeRuntime.run_window`:

1. loads the node's state from its state folder (model, optimizer, replay buffer, clock) or, in
   the first window, starts from the model the server sent;
2. checks that training fits in the device's RAM (weights, gradients, Adam state, activations of
   a batch, the replay buffer); if not, reports ``does_not_fit`` and keeps the model it has;
3. asks the SimPy device model how many training steps the window's budget, the device's
   availability and the stream's arrivals allow, and when each step starts;
4. runs exactly those steps for real: each batch mixes the most recent stream samples that had
   arrived when the step began with replayed P samples (continual scenarios);
5. evaluates on P, F (and P ∪ F for continual scenarios) and writes its state back to disk.

The stream of a node: P-like samples arrive from time 0 until its drift time, then its share of F.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from flwr.app import ArrayRecord
from torch import nn

from swarm.nodes import checkpoints, io
from swarm.nodes.checkpoints import received_model
from swarm.nodes.device import (MemoryNeed, StreamCredit, Transfers, WindowReport, budget_of, link_note,
                                memory_check, memory_need, profile_of, scoring_need, settle_upload, simulate_window,
                                step_flops)
from swarm.nodes.drift import F, P, node_stream
from swarm.nodes.errors import SwarmError
from swarm.nodes.evaluation import TestSets, accuracies
from swarm.nodes.choices import BatchNormMode, Loss, Sampling, Update
from swarm.nodes.fleet_plan import FleetPlan, NodeTask
from swarm.nodes.strategies import make_strategy
from swarm.nodes.layout import batch_to, place
from swarm.nodes.local_data import NodeData, load_node_data, simulated_folders
from swarm.nodes.models import classifier
from swarm.nodes.protocol import RECEIVED_WINDOW, Status, WindowRow
from swarm.nodes.replay import ReplayBuffer
from swarm.nodes.shapes import count_macs_and_params
from swarm.nodes.selection import (FISHER_BATCHES, SELECTING, Chooser, Selection, attach, fisher_scores,
                                   least_relevant_first, merged)
from swarm.nodes.selection import cost as selection_cost
from swarm.nodes.trainable import TrainingCost, freeze, training_cost

CPU = torch.device("cpu")  # where a node's model is kept between windows and sent from
_COSTS: dict[str, tuple[int, TrainingCost]] = {}


def message_bytes(record: ArrayRecord, distinct: bool = True) -> int:
    """The serialized size of an ArrayRecord as a message carries it: Flower sends a record as
    inflatable objects -- the record, each Array (its metadata), each Array's data in chunks -- and
    each distinct object once (equal arrays, such as every BatchNorm's batch counter, or equal
    chunks travel once), so this is the sum of the ``deflate()``d bytes of the distinct objects
    (``object_id``, ``children``, ``deflate``: the public API of every inflatable object).
    ``distinct=False``: every array counted, equal or not (the most the same arrays can take)."""
    if not distinct:  # an ArrayRecord's children and an Array's are keyed by object id: list them all
        return len(record.deflate()) + sum(
            len(array.deflate()) + sum(len(chunk.deflate()) for _, chunk in array.slice_array())
            for array in record.values())
    sizes: dict[str, int] = {}

    def walk(obj) -> None:
        if obj.object_id not in sizes:
            sizes[obj.object_id] = len(obj.deflate())
            for child in (obj.children or {}).values():
                walk(child)

    walk(record)
    return sum(sizes.values())


def model_bytes(model: nn.Module, distinct: bool = True) -> int:
    """:func:`message_bytes` of a model's weights as a message would carry them."""
    return message_bytes(ArrayRecord(model.state_dict()), distinct)


def model_costs(model: nn.Module, arch: Mapping[str, Any], update: Update = Update.full) -> tuple[int, TrainingCost]:
    """(forward MACs per sample, what a training step under ``update`` costs per sample) of an
    architecture, measured once per process: every window of every node of a fleet asks for the
    same few architectures."""
    key = json.dumps([arch, str(update)], sort_keys=True)
    if key not in _COSTS:
        macs, _ = count_macs_and_params(model, checkpoints.example_inputs(arch))
        _COSTS[key] = (macs, training_cost(model, checkpoints.example_inputs(arch, 2), update))
    return _COSTS[key]


def activation_bytes_per_sample(model: nn.Module, example: torch.Tensor) -> int:
    """Bytes of activations one sample holds at a training step's peak when every weight trains
    (what dominates training memory; :func:`swarm.nodes.trainable.training_cost`)."""
    return training_cost(model, example, Update.full).activation_bytes


def train_mode(model: nn.Module, *, frozen_batchnorm: bool) -> None:
    """Training mode; with ``frozen_batchnorm`` every BatchNorm keeps normalising with the running
    statistics it was received with (its scale and shift still learn)."""
    model.train()
    if frozen_batchnorm:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


class NodeRuntime:
    """One node: its task, its data, and its state under ``state_dir/<plan_id>/``.

    ``model``: the received weights, for a runtime made in-process (tests, benchmarks); over
    Flower they come with the node's first message instead."""

    def __init__(self, task: NodeTask, data: NodeData, state_dir: Path,
                 model: Mapping[str, torch.Tensor] | None = None) -> None:
        if data.partition != task.node.partition or data.data_id != task.data_id:
            raise SwarmError(f"the data of partition {data.partition} is not the data of this task "
                             f"(partition {task.node.partition}); write the node folders again with swarm.partition")
        self.task, self.data, self.received_weights = task, data, model
        self.me = task.node
        self.fleet = task.fleet
        self.profile = profile_of(self.fleet, self.me.profile)
        self.batch_size = self.profile.batch_size_for(self.fleet.batch_size)  # the device's own, where it has one
        # fisher / relevant: the node chooses the channels it trains (swarm.nodes.selection), once.
        self.selecting = self.fleet.update in SELECTING
        self.example = checkpoints.example_inputs(task.architecture, 2)
        self._selection_costs: dict[str, TrainingCost] = {}
        self._scoring: tuple[int, int] | None = None  # fisher's choosing pass: activation bytes a sample, gradients held
        self.strategy = make_strategy(self.fleet.strategy, self.fleet)  # its node side: what the loss adds
        self.continual = task.continual
        # Where it trains and evaluates: the share of a GPU its actor was given (fleet.ray.gpus_per_node;
        # Ray makes that GPU the actor's only visible one), else the host's CPU.
        self.device = torch.device("cuda") if self.fleet.on_gpu and torch.cuda.is_available() else CPU
        self.state_dir = Path(state_dir) / task.plan_id
        self.trained_per_output = np.zeros(0, dtype=np.int64)  # of the last window run (run_window)
        # Wall seconds this runtime spent training and evaluating (what a fleet's timings split out).
        self.train_s = self.eval_s = 0.0
        self.times, self.roles, self.indices = node_stream(
            self.me, rate=self.fleet.stream_rate, events=task.events, event_gap_s=task.event_gap_s,
            p_train_size=data.p_train_size)
        # The label of every stream sample (balanced batches draw by label); built once per runtime.
        self.labels = np.empty(len(self.indices), dtype=np.int64)
        for role in (P, F):
            mine = self.roles == role
            self.labels[mine] = data.targets(role, self.indices[mine])
        self.tests = data.tests

    def _model(self, weights: Mapping[str, torch.Tensor] | None) -> nn.Module:
        """The received model: the weights sent with the message (or given at construction)."""
        weights = weights if weights is not None else self.received_weights
        if weights is None:
            raise SwarmError(f"node {self.me.partition} has no model yet: the server sends it with a node's first window")
        model = checkpoints.build_from_architecture(self.task.architecture)
        model.load_state_dict(weights)
        return model

    # ------------------------------------------------------------------ state on disk
    def _fresh_state(self, weights: Mapping[str, torch.Tensor] | None) -> dict[str, Any]:
        """The state before the first window: the model the server sent."""
        model, arch = self._model(weights), self.task.architecture
        replay = ReplayBuffer(self._replay_capacity(model, arch), str(self.fleet.replay.policy),
                              seed=self.me.seed)
        if self.continual:  # the device ships with (a sample of) P for replay
            order = np.random.default_rng(self.me.seed + 1).permutation(self.data.p_train_size)
            replay.offer(order, self.data.targets(P, order).tolist())
        return {"model": model, "arch": arch, "optimizer": None, "replay": replay, "window": 0, "visits": 0,
                "fresh": True, "selection": None}

    def _replay_capacity(self, model: nn.Module, arch: Mapping[str, Any]) -> int | None:
        setting = self.fleet.replay.capacity
        if setting in (None, "all"):
            return None
        if setting != "auto":
            return int(setting)
        need = self._memory(model, self._cost(model, arch, None)[1], replay_samples=0)
        free_mb = self.profile.ram_mb - need.total_mb
        if self.selecting:  # the most the channels it will choose may add
            free_mb -= float(self.fleet.update_budget_kb) / 1024
        return max(0, int(free_mb * 2**20 // self._sample_bytes()))

    def _sample_bytes(self) -> int:
        return self.data.channels * self.data.image_size ** 2  # stored as 8-bit pixels

    def _cost(self, model: nn.Module, arch: Mapping[str, Any], selection: Selection | None) -> tuple[int, TrainingCost]:
        """(forward MACs a sample, what a training step costs a sample) under the fleet's mode; a
        node that chooses its channels is charged its output layer's until it has chosen."""
        if not self.selecting:
            return model_costs(model, arch, self.fleet.update)
        macs, head = model_costs(model, arch, Update.head)
        if selection is None:
            return macs, head
        key = json.dumps(selection, sort_keys=True)
        if key not in self._selection_costs:
            self._selection_costs[key] = selection_cost(model, self.example, selection)
        return macs, self._selection_costs[key]

    def _memory(self, model: nn.Module, cost: TrainingCost, replay_samples: int) -> MemoryNeed:
        return memory_need(sum(p.numel() for p in model.parameters()), cost.activation_bytes,
                           self.batch_size, replay_samples, self._sample_bytes(),
                           trained_parameters=cost.trained_parameters,
                           frozen_in_flash=self.profile.flash_mb is not None)

    def _scoring_memory(self, model: nn.Module, replay_samples: int) -> MemoryNeed:
        """What fisher's choosing pass takes (:meth:`swarm.nodes.selection.Chooser.scoring`), measured
        once: the model a node chooses on keeps its architecture."""
        if self._scoring is None:
            self._scoring = Chooser(model, self.example, self.batch_size, 0.0).scoring()
        activation_bytes, held_gradients = self._scoring
        return scoring_need(sum(p.numel() for p in model.parameters()), activation_bytes, self.batch_size,
                            replay_samples, self._sample_bytes(), held_gradients,
                            frozen_in_flash=self.profile.flash_mb is not None)

    def state_path(self, window: int) -> Path:
        """The node's state at the start of ``window`` (after every window before it)."""
        return self.state_dir / f"node_{self.me.partition:03d}_w{window:04d}.pt"

    def _saved_windows(self) -> list[int]:
        prefix = f"node_{self.me.partition:03d}_w"
        return sorted(int(path.stem[len(prefix):]) for path in self.state_dir.glob(f"{prefix}*.pt"))

    def _load(self, window: int, weights: Mapping[str, torch.Tensor] | None = None) -> dict[str, Any]:
        """The state this window starts from: the newest saved at or before it (a node that missed
        windows trained nothing in them), or the received model. A server that resumes after a
        kill asks again for the window it had not finished; the state saved at its start is kept
        for that (:meth:`_save`), so the window is re-run from the same state, not from a newer one."""
        saved = self._saved_windows()
        usable = [w for w in saved if w <= window]
        if not usable and any(w > window + 1 for w in saved):  # only the window being resumed and its successor are kept
            raise SwarmError(f"node {self.me.partition} is at window {saved[-1]}, asked for window {window}")
        if not usable:  # its first window (or, resumed, the first again: what it saved after is dropped)
            return self._fresh_state(weights)
        blob = io.load_tensors(self.state_path(usable[-1]))
        model = checkpoints.build_from_architecture(blob["arch"])
        model.load_state_dict(blob["model"])
        return {"model": model, "arch": blob["arch"], "optimizer": blob["optimizer"],
                "replay": ReplayBuffer.from_state(_from_tensors(blob["replay"])), "window": int(blob["window"]),
                "visits": int(blob["visits"]), "fresh": False, "selection": blob.get("selection")}

    def _save(self, state: dict[str, Any], optimizer: torch.optim.Optimizer, window: int) -> None:
        """Write the state after ``window``; keep the one it started from (the newest at or before
        ``window``: a node that sat windows out started from an older one), drop older ones."""
        io.save_tensors(self.state_path(window + 1), {
            "model": state["model"].state_dict(), "arch": state["arch"], "optimizer": optimizer.state_dict(),
            "replay": _to_tensors(state["replay"].state()), "window": state["window"],
            "visits": state["visits"], "selection": state["selection"]})
        started_from = max((w for w in self._saved_windows() if w <= window), default=None)
        for old in self._saved_windows():
            if started_from is not None and old < started_from:
                self.state_path(old).unlink(missing_ok=True)

    # ------------------------------------------------------------------ one window
    def run_window(self, window: int, weights: Mapping[str, torch.Tensor] | None = None,
                   ) -> tuple[WindowRow, nn.Module | None]:
        """One window: the row for ``nodes.csv`` and the model after it (None: the node holds no
        model, its first model did not arrive over its link)."""
        # A device that missed windows (it was unreachable) rejoins at the window it is asked for;
        # the windows it missed trained nothing.
        if window == 0:  # a plan starts (or a run killed in its first window starts again) afresh
            shutil.rmtree(self.state_dir, ignore_errors=True)
        state = self._load(window, weights)
        model = state["model"]
        transfers = self._transfers(state, weights)
        # Examples of each output this window's batches held: what the server's FedAvg weighs each
        # output row of this node by (swarm.nodes.strategies.RunningFedAvg); with the masked loss, a class a node
        # did not train has the row it was sent.
        self.trained_per_output = np.zeros(classifier(model)[1].out_features, dtype=np.int64)
        start, end = window * self.task.window_s, (window + 1) * self.task.window_s
        replay: ReplayBuffer = state["replay"]
        arrived = (self.times >= start) & (self.times < end)
        before = int((self.times < start).sum())
        report, stream_per_step, needs = self._grant(state, window, arrived, before, transfers)
        received = report.status != Status.not_received
        if received and weights is not None:
            model.load_state_dict(weights)
        if not received and state["fresh"]:  # it holds no model: nothing to train, score or keep
            return self._row(window, end, before + int(arrived.sum()), report, _unmeasured(self.tests),
                             link_note(self.profile, report, transfers), needs), None
        # torch's fused Adam: one kernel for every parameter (1.27 -> 0.40 ms of a 16 ms step on the
        # default model, benchmarks/node_step.py --optimizers); the same update up to float rounding.
        # Only the mode's parameters (or the chosen channels' deltas) get gradients and optimizer state.
        trained = (attach(model, state["selection"] or {}, self.example) if self.selecting
                   else freeze(model, self.fleet.update))
        optimizer = torch.optim.Adam(trained, lr=self.fleet.lr, fused=True)
        if state["optimizer"] is not None:
            optimizer.load_state_dict(state["optimizer"])
        started = time.perf_counter()
        self._train(model, optimizer, replay, report.step_starts, window)
        self.train_s += time.perf_counter() - started
        if self.selecting:  # the deltas merged into plain weights, to score, save and send
            model = state["model"] = merged(model, checkpoints.build_from_architecture(state["arch"]))
        if report.bytes_up:
            settle_upload(report, self.profile, model_bytes(model))
        state["visits"] += report.steps * stream_per_step  # sample visits spent, counted by the credit
        # P samples that streamed in during the window join the replay buffer.
        new_p = arrived & (self.roles == P)
        replay.offer(self.indices[new_p], self.data.targets(P, self.indices[new_p]).tolist())
        accuracy = self._evaluate(model)
        place(model, CPU)  # saved and sent from the host
        state["window"] = window + 1
        self._save(state, optimizer, window)
        return (self._row(window, end, before + int(arrived.sum()), report, accuracy,
                          link_note(self.profile, report, transfers), needs), model)

    def _grant(self, state: dict[str, Any], window: int, arrived: np.ndarray, before: int,
               transfers: Transfers) -> tuple[WindowReport, int, dict[str, float]]:
        """The device model's answer for ``window`` (steps and when, costs, status; ``does_not_fit``
        when training does not fit in RAM, the model still received), how many stream samples each
        step uses, and what a step needs (``nodes.csv``'s ``memory_mb``: RAM, and ``step_flops``).
        A node that chooses its channels and has not yet chosen does so when its first step would
        begin, and the window is simulated again with the chosen channels' costs and the choosing."""
        scoring = self.fleet.update == Update.fisher and state["selection"] is None  # a Fisher pass comes first
        granted = self._simulate(state, window, arrived, before, transfers, setup_flops=0.0, scoring=scoring)
        if self.selecting and state["selection"] is None and granted[0].step_starts:
            setup_flops = self._choose(state, window, granted[0].step_starts[0])
            granted = self._simulate(state, window, arrived, before, transfers, setup_flops, scoring=scoring)
        return granted

    def _simulate(self, state: dict[str, Any], window: int, arrived: np.ndarray, before: int,
                  transfers: Transfers, setup_flops: float, scoring: bool = False,
                  ) -> tuple[WindowReport, int, dict[str, float]]:
        """One simulation of the window; ``scoring``: fisher's choosing pass runs in it too, and
        must fit as the steps must (``memory_mb``: the larger of the two)."""
        model, arch, replay = state["model"], state["arch"], state["replay"]
        macs, cost = self._cost(model, arch, state["selection"])
        needs = [self._memory(model, cost, replay_samples=len(replay))]
        if scoring:
            needs.append(self._scoring_memory(model, replay_samples=len(replay)))
        fits = all(memory_check(self.profile, need) for need in needs)
        need = max(needs, key=lambda n: n.total_mb)
        passes = self.fleet.passes
        stream_per_step = self.batch_size - self._replayed_per_batch(replay)
        credit = (StreamCredit.unlimited(before) if passes is None else
                  StreamCredit(int(passes), stream_per_step, float(int(passes) * before - state["visits"])))
        flops_per_step = step_flops(2.0 * macs, self.batch_size, cost.backward_share)
        report = simulate_window(self.profile, budget_of(self.fleet, self.task.window_s), flops_per_step,
                                 start_s=window * self.task.window_s, arrivals=self.times[arrived].tolist(),
                                 phase_s=self.me.phase_s, credit=credit, transfers=transfers, train=fits,
                                 online=self.me.online, setup_flops=setup_flops)
        if not fits and report.status == Status.ok:
            report.status = Status.does_not_fit
        return report, stream_per_step, {"memory_mb": need.total_mb, "step_flops": flops_per_step}

    def _choose(self, state: dict[str, Any], window: int, at_s: float) -> float:
        """Choose the channels to train (``fleet.update=fisher|relevant``, :mod:`swarm.nodes.selection`)
        at simulated time ``at_s``; returns the FLOPs choosing cost the device."""
        model, arch = state["model"], state["arch"]
        chooser = Chooser(model, self.example, self.batch_size, float(self.fleet.update_budget_kb) * 1024)
        setup_flops = 0.0
        if self.fleet.update == Update.relevant:
            if not self.task.channel_relevance:
                raise SwarmError("fleet.update=relevant: the task carries no channel relevance; draw the plan again")
            scores = least_relevant_first(self.task.channel_relevance, chooser.candidates)
        else:  # fisher, on the first batches the node can draw then, each a forward and full backward pass
            batches = self._first_batches(window, at_s)
            scores = fisher_scores(model, batches, chooser.candidates)
            setup_flops = len(batches) * step_flops(2.0 * self._cost(model, arch, None)[0], self.batch_size, 2.0)
        state["selection"] = chooser.choose(scores)
        state["optimizer"] = None  # any state before was for the parameters trained before choosing
        return setup_flops

    def _first_batches(self, window: int, at_s: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """:data:`FISHER_BATCHES` batches drawn as training draws them from the samples arrived by ``at_s``."""
        pool = self._pool(at_s)
        rng = np.random.default_rng((self.me.seed, window, 1))  # apart from the training draws
        balanced = self.fleet.sampling == Sampling.balanced
        picks = [self._draw(pool, self.batch_size, rng, balanced) for _ in range(FISHER_BATCHES)]
        return [self.data.batch(self.roles[p], self.indices[p]) for p in picks if len(p)]

    def _transfers(self, state: dict[str, Any], weights: Mapping[str, torch.Tensor] | None) -> Transfers:
        """What travels this window: the model, when the server sent one (or, run in-process, the
        model it was made with, in its first window), and the update, under a strategy that shares
        a model; each as large as the message that carries it. The update's time is reserved for
        the most its arrays can take (none equal to another) and charged for what the trained
        weights take (:func:`settle_upload`)."""
        model = state["model"]
        incoming = weights is not None or state["fresh"]
        if weights is not None and not state["fresh"]:
            sent = message_bytes(ArrayRecord(dict(weights)))
        else:  # the state was just made from these weights
            sent = model_bytes(model)
        return Transfers(down=sent if incoming else 0,
                         up=model_bytes(model, distinct=False) if self.strategy.shares_model else 0)

    def _row(self, window: int, end: float, seen: int, report: WindowReport, accuracy: Mapping[str, Any],
             error: str, needs: Mapping[str, float]) -> WindowRow:
        return WindowRow(node=self.me.partition, profile=self.me.profile, window=window, sim_time_s=end,
                         steps=report.steps, samples_seen=seen, flops=report.flops, energy_j=report.energy_j,
                         status=report.status, error=error, compute_s=report.busy_s, comm_s=report.comm_s, comm_j=report.comm_j,
                         bytes_down=report.bytes_down, bytes_up=report.bytes_up, **needs, **accuracy)

    def _train(self, model: nn.Module, optimizer: torch.optim.Optimizer, replay: ReplayBuffer,
               step_starts: list[float], window: int) -> None:
        """Run the granted steps, each on a batch drawn from the newest ``fleet.recent_samples``
        stream samples that had arrived when it began (plus replayed P in continual scenarios).

        How many steps there are is the device model's answer (budget, availability, and
        ``fleet.passes``: visits per sample seen, counted over the whole stream). Restricting each
        batch to the samples with visits left was measured and dropped: once the P-like samples
        were used up, batches held only the node's skewed share of F, and the fleet collapsed
        (docs/adaptation.md)."""
        if not step_starts:
            return
        batch_size = self.batch_size
        rng = np.random.default_rng((self.me.seed, window))
        loss_fn = nn.CrossEntropyLoss()
        place(model, self.device)
        # A batch of one sample has no batch statistics to normalise with: such a device (its
        # profile's batch_size 1) keeps the received ones, as microcontroller engines fold BatchNorm.
        train_mode(model, frozen_batchnorm=self.fleet.batchnorm == BatchNormMode.frozen or batch_size == 1)
        start = ({name: p.detach().clone() for name, p in model.named_parameters()} if self.strategy.has_penalty
                 else {})  # the parameters the window started from (FedProx's anchor)
        loss = self.fleet.loss
        # Outputs that compete in every batch besides its own classes: under ``masked`` those outside
        # the deployed task (T's), which the paper's adaptation pushes down with every example.
        always = torch.zeros(len(self.trained_per_output), dtype=torch.bool)
        if loss == Loss.masked:
            always[self.task.undeployed_outputs] = True
        always_here = always.to(self.device)
        balanced = self.fleet.sampling == Sampling.balanced
        for t in step_starts:
            n_replay = self._replayed_per_batch(replay)
            pool = self._pool(t)
            picks = self._draw(pool, batch_size - n_replay, rng, balanced)
            replayed = replay.sample(n_replay)
            if not len(picks) + len(replayed):
                continue
            inputs, targets = self.data.batch(np.concatenate([self.roles[picks], np.full(len(replayed), P)]),
                                              np.concatenate([self.indices[picks], replayed]))
            inputs = batch_to(inputs, self.device)
            self.trained_per_output += np.bincount(targets.numpy(), minlength=len(self.trained_per_output))
            self.trained_per_output[always.numpy()] += len(targets)  # every example trained them (as negatives)
            drawn_from = self._classes_drawn_from(pool, targets.numpy(), always.numpy()) if loss != Loss.full else []
            targets = targets.to(self.device)
            optimizer.zero_grad(set_to_none=True)
            logits = model(inputs)
            if loss != Loss.full:  # the classes a node's batch lacks are not pushed down
                present = always_here.clone()
                present[targets] = True
                if len(drawn_from):
                    present[torch.as_tensor(drawn_from, device=self.device)] = True
                logits = logits.masked_fill(~present, -1e9)
            objective = loss_fn(logits, targets)
            penalty = self.strategy.penalty(model, start) if start else None
            (objective if penalty is None else objective + penalty).backward()
            optimizer.step()
        model.eval()

    def _pool(self, at_s: float) -> np.ndarray:
        """Stream positions a batch drawn at ``at_s`` may take: the newest ``fleet.recent_samples``
        of those arrived by then (the stream is in time order)."""
        seen = int(np.searchsorted(self.times, at_s, side="right"))
        recent = self.fleet.recent_samples
        return np.arange(0 if recent is None else max(0, seen - int(recent)), seen)

    def _classes_drawn_from(self, pool: np.ndarray, targets: np.ndarray, always: np.ndarray) -> np.ndarray:
        """The classes that compete beside a batch's own under the masked losses: none, unless the
        batch holds one sample. A batch of one holds one class, and a softmax over one output has
        no gradient: on a device that trains a sample a step (its profile's ``batch_size`` 1), the
        classes of the samples it draws from compete, and are counted as trained (as negatives)."""
        if len(targets) != 1:
            return np.zeros(0, dtype=np.int64)
        drawn_from = np.setdiff1d(self.labels[pool], np.flatnonzero(always))
        self.trained_per_output[np.setdiff1d(drawn_from, targets)] += 1
        return drawn_from

    def _draw(self, pool: np.ndarray, count: int, rng: np.random.Generator, balanced: bool) -> np.ndarray:
        """``count`` stream positions from ``pool``, with replacement: uniformly, or ``balanced``: each
        draw first picks one of the labels the pool holds, then a sample of it (a node's share is
        skewed; a minority class it does have is then learned rather than drowned)."""
        if not len(pool) or count <= 0:
            return np.zeros(0, dtype=np.int64)
        if not balanced:
            return rng.choice(pool, count)
        labels = self.labels[pool]
        classes = np.unique(labels)
        chosen = rng.choice(classes, count)
        picks = np.empty(count, dtype=np.int64)
        for label in np.unique(chosen):
            where = chosen == label
            picks[where] = rng.choice(pool[labels == label], int(where.sum()))
        return picks

    def _replayed_per_batch(self, replay: ReplayBuffer) -> int:
        """How many samples of each batch come from the replay buffer of P (continual scenarios)."""
        settings = self.fleet.replay
        share = settings.fraction if (self.continual or settings.finetune) else 0.0
        return int(round(self.batch_size * share)) if len(replay) else 0

    def _evaluate(self, model: nn.Module) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            return accuracies(model, self.tests, self.device)
        finally:
            self.eval_s += time.perf_counter() - started

    def received(self, weights: Mapping[str, torch.Tensor] | None = None) -> WindowRow:
        """The model as this node received it, evaluated before any training: the row (window -1,
        status ``received``) every gain is measured against."""
        model = self._model(weights)
        return WindowRow(node=self.me.partition, profile=self.me.profile, window=RECEIVED_WINDOW, sim_time_s=0.0,
                             steps=0, samples_seen=0, flops=0.0, energy_j=0.0, status=Status.received,
                             **self._evaluate(model))


def _unmeasured(tests: TestSets) -> dict[str, Any]:
    """The accuracies of a node that holds no model: none (NaN), in the shape :func:`accuracies` gives."""
    return {"acc_P": math.nan, "acc_F": math.nan, "acc_PF": math.nan,
            "acc_F_groups": [math.nan] * len(tests.f_group_names)}


def _to_tensors(state: dict[str, Any]) -> dict[str, Any]:
    """Replay state with numpy arrays as tensors and the RNG state as plain values (weights_only-safe)."""
    out = dict(state)
    out["indices"] = torch.as_tensor(state["indices"])
    out["labels"] = torch.as_tensor(state["labels"])
    rng = dict(state["rng"])
    rng["state"] = {k: str(v) for k, v in rng["state"].items()}  # 128-bit integers
    out["rng"] = rng
    out["seen_per_class"] = {str(k): v for k, v in state["seen_per_class"].items()}
    return out


def _from_tensors(state: dict[str, Any]) -> dict[str, Any]:
    out = dict(state)
    out["indices"] = state["indices"].numpy()
    out["labels"] = state["labels"].numpy()
    rng = dict(state["rng"])
    rng["state"] = {k: int(v) for k, v in rng["state"].items()}
    out["rng"] = rng
    return out


def local_runtime(plan: FleetPlan, partition: int, root: Path, plan_id: str = "0" * 16) -> NodeRuntime:
    """Node ``partition`` run in this process (tests, benchmarks), as the fleet runs it: its folders
    under ``root`` as the simulation lays them out (:func:`swarm.nodes.local_data.simulated_folders`), its
    task from the plan and the model the server would send."""
    data_dir, state_dir = simulated_folders(root, partition)
    data = load_node_data(data_dir, partition=partition, data_id=plan.data_id(partition))
    return NodeRuntime(plan.task(partition, plan_id), data, state_dir, model=received_model(plan).state_dict())
