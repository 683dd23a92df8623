"""File locks, for work that two processes must not do at once: a cache entry, a run folder.

A job that needs a coordinator result, a pre-training or a reference holds that cache entry's
lock while it looks the entry up and, on a miss, computes and writes it; a second job that needs
the same entry waits, then finds it written and reuses it, so parallel sweep jobs compute a
shared entry once (:func:`swarm.server.cache.entry`). A fleet holds its run folder's lock while it runs, so a run started again at
once resumes from what the last one finished instead of writing beside it.

The lock is ``filelock``'s ``FileLock`` (an ``flock`` on Linux and macOS), which the operating
system releases when its holder dies: a job killed with SIGKILL while it holds one leaves no
stale lock, and whoever waits takes over and resumes from what the killed job saved. Entries are
still written atomically (:mod:`swarm.nodes.io`), so readers that do not lock (a report) never see half
a file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from swarm.nodes.errors import SwarmError

log = logging.getLogger("swarm.server.locks")


@contextmanager
def held(path: Path, waiting_for: str, wait_s: float | None = None, timeout_error: str = "") -> Iterator[None]:
    """Hold the lock file ``path``. If another process holds it, say once what this one waits for,
    and wait: for ever, or ``wait_s`` seconds, after which ``timeout_error`` is raised as a
    :class:`SwarmError`."""
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for %s", waiting_for)
        try:
            lock.acquire(timeout=-1 if wait_s is None else wait_s)
        except Timeout:
            raise SwarmError(timeout_error or f"gave up waiting for {waiting_for}") from None
    try:
        yield
    finally:
        lock.release()
