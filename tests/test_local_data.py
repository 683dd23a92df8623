"""Each device owns its data: node folders written from the plan, read back bit for bit, checked."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from swarm import partition as partition_cli
from swarm.nodes import io
from swarm.nodes.drift import F, P
from swarm.nodes.errors import SwarmError
from swarm.nodes.fleet_plan import FleetPlan
from swarm.nodes.local_data import load_node_data, simulated_folders, stream_of
from swarm.server import fleet
from tests.conftest import FLEET_TINY, FakeGrid, compose_config, nodes_of, write_fleet_plan

CONTINUAL = ["scenario.mode=continual", "scenario.split_by=class", "scenario.T=[]",
             "scenario.P=[circle,square,triangle,plus]", "scenario.F=[ring,star]"]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A continual plan of 3 nodes (so replay.pt exists), its scenario data and its node folders."""
    path, data = write_fleet_plan(compose_config(*FLEET_TINY, *CONTINUAL, "fleet.nodes=3"),
                                  tmp_path_factory.mktemp("local"), "run", windows=2)
    return FleetPlan.load(path), data, nodes_of(path)


def folder(root, partition):
    return simulated_folders(root, partition)[0]


def test_a_node_folder_holds_its_stream_bit_for_bit(written):
    plan, data, root = written
    for partition in range(3):
        mine = load_node_data(folder(root, partition), partition=partition, data_id=plan.data_id(partition))
        _, roles, positions = stream_of(plan, partition, len(data.datasets["P"]["train"]))
        for role, name in ((P, "P"), (F, "F")):
            for position in positions[roles == role][:20]:
                x, y = mine.sample(role, position)
                x0, y0 = data.datasets[name]["train"][int(position)]
                assert torch.equal(x, x0) and int(y) == int(y0)
        # Its share of F and nothing of the others' shares.
        assert sorted(mine.pools[F].positions.tolist()) == sorted(plan.node(partition).f_indices)
        assert mine.p_train_size == len(data.datasets["P"]["train"])  # continual: ships with all of P


def test_a_batch_is_its_samples_stacked_in_order_bit_for_bit(written):
    """A step gathers its batch in one call per role; it must equal the samples one by one."""
    plan, data, root = written
    mine = load_node_data(folder(root, 0), partition=0, data_id=plan.data_id(0))
    _, roles, positions = stream_of(plan, 0, len(data.datasets["P"]["train"]))
    picks = np.random.default_rng(0).choice(len(roles), 12)  # mixed roles, repeats, any order
    inputs, targets = mine.batch(roles[picks], positions[picks])
    one_by_one = [mine.sample(role, position) for role, position in zip(roles[picks], positions[picks])]
    assert len(set(roles[picks].tolist())) == 2
    assert torch.equal(inputs, torch.stack([x for x, _ in one_by_one]))
    assert torch.equal(targets, torch.stack([y for _, y in one_by_one]))


def test_shared_files_are_linked_not_copied(written):
    _, _, root = written
    for name in ("test.pt", "replay.pt"):
        inodes = {(folder(root, p) / name).stat().st_ino for p in range(3)}
        assert len(inodes) == 1, name
    assert len({(folder(root, p) / "stream.pt").stat().st_ino for p in range(3)}) == 3


def test_a_folder_for_another_node_or_plan_is_refused(written):
    plan, _, root = written
    with pytest.raises(SwarmError, match="belongs to partition 1, this node is partition 0"):
        load_node_data(folder(root, 1), partition=0, data_id=plan.data_id(0))
    with pytest.raises(SwarmError, match="written for another plan"):
        load_node_data(folder(root, 0), partition=0, data_id="0" * 16)
    with pytest.raises(SwarmError, match="no readable manifest.json"):
        load_node_data(root / "nowhere", partition=0, data_id=plan.data_id(0))


def _copy(written, tmp_path):
    import shutil

    plan, _, root = written
    target = tmp_path / "node"
    shutil.copytree(folder(root, 0), target)
    return plan, target


def test_a_damaged_file_is_refused(written, tmp_path):
    plan, target = _copy(written, tmp_path)
    blob = bytearray((target / "stream.pt").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (target / "stream.pt").write_bytes(bytes(blob))
    with pytest.raises(SwarmError, match="stream.pt does not match its digest"):
        load_node_data(target, partition=0, data_id=plan.data_id(0))


def test_a_well_formed_file_with_bad_values_is_refused(written, tmp_path):
    """Matching digests prove only that the manifest and files agree; the contents are checked too."""
    from swarm.nodes.local_data import _digest

    plan, target = _copy(written, tmp_path)
    stream = io.load_tensors(target / "stream.pt")
    stream["F"]["targets"] = stream["F"]["targets"] + 1000
    io.save_tensors(target / "stream.pt", stream)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["files"]["stream.pt"] = _digest(target / "stream.pt")
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SwarmError, match="stream.pt F: a target is not in 0..11"):
        load_node_data(target, partition=0, data_id=plan.data_id(0))


def test_no_message_names_a_server_path(written, tmp_path, task_identity):
    """Everything a node needs travels in the message; nothing in it is a path of the server's."""
    plan, _, root = written
    path = root.parent / "fleet_plan.json"
    grid = FakeGrid(3, root=root)
    fleet.run_fleet(grid, path, join_timeout_s=5)
    adapt = [m for m in grid.sent if m.metadata.message_type == "train.adapt"]
    assert adapt
    for message in adapt:
        for record in ("config", "task"):
            for value in message.content[record].values():
                assert str(root.parent) not in str(value) and "fleet_plan" not in str(value)


def test_swarm_partition_writes_every_folder(written, tmp_path, capsys):
    plan, _, root = written
    assert partition_cli.main([str(root.parent), str(tmp_path / "out")]) == 0
    for p in range(3):
        ours = load_node_data(tmp_path / "out" / f"node_{p:03d}", partition=p, data_id=plan.data_id(p))
        theirs = load_node_data(folder(root, p), partition=p, data_id=plan.data_id(p))
        assert np.array_equal(ours.pools[P].positions, theirs.pools[P].positions)
        assert torch.equal(ours.tests.sets["PF"].images.images, theirs.tests.sets["PF"].images.images)
    assert "3 node folders" in capsys.readouterr().out
    assert partition_cli.main([str(tmp_path / "nothing"), str(tmp_path / "out2")]) == 2
    assert "no fleet plan at" in capsys.readouterr().err
