"""What a fleet run has finished, saved after every window, so that a killed run resumes there.

After each window the server writes the shared model (``fleet_shared_wNNNN.pt``, tensors only,
read back with ``weights_only=True``) and then ``fleet_progress.json``: the plan's hash, how many
windows are done, the ``nodes.csv`` rows so far, the shared model's scores so far, the failed
nodes and the nodes that hold the model. Both are written atomically, the weights first, so a kill at any moment leaves a matching
pair. A run started on the same run folder with the same plan continues after the last finished
window; the nodes re-run the window that was cut short from the state they kept from its start
(:meth:`swarm.nodes.node.NodeRuntime._load`), so the result equals an uninterrupted run's. A folder
whose progress belongs to another plan starts over. (The nodes' states are theirs, kept by plan
digest in their own state folders; a node asked for window 0 starts its plan afresh.)

One fleet at a time per run folder: :func:`run_folder_lock` holds ``fleet.lock``
(:mod:`swarm.server.locks`, released by the system when its holder dies) while a fleet runs there.
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from swarm.nodes import io
from swarm.nodes.run_folder import FLEET_LOCK, FLEET_PROGRESS
from swarm.server.locks import held

log = logging.getLogger("swarm.fleet")

LOCK_WAIT_S = 60.0


def run_folder_lock(run_dir: Path, wait_s: float = LOCK_WAIT_S) -> AbstractContextManager[None]:
    """Hold the run folder for one fleet; waits up to ``wait_s`` for an earlier holder to end.

    Why wait: a run whose caller was just killed stops within a second or so
    (:func:`swarm.server.server_app.stop_with_caller`), and the same command started again at once must
    resume from what that run finished, not write beside it."""
    return held(Path(run_dir) / FLEET_LOCK, f"the fleet still running in {run_dir} to stop", wait_s,
                timeout_error=f"another fleet is still running in {run_dir}: wait for it to end or stop it, "
                              "or run this one in another folder (hydra.run.dir=...)")


def _shared_path(run_dir: Path, windows_done: int) -> Path:
    return run_dir / f"fleet_shared_w{windows_done:04d}.pt"


def plan_hash(plan_path: Path) -> str:
    return hashlib.sha256(Path(plan_path).read_bytes()).hexdigest()


@dataclass
class Progress:
    """The server's state between windows."""

    plan: str  # the sha256 of the plan file this progress belongs to
    windows_done: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    has_model: set[int] = field(default_factory=set)
    shared: dict[str, torch.Tensor] | None = None
    shared_scores: list[dict[str, Any]] = field(default_factory=list)  # the shared model's, per window

    def save(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        if self.shared is not None:
            io.save_tensors(_shared_path(run_dir, self.windows_done), self.shared)
        io.write_json(run_dir / FLEET_PROGRESS, {
            "plan": self.plan, "windows_done": self.windows_done, "rows": self.rows,
            "failed": {str(k): v for k, v in self.failed.items()}, "has_model": sorted(self.has_model),
            "shared": self.shared is not None, "shared_scores": self.shared_scores})
        for old in run_dir.glob("fleet_shared_w*.pt"):
            if old != _shared_path(run_dir, self.windows_done):
                old.unlink(missing_ok=True)


def resume(run_dir: Path, plan_path: Path) -> Progress:
    """The progress of an earlier, interrupted run of this plan in ``run_dir``, or a fresh start
    (which clears the progress another plan left there)."""
    run_dir = Path(run_dir)
    path = run_dir / FLEET_PROGRESS
    digest = plan_hash(plan_path)
    if path.exists():
        record = json.loads(path.read_text())
        shared_path = _shared_path(run_dir, int(record["windows_done"]))
        if record.get("plan") == digest and (not record["shared"] or shared_path.exists()):
            log.info("resuming the fleet after window %d of an interrupted run in %s", record["windows_done"], run_dir)
            return Progress(digest, int(record["windows_done"]), record["rows"],
                            {int(k): v for k, v in record["failed"].items()}, set(record["has_model"]),
                            io.load_tensors(shared_path) if record["shared"] else None,
                            list(record.get("shared_scores", [])))
        log.info("%s belongs to another fleet plan: starting over", path)
    path.unlink(missing_ok=True)
    for old in run_dir.glob("fleet_shared_w*.pt"):
        old.unlink()
    return Progress(digest)
