"""Call a function in a fresh Python process that ends when it returns, and get its result.

``python -m swarm.simulate`` prepares its fleet (coordinator, reference, plans, node folders) with
torch, then waits through the whole fleet beside the simulation engine's processes. Run in the
caller, the preparation would leave it holding torch and the heap of training for the whole fleet
(about 850 MB of resident memory, one process in five of a 1,000-node run's total); run here, it
leaves nothing behind, and the caller never imports torch.

The function is named by ``"module:function"`` so that the caller never imports its module. The
process is started with ``spawn`` (a fresh interpreter, on every platform: no inherited threads or
locks), logs through the caller's logging settings (Hydra's console and ``<job>.log``), and ends
within a second if the caller dies. A :class:`~swarm.nodes.errors.SwarmError` it raises is raised again
here, so it prints as the same one line with the same exit code; any other exception is a
:class:`IsolatedCallFailed` carrying the process's traceback.
"""

from __future__ import annotations

import importlib
import logging.config
import multiprocessing
import os
import sys
import threading
import time
import traceback
from typing import Any, Mapping

from swarm.nodes.errors import SwarmError

PARENT_POLL_S = 0.5
STOP_GRACE_S = 5.0


class IsolatedCallFailed(RuntimeError):
    """The function raised something other than a :class:`SwarmError` (a bug), or its process died."""


def call(target: str, *args: Any, logging_config: Mapping[str, Any] | None = None) -> Any:
    """``module:function(*args)`` in a process of its own; its result (arguments and result pickled
    between this process and its own child, never from elsewhere)."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_run, args=(sender, target, args, logging_config, os.getpid()),
                              name=target, daemon=False)
    sys.stdout.flush()
    sys.stderr.flush()
    process.start()
    sender.close()
    try:
        try:
            outcome, value = receiver.recv()
        except EOFError:
            process.join()
            raise IsolatedCallFailed(f"{target} ended without a result (exit code {process.exitcode}"
                                     + ("; killed: out of memory?" if process.exitcode == -9 else "") + ")") from None
        process.join()
    finally:
        receiver.close()
        if process.is_alive():  # Ctrl-C (which reaches the child too) or an error here: it must not outlive us
            process.join(timeout=STOP_GRACE_S)  # time to end on its own, releasing what it holds
        if process.is_alive():
            process.terminate()
            process.join()
    if outcome == "error":
        raise value
    if outcome == "bug":
        raise IsolatedCallFailed(f"{target} raised in its process:\n{value}")
    return value


def _run(sender: Any, target: str, args: tuple[Any, ...], logging_config: Mapping[str, Any] | None,
         parent: int) -> None:
    """The child's side: follow the parent, log as it does, call, send the outcome back."""
    threading.Thread(target=_exit_with, args=(parent,), daemon=True, name="exit-with-caller").start()
    if logging_config:
        logging.config.dictConfig(dict(logging_config))
    try:
        module, name = target.split(":")
        result = getattr(importlib.import_module(module), name)(*args)
    except SwarmError as error:
        outcome: tuple[str, Any] = ("error", error)
    except KeyboardInterrupt:  # Ctrl-C reaches the caller too, which stops the run
        sys.exit(130)
    except BaseException:
        outcome = ("bug", traceback.format_exc())
    else:
        outcome = ("ok", result)
    sys.stdout.flush()
    sys.stderr.flush()
    sender.send(outcome)
    sender.close()


def _exit_with(parent: int) -> None:
    """End this process once ``parent`` is gone (a killed caller: no preparation left training)."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)
