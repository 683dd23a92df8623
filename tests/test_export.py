"""Issue 12, item 4: every pruned checkpoint as ONNX, equal to PyTorch's outputs, timed in both runtimes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swarm import export
from swarm.config import data_options, scenario_of
from swarm.nodes.errors import SwarmError
from swarm.server import coordinator
from swarm.server.data.build import build

TINY = ["scenario.dataset.train_per_group=8", "scenario.dataset.test_per_group=3", "scenario.dataset.image_size=16",
        "train.max_epochs=1", "prune.iterations=2", "pruning=imp"]


@pytest.fixture
def pruned_run(make_cfg, tmp_path):
    """A coordinator's cache folder with three checkpoints (unpruned, 1 and 2 cuts) and a run folder naming it."""
    cfg = make_cfg(*TINY, f"cache_dir={tmp_path / 'cache'}")
    result = coordinator.run(cfg, build(scenario_of(cfg), data_options(cfg)))
    run = tmp_path / "run"
    run.mkdir()
    (run / "coordinator.json").write_text(json.dumps({**result.record, "cache_dir": str(result.directory)}))
    return run


def test_every_checkpoint_is_exported_checked_and_timed(pruned_run, tmp_path):
    out = tmp_path / "onnx"
    assert export.main([str(pruned_run), "--out", str(out), "--repeats", "3"]) == 0
    record = json.loads((out / "export.json").read_text())
    rows = record["rows"]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    for row in rows:
        assert (out / row["onnx_file"]).stat().st_size == row["onnx_bytes"] > 1000
        assert row["max_abs_diff"] <= 1e-4 and row["torch_ms"] > 0 and row["onnx_ms"] > 0
        assert json.loads((out / f"iteration_{row['iteration']:02d}.json").read_text())["architecture"]["conv_widths"]
    assert rows[0]["macs_ratio"] == 1 and rows[2]["macs_ratio"] < rows[1]["macs_ratio"] < 1
    assert "| iteration | params | MACs |" in (out / "export.md").read_text()

    # Any batch size runs (the batch axis is dynamic).
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / rows[2]["onnx_file"]), providers=["CPUExecutionProvider"])
    arch = rows[2]["architecture"]
    logits = session.run(None, {"images": np.zeros((5, arch["in_channels"], arch["image_size"], arch["image_size"]),
                                                   dtype=np.float32)})[0]
    assert logits.shape == (5, arch["num_outputs"])


def test_an_export_that_differs_from_pytorch_is_an_error_after_the_table(pruned_run, tmp_path, monkeypatch):
    from swarm.nodes import checkpoints

    folder = Path(json.loads((pruned_run / "coordinator.json").read_text())["cache_dir"])
    _, first, _ = checkpoints.load(coordinator.checkpoint_path(folder, 0))
    other = checkpoints.load(coordinator.checkpoint_path(folder, 0))[0]
    for parameter in other.parameters():  # same shape, other weights: what a broken export would give
        parameter.data.add_(0.1)
    real = export.to_onnx
    monkeypatch.setattr(export, "to_onnx", lambda model, arch_: real(other, arch_) if arch_["conv_widths"] == first["conv_widths"] else real(model, arch_))
    with pytest.raises(SwarmError, match=r"ONNX outputs differ from PyTorch's by more than 0.0001 for iterations \[0\]"):
        export.export(pruned_run, tmp_path / "onnx", repeats=2)
    assert (tmp_path / "onnx" / "export.md").exists()


def test_a_folder_without_checkpoints_is_one_line(tmp_path, capsys):
    assert export.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "has no coordinator.json" in err and "\n" not in err
