"""A process and its descendants, measured from /proc (Linux), and a command run while a sampler
watches its tree: what the fleet benchmarks measure a run's memory with."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable


def descendants(root: int) -> list[int]:
    """``root`` and every process under it, by the parent links in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def rss_mb(pid: int) -> float | None:
    """Resident memory of one process (None: it is gone)."""
    return _field(f"/proc/{pid}/status", "VmRSS:")


def pss_mb(pid: int) -> float | None:
    """Proportional set size of one process: its shared pages split among their sharers (None: it is gone)."""
    return _field(f"/proc/{pid}/smaps_rollup", "Pss:")


def tree_rss_mb(root: int) -> float:
    """Resident memory of ``root`` and every descendant."""
    return sum(rss or 0.0 for rss in map(rss_mb, descendants(root)))


def run_sampled(command: list[str], log: Path, sample: Callable[[int], None],
                every_s: float = 0.5) -> tuple[int, float]:
    """Run ``command`` (its output to ``log``) and call ``sample(pid)`` every ``every_s`` until it
    ends; its exit code and wall seconds."""
    started = time.monotonic()
    with open(log, "w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                sample(process.pid)
                stop.wait(every_s)

        sampler = threading.Thread(target=watch, daemon=True)
        sampler.start()
        code = process.wait()
        stop.set()
        sampler.join()
    return code, time.monotonic() - started


def _field(path: str, key: str) -> float | None:
    try:
        with open(path) as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024
    except (OSError, StopIteration, ValueError):
        return None
