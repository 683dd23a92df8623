"""Every node reply checked before the server uses it: nothing that arrives over the network is trusted.

A reply to ``train.adapt`` must carry a ``metrics`` MetricRecord with every numeric column of
``nodes.csv`` (finite where they must be, accuracies in [0, 1] or NaN, counts non-negative), an
``info`` ConfigRecord whose status is one a node may report, the node's own partition and window,
and, when weights were asked for and the node trained, exactly the arrays of the model that was
sent (same names; each decoded from its bytes to the sent shape and dtype, all finite) with the examples of each output the window trained on, and a timing, if it
sends one, of finite non-negative seconds. A reply that breaks
any of this raises :class:`InvalidReply` with one line that says what was wrong; the server marks
that node ``failed`` with it and the run goes on.

Text a node supplies (its error message) is cut to one short printable line here, so that no
node can write a newline, a Markdown table break or a spreadsheet formula into a report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord

from swarm.nodes.protocol import (ACCURACIES, AMOUNTS, COUNTS, DEVICE_FAULTS, NEEDS, NODE_STATUSES, RECEIVED_WINDOW, TIMING,
                                  Status)

MAX_TEXT = 300


class InvalidReply(ValueError):
    """A reply the server cannot use; the message says why, in one line."""


@dataclass
class CheckedReply:
    """A reply that passed every check: its nodes.csv rows and, if asked for, its weights."""

    row: dict[str, Any]
    received: dict[str, Any] | None
    arrays: ArrayRecord | None
    examples_per_output: np.ndarray | None = None  # with the arrays: what the window trained on
    timing: dict[str, float] | None = None  # the node's wall seconds (TIMING), when it sent them


def safe_text(value: Any) -> str:
    """One printable line of at most ``MAX_TEXT`` characters; table pipes and backticks escaped for
    Markdown, and a leading formula character defused for spreadsheets (CSV injection)."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(value))[:MAX_TEXT]
    text = text.replace("|", "/").replace("`", "'")
    if text[:1] in ("=", "+", "-", "@"):
        text = "'" + text
    return text


def _number(metrics: MetricRecord, key: str) -> float:
    if key not in metrics:
        raise InvalidReply(f"metric '{key}' is missing")
    value = metrics[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidReply(f"metric '{key}' is a {type(value).__name__}, not a number")
    return float(value)


def _metrics(metrics: Any, partition: int, window: int, *, failed: bool) -> dict[str, Any]:
    """The numeric columns of one row, each checked; NaN is allowed where a failed node has no value."""
    if not isinstance(metrics, MetricRecord):
        raise InvalidReply("its metrics are not a MetricRecord")
    row: dict[str, Any] = {}
    for key in ("node", "window"):
        value = _number(metrics, key)
        expected = partition if key == "node" else window
        if value != expected:
            raise InvalidReply(f"it says {key} {value:g}, but was asked as {key} {expected}")
    for key in ACCURACIES:
        value = _number(metrics, key)
        if not (math.isnan(value) or 0.0 <= value <= 1.0):
            raise InvalidReply(f"{key} = {value} is not an accuracy in [0, 1]")
        row[key] = value
    for key in COUNTS + AMOUNTS:
        value = _number(metrics, key)
        if math.isnan(value) and (failed or key == "sim_time_s" or key in NEEDS):
            row[key] = value
            continue
        if not math.isfinite(value) or value < 0:
            raise InvalidReply(f"{key} = {value} is not a finite non-negative number")
        if key in COUNTS and value != int(value):
            raise InvalidReply(f"{key} = {value} is not a whole number")
        row[key] = int(value) if key in COUNTS else value
    groups = metrics.get("acc_F_groups", [])
    if not isinstance(groups, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in groups):
        raise InvalidReply("acc_F_groups is not a list of numbers")
    if any(not (math.isnan(v) or 0.0 <= v <= 1.0) for v in groups):
        raise InvalidReply("acc_F_groups holds a value outside [0, 1]")
    row["acc_F_groups"] = [float(v) for v in groups]
    return row


# What np.save puts before the data (the .npy header, at most 64 KiB in its largest format): a
# payload longer than its data by more than this carries something else.
NPY_HEADER_MAX = 65_536 + 16


def check_arrays(arrays: Any, sent: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """The adapted weights: exactly the sent model's array names, and each array, as decoded from
    the bytes that came (not as the node declares it), of the sent array's shape and dtype, with no
    more bytes than that takes, every value finite. Decoding errors are the node's, not the run's."""
    if not isinstance(arrays, ArrayRecord):
        raise InvalidReply("its weights are not an ArrayRecord")
    names, expected = list(arrays.keys()), list(sent.keys())
    if set(names) != set(expected):
        extra, missing = sorted(set(names) - set(expected)), sorted(set(expected) - set(names))
        raise InvalidReply(f"its weights do not match the model sent (unexpected {extra[:3]}, missing {missing[:3]})")
    for name in expected:
        array, want = arrays[name], sent[name]
        want_shape, want_dtype = tuple(want.shape), torch.empty(0, dtype=want.dtype).numpy().dtype
        if tuple(array.shape) != want_shape:
            raise InvalidReply(f"weight '{name}' has shape {tuple(array.shape)}, the model sent has {want_shape}")
        want_bytes = want.numel() * want_dtype.itemsize
        if not isinstance(array.data, bytes) or len(array.data) > want_bytes + NPY_HEADER_MAX:
            raise InvalidReply(f"weight '{name}' carries {len(array.data)} bytes; its shape and dtype take {want_bytes}")
        try:
            values = array.numpy()
        except Exception as error:  # any malformed payload is this reply's fault
            raise InvalidReply(f"weight '{name}' does not decode: {safe_text(error)}") from None
        if values.shape != want_shape or values.dtype != want_dtype:
            raise InvalidReply(f"weight '{name}' decodes to {values.dtype} {values.shape}; it declares "
                               f"{safe_text(array.dtype)} {tuple(array.shape)}, the model sent is {want_dtype} {want_shape}")
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise InvalidReply(f"weight '{name}' holds NaN or infinite values")
    return arrays


def check_examples(trained: Any, outputs: int) -> np.ndarray:
    """The examples of each output a window trained on: ``outputs`` whole, non-negative numbers."""
    if not isinstance(trained, MetricRecord) or "examples_per_output" not in trained:
        raise InvalidReply("the examples per output were asked for with the weights and are missing")
    values = trained["examples_per_output"]
    if (not isinstance(values, list) or len(values) != outputs
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        raise InvalidReply(f"examples_per_output is not a list of {outputs} numbers")
    counts = np.asarray(values, dtype=np.float64)
    if not np.isfinite(counts).all() or (counts < 0).any() or (counts != np.round(counts)).any():
        raise InvalidReply("examples_per_output holds a value that is not a whole non-negative number")
    return counts.astype(np.int64)


def check_timing(timing: Any) -> dict[str, float]:
    """A node's wall seconds of one window: every :data:`TIMING` key, finite and non-negative, and
    its training and evaluation within its total (they are parts of it)."""
    if not isinstance(timing, MetricRecord):
        raise InvalidReply("its timing is not a MetricRecord")
    values = {key: _number(timing, key) for key in TIMING}
    if "held_s" in timing:  # seconds it held its answer (a late device): part of its total
        values["held_s"] = _number(timing, "held_s")
        if values["held_s"] > values["node_s"] * (1 + 1e-6) + 1e-6:
            raise InvalidReply("its timing says it held its answer longer than the whole window")
    if any(not math.isfinite(v) or v < 0 for v in values.values()):
        raise InvalidReply(f"its timing {values} holds a value that is not a finite non-negative number")
    if values["train_s"] + values["eval_s"] > values["node_s"] * (1 + 1e-6) + 1e-6:
        raise InvalidReply("its timing says training and evaluation took longer than the whole window")
    return values


def check_reply(reply: Message, *, partition: int, window: int, profile: str,
                sent: Mapping[str, torch.Tensor], want_arrays: bool, want_received: bool,
                outputs: int) -> CheckedReply:
    """Check one ``train.adapt`` reply (see the module docstring); raise :class:`InvalidReply`."""
    content = reply.content
    info = content["info"] if "info" in content else None
    if not isinstance(info, ConfigRecord):
        raise InvalidReply("its info is missing or not a ConfigRecord")
    status = info.get("status")
    if status not in NODE_STATUSES:
        raise InvalidReply(f"status {safe_text(status)!r} is not one of {', '.join(NODE_STATUSES)}")
    if info.get("profile") != profile:
        raise InvalidReply(f"it says it is a {safe_text(info.get('profile'))!r}; the plan gives partition "
                           f"{partition} a {profile!r}")
    failed = status in DEVICE_FAULTS  # no result: measurements may be NaN, no weights
    if "metrics" not in content:
        raise InvalidReply("its metrics are missing")
    row = _metrics(content["metrics"], partition, window, failed=failed)
    row.update(node=partition, window=window, profile=profile, status=status, error=safe_text(info.get("error", "")))
    received = None
    if want_received and (not failed or "received" in content):  # a node may fail after evaluating it
        if "received" not in content:
            raise InvalidReply("the evaluation of the model as received is missing")
        received = _metrics(content["received"], partition, RECEIVED_WINDOW, failed=False)
        received.update(node=partition, window=RECEIVED_WINDOW, profile=profile, status=Status.received, error="")
    arrays, examples = None, None
    if want_arrays and not failed and row["steps"] > 0:  # a node that took no step sends no weights
        if "arrays" not in content:
            raise InvalidReply("the adapted weights were asked for and are missing")
        arrays = check_arrays(content["arrays"], sent)
        examples = check_examples(content["trained"] if "trained" in content else None, outputs)
    timing = check_timing(content["timing"]) if "timing" in content else None
    return CheckedReply(row, received, arrays, examples, timing)
