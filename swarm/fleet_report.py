"""A fleet run's summary and report: summary.json, report.md and PNG plots from nodes.csv."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from swarm.nodes import io  # noqa: E402
from swarm.nodes.protocol import ACCURACIES, METRICS, NO_RESULT, RECEIVED_WINDOW, Status, read_rows  # noqa: E402
from swarm.nodes.run_folder import NODES_CSV, REPORT, SHARED_MODEL, SUMMARY  # noqa: E402

# Why a node that never trained did not, by the statuses of its windows (the first that applies).
IDLE_REASONS = {
    Status.not_simulated: "the simulation engine never served it (not a device outcome)",
    Status.failed: "it failed",
    Status.late: "its answers missed the deadline",
    Status.does_not_fit: "training does not fit in its RAM",
    Status.unavailable: "never available while the run lasted (its availability cycle)",
    Status.budget_exhausted: "the budget of a window does not cover one training step",
    Status.data_exhausted: "it never had enough local data for a step",
    Status.not_selected: "it was never drawn to take part (fleet.participation)",
    Status.ok: "no data arrived to train on",
}


def _stats(values: list[float]) -> dict[str, float] | None:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return None
    return {"mean": statistics.fmean(values), "median": statistics.median(values), "min": min(values), "max": max(values)}


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.fmean(values) if values else math.nan


def by_node(rows: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Each node's rows, in node order: grouped once, so no summary scans every row per node."""
    grouped: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row["node"], []).append(row)
    return dict(sorted(grouped.items()))


def final_rows(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each node's last window that did not fail."""
    final: dict[int, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r["window"]):
        if row["window"] != RECEIVED_WINDOW and row["status"] not in NO_RESULT:
            final[row["node"]] = row
    return final


def gains(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per accuracy: fleet mean of (last window − as received) per node, the share of nodes that
    improved, and the same by device profile (with how many of its nodes trained at all)."""
    received = {r["node"]: r for r in rows if r["window"] == RECEIVED_WINDOW}
    final = final_rows(rows)
    grouped = by_node(rows)
    steps = {n: sum(r["steps"] for r in grouped[n] if not math.isnan(r["steps"])) for n in final}
    nodes = sorted(set(received) & set(final))
    out: dict[str, Any] = {}
    for metric in ACCURACIES:
        pairs = [(n, received[n][metric], final[n][metric]) for n in nodes
                 if not math.isnan(received[n][metric]) and not math.isnan(final[n][metric])]
        if not pairs:
            continue
        by_profile = {}
        for profile in sorted({final[n]["profile"] for n, _, _ in pairs}):
            mine = [(n, b, a) for n, b, a in pairs if final[n]["profile"] == profile]
            trained = [(n, b, a) for n, b, a in mine if steps[n] > 0]
            by_profile[profile] = {
                "nodes": len(mine), "trained": len(trained),
                "received": _mean([b for _, b, _ in mine]), "final": _mean([a for _, _, a in mine]),
                "gain": _mean([a - b for _, b, a in mine]),
                "gain_trained": _mean([a - b for _, b, a in trained])}
        out[metric] = {"received": _mean([b for _, b, _ in pairs]), "final": _mean([a for _, _, a in pairs]),
                       "gain": _mean([a - b for _, b, a in pairs]),
                       "improved_share": sum(a > b for _, b, a in pairs) / len(pairs), "by_profile": by_profile}
    return out


def f_group_accuracy(rows: list[dict[str, Any]], names: list[str]) -> dict[str, dict[str, float]]:
    """Fleet mean accuracy on each group of F (its classes, or domains), as received and at the end."""
    received = [r["acc_F_groups"] for r in rows if r["window"] == RECEIVED_WINDOW and r["acc_F_groups"]]
    final = [r["acc_F_groups"] for r in final_rows(rows).values() if r["acc_F_groups"]]
    if not received and not final:
        return {}
    width = len((received or final)[0])
    names = names if len(names) == width else [f"class {i}" for i in range(width)]
    return {name: {"received": _mean([v[i] for v in received]), "final": _mean([v[i] for v in final])}
            for i, name in enumerate(names)}


def accuracy_matrix(rows: list[dict[str, Any]], tasks: list[list[int]],
                    event_starts: dict[int, list[float]]) -> dict[str, Any] | None:
    """The continual-learning accuracy matrix over drift events, fleet mean over nodes.

    Row 0 is the model as received, row i the end of the last window before event i + 1 begins (the
    last window for the last event); column 0 is P, column j the groups task j brought. Also the
    final average accuracy and the backward transfer (mean over tasks j < K of R[K][j] − R[j][j]:
    negative when learning later tasks made the node forget earlier ones). None with one event."""
    if len(tasks) < 2:
        return None
    grouped = by_node(rows)

    def accuracies(row: dict[str, Any]) -> list[float]:
        groups = row["acc_F_groups"]
        per_task = [_mean([groups[g] for g in task if g < len(groups)]) for task in tasks]
        return [row["acc_P"], *per_task]

    matrices = []
    for node, starts in event_starts.items():
        mine = grouped.get(node, [])
        received = [r for r in mine if r["window"] == RECEIVED_WINDOW]
        trained = sorted((r for r in mine if r["window"] != RECEIVED_WINDOW and r["status"] not in NO_RESULT),
                         key=lambda r: r["window"])
        if not received or not trained:
            continue
        matrix = [accuracies(received[0])]
        for i, start in enumerate(starts):
            following = starts[i + 1] if i + 1 < len(starts) else math.inf
            after = [r for r in trained if start < r["sim_time_s"] <= following]
            matrix.append(accuracies(after[-1]) if after else [math.nan] * (len(tasks) + 1))
        matrices.append(matrix)
    if not matrices:
        return None
    fleet = [[_mean([m[i][j] for m in matrices]) for j in range(len(tasks) + 1)] for i in range(len(tasks) + 1)]
    last = len(tasks)
    return {"columns": ["P"] + [f"task {j + 1}" for j in range(len(tasks))],
            "rows": ["as received"] + [f"after event {i + 1}" for i in range(len(tasks))],
            "matrix": fleet, "nodes": len(matrices),
            "average_after_last": _mean(fleet[last]),
            "backward_transfer": _mean([fleet[last][j] - fleet[j][j] for j in range(1, last)])}


def idle_nodes(rows: list[dict[str, Any]]) -> dict[int, str]:
    """Nodes that did not train a single step, with the reason their windows give."""
    reasons = {}
    for node, all_rows in by_node(rows).items():
        mine = [r for r in all_rows if r["window"] != RECEIVED_WINDOW]
        if sum(r["steps"] for r in mine if not math.isnan(r["steps"])) > 0:
            continue
        statuses = {r["status"] for r in mine}
        for status in IDLE_REASONS:
            if status in statuses:
                reasons[node] = IDLE_REASONS[status]
                break
    return reasons


def costs_by_profile(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each device class's time and energy split into compute and communication, and the bytes it
    moved, summed over its nodes and windows (rows with a result; ``energy_j`` includes the radio's
    ``comm_j``). Older ``nodes.csv`` files without the link columns give NaN for their parts."""
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        if row["window"] == RECEIVED_WINDOW or row["status"] in NO_RESULT:
            continue
        entry = out.setdefault(row["profile"], {"nodes": set(), "node_windows": 0, "compute_s": 0.0, "comm_s": 0.0,
                                                "compute_j": 0.0, "comm_j": 0.0, "bytes_down": 0.0, "bytes_up": 0.0})
        entry["nodes"].add(row["node"])
        entry["node_windows"] += 1
        for key in ("compute_s", "comm_s", "comm_j", "bytes_down", "bytes_up"):
            entry[key] += row[key]
        entry["compute_j"] += row["energy_j"] - row["comm_j"]
    for entry in out.values():
        entry["nodes"] = len(entry["nodes"])
    return dict(sorted(out.items()))


def _cost_lines(costs: dict[str, dict[str, float]]) -> list[str]:
    """The report's table of :func:`costs_by_profile`."""
    if not costs or all(math.isnan(c["comm_s"]) for c in costs.values()):
        return []
    lines = ["## Time and energy by device class: compute and communication", "",
             "Summed over each class's nodes and windows; communication is receiving the model and sending "
             "the update over the device's link (a profile without a link moves data for free).", "",
             "| device class | nodes | node-windows | compute (s) | communication (s) | compute (J) | radio (J) | "
             "radio share of energy | MB received | MB sent |", "|---|---|---|---|---|---|---|---|---|---|"]
    for profile, c in costs.items():
        energy = c["compute_j"] + c["comm_j"]
        share = c["comm_j"] / energy if energy > 0 else math.nan
        lines.append(f"| {profile} | {c['nodes']} | {c['node_windows']} | {c['compute_s']:.1f} | {c['comm_s']:.2f} | "
                     f"{c['compute_j']:.1f} | {c['comm_j']:.2f} | {_fmt(share)} | {c['bytes_down'] / 1e6:.2f} | "
                     f"{c['bytes_up'] / 1e6:.2f} |")
    return lines + [""]


def coverage(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How much of the fleet the means cover: nodes in the run, nodes with a result in the last
    window, and node-windows that failed or were late (device outcomes) or were not simulated
    (the engine's)."""
    nodes = sorted({r["node"] for r in rows})
    trained = [r for r in rows if r["window"] != RECEIVED_WINDOW]
    last = max((r["window"] for r in trained), default=RECEIVED_WINDOW)
    final = final_rows(rows)
    failed = sum(r["status"] == Status.failed for r in trained)
    late = sum(r["status"] == Status.late for r in trained)
    unserved = sum(r["status"] == Status.not_simulated for r in trained)
    return {"nodes": len(nodes), "nodes_with_result": len(final),
            "nodes_in_last_window": sum(1 for r in trained if r["window"] == last and r["status"] not in NO_RESULT),
            "failed_node_windows": failed, "late_node_windows": late, "not_simulated_node_windows": unserved,
            "complete": not failed and not late and not unserved}


def coverage_line(cov: dict[str, Any]) -> str | None:
    """One loud line when the means do not cover the whole fleet (None when they do)."""
    if cov["complete"]:
        return None
    parts = []
    if cov["not_simulated_node_windows"]:
        parts.append(f"{cov['not_simulated_node_windows']} node-windows were NOT SIMULATED (the engine gave no reply)")
    if cov["failed_node_windows"]:
        parts.append(f"{cov['failed_node_windows']} node-windows failed")
    if cov.get("late_node_windows"):
        parts.append(f"{cov['late_node_windows']} node-windows were late (their results not used)")
    return (f"INCOMPLETE FLEET: {'; '.join(parts)}. Means cover the {cov['nodes_in_last_window']} of "
            f"{cov['nodes']} nodes with a result in the last window.")


def summarize(rows: list[dict[str, Any]], f_group_names: list[str] | None = None,
              events: tuple[list[list[int]], dict[int, list[float]]] | None = None) -> dict[str, Any]:
    windows = sorted({r["window"] for r in rows} - {RECEIVED_WINDOW})
    per_window = []
    for window in windows:
        here = [r for r in rows if r["window"] == window]
        entry: dict[str, Any] = {"window": window, "sim_time_s": max(r["sim_time_s"] for r in here),
                                 "status": {s: sum(r["status"] == s for r in here) for s in sorted({r["status"] for r in here})}}
        for metric in METRICS:
            stats = _stats([r[metric] for r in here if r["status"] not in NO_RESULT])
            if stats is not None:
                entry[metric] = stats
        per_window.append(entry)
    trained = [r for r in rows if r["window"] != RECEIVED_WINDOW]
    ok = [r for r in trained if r["status"] not in NO_RESULT]
    totals = {"steps": sum(r["steps"] for r in ok), "flops": sum(r["flops"] for r in ok),
              "energy_j": sum(r["energy_j"] for r in ok), "comm_j": sum(r["comm_j"] for r in ok),
              "bytes_down": sum(r["bytes_down"] for r in ok), "bytes_up": sum(r["bytes_up"] for r in ok),
              "node_windows": len(trained),
              "failed_node_windows": sum(r["status"] == Status.failed for r in trained),
              "late_node_windows": sum(r["status"] == Status.late for r in trained),
              "not_simulated_node_windows": sum(r["status"] == Status.not_simulated for r in trained)}
    received = [r for r in rows if r["window"] == RECEIVED_WINDOW]
    summary: dict[str, Any] = {
        "coverage": coverage(rows),
        "received": {m: stats for m in ACCURACIES if (stats := _stats([r[m] for r in received])) is not None},
        "windows": per_window, "gain": gains(rows), "totals": totals, "costs_by_profile": costs_by_profile(rows),
        "idle_nodes": {str(node): reason for node, reason in idle_nodes(rows).items()}}
    by_group = f_group_accuracy(rows, f_group_names or [])
    if by_group:
        summary["f_groups"] = by_group
    if "acc_P" in summary["gain"]:
        summary["forgetting_P"] = -summary["gain"]["acc_P"]["gain"]
    matrix = accuracy_matrix(rows, *events) if events else None
    if matrix:
        summary["accuracy_matrix"] = matrix
    return summary


def read_shared_model(run_dir: Path) -> list[dict[str, Any]]:
    """The shared (FedAvg) model's scores after every window, as the server wrote them
    (``shared_model.json``: null where a set is not measured; empty when the fleet shares no model)."""
    path = Path(run_dir) / SHARED_MODEL
    return json.loads(path.read_text()) if path.exists() else []


def _plot_over_time(rows: list[dict[str, Any]], metric: str, path: Path, title: str,
                    reference: float | None = None, shared: list[dict[str, Any]] | None = None,
                    window_s: float | None = None) -> None:
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    grouped = by_node(rows)
    for mine in grouped.values():
        mine = sorted((r for r in mine if not math.isnan(r[metric])), key=lambda r: r["window"])
        ax.plot([r["sim_time_s"] for r in mine], [r[metric] for r in mine], color="tab:blue", alpha=0.25, lw=1)
    windows = sorted({r["window"] for r in rows})
    means = []
    for window in windows:
        values = [r[metric] for r in rows if r["window"] == window and not math.isnan(r[metric])]
        if values:
            means.append((max(r["sim_time_s"] for r in rows if r["window"] == window), statistics.fmean(values)))
    if means:
        ax.plot(*zip(*means), color="black", lw=2.5, marker="o", label="fleet mean (t=0: as received)")
    points = [((e["window"] + 1) * window_s, e[metric]) for e in shared or []
              if window_s and e.get(metric) is not None]
    if points:
        start = [m for m in means if m[0] == 0.0]  # every node scores the model as received alike
        ax.plot(*zip(*(start + points)), color="tab:green", lw=2, marker="s", label="shared model")
    if reference is not None and not math.isnan(reference):
        ax.axhline(reference, color="tab:red", ls="--", lw=1.5, label="reference: central adaptation")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel(f"{metric.replace('acc_', 'accuracy on ')} (test)")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.plot([], [], color="tab:blue", alpha=0.5, label=f"each of {len(grouped)} nodes")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_final_distribution(rows: list[dict[str, Any]], metrics: list[str], path: Path, title: str) -> None:
    last = max(r["window"] for r in rows)
    final = [r for r in rows if r["window"] == last and r["status"] not in NO_RESULT]
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


def _fmt(value: float, sign: bool = False) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:+.3f}" if sign else f"{value:.3f}"


def _adaptation_lines(summary: dict[str, Any], target: str, reference: dict[str, Any] | None) -> list[str]:
    shared = summary.get("shared_model") or []
    lines = ["## Adaptation: after the last window against the model as received", "",
             "| accuracy | as received | nodes after | nodes' gain (mean over nodes) | nodes improved |"
             + (" shared model after | shared model's gain |" if shared else "")
             + (" reference after | reference's gain |" if reference else ""),
             "|---|---|---|---|---|" + ("---|---|" if shared else "") + ("---|---|" if reference else "")]
    for metric, gain in summary["gain"].items():
        line = (f"| {metric} | {_fmt(gain['received'])} | {_fmt(gain['final'])} | {_fmt(gain['gain'], True)} | "
                f"{gain['improved_share']:.0%} |")
        if shared:
            after = shared[-1].get(metric)
            after = math.nan if after is None else after
            line += f" {_fmt(after)} | {_fmt(after - gain['received'], True)} |"
        if reference:
            ref = reference["after"].get(metric, math.nan)
            line += f" {_fmt(ref)} | {_fmt(ref - reference['before'].get(metric, math.nan), True)} |"
        lines.append(line)
    if shared:
        lines += ["", f"Shared model: the FedAvg model the fleet shares after window {shared[-1]['window'] + 1}, "
                      "scored by the server on the nodes' test subsets (its score after every window is in "
                      "summary.json, `shared_model`). Nodes after: each node's own model after its last window."]
    if reference:
        lines += ["", f"Reference: the paper's adaptation of the same model, trained centrally "
                      f"({reference['epochs']} epochs, early stopping), evaluated on the same test subsets."]
    if target in summary["gain"]:
        lines += ["", f"By device class ({target}; gain of the nodes that trained in brackets):", "",
                  "| profile | nodes | trained | as received | after | gain |", "|---|---|---|---|---|---|"]
        for profile, entry in summary["gain"][target]["by_profile"].items():
            lines.append(f"| {profile} | {entry['nodes']} | {entry['trained']} | {_fmt(entry['received'])} | "
                         f"{_fmt(entry['final'])} | {_fmt(entry['gain'], True)} ({_fmt(entry['gain_trained'], True)}) |")
    if "forgetting_P" in summary:
        lines += ["", f"Forgetting on P (as received − after, same test subset): {_fmt(summary['forgetting_P'], True)}."]
    if summary.get("f_groups"):
        lines += ["", "Accuracy on each group of F (fleet mean):", "", "| group | as received | after |", "|---|---|---|"]
        lines += [f"| {name} | {_fmt(v['received'])} | {_fmt(v['final'])} |" for name, v in summary["f_groups"].items()]
    matrix = summary.get("accuracy_matrix")
    if matrix:
        lines += ["", f"Accuracy matrix over drift events (fleet mean of {matrix['nodes']} nodes; task j = the "
                      "groups event j brought):", "", "| | " + " | ".join(matrix["columns"]) + " |",
                  "|---|" + "---|" * len(matrix["columns"])]
        lines += [f"| {name} | " + " | ".join(_fmt(v) for v in values) + " |"
                  for name, values in zip(matrix["rows"], matrix["matrix"])]
        lines += ["", f"Average accuracy after the last event {_fmt(matrix['average_after_last'])}, backward "
                      f"transfer {_fmt(matrix['backward_transfer'], True)}."]
    if summary["idle_nodes"]:
        lines += ["", "Nodes that never trained:", ""]
        lines += [f"* node {node}: {reason}" for node, reason in summary["idle_nodes"].items()]
    return lines + [""]


def _window_s(rows: list[dict[str, Any]]) -> float | None:
    """A window's simulated length: the end time of the first window."""
    first = [r["sim_time_s"] for r in rows if r["window"] == 0 and not math.isnan(r["sim_time_s"])]
    return max(first) if first else None


def write_report(run_dir: Path, title: str, *, target: str = "acc_F", f_group_names: list[str] | None = None,
                 reference: dict[str, Any] | None = None,
                 events: tuple[list[list[int]], dict[int, list[float]]] | None = None,
                 faults: dict[int, str] | None = None) -> dict[str, Any]:
    """Write summary.json, report.md, accuracy_over_time.png and final_accuracy.png into ``run_dir``.

    ``target`` is the accuracy adaptation is judged on; ``reference`` the coordinator's central
    adaptation of the same model (``{"before", "after", "epochs"}``), drawn beside the fleet;
    ``events`` the drift events' tasks and each node's event start times (the accuracy matrix);
    ``faults`` the faults injected by ``fleet.faults`` (node -> what and when), listed as such."""
    rows = read_rows(run_dir / NODES_CSV)
    summary = summarize(rows, f_group_names, events)
    shared = read_shared_model(run_dir)
    if shared:
        summary["shared_model"] = shared
    if reference:
        summary["reference"] = reference
    if faults:
        summary["injected_faults"] = {str(node): what for node, what in sorted(faults.items())}
    io.write_json(run_dir / SUMMARY, summary)
    metrics = [m for m in ACCURACIES if any(not math.isnan(r[m]) for r in rows)]
    _plot_over_time(rows, target, run_dir / "accuracy_over_time.png",
                    f"{title}: {target.replace('acc_', 'accuracy on ')} per node",
                    reference["after"].get(target) if reference else None, shared,
                    _window_s(rows))
    _plot_final_distribution(rows, metrics, run_dir / "final_accuracy.png", f"{title}: per-node accuracy, last window")
    trained = [r for r in rows if r["window"] != RECEIVED_WINDOW]
    last = max(r["window"] for r in trained)
    received = {r["node"]: r for r in rows if r["window"] == RECEIVED_WINDOW}
    lines = [f"# {title}", "", f"{len({r['node'] for r in rows})} nodes, {last + 1} windows. "
             f"Totals: {summary['totals']['steps']:.0f} training steps, {summary['totals']['energy_j']:.1f} J "
             f"({_fmt(summary['totals']['comm_j'])} J of it the radio's), "
             f"{summary['totals']['flops'] / 1e12:.3f} TFLOP.", "",
             *([f"**{warning}**", ""] if (warning := coverage_line(summary["coverage"])) else []),
             *_adaptation_lines(summary, target, reference),
             *_cost_lines(summary["costs_by_profile"]),
             *(["Injected faults (`fleet.faults`): " + "; ".join(f"node {n}: {w}" for n, w in sorted(faults.items())), ""]
               if faults else []),
             "![accuracy over time](accuracy_over_time.png)", "", "![final accuracy](final_accuracy.png)", "",
             "## Per node (last window; steps and energy summed over all windows)", "",
             f"| node | profile | steps | energy (J) | {target} received | " + " | ".join(metrics) + " | status |",
             "|---|---|---|---|---|" + "---|" * len(metrics) + "---|"]
    for node, mine in by_node(trained).items():
        final = max(mine, key=lambda r: r["window"])
        steps = sum(r["steps"] for r in mine if not math.isnan(r["steps"]))
        energy = sum(r["energy_j"] for r in mine if not math.isnan(r["energy_j"]))
        accs = " | ".join(_fmt(final[m]) for m in metrics)
        before = _fmt(received[node][target]) if node in received else "-"
        status = final["status"] + (f" ({final['error']})" if final.get("error") else "")
        lines.append(f"| {node} | {final['profile']} | {steps:.0f} | {energy:.1f} | {before} | {accs} | {status} |")
    io.write_text(run_dir / REPORT, "\n".join(lines) + "\n")
    return summary
