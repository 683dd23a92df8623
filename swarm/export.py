"""``python -m swarm.export RUN_DIR``: every pruned checkpoint of a run as ONNX, checked and timed.

    python -m swarm.export outputs/synthetic_domains/2026-11-29_07-00-00
    python -m swarm.export RUN_DIR --out onnx/ --repeats 100

RUN_DIR is a run folder of ``swarm.simulate`` or ``swarm.prune`` (its ``coordinator.json`` names
the cache folder that holds the checkpoints) or that cache folder itself. For each iteration it
writes ``iteration_NN.onnx`` (torch's ``torch.export``-based exporter, a dynamic batch axis,
input ``images`` in [-1, 1], output ``logits``) and ``iteration_NN.json`` (the architecture record
and the coordinator's figures for it); checks that ONNX Runtime's outputs equal PyTorch's to
within 1e-4 on a batch; and times CPU inference at batch 1 in PyTorch (eager) and ONNX Runtime.
``export.md`` / ``export.json`` hold the table: parameters, MACs, latency in each runtime and
each relative to the unpruned model. A mismatch is an error (exit 2) after the table is written.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from swarm.nodes import checkpoints, io
from swarm.nodes.errors import SwarmError, run_command
from swarm.nodes.run_folder import COORDINATOR
from swarm.server.coordinator import checkpoint_path

TOLERANCE = 1e-4
CHECK_BATCH = 8


def checkpoint_folder(run_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The folder of a run's checkpoints and the coordinator's record."""
    record_path = Path(run_dir) / COORDINATOR
    if not record_path.exists():
        raise SwarmError(f"{run_dir} has no {COORDINATOR}: give a run folder of swarm.simulate or swarm.prune, "
                         "or the coordinator's cache folder")
    record = json.loads(record_path.read_text())
    folder = Path(record.get("cache_dir") or run_dir)
    if not any(checkpoint_path(folder, it["iteration"]).exists() for it in record.get("iterations", [])):
        raise SwarmError(f"no checkpoints in {folder} (a prune.dry_run=true run has none; run without it)")
    return folder, record


def to_onnx(model: torch.nn.Module, arch: dict[str, Any]) -> bytes:
    """The model as an ONNX file (torch.export-based exporter) with a dynamic batch axis."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        program = torch.onnx.export(model, (checkpoints.example_inputs(arch, 2),), dynamo=True, verbose=False,
                                    input_names=["images"], output_names=["logits"], dynamic_shapes=({0: batch},))
    return program.model_proto.SerializeToString()


def _median_ms(run, repeats: int) -> float:
    for _ in range(max(3, repeats // 10)):  # warm-up
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def export_one(path: Path, out: Path, repeats: int, seed: int) -> dict[str, Any]:
    """Export one checkpoint, check it against PyTorch, time both runtimes at batch 1."""
    import onnxruntime as ort

    model, arch, _ = checkpoints.load(path)
    model.eval()
    onnx_path = out / f"{path.stem}.onnx"
    io.write_bytes(onnx_path, to_onnx(model, arch))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(CHECK_BATCH, arch["in_channels"], arch["image_size"], arch["image_size"],
                        generator=generator) * 2 - 1
    with torch.inference_mode():
        expected = model(images).numpy()
    got = session.run(None, {"images": images.numpy()})[0]
    one = images[:1]
    with torch.inference_mode():
        torch_ms = _median_ms(lambda: model(one), repeats)
    feed = {"images": one.numpy()}
    onnx_ms = _median_ms(lambda: session.run(None, feed), repeats)
    return {"max_abs_diff": float(np.abs(got - expected).max()), "torch_ms": torch_ms, "onnx_ms": onnx_ms,
            "onnx_file": onnx_path.name, "onnx_bytes": onnx_path.stat().st_size, "architecture": arch}


def export(run_dir: Path, out: Path | None, repeats: int) -> list[dict[str, Any]]:
    folder, record = checkpoint_folder(run_dir)
    out = Path(out or Path(run_dir) / "onnx")
    rows = []
    for it in record["iterations"]:
        path = checkpoint_path(folder, it["iteration"])
        if not path.exists():
            continue
        result = export_one(path, out, repeats, seed=int(record.get("seed", 0)))
        row = {"iteration": it["iteration"], "params": it["params"], "macs": it["macs"],
               "test_acc": it.get("test_acc"), **result}
        io.write_json(out / f"{path.stem}.json", row)
        rows.append(row)
        print(f"iteration {row['iteration']}: {row['params'] / 1e6:.2f}M params, torch {row['torch_ms']:.2f} ms, "
              f"ONNX Runtime {row['onnx_ms']:.2f} ms, max |diff| {row['max_abs_diff']:.1e}", file=sys.stderr, flush=True)
    base = rows[0]
    for row in rows:
        row["macs_ratio"] = row["macs"] / base["macs"]
        row["torch_ratio"] = row["torch_ms"] / base["torch_ms"]
        row["onnx_ratio"] = row["onnx_ms"] / base["onnx_ms"]
    io.write_json(out / "export.json", {"run": str(run_dir), "repeats": repeats, "tolerance": TOLERANCE,
                                        "threads": torch.get_num_threads(), "rows": rows})
    io.write_text(out / "export.md", table(rows, record, repeats))
    bad = [r["iteration"] for r in rows if not r["max_abs_diff"] <= TOLERANCE]
    if bad:
        raise SwarmError(f"ONNX outputs differ from PyTorch's by more than {TOLERANCE:g} for iterations {bad} "
                         f"(see {out / 'export.md'})")
    return rows


def table(rows: list[dict[str, Any]], record: dict[str, Any], repeats: int) -> str:
    lines = [f"# ONNX export: {record.get('scenario', '?')} · {record.get('model', '?')} · {record.get('pruning', '?')}",
             "", f"CPU, batch 1, median of {repeats} runs after warm-up; {torch.get_num_threads()} threads; "
             f"outputs checked on a batch of {CHECK_BATCH} (tolerance {TOLERANCE:g}).", "",
             "| iteration | params | MACs | MACs vs 0 | PyTorch ms | vs 0 | ONNX Runtime ms | vs 0 | ORT / PyTorch | max abs diff |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['iteration']} | {r['params'] / 1e6:.2f}M | {r['macs'] / 1e6:.1f}M | {r['macs_ratio']:.2f} | "
                     f"{r['torch_ms']:.2f} | {r['torch_ratio']:.2f} | {r['onnx_ms']:.2f} | {r['onnx_ratio']:.2f} | "
                     f"{r['onnx_ms'] / r['torch_ms']:.2f} | {r['max_abs_diff']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swarm.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="run folder of swarm.simulate / swarm.prune, or a coordinator cache folder")
    parser.add_argument("--out", type=Path, help="where the .onnx files and export.md go (default: RUN_DIR/onnx)")
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per model and runtime (default 50)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        print(f"error: --repeats {args.repeats}: a whole number >= 1", file=sys.stderr)
        return 2
    out = args.out or args.run_dir / "onnx"
    return run_command(lambda: f"{len(export(args.run_dir, out, args.repeats))} models -> {out / 'export.md'}")


if __name__ == "__main__":
    sys.exit(main())
