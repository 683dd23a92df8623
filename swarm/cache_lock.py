"""One job at a time per cache entry, so parallel sweep jobs that need the same result compute it once.

A job that needs a coordinator result, a pre-training or a reference holds that entry's lock
while it looks the entry up and, on a miss, computes and writes it; a second job that needs the
same entry waits, then finds it written and reuses it. The lock is ``filelock``'s ``FileLock``
(an ``flock`` on Linux and macOS), which the operating system releases when its holder dies: a job
killed with SIGKILL while it holds one leaves no stale lock, and whoever waits takes over and
resumes from what the killed job saved. Entries are still written atomically (:mod:`swarm.io`),
so readers that do not lock (a report) never see half a file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger("swarm.cache")

LOCK = ".lock"


@contextmanager
def cache_entry(directory: Path, what: str) -> Iterator[None]:
    """Hold the cache entry in ``directory`` (created if missing); ``what`` names it in the log
    line a waiting job prints."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(directory / LOCK)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another job that computes %s (%s)", what, directory)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
