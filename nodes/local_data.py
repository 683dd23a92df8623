"""A node's own data: the samples one device holds, written once from the fleet plan, read by the node.

A real device does not see the scenario's dataset; it holds what its stream brings (P-like samples
before its drift time, then its share of F), the sample of P it ships with for replay (continual
scenarios), and the test subsets it is evaluated on. ``swarm.partition`` writes exactly that into
one folder per node; the ClientApp reads it from its ``data-path`` (``node_config``), so a device
needs no other file of the run. In simulation the same folders are written under the run folder.

A node folder::

    manifest.json   format, partition, data_id (what plan and scenario it was written for),
                    image size, channels, outputs, P's training-split size, sha256 of each file
    stream.pt       {"P": pool, "F": pool}: the stream's samples (P: those not already in replay.pt)
    replay.pt       pool: P's training split, for replay (continual scenarios only)
    test.pt         {"P": set, "F": set, ["PF": set,] "f_groups", "f_group_names"}

A pool is ``{"positions", "images", "targets"}``: training-split positions (sorted, the plan's
and the stream's coordinates), raw ``uint8`` images (N, C, H, W) and network targets; a set is
``{"images", "targets"}`` in evaluation order. Images are stored raw and normalised on access by
the same :class:`swarm.nodes.images.LabeledImages` as everywhere else, so a node on its folder
computes bit for bit what it would on the full dataset. Files load with ``weights_only=True``;
the manifest's digests and every shape, type and range are checked before use (a data folder is
not trusted), and a wrong or damaged folder is a one-line :class:`swarm.nodes.errors.SwarmError`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from swarm.nodes import io
from swarm.nodes.drift import F, P, node_stream
from swarm.nodes.errors import SwarmError
from swarm.nodes.evaluation import SETS, TestSets
from swarm.nodes.fleet_plan import FleetPlan
from swarm.nodes.images import LabeledImages, TensorImages

FORMAT = 1
MANIFEST = "manifest.json"
DATA_DIR, STATE_DIR = "data", "state"  # a simulated node's folders inside its node_NNN/


def node_folder(root: Path, partition: int) -> Path:
    """Where ``swarm.partition`` and the simulation put node ``partition``'s folder under ``root``."""
    return Path(root) / f"node_{partition:03d}"


def simulated_folders(root: Path, partition: int) -> tuple[Path, Path]:
    """(data folder, state folder) of node ``partition`` under a root of simulated nodes
    (``node_NNN/data``, ``node_NNN/state``): the layout ``swarm.simulate`` makes under a run."""
    folder = node_folder(root, partition)
    return folder / DATA_DIR, folder / STATE_DIR


@dataclass
class Pool:
    """Training samples a node holds, addressed by their position in the role's training split."""

    positions: np.ndarray
    dataset: LabeledImages

    def sample(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dataset[self._local(np.asarray([position]))[0]]

    def batch(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dataset.batch(self._local(positions))

    def targets(self, positions: np.ndarray) -> np.ndarray:
        return self.dataset.targets.numpy()[self._local(positions)]

    def _local(self, positions: np.ndarray) -> np.ndarray:
        local = np.searchsorted(self.positions, positions)
        if len(positions) and (local.max(initial=0) >= len(self.positions)
                               or (self.positions[np.minimum(local, len(self.positions) - 1)] != positions).any()):
            raise SwarmError("the node's data folder lacks samples its stream needs; write it again with "
                             "python -m swarm.partition for this run")
        return local


@dataclass
class NodeData:
    """What one node holds (see the module docstring)."""

    partition: int
    data_id: str
    image_size: int
    channels: int
    num_outputs: int
    p_train_size: int
    pools: dict[int, Pool]  # by role (P, F)
    tests: TestSets

    def sample(self, role: int, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pools[role].sample(int(position))

    def targets(self, role: int, positions: np.ndarray) -> np.ndarray:
        return self.pools[role].targets(np.asarray(positions, dtype=np.int64))

    def batch(self, roles: np.ndarray, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples at ``positions`` of the roles ``roles`` (one each), stacked in that order:
        one gather per role."""
        roles, positions = np.asarray(roles), np.asarray(positions, dtype=np.int64)
        inputs = targets = None
        for role in np.unique(roles):
            where = np.flatnonzero(roles == role)
            x, y = self.pools[int(role)].batch(positions[where])
            if inputs is None:
                inputs, targets = x.new_empty((len(roles), *x.shape[1:])), y.new_empty(len(roles))
            inputs[torch.from_numpy(where)], targets[torch.from_numpy(where)] = x, y
        return inputs, targets


def stream_of(plan: FleetPlan, partition: int, p_train_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Node ``partition``'s stream (:func:`swarm.nodes.drift.node_stream`) from the plan."""
    return node_stream(plan.node(partition), rate=plan.fleet.stream_rate,
                       events=max(len(plan.f_tasks), 1), event_gap_s=plan.event_gap_s, p_train_size=p_train_size)


def load_evaluation_set(folder: Path, evaluation_id: str) -> TestSets:
    """The server's test subsets from ``folder`` (:func:`write_evaluation_set`), checked as a node's
    folder is: digest, the plan's evaluation id, every shape, type and range."""
    folder = Path(folder)
    check = _Checks(folder, fix="write it again with python -m swarm.partition for this plan")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        check.fail(f"no readable {MANIFEST} ({type(error).__name__})")
    check.that(isinstance(manifest, dict) and manifest.get("format") == FORMAT, f"{MANIFEST} is not format {FORMAT}")
    check.that(manifest.get("evaluation_id") == evaluation_id, "it was written for other test subsets than the plan's")
    path = folder / "test.pt"
    check.that(path.is_file(), "test.pt is missing")
    check.that(_digest(path) == (manifest.get("files") or {}).get("test.pt"),
               f"test.pt does not match its digest in {MANIFEST} (damaged or altered)")
    return _checked_tests(check, io.load_tensors(path), int(manifest["channels"]), int(manifest["num_outputs"]),
                          int(manifest["image_size"]))


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


# ---------------------------------------------------------------------------- reading

class _Checks:
    """Raise one line naming the folder and what is wrong with it."""

    def __init__(self, folder: Path, fix: str = "write it again with python -m swarm.partition") -> None:
        self.folder, self.fix = folder, fix

    def fail(self, what: str) -> None:
        raise SwarmError(f"data folder {self.folder}: {what}; {self.fix}")

    def that(self, condition: bool, what: str) -> None:
        if not condition:
            self.fail(what)


def load_node_data(folder: Path, *, partition: int, data_id: str) -> NodeData:
    """Read and check node ``partition``'s folder, written for ``data_id`` (see the module docstring)."""
    folder = Path(folder)
    check = _Checks(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise SwarmError(f"node data folder {folder}: no readable {MANIFEST} ({type(error).__name__}); "
                         "write it with python -m swarm.partition") from None
    check.that(isinstance(manifest, dict) and manifest.get("format") == FORMAT,
               f"{MANIFEST} is not format {FORMAT}")
    check.that(manifest.get("partition") == partition, f"it belongs to partition {manifest.get('partition')!r}, "
               f"this node is partition {partition}")
    check.that(manifest.get("data_id") == data_id, "it was written for another plan, seed or scenario than the "
               "server runs")
    files = manifest.get("files")
    wanted = ["stream.pt", "test.pt"] + (["replay.pt"] if manifest.get("replay") else [])
    check.that(isinstance(files, dict) and all(isinstance(files.get(n), str) for n in wanted),
               f"{MANIFEST} does not list {', '.join(wanted)}")
    blobs = {}
    for name in wanted:
        path = folder / name
        check.that(path.is_file(), f"{name} is missing")
        check.that(_digest(path) == files[name], f"{name} does not match its digest in {MANIFEST} (damaged or altered)")
        blobs[name] = io.load_tensors(path)
    size, channels = int(manifest["image_size"]), int(manifest["channels"])
    outputs, p_size = int(manifest["num_outputs"]), int(manifest["p_train_size"])
    stream = blobs["stream.pt"]
    check.that(isinstance(stream, dict) and set(stream) == {"P", "F"}, "stream.pt does not hold pools P and F")
    p_parts = [_checked_pool(check, "stream.pt P", stream["P"], channels, outputs)]
    if "replay.pt" in blobs:
        p_parts.append(_checked_pool(check, "replay.pt", blobs["replay.pt"], channels, outputs))
        check.that(len(p_parts[-1][0]) == p_size, "replay.pt does not hold P's whole training split")
    pools = {P: _merged(p_parts, size), F: _merged([_checked_pool(check, "stream.pt F", stream["F"], channels,
                                                                  outputs)], size)}
    check.that(not len(pools[P].positions) or pools[P].positions[-1] < p_size, "a P position is out of range")
    return NodeData(partition, data_id, size, channels, outputs, p_size, pools,
                    _checked_tests(check, blobs["test.pt"], channels, outputs, size))


def _checked_samples(check: _Checks, name: str, blob: Any, channels: int, outputs: int) -> tuple[torch.Tensor, torch.Tensor]:
    check.that(isinstance(blob, dict), f"{name} is not a record")
    images, targets = blob.get("images"), blob.get("targets")
    check.that(isinstance(images, torch.Tensor) and isinstance(targets, torch.Tensor), f"{name} lacks images or targets")
    check.that(targets.dtype == torch.int64 and targets.dim() == 1, f"{name}: targets are not a vector of int64")
    if len(targets):
        check.that(images.dtype == torch.uint8 and images.dim() == 4 and images.shape[1] == channels,
                   f"{name}: images are not uint8 (N, {channels}, H, W)")
        check.that(images.shape[0] == len(targets), f"{name}: {images.shape[0]} images for {len(targets)} targets")
        check.that(int(targets.min()) >= 0 and int(targets.max()) < outputs, f"{name}: a target is not in 0..{outputs - 1}")
    return images, targets


def _checked_pool(check: _Checks, name: str, blob: Any, channels: int, outputs: int):
    images, targets = _checked_samples(check, name, blob, channels, outputs)
    positions = blob.get("positions")
    check.that(isinstance(positions, torch.Tensor) and positions.dtype == torch.int64 and positions.dim() == 1
               and len(positions) == len(targets), f"{name}: positions are not one int64 per sample")
    positions = positions.numpy()
    check.that(bool((np.diff(positions) > 0).all()) and (not len(positions) or positions[0] >= 0),
               f"{name}: positions are not sorted, distinct and non-negative")
    return positions, images, targets


def _merged(parts: list[tuple[np.ndarray, torch.Tensor, torch.Tensor]], image_size: int) -> Pool:
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return Pool(np.zeros(0, dtype=np.int64), LabeledImages(TensorImages(torch.zeros(0, 1, 1, 1, dtype=torch.uint8)),
                                                               np.zeros(0), np.zeros(0), image_size))
    positions = np.concatenate([p[0] for p in parts])
    order = np.argsort(positions, kind="stable")
    positions = positions[order]
    if len(np.unique(positions)) != len(positions):
        raise SwarmError("node data: a P sample is both in the stream and in replay.pt; write the folder again")
    images = torch.cat([p[1] for p in parts])[torch.as_tensor(order)]
    targets = torch.cat([p[2] for p in parts])[torch.as_tensor(order)]
    return Pool(positions, LabeledImages(TensorImages(images), np.arange(len(positions)), targets.numpy(), image_size))


def _checked_tests(check: _Checks, blob: Any, channels: int, outputs: int, image_size: int) -> TestSets:
    check.that(isinstance(blob, dict) and "P" in blob and "F" in blob, "test.pt does not hold the sets P and F")
    sets = {}
    for name in SETS:
        if name in blob:
            images, targets = _checked_samples(check, f"test.pt {name}", blob[name], channels, outputs)
            if not len(targets):
                images = torch.zeros(0, channels, image_size, image_size, dtype=torch.uint8)
            sets[name] = LabeledImages(TensorImages(images), np.arange(len(targets)), targets.numpy(), image_size)
    groups, names = blob.get("f_groups"), blob.get("f_group_names")
    check.that(isinstance(groups, torch.Tensor) and groups.dtype == torch.int64 and len(groups) == len(sets["F"]),
               "test.pt: f_groups is not one int64 per F test sample")
    check.that(isinstance(names, list) and all(isinstance(n, str) for n in names), "test.pt: f_group_names is not a list of names")
    check.that(not len(groups) or (int(groups.min()) >= -1 and int(groups.max()) < len(names)),
               "test.pt: an F group is out of range")
    return TestSets(sets, groups.numpy(), list(names))
