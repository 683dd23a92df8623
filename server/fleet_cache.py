"""Finished fleet results, cached by everything they depend on, so a re-run sweep skips done points.

A fleet run is determined by the model it receives (``coordinator.model_key``: the coordinator's
cache key, or for iteration 0 the pre-training's, which LRP and IMP share), the pruning iteration,
the fleet settings and the seed: the same inputs give the same ``nodes.csv``.
Only runs in which every node finished are stored; a run with failed nodes is run again next time.
Deadlines are left out of the key: they decide whether a run finishes, not what it computes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from swarm.nodes import io
from swarm.nodes.device import as_simulated
from swarm.nodes.plan import on_gpu
from swarm.nodes.protocol import NODES_CSV, SHARED_MODEL

FILES = (NODES_CSV,)
OPTIONAL = (SHARED_MODEL,)  # only under FedAvg
# Bump when the meaning of cached fleet results changes, so that old entries are not reused
# (2: nodes built their data with label groups re-ordered before this; 3: received rows, new
# on-device training, availability lined up with the run; 4: fleet.new_class_outputs, reset;
# 5: nodes train and evaluate in channels-last, swarm.nodes.layout; 6: the shared model scored,
# fleet.loss=masked pushes down the outputs outside the deployed task).
CACHE_VERSION = 6
NOT_IN_KEY = ("join_timeout_s", "window_timeout_s", "checkpoint", "ray")  # where it runs, not what


def fleet_key(model_key: str, iteration: int, fleet: Mapping[str, Any], seed: int) -> str:
    settings = {k: v for k, v in as_simulated(fleet).items() if k not in NOT_IN_KEY}
    if not any((settings.get("faults") or {}).values()):  # no fault injected: as before faults existed
        settings.pop("faults", None)
    if on_gpu(fleet):  # where it runs changes float rounding only there; CPU keys stay as they were
        settings["device"] = "cuda"
    blob = {"version": CACHE_VERSION, "coordinator": model_key, "iteration": int(iteration),
            "fleet": settings, "seed": int(seed)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def _directory(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / "fleet" / key


def restore(cache_dir: Path, key: str, run_dir: Path) -> bool:
    """Copy a finished result into ``run_dir``; False when the cache does not hold it."""
    source = _directory(cache_dir, key)
    if not all((source / name).exists() for name in FILES):
        return False
    for name in FILES + OPTIONAL:
        if (source / name).exists():
            io.write_text(run_dir / name, (source / name).read_text())
        else:
            (run_dir / name).unlink(missing_ok=True)
    return True


def store(cache_dir: Path, key: str, run_dir: Path) -> None:
    target = _directory(cache_dir, key)
    for name in FILES + OPTIONAL:
        if (run_dir / name).exists():
            io.write_text(target / name, (run_dir / name).read_text())
