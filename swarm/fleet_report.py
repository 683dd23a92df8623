"""A fleet run's summary and report: summary.json, report.md and PNG plots from nodes.csv."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from swarm import io  # noqa: E402

METRICS = ("acc_P", "acc_F", "acc_PF", "steps", "samples_seen", "flops", "energy_j")


def read_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path) as f:
        for row in csv.DictReader(f):
            for key in METRICS + ("sim_time_s",):
                row[key] = float(row[key]) if row.get(key) not in (None, "") else math.nan
            row["node"], row["window"] = int(row["node"]), int(row["window"])
            rows.append(row)
    return rows


def _stats(values: list[float]) -> dict[str, float] | None:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return None
    return {"mean": statistics.fmean(values), "median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    windows = sorted({r["window"] for r in rows})
    per_window = []
    for window in windows:
        here = [r for r in rows if r["window"] == window]
        entry: dict[str, Any] = {"window": window, "sim_time_s": max(r["sim_time_s"] for r in here),
                                 "status": {s: sum(r["status"] == s for r in here) for s in sorted({r["status"] for r in here})}}
        for metric in METRICS:
            stats = _stats([r[metric] for r in here if r["status"] != "failed"])
            if stats is not None:
                entry[metric] = stats
        per_window.append(entry)
    ok = [r for r in rows if r["status"] != "failed"]
    totals = {"steps": sum(r["steps"] for r in ok), "flops": sum(r["flops"] for r in ok),
              "energy_j": sum(r["energy_j"] for r in ok), "node_windows": len(rows),
              "failed_node_windows": len(rows) - len(ok)}
    return {"windows": per_window, "totals": totals}


def _plot_over_time(rows: list[dict[str, Any]], metric: str, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    nodes = sorted({r["node"] for r in rows})
    for node in nodes:
        mine = sorted((r for r in rows if r["node"] == node and not math.isnan(r[metric])), key=lambda r: r["window"])
        ax.plot([r["sim_time_s"] for r in mine], [r[metric] for r in mine], color="tab:blue", alpha=0.25, lw=1)
    windows = sorted({r["window"] for r in rows})
    means = []
    for window in windows:
        values = [r[metric] for r in rows if r["window"] == window and not math.isnan(r[metric])]
        if values:
            means.append((max(r["sim_time_s"] for r in rows if r["window"] == window), statistics.fmean(values)))
    if means:
        ax.plot(*zip(*means), color="black", lw=2.5, marker="o", label="fleet mean")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel(f"{metric.replace('acc_', 'accuracy on ')} (test)")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.plot([], [], color="tab:blue", alpha=0.5, label=f"each of {len(nodes)} nodes")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_final_distribution(rows: list[dict[str, Any]], metrics: list[str], path: Path, title: str) -> None:
    last = max(r["window"] for r in rows)
    final = [r for r in rows if r["window"] == last and r["status"] != "failed"]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    data = [[r[m] for r in final if not math.isnan(r[m])] for m in metrics]
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(metrics) + 1), [m.replace("acc_", "accuracy on ") for m in metrics])
    for i, values in enumerate(data, 1):
        ax.scatter([i] * len(values), values, color="tab:blue", alpha=0.5, s=12)
    ax.set_ylabel("test accuracy after the last window")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(run_dir: Path, title: str) -> dict[str, Any]:
    """Write summary.json, report.md, accuracy_over_time.png and final_accuracy.png into ``run_dir``."""
    rows = read_rows(run_dir / "nodes.csv")
    summary = summarize(rows)
    io.write_json(run_dir / "summary.json", summary)
    metrics = [m for m in ("acc_P", "acc_F", "acc_PF") if any(not math.isnan(r[m]) for r in rows)]
    _plot_over_time(rows, "acc_F", run_dir / "accuracy_over_time.png", f"{title}: accuracy on F per node")
    _plot_final_distribution(rows, metrics, run_dir / "final_accuracy.png", f"{title}: per-node accuracy, last window")
    last = max(r["window"] for r in rows)
    lines = [f"# {title}", "", f"{len({r['node'] for r in rows})} nodes, {last + 1} windows. "
             f"Totals: {summary['totals']['steps']:.0f} training steps, {summary['totals']['energy_j']:.1f} J, "
             f"{summary['totals']['flops'] / 1e12:.3f} TFLOP.", "",
             "![accuracy over time](accuracy_over_time.png)", "", "![final accuracy](final_accuracy.png)", "",
             "## Per node (last window; steps and energy summed over all windows)", "",
             "| node | profile | steps | energy (J) | " + " | ".join(metrics) + " | status |",
             "|---|---|---|---|" + "---|" * len(metrics) + "---|"]
    for node in sorted({r["node"] for r in rows}):
        mine = [r for r in rows if r["node"] == node]
        final = max(mine, key=lambda r: r["window"])
        steps = sum(r["steps"] for r in mine if not math.isnan(r["steps"]))
        energy = sum(r["energy_j"] for r in mine if not math.isnan(r["energy_j"]))
        accs = " | ".join("-" if math.isnan(final[m]) else f"{final[m]:.3f}" for m in metrics)
        status = final["status"] + (f" ({final['error']})" if final.get("error") else "")
        lines.append(f"| {node} | {final['profile']} | {steps:.0f} | {energy:.1f} | {accs} | {status} |")
    io.write_text(run_dir / "report.md", "\n".join(lines) + "\n")
    return summary
