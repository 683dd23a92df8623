"""Algorithm 1 end to end on tiny synthetic data: outputs, cache, resume after kill -9, dry run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from swarm.config import data_options, scenario_of
from swarm.nodes import checkpoints
from swarm.server import coordinator
from swarm.server.data.build import build
from tests.conftest import REPO, run_module

TINY = ["scenario.dataset.train_per_group=8", "scenario.dataset.test_per_group=3", "scenario.dataset.image_size=16",
        "train.max_epochs=1", "prune.iterations=2", "prune.relevance_batch_size=32"]


@pytest.fixture
def tiny(make_cfg, tmp_path):
    def make(*overrides):
        return make_cfg(*TINY, f"cache_dir={tmp_path / 'cache'}", *overrides)
    return make


def test_algorithm_1_writes_every_iteration(tiny):
    cfg = tiny()
    result = coordinator.run(cfg, build(scenario_of(cfg), data_options(cfg)))
    its = result.iterations
    assert [it["iteration"] for it in its] == [0, 1, 2]
    assert its[0]["params"] > its[1]["params"] > its[2]["params"]
    assert its[0]["macs"] > its[1]["macs"] > its[2]["macs"]
    for it in its:
        assert 0 <= it["val_acc"] <= 1 and 0 <= it["test_acc"] <= 1 and it["seconds"] > 0
        assert {"epochs", "best_epoch"} <= it.keys()
    assert "score_seconds" in its[1] and "prune_seconds" in its[1]
    on_disk = json.loads((result.directory / "coordinator.json").read_text())
    assert on_disk["iterations"] == its and on_disk["pruning"] == "lrp"
    model, arch, meta = checkpoints.load(result.checkpoint(2))
    assert meta["iteration"] == 2 and sum(p.numel() for p in model.parameters()) == its[2]["params"]
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 12)


def test_cache_hit_does_no_training(tiny, monkeypatch):
    cfg = tiny("pruning=imp")
    data = build(scenario_of(cfg), data_options(cfg))
    first = coordinator.run(cfg, data)
    assert not first.cached

    def no_training(*args, **kwargs):
        raise AssertionError("a cache hit must not train")

    monkeypatch.setattr(coordinator, "fit", no_training)
    second = coordinator.run(cfg, data)
    assert second.cached and second.iterations == first.iterations
    assert coordinator.cached(tiny("pruning=imp", "prune.iterations=1")).iterations == first.iterations[:2]


def test_cache_key_covers_what_results_depend_on(tiny):
    base = coordinator.cache_key(tiny())
    for change in ("pruning=imp", "pretrain=task_only", "seed=1", "prune.ratio=0.3", "train.lr=0.001",
                   "model.widths=[8,16,32]", "scenario.dataset.train_per_group=9", "data.max_per_class=5"):
        assert coordinator.cache_key(tiny(change)) != base, change
    for same in ("data.root=/elsewhere", "train.device=cpu", "prune.dry_run=true", "data.num_workers=2",
                 "prune.iterations=7"):
        assert coordinator.cache_key(tiny(same)) == base, same


def test_a_criterion_revision_changes_its_results_key_only(tiny, monkeypatch):
    lrp, imp = coordinator.cache_key(tiny()), coordinator.cache_key(tiny("pruning=imp"))
    pretrain = coordinator.pretrain_key(tiny())
    monkeypatch.setitem(coordinator.REVISIONS, "lrp", coordinator.REVISIONS["lrp"] + 1)
    assert coordinator.cache_key(tiny()) != lrp
    assert coordinator.cache_key(tiny("pruning=imp")) == imp and coordinator.pretrain_key(tiny()) == pretrain


def test_lrp_and_imp_share_one_pre_training(tiny, monkeypatch, tmp_path):
    """IMP after LRP reuses LRP's pre-trained model, and gets exactly what it would have trained itself."""
    lrp_cfg = tiny("prune.iterations=1")
    data = build(scenario_of(lrp_cfg), data_options(lrp_cfg))
    lrp = coordinator.run(lrp_cfg, data)
    assert coordinator.pretrain_key(tiny("pruning=imp")) == coordinator.pretrain_key(lrp_cfg)
    assert coordinator.pretrain_key(tiny("pretrain=task_only")) != coordinator.pretrain_key(lrp_cfg)
    calls = []
    real_fit = coordinator.fit
    monkeypatch.setattr(coordinator, "fit", lambda *a, **k: calls.append(k["desc"]) or real_fit(*a, **k))
    imp = coordinator.run(tiny("pruning=imp", "prune.iterations=1"), data)
    assert calls == ["iteration 1/1: recover on P"]
    assert imp.iterations[0]["test_acc"] == lrp.iterations[0]["test_acc"]
    assert imp.iterations[0]["epochs"] == lrp.iterations[0]["epochs"]
    shared, _, _ = checkpoints.load(imp.checkpoint(0))
    for name, tensor in checkpoints.load(lrp.checkpoint(0))[0].state_dict().items():
        assert torch.equal(tensor, shared.state_dict()[name]), name
    # The same IMP run with its own pre-training (a fresh cache) gives the same results.
    monkeypatch.setattr(coordinator, "fit", real_fit)
    alone = coordinator.run(tiny("pruning=imp", "prune.iterations=1", f"cache_dir={tmp_path / 'other'}"), data)
    assert [it["test_acc"] for it in alone.iterations] == [it["test_acc"] for it in imp.iterations]


def test_extending_a_run_trains_only_the_new_iterations(tiny, monkeypatch):
    cfg = tiny("prune.iterations=1")
    data = build(scenario_of(cfg), data_options(cfg))
    coordinator.run(cfg, data)
    calls = []
    real_fit = coordinator.fit
    monkeypatch.setattr(coordinator, "fit", lambda *a, **k: calls.append(k["desc"]) or real_fit(*a, **k))
    result = coordinator.run(tiny("prune.iterations=2"), data)
    assert [it["iteration"] for it in result.iterations] == [0, 1, 2]
    assert calls == ["iteration 2/2: recover on P"]


def test_resume_after_kill_9(tmp_path):
    """Kill the process right after iteration 1 is recorded; the rerun keeps iterations 0 and 1."""
    args = [*TINY, "prune.iterations=3", f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    process = subprocess.Popen([sys.executable, "-m", "swarm.prune", *args], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    record_file = None
    deadline = time.time() + 120
    try:
        while time.time() < deadline and process.poll() is None:
            found = list((tmp_path / "cache").glob("coordinator/*/coordinator.json"))
            if found and len(json.loads(found[0].read_text())["iterations"]) >= 2:
                record_file = found[0]
                break
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert record_file is not None, "the run never recorded iteration 1"
    before = json.loads(record_file.read_text())["iterations"]
    assert len(before) < 4  # it was killed before finishing
    result = run_module("swarm.prune", *args, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming after iteration {before[-1]['iteration']}" in result.stdout + result.stderr
    after = json.loads(record_file.read_text())["iterations"]
    assert [it["iteration"] for it in after] == [0, 1, 2, 3]
    assert after[: len(before)] == before  # completed iterations were not redone


def test_dry_run_of_resnet50_needs_no_data(tmp_path):
    result = run_module("swarm.prune", "scenario=cifar10_new_classes", "model=resnet50", "prune.dry_run=true",
                        f"data.root={tmp_path / 'nothing'}", f"hydra.run.dir={tmp_path / 'run'}", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((tmp_path / "run" / "coordinator.json").read_text())
    params = [it["params"] / 1e6 for it in record["iterations"]]
    assert len(params) == 11 and record["iterations"][0]["params"] == 23_520_842  # small stem at 32 px
    for ours, paper in zip(params[:5], [23.5, 17.5, 13.3, 10.3, 8.3]):
        assert abs(ours - paper) / paper < 0.03
    assert all(it["macs"] > 0 for it in record["iterations"])
    assert "MACs" in result.stdout and "dry run" in result.stdout


def test_reference_adaptation_is_recorded_and_cached(tiny, monkeypatch):
    from swarm.server import reference

    for mode, metrics in (("finetune", {"acc_P", "acc_F"}), ("continual", {"acc_P", "acc_F", "acc_PF"})):
        cfg = tiny("prune.iterations=1", "reference.max_epochs=2", f"scenario.mode={mode}")
        data = build(scenario_of(cfg), data_options(cfg))
        result = coordinator.run(cfg, data)
        record = reference.annotate(cfg, data, result, [1])
        assert "reference" not in record["iterations"][0]  # only the chosen checkpoints
        entry = record["iterations"][1]["reference"]
        assert set(entry) == {"before", "after", "epochs"} and 1 <= entry["epochs"] <= 2
        assert set(entry["before"]) == set(entry["after"]) == metrics
        assert "reference" not in result.record["iterations"][1]  # the cached coordinator record is untouched
        with monkeypatch.context() as patch:  # a second call reads the cache and trains nothing
            patch.setattr(reference, "fit", lambda *a, **k: pytest.fail("trained again"))
            assert reference.annotate(cfg, data, result, [1])["iterations"][1]["reference"] == entry
        off = tiny("prune.iterations=1", "reference.adapt=false", f"scenario.mode={mode}")
        assert "reference" not in reference.annotate(off, data, result, [1])["iterations"][1]
