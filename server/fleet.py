"""The server's fleet loop on Flower's Grid: wait for the nodes, send the model once, run windows.

Written against the Grid interface only (``get_node_ids``, ``push_messages``, ``pull_messages``),
so the same loop runs under the simulation engine, the deployment engine, and a fake grid in the
tests. Every wait has a deadline (:class:`Deadline`: on real devices per round, in simulation a
guard against a hung actor); nothing waits forever. Every reply is checked before it is used
(:mod:`swarm.server.replies`); a bad one fails its node, never the run.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from swarm.nodes import io
from swarm.nodes.checkpoints import received_model
from swarm.nodes.errors import SwarmError
from swarm.nodes.evaluation import TestSets, accuracies
from swarm.nodes.local_data import load_evaluation_set
from swarm.nodes.models import classifier
from swarm.nodes.plan import FleetPlan, Loss, Strategy
from swarm.nodes.protocol import (EVALUATION_DIR, NO_RESULT, NODES_CSV, RECEIVED_WINDOW, SHARED_MODEL, TIMING,
                                  TIMINGS_CSV, Status, WindowRow, append_timings, write_rows)
from swarm.server.progress import plan_hash, resume, run_folder_lock
from swarm.server.replies import InvalidReply, check_reply, safe_text

log = logging.getLogger("swarm.fleet")



class GridLike(Protocol):
    def get_node_ids(self) -> Iterable[int]: ...

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]: ...

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]: ...


@dataclass(frozen=True)
class Deadline:
    """How long one round of messages waits for its replies.

    On real devices (the Deployment Engine) a deadline is a fact about a device: a node that has
    not answered ``seconds`` after the round was sent has failed this window (it may rejoin in the
    next one). In simulation every node is a job queued on a few engine actors, so the wall clock
    measures how long *this machine* takes to serve the queue, not whether the device could:
    there the round waits as long as replies keep coming, and gives up only when none arrived for
    ``seconds`` (a hung actor). The nodes it never heard from are ``not_simulated``, never
    ``failed``, and the run says so.
    """

    seconds: float
    simulated: bool = False

    def expired(self, sent_at: float, last_reply_at: float, now: float) -> bool:
        return now - (last_reply_at if self.simulated else sent_at) > self.seconds

    def missed(self) -> tuple[str, str]:
        """(status, error) of a node whose reply did not come."""
        if self.simulated:
            return Status.not_simulated, f"the simulation engine returned no reply for {self.seconds:g} s (a hung actor?)"
        return Status.late, f"no reply within {self.seconds:g} s"


def collect(grid: GridLike, messages: Iterable[Message], deadline: Deadline, poll_s: float = 0.1,
            in_flight: int | None = None, on_reply: Callable[[int, Message], None] | None = None,
            ) -> dict[int, Message]:
    """Send a round of messages; the replies that came before the deadline, by destination node id.

    A reply counts only for the message it answers, and only from the node that message went to.
    ``in_flight``: at most this many messages wait in the grid at once, the next ones sent as
    replies come back (the simulation engine: see :func:`swarm.server.server_app.simulated_in_flight`);
    ``None``: all at once (real devices work in parallel). ``messages`` may be a generator: each
    message (with its copy of the weights) is then built only when it is sent. ``on_reply(node id,
    reply)``: called as each reply arrives, instead of keeping it in the returned dict."""
    waiting = iter(messages)
    destination: dict[str, int] = {}
    pending: set[str] = set()
    replies: dict[int, Message] = {}

    def send_more() -> None:
        while in_flight is None or len(pending) < in_flight:
            batch = list(itertools.islice(waiting, None if in_flight is None else in_flight - len(pending)))
            if not batch:
                return
            # The grid gives each message its id as it pushes it; one it could not push gets no reply.
            pushed = {message_id for message_id in grid.push_messages(batch) if message_id}
            for m in batch:
                if m.metadata.message_id in pushed:
                    destination[m.metadata.message_id] = m.metadata.dst_node_id
                    pending.add(m.metadata.message_id)

    sent_at = last_reply_at = time.monotonic()
    send_more()
    while pending:
        for reply in grid.pull_messages(pending):
            asked = reply.metadata.reply_to_message_id
            if asked in pending and reply.metadata.src_node_id == destination[asked]:
                pending.discard(asked)
                if on_reply is None:
                    replies[destination[asked]] = reply
                else:
                    on_reply(destination[asked], reply)
                last_reply_at = time.monotonic()
        send_more()
        if pending and deadline.expired(sent_at, last_reply_at, time.monotonic()):
            break
        if pending:
            time.sleep(poll_s)
    return replies


def wait_for_nodes(grid: GridLike, count: int, timeout_s: float, poll_s: float = 0.5) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = list(grid.get_node_ids())
        if len(nodes) >= count:
            return nodes
        if time.monotonic() > deadline:
            raise SwarmError(f"only {len(nodes)} of {count} nodes joined within {timeout_s:.0f} s; "
                             "check that every SuperNode is running (or raise fleet.join_timeout_s)")
        time.sleep(poll_s)


def partition_map(grid: GridLike, node_ids: list[int], count: int, deadline: Deadline) -> dict[int, int]:
    """Ask every node its partition id: Flower's node ids are random, the plan speaks of partitions.

    A claim outside 0..count-1 is ignored; when two nodes claim one partition, the first by node id
    keeps it and the other is never sent work (both are logged)."""
    questions = [Message(RecordDict(), dst_node_id=nid, message_type="query.partition") for nid in node_ids]
    mapping: dict[int, int] = {}
    for nid, reply in sorted(collect(grid, questions, deadline).items()):
        try:
            if reply.has_error():
                raise ValueError(reply.error.reason)
            claim = reply.content["node"]["partition"]
            if isinstance(claim, bool) or not isinstance(claim, int) or not 0 <= claim < count:
                raise ValueError(f"partition {safe_text(claim)!r} is not in 0..{count - 1}")
        except (KeyError, TypeError, ValueError) as error:
            log.warning("node %d: unusable answer to query.partition (%s); it gets no work", nid, safe_text(error))
            continue
        if claim in mapping:
            log.warning("node %d claims partition %d, which node %d already holds; it gets no work",
                        nid, claim, mapping[claim])
            continue
        mapping[claim] = nid
    return mapping


class RunningFedAvg:
    """FedAvg folded in as replies arrive, so the server holds a chunk of replies and a few partial
    averages, not every node's weights (at 1,000 nodes that was the ServerApp's only memory that
    grew with the fleet). Flower's ``aggregate_arrayrecords`` averages each chunk of ``chunk``
    replies, then the chunks' averages weighted by their totals: the same weighted mean, up to
    float rounding. Replies are added in partition order, so the result does not depend on the
    order in which nodes answered. Integer buffers (BatchNorm's batch counter) return to the sent
    model's dtype.

    ``head``: the output layer's name under the masked loss. A node then leaves the row of every
    class its batches lacked exactly as it was sent, so the plain average would shrink what the
    nodes that have a class learned of it by the share of nodes that do not (on a skewed split,
    most). Each output's row is then averaged over the nodes that trained it, weighted by their
    examples of it -- each parameter over the clients that updated it, as HeteroFL does (Diao et
    al., ICLR 2021, https://arxiv.org/abs/2010.01264); a row no node trained keeps the sent value."""

    def __init__(self, sent: dict[str, torch.Tensor], head: str | None = None, chunk: int = 32) -> None:
        self.sent, self.chunk_size = sent, chunk
        self.head_keys = [k for k in (f"{head}.weight", f"{head}.bias") if k in sent] if head else []
        self.chunk: list[tuple[ArrayRecord, float]] = []
        self.partials: list[tuple[ArrayRecord, float]] = []
        self.head_sums: dict[str, torch.Tensor] = {}  # sum over nodes of examples x row, per output
        self.examples: torch.Tensor | None = None  # examples per output, summed over nodes
        self.count = 0  # replies added

    def add(self, arrays: ArrayRecord, weight: float, examples_per_output: np.ndarray | None = None) -> None:
        if self.head_keys:
            examples = torch.as_tensor(examples_per_output, dtype=torch.float64)
            self.examples = examples if self.examples is None else self.examples + examples
            for key in self.head_keys:
                rows = torch.as_tensor(arrays[key].numpy(), dtype=torch.float64)
                weighted = rows * examples.view((-1,) + (1,) * (rows.dim() - 1))
                self.head_sums[key] = weighted if key not in self.head_sums else self.head_sums[key] + weighted
        self.chunk.append((arrays, float(weight)))
        self.count += 1
        if len(self.chunk) >= self.chunk_size:
            self.partials.append(_weighted_mean(self.chunk))
            self.chunk = []

    def result(self) -> dict[str, torch.Tensor]:
        parts = self.partials + ([_weighted_mean(self.chunk)] if self.chunk else [])
        if not parts:
            raise SwarmError("FedAvg of no replies")
        state = (parts[0][0] if len(parts) == 1 else _weighted_mean(parts)[0]).to_torch_state_dict()
        for key in self.head_keys:
            total = self.examples.view((-1,) + (1,) * (self.head_sums[key].dim() - 1))
            mixed = self.head_sums[key] / total.clamp(min=1)
            untrained = self.examples == 0
            mixed[untrained] = self.sent[key].to(torch.float64)[untrained]
            state[key] = mixed
        return {key: value.to(self.sent[key].dtype) for key, value in state.items()}


def _weighted_mean(records: list[tuple[ArrayRecord, float]]) -> tuple[ArrayRecord, float]:
    """Flower's FedAvg of ``(arrays, weight)`` pairs, with the pairs' total weight."""
    bundles = [RecordDict({"arrays": arrays, "weight": MetricRecord({"samples": weight})}) for arrays, weight in records]
    return aggregate_arrayrecords(bundles, "samples"), sum(weight for _, weight in records)


def _missing_row(partition: int, window: int, profile: str, status: str, error: str) -> dict[str, Any]:
    return WindowRow.without_result(partition, profile, window, status, error).as_dict()


def run_fleet(grid: GridLike, plan_path: Path, *, strategy: str = "local", join_timeout_s: float = 120,
              window_timeout_s: float = 600, simulated: bool = False, in_flight: int | None = None,
              progress=None) -> list[dict[str, Any]]:
    """Run every window of the plan on the grid's nodes; returns (and writes) the nodes.csv rows.

    ``simulated``: the grid is Flower's simulation engine, so ``window_timeout_s`` guards only
    against a hung actor (see :class:`Deadline`). A node whose reply fails a check, or who reports
    that it failed, is ``failed`` for the rest of the run; a node that missed a deadline (or
    reports that its answer did, ``late``) is sent the next window again (with the model, if it
    has none yet). ``in_flight``: how many messages wait in the grid at once (:func:`collect`)."""
    if strategy not in tuple(Strategy):
        raise SwarmError(f"fleet.strategy must be one of {', '.join(Strategy)}, not '{strategy}'")
    plan = FleetPlan.load(plan_path)
    with run_folder_lock(Path(plan.run_dir)):
        return _run_windows(grid, plan, plan_path, strategy, join_timeout_s, window_timeout_s, simulated, in_flight,
                            progress)


def _run_windows(grid: GridLike, plan: FleetPlan, plan_path: Path, strategy: str, join_timeout_s: float,
                 window_timeout_s: float, simulated: bool, in_flight: int | None, progress) -> list[dict[str, Any]]:
    count = len(plan.nodes)
    deadline = Deadline(window_timeout_s, simulated)
    joining = time.monotonic()
    log.info("waiting for %d nodes to join", count)
    node_ids = wait_for_nodes(grid, count, join_timeout_s)
    # Answering who it is is part of joining (an engine's actors load the app on their first message).
    mapping = partition_map(grid, node_ids, count, Deadline(join_timeout_s, simulated))
    missing = sorted(set(range(count)) - set(mapping))
    if missing:
        raise SwarmError(f"nodes for partitions {missing} did not answer; the fleet needs partitions 0..{count - 1}")
    log.info("%d nodes joined and said who they are in %.1f s", count, time.monotonic() - joining)
    model = received_model(plan)
    sent = {k: v.detach().clone() for k, v in model.state_dict().items()}
    # Under FedAvg the model the fleet shares is scored after every window on the nodes' test
    # subsets (the server's copy, beside the plan), like Flower's server-side evaluation.
    tests = (load_evaluation_set(Path(plan.run_dir) / EVALUATION_DIR, plan.evaluation_id())
             if strategy == Strategy.fedavg else None)
    saved = resume(Path(plan.run_dir), plan_path)  # after a kill: the windows already finished
    plan_id = plan_hash(plan_path)[:16]  # names the nodes' state of this plan
    tasks = {partition: ConfigRecord(plan.task(partition, plan_id).to_config()) for partition in range(count)}
    shared = saved.shared if saved.shared is not None else sent
    batch_size = int(plan.config["fleet"]["batch_size"])
    masked_loss = plan.config["fleet"].get("loss", Loss.full) != Loss.full  # rows some nodes leave as sent
    head, output_layer = classifier(model)
    rows, failed = saved.rows, saved.failed
    has_model = saved.has_model  # nodes that adapted at least one window (they hold the model)
    csv_path = Path(plan.run_dir) / NODES_CSV
    timings_path = Path(plan.run_dir) / TIMINGS_CSV
    if saved.windows_done == 0:
        timings_path.unlink(missing_ok=True)  # a run started afresh in a used folder
    partition_of = {nid: p for p, nid in mapping.items()}
    for window in range(saved.windows_done, plan.windows):
        failed_before = dict(failed)  # this window's replies may add to `failed`; its messages follow this

        def messages(window: int = window, shared: dict[str, torch.Tensor] = shared):
            for partition in range(count):
                if partition in failed_before:
                    continue
                first = partition not in has_model
                content = RecordDict({"config": ConfigRecord({"window": window,
                                                              "return_weights": strategy == Strategy.fedavg,
                                                              "evaluate_received": first}),
                                      "task": tasks[partition]})
                if first or strategy == Strategy.fedavg:  # the model travels once (each round under FedAvg)
                    content["arrays"] = ArrayRecord(shared)
                yield Message(content, dst_node_id=mapping[partition], message_type="train.adapt")

        fedavg = RunningFedAvg(shared, head=head if masked_loss else None)
        timings: list[dict[str, Any]] = []  # the window's node timings, in partition order

        def take(partition: int, reply: Message | None) -> None:
            """One partition's rows of this window, and its weights folded into FedAvg."""
            profile = plan.node(partition).profile
            if partition in failed_before:
                rows.append(_missing_row(partition, window, profile, Status.failed,
                                         f"failed earlier: {failed_before[partition]}"))
                return
            if reply is None:
                rows.append(_missing_row(partition, window, profile, *deadline.missed()))
                return
            try:
                if reply.has_error():
                    raise InvalidReply(f"the node's app raised: {safe_text(reply.error.reason)}")
                checked = check_reply(reply, partition=partition, window=window, profile=profile, sent=sent,
                                      want_arrays=strategy == Strategy.fedavg, want_received=partition not in has_model,
                                      outputs=output_layer.out_features)
            except InvalidReply as error:
                reason = f"invalid reply: {error}" if not reply.has_error() else str(error)
                failed[partition] = reason
                rows.append(_missing_row(partition, window, profile, Status.failed, reason))
                log.warning("node %d, window %d: %s", partition, window, reason)
                return
            if checked.received is not None:
                rows.append(checked.received)
            if checked.timing is not None:
                timings.append({"window": window, "node": partition, **checked.timing})
            if checked.row["status"] == Status.late:  # its result came too late to use; it rejoins next window
                rows.append(_missing_row(partition, window, profile, Status.late, checked.row["error"]))
                return
            rows.append(checked.row)
            if checked.row["status"] == Status.failed:
                failed[partition] = checked.row["error"]
                return
            has_model.add(partition)
            if checked.arrays is not None and int(checked.row["steps"]) > 0:
                # FedAvg's weight: the examples the node trained on in this round. A node that did
                # not train returns the model it was sent and must not pull the average back to it.
                fedavg.add(checked.arrays, float(checked.row["steps"]) * batch_size, checked.examples_per_output)

        # Replies are taken in partition order as soon as every earlier partition's is in (nodes.csv's
        # order, and FedAvg's, whatever order the nodes answer in); only those waiting for an earlier
        # one are held.
        arrived: dict[int, Message] = {}
        next_partition = 0

        def on_reply(node_id: int, reply: Message) -> None:
            nonlocal next_partition
            arrived[partition_of[node_id]] = reply
            while next_partition < count and (next_partition in arrived or next_partition in failed_before):
                take(next_partition, arrived.pop(next_partition, None))
                next_partition += 1

        started = time.monotonic()
        collect(grid, messages(), deadline, in_flight=in_flight, on_reply=on_reply)
        seconds = time.monotonic() - started
        for partition in range(next_partition, count):  # the rest: failed earlier or no reply
            take(partition, arrived.pop(partition, None))
        if fedavg.count:
            shared = fedavg.result()
        if tests is not None:
            saved.shared_scores.append({"window": window, **score(model, shared, tests)})
            io.write_json(Path(plan.run_dir) / SHARED_MODEL, saved.shared_scores)
        write_rows(csv_path, rows)
        saved.windows_done = window + 1
        saved.shared = shared if strategy == Strategy.fedavg else None
        saved.save(Path(plan.run_dir))
        append_timings(timings_path, [{**t, "window_wall_s": seconds} for t in timings])
        window_rows = [r for r in rows if r["window"] == window]
        shared_line = (f"; shared model acc F {saved.shared_scores[-1]['acc_F']:.3f}"
                       if tests is not None and saved.shared_scores[-1]["acc_F"] is not None else "")
        log.info(_window_line(window, plan.windows, count, window_rows, rows) + shared_line + f"; {seconds:.1f} s"
                 + _timing_line(timings))
        if progress is not None:
            progress(window, window_rows)
    return rows


def score(model: torch.nn.Module, state: dict[str, torch.Tensor], tests: TestSets) -> dict[str, Any]:
    """The accuracies of ``model`` with ``state`` loaded (:func:`swarm.nodes.evaluation.accuracies`, as
    every node and the reference compute them), NaN written as null (a set the scenario lacks)."""
    model.load_state_dict(state)
    values = accuracies(model, tests, torch.device("cpu"))
    clean = lambda v: None if isinstance(v, float) and math.isnan(v) else v  # noqa: E731
    return {key: ([clean(v) for v in value] if isinstance(value, list) else clean(value))
            for key, value in values.items()}


def _timing_line(timings: list[dict[str, Any]]) -> str:
    """Where the nodes' time went (their seconds summed: with k actors, about k x the window's)."""
    if not timings:
        return ""
    total = {key: sum(t[key] for t in timings) for key in TIMING}
    other = total["node_s"] - total["train_s"] - total["eval_s"]
    return (f" (node time {total['node_s']:.1f} s: training {total['train_s']:.1f}, "
            f"evaluation {total['eval_s']:.1f}, other {other:.1f})")


def _window_line(window: int, windows: int, count: int, window_rows: list[dict[str, Any]],
                 rows: list[dict[str, Any]]) -> str:
    """The log line of a window; it names the nodes that gave no result, so no mean hides them."""
    done = [r for r in window_rows if r["status"] not in NO_RESULT]
    mean_f = sum(r["acc_F"] for r in done) / len(done) if done else math.nan
    received = [r["acc_F"] for r in rows if r["window"] == RECEIVED_WINDOW]
    line = (f"window {window + 1}/{windows}: {len(done)}/{count} nodes, {sum(int(r['steps']) for r in done)} steps, "
            f"mean acc F {mean_f:.3f}" + (f" (as received {sum(received) / len(received):.3f})" if received else ""))
    for status in NO_RESULT:
        missing = sum(r["status"] == status for r in window_rows)
        if missing:
            line += f"; {missing} {status.replace('_', ' ')}"
    return line
