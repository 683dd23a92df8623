"""Shared fixtures: composed configs, and small datasets written in each source's real on-disk format."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from swarm.server.data.sources.cifar import CIFAR10_CLASSES, CIFAR100_CLASSES, CIFAR100_SUPERCLASSES

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
REPO = Path(__file__).resolve().parents[1]


def set_task_identity(monkeypatch) -> None:
    """Messages take their run and sender ids from Flower's TaskIdentity, which an engine sets;
    tests that send Messages without an engine set them with this."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


@pytest.fixture
def task_identity(monkeypatch):
    """:func:`set_task_identity` for one test."""
    set_task_identity(monkeypatch)


@pytest.fixture(scope="module")
def module_task_identity():
    """:func:`set_task_identity` for a module's fixtures that run fleets once for many tests."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        set_task_identity(monkeypatch)
        yield


def compose_config(*overrides: str, config_name: str = "config"):
    """Compose the project's config with overrides, as the command line would (checked, with its
    device profiles loaded)."""
    from swarm.config import compose_config as compose_prepared

    return compose_prepared(list(overrides), config_name=config_name)


@pytest.fixture
def make_cfg():
    return compose_config


def run_module(module: str, *args: str, cwd: Path | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` as a user would, capturing output."""
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env=env, timeout=timeout)


# ----------------------------------------------------------------------------- CIFAR pickle batches
def _pixels(labels: np.ndarray) -> np.ndarray:
    """Images whose first pixel encodes the label and the index, so tests can check what was loaded."""
    rows = np.zeros((len(labels), 3072), dtype=np.uint8)
    rows[:, 0] = labels
    rows[:, 1] = np.arange(len(labels)) % 256
    return rows


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


@pytest.fixture
def cifar10_root(tmp_path: Path) -> Path:
    """CIFAR-10's python batches: 5 training batches of 10 images per class each, and a test batch."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b in range(1, 6):
        labels = np.repeat(np.arange(10), 10)
        _dump(folder / f"data_batch_{b}", {b"batch_label": f"batch {b}".encode(), b"labels": labels.tolist(),
                                            b"data": _pixels(labels), b"filenames": [b"x.png"] * len(labels)})
    labels = np.repeat(np.arange(10), 20)
    _dump(folder / "test_batch", {b"labels": labels.tolist(), b"data": _pixels(labels)})
    _dump(folder / "batches.meta", {b"label_names": [c.encode() for c in CIFAR10_CLASSES],
                                     b"num_cases_per_batch": 100})
    return tmp_path


@pytest.fixture
def cifar100_root(tmp_path: Path) -> Path:
    """CIFAR-100's python files: train (6 per class), test (2 per class), meta with both label lists."""
    folder = tmp_path / "cifar-100-python"
    folder.mkdir(parents=True)
    coarse_names = sorted(CIFAR100_SUPERCLASSES)
    coarse_of = {c: coarse_names.index(g) for g, members in CIFAR100_SUPERCLASSES.items() for c in members}
    for split, per_class in (("train", 6), ("test", 2)):
        fine = np.repeat(np.arange(100), per_class)
        coarse = [coarse_of[CIFAR100_CLASSES[f]] for f in fine]
        _dump(folder / split, {b"fine_labels": fine.tolist(), b"coarse_labels": coarse, b"data": _pixels(fine)})
    _dump(folder / "meta", {b"fine_label_names": [c.encode() for c in CIFAR100_CLASSES],
                            b"coarse_label_names": [c.encode() for c in coarse_names]})
    return tmp_path


# ----------------------------------------------------------------------------- IDX (Fashion-MNIST)
def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)


def write_fmnist(folder: Path, per_class_train: int = 12, per_class_test: int = 4, compress: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, per_class in (("train", per_class_train), ("t10k", per_class_test)):
        labels = np.repeat(np.arange(10), per_class)
        images = np.zeros((len(labels), 28, 28), dtype=np.uint8)
        images[:, 0, 0] = labels
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)
    return folder


# ----------------------------------------------------------------------------- image trees
def write_image(path: Path, value: int, size: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size + 3, 3), value, dtype=np.uint8)).save(path)


@pytest.fixture
def domainnet_root(tmp_path: Path) -> Path:
    """A DomainNet tree: 3 classes x 6 domains, 4 train + 2 test JPEGs each, with official split files."""
    from swarm.server.data.sources.domainnet import DOMAINS, classes

    root = tmp_path / "domainnet"
    names = classes()
    chosen = [names.index("aircraft_carrier"), names.index("The_Eiffel_Tower"), names.index("zigzag")]
    for domain in DOMAINS:
        for split, count in (("train", 4), ("test", 2)):
            lines = []
            for label in chosen:
                for i in range(count):
                    relative = f"{domain}/{names[label]}/{domain}_{label:03d}_{split}{i}.jpg"
                    write_image(root / relative, 40 * (i + 1))
                    lines.append(f"{relative} {label}")
            (root / f"{domain}_{split}.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def write_fleet_plan(cfg, workdir: Path, run_name: str, windows: int, pretrain_epochs: int = 0):
    """A fleet plan for ``cfg`` starting from an untrained model (no coordinator), or one trained on P
    for ``pretrain_epochs``: (plan path, data)."""
    import dataclasses

    import torch

    from swarm.config import data_options, scenario_of
    from swarm.nodes import checkpoints
    from swarm.nodes.models import build_model
    from swarm.server.data.build import build
    from swarm.server.plan_drawing import plan_from_config

    data = build(scenario_of(cfg), data_options(cfg))
    torch.manual_seed(0)
    model = build_model(cfg.model, data.num_outputs, data.channels, data.image_size)
    if pretrain_epochs:
        from swarm.nodes.training import TrainSettings, fit

        fit(model, data.datasets["P"]["train"], data.datasets["P"]["val"],
            TrainSettings(max_epochs=pretrain_epochs, patience=pretrain_epochs, device="cpu"))
        model.cpu()
    arch = checkpoints.architecture(model, cfg.model, data.num_outputs, data.channels, data.image_size)
    checkpoints.save(workdir / "start.pt", model, arch)
    run = workdir / run_name
    cfg = dataclasses.replace(cfg, fleet=dataclasses.replace(cfg.fleet, windows=windows))
    plan = plan_from_config(cfg, data, checkpoint=workdir / "start.pt", run_dir=run)
    plan.save(run / "fleet_plan.json")
    from swarm.nodes.local_data import DATA_DIR
    from swarm.nodes.run_folder import EVALUATION_DIR
    from swarm.server.node_folders import write_evaluation_set, write_fleet_data

    write_fleet_data(plan, data, run / "nodes", inner=DATA_DIR)  # each node's own folder, as in simulation
    write_evaluation_set(plan, data, run / EVALUATION_DIR)  # the server's, for the shared model
    return run / "fleet_plan.json", data


# A tiny fleet on the synthetic scenario: a few samples, small images, short windows and budgets.
FLEET_TINY = ["scenario.dataset.train_per_group=8", "scenario.dataset.test_per_group=3",
              "scenario.dataset.image_size=16", "fleet.window_s=100", "fleet.stream_rate=0.2",
              "fleet.eval_samples=60", "fleet.drift.low=0", "fleet.drift.high=150", "fleet.batch_size=8",
              "fleet.budget.compute_s=0.3"]


def node_runtime(plan, partition: int):
    """Node ``partition`` of a plan of :func:`write_fleet_plan` as the fleet runs it, without Flower."""
    from swarm.nodes.node import local_runtime

    return local_runtime(plan, partition, Path(plan.run_dir) / "nodes")


def nodes_of(plan_path: Path) -> Path:
    """The nodes' own folders of a plan written by :func:`write_fleet_plan` (as in simulation)."""
    return Path(plan_path).parent / "nodes"


def use_fake_engine(monkeypatch, **grid_options) -> None:
    """Make ``swarm.simulate`` run its plans as Flower's simulation would -- the real ServerApp, one
    plan after the other -- but on a :class:`FakeGrid` (``grid_options`` as its keywords), and its
    preparation in this process rather than one of its own (the same function; a fixture's changes
    to this process reach it; the CLI tests run it in its own)."""
    from swarm import simulate
    from swarm.preparation import prepare_fleet
    from swarm.server import server_app

    def engine(plans, num_nodes, node_root, ray=None):
        for plan in plans:
            server_app.run_plan(FakeGrid(num_nodes, root=node_root, **grid_options), plan)

    monkeypatch.setattr(simulate, "_run_flower", engine)
    monkeypatch.setattr(simulate, "_prepare", prepare_fleet)


class FakeGrid:
    """Flower's Grid without an engine: each pushed message goes straight to the ClientApp, as a
    SuperNode with that partition would answer it, its ``node_config`` naming its own folders under
    ``root`` (``node_NNN/data``, ``node_NNN/state``: :func:`nodes_of` a plan of :func:`write_fleet_plan`;
    without it, ``SWARM_NODE_ROOT`` as in simulation). ``silent`` partitions answer
    who they are but no ``train.adapt`` (a hung actor, a device gone); ``tamper(reply, partition)``
    may change a reply on its way back."""

    def __init__(self, partitions: int, joined: int | None = None, silent=(), tamper=None, claims=None,
                 root: Path | None = None) -> None:
        self.ids = [10_000 + 37 * p for p in range(partitions)][: joined if joined is not None else partitions]
        self.partition = {nid: p for p, nid in enumerate(self.ids)}
        self.claims = claims or {}  # node id -> the partition it claims (default: its own)
        self.total, self.silent, self.tamper = partitions, set(silent), tamper
        self.replies = {}
        self.sent = []
        self.root = root

    def get_node_ids(self):
        return list(self.ids)

    def push_messages(self, messages):
        import uuid

        from flwr.app import Context, RecordDict

        import swarm.nodes.client_app as client_app

        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            ids.append(message.metadata.message_id)
            self.sent.append(message)
            nid = message.metadata.dst_node_id
            partition = self.partition[nid]
            if partition in self.silent and message.metadata.message_type == "train.adapt":
                continue
            claimed = self.claims.get(nid, partition)
            node_config = {"partition-id": claimed, "num-partitions": self.total}
            if self.root is not None:
                from swarm.nodes.local_data import simulated_folders

                data_dir, state_dir = simulated_folders(self.root, claimed)
                node_config.update({"data-path": str(data_dir), "state-dir": str(state_dir)})
            context = Context(run_id=1, node_id=nid, state=RecordDict(), run_config={}, node_config=node_config)
            try:
                reply = client_app.app(message, context)
            except Exception as error:  # as the engines do: the app's exception becomes an error reply
                from flwr.app import Error

                reply = client_app.Message(error=Error(code=0, reason=f"{type(error).__name__}: {error}"), reply_to=message)
            if self.tamper is not None and message.metadata.message_type == "train.adapt":
                reply = self.tamper(reply, partition)
            self.replies[message.metadata.message_id] = reply
        return ids

    def pull_messages(self, message_ids):
        return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]
class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs in the server (not even ``except Exception``)."""


class DiesInWindow2(FakeGrid):
    """The server dies after the nodes ran window 2 (index 1) but before it saw their replies."""

    def pull_messages(self, message_ids):
        replies = list(super().pull_messages(message_ids))
        if any(r.content["metrics"]["window"] == 1 for r in replies if "metrics" in r.content):
            raise Killed()
        return replies


