"""Every cache, in one place: how each kind of entry is keyed and versioned, where it lives, the
lock that makes parallel jobs compute it once, and how a finished fleet's result is stored.

The kinds, and what each entry depends on (its key; never where data lives or what runs it):

* ``pretrain``: the pre-trained model (iteration 0) of a setting: scenario, pre-training, model,
  training settings, data, seed. LRP and IMP share it, and what is computed from it.
* ``coordinator``: Algorithm 1's iterations: the pre-training's parts plus the pruning criterion
  and its settings (a criterion's revision above 1 included) and the cut's settings, not the
  number of iterations (a longer run extends a shorter one).
* ``reference``: one iteration's reference adaptation: the model's key, the iteration, its
  training settings, the evaluation subsets, the mode, the reset of new classes' outputs.
* ``fleet``: a finished fleet's ``nodes.csv`` (and the shared model's scores): the received
  model's key, the iteration, the fleet settings as simulated, the seed. Only runs in which every
  node finished are stored; deadlines are left out (they decide whether a run finishes, not what
  it computes).

A key is the first 16 hex digits of the sha256 of its parts with the kind's version: bump a
version when the meaning of its entries changes, so that old entries are not reused. This module
imports no torch (``python -m swarm.simulate`` restores and stores fleet results with it).
"""

from __future__ import annotations

import hashlib
import json
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Mapping

from swarm.nodes import io
from swarm.nodes.device import as_simulated
from swarm.nodes.settings import FleetConfig, to_plain
from swarm.nodes.run_folder import NODES_CSV, SHARED_MODEL
from swarm.server.locks import held

VERSIONS = {
    # 2: models train, evaluate and explain in channels-last on the CPU (swarm.nodes.layout).
    "pretrain": 2,
    "coordinator": 2,
    # 2: new classes' outputs reset before adapting (reference.new_class_outputs).
    "reference": 2,
    # 2: nodes built their data with label groups re-ordered before this; 3: received rows, new
    # on-device training, availability lined up with the run; 4: fleet.new_class_outputs, reset;
    # 5: nodes train and evaluate in channels-last, swarm.nodes.layout; 6: the shared model scored,
    # fleet.loss=masked pushes down the outputs outside the deployed task; 7: the device's link
    # (the model's and the update's transfers in each window; nodes.csv's link columns); 8: a
    # transfer's bytes count each distinct object of Flower's message once; 9: the nodes' fused Adam
    # (float rounding); 10: nodes.csv's memory_mb and step_flops, device batch sizes and flash.
    "fleet": 10,
}
LOCK = ".lock"
FLEET_FILES = (NODES_CSV,)
FLEET_OPTIONAL = (SHARED_MODEL,)  # only when the strategy shares a model
NOT_IN_FLEET_KEY = ("join_timeout_s", "window_timeout_s", "checkpoint", "ray")  # where it runs, not what


def key(kind: str, parts: Mapping[str, Any]) -> str:
    """The key of an entry of ``kind`` whose result depends on ``parts`` (JSON-safe values)."""
    blob = {"version": VERSIONS[kind], **parts}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def folder(cache_dir: Path | str, kind: str, name: str) -> Path:
    """Where the entry ``name`` (its key, with a readable prefix) of ``kind`` lives."""
    return Path(str(cache_dir)) / kind / name


def entry(directory: Path, what: str) -> AbstractContextManager[None]:
    """Hold the cache entry in ``directory`` (created if missing), so that parallel sweep jobs
    compute a shared entry once; ``what`` names it in the log line a waiting job prints."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return held(directory / LOCK, f"another job that computes {what} ({directory})")


def fleet_identity(record: Mapping[str, Any]) -> dict[str, Any]:
    """What of a fleet's settings (their plain form: a plan's, or a run record's) decides its
    result: the fleet cache's key, and what groups results in a report. A setting added later is
    left out at its default, so results from before it keep their key and their group."""
    keyed = {k: v for k, v in as_simulated(record).items() if k not in NOT_IN_FLEET_KEY}
    if not any((keyed.get("faults") or {}).values()):  # no fault injected: as before faults existed
        keyed.pop("faults", None)
    if isinstance(keyed.get("participation"), float) and keyed["participation"] == 1.0:  # every node takes part
        keyed.pop("participation")
    if keyed.get("prox_mu") == 0:  # no proximal term
        keyed.pop("prox_mu")
    trace = keyed.pop("availability", None) or {}
    if trace.get("trace") is not None:  # a trace keys the fleet by its contents, wherever it lies
        keyed["availability_trace"] = trace.get("digest", "")
    return keyed


def fleet_key(model_key: str, iteration: int, fleet: FleetConfig, seed: int) -> str:
    keyed = fleet_identity(to_plain(fleet))
    if fleet.on_gpu:  # where it runs changes float rounding only there; CPU keys stay as they were
        keyed["device"] = "cuda"
    return key("fleet", {"coordinator": model_key, "iteration": int(iteration), "fleet": keyed,
                         "seed": int(seed)})


def restore_fleet(cache_dir: Path, fleet_key: str, run_dir: Path) -> bool:
    """Copy a finished result into ``run_dir``; False when the cache does not hold it."""
    source = folder(cache_dir, "fleet", fleet_key)
    if not all((source / name).exists() for name in FLEET_FILES):
        return False
    for name in FLEET_FILES + FLEET_OPTIONAL:
        if (source / name).exists():
            io.write_bytes(run_dir / name, (source / name).read_bytes())  # bytes: as the run wrote them
        else:
            (run_dir / name).unlink(missing_ok=True)
    return True


def store_fleet(cache_dir: Path, fleet_key: str, run_dir: Path) -> None:
    """Keep a finished fleet's result (every node finished) for the next run with the same key."""
    target = folder(cache_dir, "fleet", fleet_key)
    for name in FLEET_FILES + FLEET_OPTIONAL:
        if (run_dir / name).exists():
            io.write_bytes(target / name, (run_dir / name).read_bytes())
