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
from typing import Any, Callable, ClassVar, Iterable, Iterator, Protocol

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from swarm.nodes import io
from swarm.nodes.checkpoints import received_model
from swarm.nodes.errors import SwarmError
from swarm.nodes.evaluation import TestSets, accuracies
from swarm.nodes.choices import Loss
from swarm.nodes.fleet_plan import FleetPlan
from swarm.nodes.local_data import load_evaluation_set
from swarm.nodes.models import classifier
from swarm.nodes.protocol import NO_RESULT, RECEIVED_WINDOW, TIMING, Status, WindowRow, append_timings, write_rows
from swarm.nodes.run_folder import EVALUATION_DIR, NODES_CSV, SHARED_MODEL, TIMINGS_CSV
from swarm.server.claims import StepCeilings
from swarm.server.identities import read_bindings
from swarm.server.participation import draw_participants
from swarm.server.progress import plan_hash, resume, run_folder_lock
from swarm.server.replies import InvalidReply, check_reply, safe_text
from swarm.nodes.strategies import check_strategy, make_strategy

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
    there the round waits as long as replies keep coming, giving up only when none arrived for
    ``GUARD x seconds`` (a hung actor; twice the deadline, so that a node that held its answer
    past the deadline, an injected ``late`` fault, is still heard: :meth:`overran`). The nodes it
    never heard from are ``not_simulated``, never ``failed``, and the run says so.
    """

    seconds: float
    simulated: bool = False
    GUARD: ClassVar[float] = 2.0

    def expired(self, sent_at: float, last_reply_at: float, now: float) -> bool:
        if self.simulated:
            return now - last_reply_at > self.GUARD * self.seconds
        return now - sent_at > self.seconds

    def overran(self, timing: dict[str, float]) -> bool:
        """Whether a reply came past the deadline because its node held it (``held_s`` of its
        timing: a device that answers late). On real devices such a reply never arrives in time;
        in simulation the engine's queue hides when a node was asked, so the node's own seconds on
        the message, held ones included, say it. A node that held nothing is never late by this
        machine's wall clock."""
        return timing.get("held_s", 0.0) > 0 and timing["node_s"] > self.seconds

    @property
    def ttl(self) -> float | None:
        """The time-to-live of a round's messages: on real devices the deadline, so that the
        SuperLink drops an instruction no device fetched in time and refuses a reply that comes
        after it; in simulation Flower's default (a message may wait in the engine's queue for
        longer than any deadline)."""
        return None if self.simulated else self.seconds

    def missed(self) -> tuple[str, str]:
        """(status, error) of a node whose reply did not come."""
        if self.simulated:
            return (Status.not_simulated,
                    f"the simulation engine returned no reply for {self.GUARD * self.seconds:g} s (a hung actor?)")
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


def wait_for_nodes(grid: GridLike, count: int, timeout_s: float, poll_s: float = 0.5,
                   bound: Iterable[int] | None = None) -> list[int]:
    """The nodes that joined, once ``count`` have (with ``bound``, the node ids bound to the
    partitions: once every one of them has)."""
    deadline = time.monotonic() + timeout_s
    required = set(bound) if bound is not None else None
    while True:
        nodes = list(grid.get_node_ids())
        missing = sorted(required - set(nodes)) if required is not None else []
        if (required is None and len(nodes) >= count) or (required is not None and not missing):
            return nodes
        if time.monotonic() > deadline:
            who = f"the bound nodes {missing[:5]} did not join" if required is not None else (
                f"only {len(nodes)} of {count} nodes joined")
            raise SwarmError(f"{who} within {timeout_s:.0f} s; "
                             "check that every SuperNode is running (or raise fleet.join_timeout_s)")
        time.sleep(poll_s)


def partition_map(grid: GridLike, node_ids: list[int], count: int, deadline: Deadline,
                  bindings: dict[int, int] | None = None) -> dict[int, int]:
    """Ask every node its partition id: Flower's node ids are random, the plan speaks of partitions.

    A claim outside 0..count-1 is ignored; when two nodes claim one partition, the first by node id
    keeps it and the other is never sent work (both are logged). ``bindings`` (node id -> partition,
    :mod:`swarm.server.identities`): a node is sent work only for the partition its key is bound to."""
    questions = [Message(RecordDict(), dst_node_id=nid, message_type="query.partition", ttl=deadline.ttl)
                 for nid in node_ids]
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
        if bindings is not None and bindings.get(nid) != claim:
            bound = bindings.get(nid)
            log.warning("node %d claims partition %d, %s; it gets no work", nid, claim,
                        "but no partition is bound to its key" if bound is None else f"but its key is bound to partition {bound}")
            continue
        if claim in mapping:
            log.warning("node %d claims partition %d, which node %d already holds; it gets no work",
                        nid, claim, mapping[claim])
            continue
        mapping[claim] = nid
    return mapping


def _missing_row(partition: int, window: int, profile: str, status: str, error: str) -> dict[str, Any]:
    return WindowRow.without_result(partition, profile, window, status, error).as_dict()


def run_fleet(grid: GridLike, plan_path: Path, *, strategy: str = "local", join_timeout_s: float = 120,
              window_timeout_s: float = 600, simulated: bool = False, in_flight: int | None = None,
              progress=None) -> list[dict[str, Any]]:
    """Run every window of the plan on the grid's nodes; returns (and writes) the nodes.csv rows.

    ``strategy``: a name of :data:`swarm.nodes.strategies.STRATEGIES`. ``simulated``: the grid is
    Flower's simulation engine, so ``window_timeout_s`` guards only against a hung actor (see
    :class:`Deadline`). A node whose reply fails a check, or who reports that it failed, is
    ``failed`` for the rest of the run; a node that missed a deadline (or reports that its answer
    did, ``late``) is sent the next window again (with the model, if it has none yet).
    ``in_flight``: how many messages wait in the grid at once (:func:`collect`)."""
    check_strategy(strategy)
    plan = FleetPlan.load(plan_path)
    with run_folder_lock(Path(plan.run_dir)):
        log.info("waiting for %d nodes to join", len(plan.nodes))
        joining = time.monotonic()
        bindings = read_bindings(Path(plan.run_dir))  # a deployment's registered keys, if bound
        node_ids = wait_for_nodes(grid, len(plan.nodes), join_timeout_s, bound=bindings)
        # Answering who it is is part of joining (an engine's actors load the app on their first message).
        mapping = partition_map(grid, node_ids, len(plan.nodes), Deadline(join_timeout_s, simulated), bindings)
        missing = sorted(set(range(len(plan.nodes))) - set(mapping))
        if missing:
            raise SwarmError(f"nodes for partitions {missing} did not answer; "
                             f"the fleet needs partitions 0..{len(plan.nodes) - 1}")
        log.info("%d nodes joined and said who they are in %.1f s", len(plan.nodes), time.monotonic() - joining)
        windows = FleetWindows(grid, plan, plan_path, mapping, strategy, Deadline(window_timeout_s, simulated),
                               in_flight)
        for window in range(windows.saved.windows_done, plan.windows):
            window_rows = windows.run(window)
            if progress is not None:
                progress(window, window_rows)
        return windows.rows


class FleetWindows:
    """The windows of one plan on nodes that have joined: what each window sends, how its replies
    become rows and the next shared model, and what is saved after it (a killed run resumes after
    its last finished window: :func:`swarm.server.progress.resume`)."""

    def __init__(self, grid: GridLike, plan: FleetPlan, plan_path: Path, mapping: dict[int, int], strategy: str,
                 deadline: Deadline, in_flight: int | None) -> None:
        self.grid, self.plan, self.mapping, self.deadline, self.in_flight = grid, plan, mapping, deadline, in_flight
        self.count = len(plan.nodes)
        self.partition_of = {nid: p for p, nid in mapping.items()}
        self.run_dir = Path(plan.run_dir)
        self.model = received_model(plan)
        self.head, output_layer = classifier(self.model)
        self.outputs = output_layer.out_features
        self.sent = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        masked_loss = plan.fleet.loss != Loss.full  # rows some nodes leave as sent
        self.strategy = make_strategy(strategy, plan.fleet, head=self.head if masked_loss else None)
        # A shared model is scored after every window on the nodes' test subsets (the server's
        # copy, beside the plan), like Flower's server-side evaluation.
        self.tests = (load_evaluation_set(self.run_dir / EVALUATION_DIR, plan.evaluation_id())
                      if self.strategy.shares_model else None)
        self.saved = resume(self.run_dir, plan_path)  # after a kill: the windows already finished
        plan_id = plan_hash(plan_path)[:16]  # names the nodes' state of this plan
        self.tasks = {p: ConfigRecord(plan.task(p, plan_id).to_config()) for p in range(self.count)}
        self.shared = self.saved.shared if self.saved.shared is not None else self.sent
        self.rows, self.failed = self.saved.rows, self.saved.failed
        accepted: dict[int, int] = {}  # steps accepted from each node in the windows already run
        for r in self.rows:
            if r["window"] != RECEIVED_WINDOW and r["status"] not in NO_RESULT:
                accepted[r["node"]] = accepted.get(r["node"], 0) + int(r["steps"])
        self.ceilings = StepCeilings(plan, self.model, accepted)  # what a node may claim to have trained
        self.has_model = self.saved.has_model  # nodes that adapted at least one window (they hold the model)
        # Nodes whose model-as-received row is written (a node whose first model did not arrive
        # over its link is sent it again, but scores it once).
        self.scored_received = {r["node"] for r in self.rows if r["window"] == RECEIVED_WINDOW}
        self.left_out: dict[int, str] = {}  # this window's nodes that do not take part, and why
        if self.saved.windows_done == 0:
            (self.run_dir / TIMINGS_CSV).unlink(missing_ok=True)  # a run started afresh in a used folder

    def run(self, window: int) -> list[dict[str, Any]]:
        """One window: send, take the replies in partition order as they come, save; its rows."""
        failed_before = dict(self.failed)  # this window's replies may add to `failed`; its messages follow this
        # Who sits this window out (fleet.participation), and why; failed nodes are not drawn.
        self.left_out = {p: why for p, why in draw_participants(
            self.plan, window, (p for p in range(self.count) if p not in failed_before)).items() if why}
        self.strategy.begin(self.shared)
        timings: list[dict[str, Any]] = []  # the window's node timings, in partition order
        # Replies are taken in partition order as soon as every earlier partition's is in (nodes.csv's
        # order, and the strategy's, whatever order the nodes answer in); only those waiting for an
        # earlier one are held.
        arrived: dict[int, Message] = {}
        next_partition = 0

        def on_reply(node_id: int, reply: Message) -> None:
            nonlocal next_partition
            arrived[self.partition_of[node_id]] = reply
            while next_partition < self.count and (next_partition in arrived or next_partition in failed_before
                                                   or next_partition in self.left_out):
                self.take(window, next_partition, arrived.pop(next_partition, None), failed_before, timings)
                next_partition += 1

        started = time.monotonic()
        collect(self.grid, self.messages(window, failed_before), self.deadline, in_flight=self.in_flight,
                on_reply=on_reply)
        seconds = time.monotonic() - started
        for partition in range(next_partition, self.count):  # the rest: failed earlier or no reply
            self.take(window, partition, arrived.pop(partition, None), failed_before, timings)
        self.shared = self.strategy.end(self.shared)
        return self.save(window, seconds, timings)

    def messages(self, window: int, failed_before: dict[int, str]) -> Iterator[Message]:
        """The window's messages, each built as it is sent (with its copy of the weights)."""
        shares = self.strategy.shares_model
        for partition in range(self.count):
            if partition in failed_before or partition in self.left_out:
                continue
            first = partition not in self.has_model
            content = RecordDict({"config": ConfigRecord({"window": window, "return_weights": shares,
                                                          "evaluate_received": partition not in self.scored_received,
                                                          "deadline_s": self.deadline.seconds}),
                                  "task": self.tasks[partition]})
            if first or shares:  # the model travels once (every window when it is shared)
                content["arrays"] = ArrayRecord(self.shared)
            yield Message(content, dst_node_id=self.mapping[partition], message_type="train.adapt",
                          ttl=self.deadline.ttl)

    def take(self, window: int, partition: int, reply: Message | None, failed_before: dict[int, str],
             timings: list[dict[str, Any]]) -> None:
        """One partition's rows of this window, and its weights given to the strategy."""
        profile = self.plan.node(partition).profile
        if partition in failed_before:
            self.rows.append(_missing_row(partition, window, profile, Status.failed,
                                          f"failed earlier: {failed_before[partition]}"))
            return
        if partition in self.left_out:
            self.rows.append(_missing_row(partition, window, profile, Status.not_selected, self.left_out[partition]))
            return
        if reply is None:
            self.rows.append(_missing_row(partition, window, profile, *self.deadline.missed()))
            return
        try:
            if reply.has_error():
                raise InvalidReply(f"the node's app raised: {safe_text(reply.error.reason)}")
            checked = check_reply(reply, partition=partition, window=window, profile=profile, sent=self.sent,
                                  want_arrays=self.strategy.shares_model,
                                  want_received=partition not in self.scored_received, outputs=self.outputs)
        except Exception as error:  # whatever a reply holds, it fails its node, never the run
            reason = (str(error) if reply.has_error() else f"invalid reply: {error}" if isinstance(error, InvalidReply)
                      else f"invalid reply: {type(error).__name__}: {safe_text(error)}")
            self.failed[partition] = reason
            self.rows.append(_missing_row(partition, window, profile, Status.failed, reason))
            log.warning("node %d, window %d: %s", partition, window, reason)
            return
        if checked.received is not None:
            self.rows.append(checked.received)
            self.scored_received.add(partition)
        if checked.timing is not None:
            timings.append({"window": window, "node": partition, **checked.timing})
            if self.deadline.overran(checked.timing):  # came past the deadline: nothing of it is used
                checked.row.update(status=Status.late, error=f"its reply took {checked.timing['node_s']:.1f} s, past "
                                   f"the {self.deadline.seconds:g} s deadline (fleet.window_timeout_s); not used")
        if checked.row["status"] == Status.late:  # its result came too late to use; it rejoins next window
            self.rows.append(_missing_row(partition, window, profile, Status.late, checked.row["error"]))
            return
        self.rows.append(checked.row)
        if checked.row["status"] == Status.failed:
            self.failed[partition] = checked.row["error"]
            return
        if checked.row["status"] != Status.not_received:  # else it is sent the model again next window
            self.has_model.add(partition)
        if checked.arrays is not None and int(checked.row["steps"]) > 0:
            # The weight: the examples the node trained on in this window, as far as the plan
            # allows (swarm.server.claims). A node that did not train returns the model it was
            # sent and must not pull the average back to it.
            claim = self.ceilings.check(partition, window, int(checked.row["steps"]), checked.examples_per_output)
            if claim.note:
                checked.row.update(steps=claim.steps, error=safe_text(claim.note))
                log.warning("node %d, window %d: %s", partition, window, claim.note)
            examples = float(claim.steps) * self.ceilings.batch(partition)  # the batch of the node's device
            self.strategy.add(checked.arrays, examples, claim.examples_per_output)

    def save(self, window: int, seconds: float, timings: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """After a window: the shared model scored, nodes.csv, the progress and the timings written,
        the window's log line; the window's rows."""
        saved = self.saved
        if self.tests is not None:
            saved.shared_scores.append({"window": window, **score(self.model, self.shared, self.tests)})
            io.write_json(self.run_dir / SHARED_MODEL, saved.shared_scores)
        write_rows(self.run_dir / NODES_CSV, self.rows)
        saved.windows_done = window + 1
        saved.shared = self.shared if self.strategy.shares_model else None
        saved.save(self.run_dir)
        append_timings(self.run_dir / TIMINGS_CSV, [{**t, "window_wall_s": seconds} for t in timings])
        window_rows = [r for r in self.rows if r["window"] == window]
        shared_line = (f"; shared model acc F {saved.shared_scores[-1]['acc_F']:.3f}"
                       if self.tests is not None and saved.shared_scores[-1]["acc_F"] is not None else "")
        log.info(_window_line(window, self.plan.windows, self.count, window_rows, self.rows) + shared_line
                 + f"; {seconds:.1f} s" + _timing_line(timings))
        return window_rows


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
    scored = [r["acc_F"] for r in done if not math.isnan(r["acc_F"])]  # a node that holds no model has no score
    mean_f = sum(scored) / len(scored) if scored else math.nan
    received = [r["acc_F"] for r in rows if r["window"] == RECEIVED_WINDOW]
    line = (f"window {window + 1}/{windows}: {len(done)}/{count} nodes, {sum(int(r['steps']) for r in done)} steps, "
            f"mean acc F {mean_f:.3f}" + (f" (as received {sum(received) / len(received):.3f})" if received else ""))
    for status in NO_RESULT:
        missing = sum(r["status"] == status for r in window_rows)
        if missing:
            line += f"; {missing} {status.replace('_', ' ')}"
    return line
