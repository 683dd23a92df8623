"""Writing the nodes' data folders and the server's evaluation set from the scenario's data.

The coordinator's side of :mod:`swarm.nodes.local_data` (which defines the folder's format and
reads it on the device): each node's folder holds what its stream brings, P for replay in
continual scenarios, and the test subsets, written once from the fleet plan; the server keeps its
own copy of the test subsets to score the shared model on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from swarm.nodes import io
from swarm.nodes.drift import F, P
from swarm.nodes.evaluation import SETS
from swarm.nodes.fleet_plan import FleetPlan
from swarm.nodes.images import LabeledImages
from swarm.nodes.local_data import FORMAT, MANIFEST, _digest, node_folder, stream_of
from swarm.server.data.build import ScenarioData
from swarm.server.data.evaluation_sets import test_sets


def _raw(dataset: Dataset, i: int) -> tuple[torch.Tensor, int]:
    """The stored uint8 image and target of sample ``i`` of a LabeledImages, or a Subset or
    ConcatDataset of them (the test sets)."""
    if isinstance(dataset, Subset):
        return _raw(dataset.dataset, dataset.indices[i])
    if isinstance(dataset, ConcatDataset):
        part = int(np.searchsorted(dataset.cumulative_sizes, i, side="right"))
        start = dataset.cumulative_sizes[part - 1] if part else 0
        return _raw(dataset.datasets[part], i - start)
    if isinstance(dataset, LabeledImages):
        return dataset.images[int(dataset.indices[i])], int(dataset.targets[i])
    raise TypeError(f"cannot read raw samples of a {type(dataset).__name__}")


def _samples(dataset: Dataset, indices: np.ndarray) -> dict[str, torch.Tensor]:
    pairs = [_raw(dataset, int(i)) for i in indices]
    if not pairs:
        return {"images": torch.zeros(0, 0, 0, 0, dtype=torch.uint8), "targets": torch.zeros(0, dtype=torch.int64)}
    return {"images": torch.stack([image for image, _ in pairs]).contiguous(),
            "targets": torch.as_tensor([t for _, t in pairs], dtype=torch.int64)}


def _pool(dataset: LabeledImages, positions: np.ndarray) -> dict[str, torch.Tensor]:
    positions = np.unique(np.asarray(positions, dtype=np.int64))
    return {"positions": torch.as_tensor(positions), **_samples(dataset, positions)}


def write_fleet_data(plan: FleetPlan, data: ScenarioData, root: Path, *, inner: str = "",
                     progress=None) -> list[Path]:
    """Write every node's folder under ``root`` (``node_NNN``, or ``node_NNN/<inner>``); returns them.
    Each folder's manifest is written last, so a folder cut short by a kill is never taken as whole.

    The files every node holds alike (the test sets; P for replay) are written once and
    hard-linked into the other folders where the filesystem allows (copied where not): each
    folder is complete on its own, to be copied to its device."""
    root = Path(root)
    p_train, f_train = data.datasets["P"]["train"], data.datasets["F"]["train"]
    test_blob = _test_blob(plan, data)
    # Continual devices ship with P for replay; in finetune scenarios a replay buffer fills from
    # the stream's own P-like samples.
    replay = plan.continual
    shared: dict[str, Any] = {"test.pt": test_blob}
    if replay:
        shared["replay.pt"] = _pool(p_train, np.arange(len(p_train)))
    first: dict[str, tuple[Path, str]] = {}
    folders = []
    for partition in range(len(plan.nodes)):
        folder = node_folder(root, partition) / inner
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MANIFEST).unlink(missing_ok=True)
        _, roles, positions = stream_of(plan, partition, len(p_train))
        p_positions = positions[roles == P] if not replay else np.zeros(0, dtype=np.int64)
        digests = {"stream.pt": _save(folder / "stream.pt", {"P": _pool(p_train, p_positions),
                                                            "F": _pool(f_train, positions[roles == F])})}
        for name, blob in shared.items():
            if name in first:
                _link(first[name][0], folder / name)
                digests[name] = first[name][1]
            else:
                digests[name] = _save(folder / name, blob)
                first[name] = (folder / name, digests[name])
        io.write_json(folder / MANIFEST, {
            "format": FORMAT, "partition": partition, "data_id": plan.data_id(partition),
            "image_size": data.image_size, "channels": data.channels, "num_outputs": data.num_outputs,
            "p_train_size": len(p_train), "replay": replay, "files": digests})
        folders.append(folder)
        if progress is not None:
            progress(partition + 1, len(plan.nodes))
    return folders


def _test_blob(plan: FleetPlan, data: ScenarioData) -> dict[str, Any]:
    """The test subsets of the plan (:func:`swarm.server.data.evaluation_sets.test_sets`) as raw samples: test.pt."""
    tests = test_sets(data, plan.continual, plan.fleet.eval_samples)
    blob: dict[str, Any] = {name: _samples(tests.sets[name], np.arange(len(tests.sets[name])))
                            for name in SETS if name in tests.sets}
    blob["f_groups"] = torch.as_tensor(np.asarray(tests.f_groups, dtype=np.int64))
    blob["f_group_names"] = list(tests.f_group_names)
    return blob


def write_evaluation_set(plan: FleetPlan, data: ScenarioData, folder: Path, like: Path | None = None) -> Path:
    """The server's own copy of the test subsets every node is scored on (``folder/test.pt`` and its
    manifest, written last): what the shared model is scored on after every window, so its numbers
    compare with the nodes' and the reference's. A folder already written for this plan's test
    subsets (:meth:`swarm.nodes.fleet_plan.FleetPlan.evaluation_id`) is kept; ``like``, such a folder written
    for another plan of the same run, is hard-linked instead of written again."""
    folder = Path(folder)

    def current(where: Path) -> bool:
        try:
            return json.loads((where / MANIFEST).read_text()).get("evaluation_id") == plan.evaluation_id()
        except (OSError, ValueError, AttributeError):
            return False

    if current(folder):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)
    if like is not None and current(Path(like)):
        _link(Path(like) / "test.pt", folder / "test.pt")
        _link(Path(like) / MANIFEST, folder / MANIFEST)
        return folder
    digest = _save(folder / "test.pt", _test_blob(plan, data))
    io.write_json(folder / MANIFEST, {"format": FORMAT, "evaluation_id": plan.evaluation_id(),
                                      "image_size": data.image_size, "channels": data.channels,
                                      "num_outputs": data.num_outputs, "files": {"test.pt": digest}})
    return folder


def _save(path: Path, blob: Any) -> str:
    io.save_tensors(path, blob)
    return _digest(path)


def _link(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (a copy where links are impossible), atomically."""
    temporary = target.with_name(target.name + ".link")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        temporary.write_bytes(source.read_bytes())
    os.replace(temporary, target)
