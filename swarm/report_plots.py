"""The figures of ``swarm.report``: the paper's Fig. 3, fleet box plots and budget curves.

Colours name the pruning criteria in the order :func:`swarm.results.criteria` gives them (the
baseline last: with LRP and IMP, LRP blue and IMP orange, as in the paper), line styles the
pre-training (extra solid, task_only dashed). Shaded bands are 95% intervals over seeds. Parameter
axes run from the full model on the left to the most compressed on the right, as in Fig. 3.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

from swarm.nodes.device import BUDGET_KINDS  # noqa: E402
from swarm.results import FleetResult, criteria, estimate, pruning_curve  # noqa: E402

PALETTE = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
STYLES = {"extra": "-", "task_only": "--"}
PRETRAINS = ("extra", "task_only")


def _colours(results: list[FleetResult], baseline: str) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(criteria(results, baseline))}


def _label(pruning: str, pretrain: str) -> str:
    return f"{pruning.upper()}, {'pre-trained on T ∪ P' if pretrain == 'extra' else 'P only'}"


def _curve(ax, points: dict[int, tuple[float, list[float]]], pruning: str, pretrain: str, colour: str) -> None:
    """points: iteration -> (params, values over seeds); draws the mean and its 95% band."""
    xs, means, lows, highs = [], [], [], []
    for iteration in sorted(points):
        params, values = points[iteration]
        e = estimate(values)
        if e.n == 0:
            continue
        xs.append(params / 1e6)
        means.append(e.mean)
        lows.append(e.low if e.n > 1 else e.mean)
        highs.append(e.high if e.n > 1 else e.mean)
    if not xs:
        return
    ax.plot(xs, means, STYLES.get(pretrain, ":"), color=colour, marker="o", ms=4, label=_label(pruning, pretrain))
    ax.fill_between(xs, lows, highs, color=colour, alpha=0.15, lw=0)


def _settings(results: list[FleetResult], baseline: str) -> list[tuple[str, str, list[FleetResult]]]:
    ordered = [(m, p) for m in criteria(results, baseline) for p in PRETRAINS]
    out = []
    for pruning, pretrain in ordered + sorted({(r.pruning, r.pretrain) for r in results} - set(ordered)):
        group = [r for r in results if r.pruning == pruning and r.pretrain == pretrain]
        if group:
            out.append((pruning, pretrain, group))
    return out


def plot_fig3(results: list[FleetResult], path: Path, title: str, baseline: str) -> None:
    """Accuracy against parameters, on one scale: on P after pruning and recovery; after the paper's
    (central) adaptation of each checkpoint; after the fleet's on-device adaptation, as the shared
    (FedAvg) model and as the nodes' mean."""
    metric = "P ∪ F" if results[0].mode == "continual" else "F"
    adapted = [(f"on {metric} after the paper's adaptation\n(central, early stopping)", lambda r: r.reference()),
               (f"on {metric} after the fleet's adaptation\n(shared model)", lambda r: r.shared_final()),
               (f"on {metric} after the fleet's adaptation\n(nodes' mean)", lambda r: r.fleet_mean())]
    adapted = [(name, value) for name, value in adapted if any(not math.isnan(value(r)) for r in results)]
    panels = 1 + len(adapted)
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.2), dpi=100, sharex=True, sharey=True)
    left, right = axes[0], axes[-1]
    colours = _colours(results, baseline)
    for pruning, pretrain, group in _settings(results, baseline):
        pruned = {it: (next(iter(by_seed.values()))[0], [acc for _, acc in by_seed.values()])
                  for it, by_seed in pruning_curve(group).items()}
        _curve(left, pruned, pruning, pretrain, colours[pruning])
        for ax, (_, value) in zip(axes[1:], adapted):
            points: dict[int, tuple[float, list[float]]] = {}
            for result in group:
                points.setdefault(result.iteration, (result.params, []))[1].append(value(result))
            _curve(ax, points, pruning, pretrain, colours[pruning])
    left.set_title("on P after pruning and recovery")
    for ax, (name, _) in zip(axes[1:], adapted):
        ax.set_title(name)
    for ax in axes:
        ax.set_xlabel("parameters (millions)")
        ax.grid(alpha=0.3)
    left.set_ylabel("test accuracy")
    left.invert_xaxis()
    right.legend(loc="lower left", fontsize=8)
    fig.suptitle(f"{title}\naccuracy over the pruning iterations: mean and 95% interval over seeds", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_fleets(results: list[FleetResult], path: Path, title: str, baseline: str) -> None:
    """Per-node accuracy after adaptation (all seeds pooled), the criteria side by side at every size."""
    names = criteria(results, baseline)
    colours, step = _colours(results, baseline), len(names) + 1
    pretrains = sorted({r.pretrain for r in results}, key=lambda p: (p != "extra", p))
    iterations = sorted({r.iteration for r in results})
    fig, axes = plt.subplots(1, len(pretrains), figsize=(5.5 * len(pretrains), 4.2), dpi=100, squeeze=False,
                             sharey=True)
    metric = results[0].target_metric
    for ax, pretrain in zip(axes[0], pretrains):
        positions, data, box_colours = [], [], []
        for i, iteration in enumerate(iterations):
            for j, pruning in enumerate(names):
                values = [v for r in results if r.pretrain == pretrain and r.pruning == pruning
                          and r.iteration == iteration for v in r.final_per_node()]
                if values:
                    positions.append(i * step + j)
                    data.append(values)
                    box_colours.append(colours[pruning])
        if data:
            boxes = ax.boxplot(data, positions=positions, widths=0.8, patch_artist=True, showmeans=True)
            for box, colour in zip(boxes["boxes"], box_colours):
                box.set_facecolor(colour)
                box.set_alpha(0.5)
        params = {r.iteration: r.params for r in results}
        ax.set_xticks([i * step + (len(names) - 1) / 2 for i in range(len(iterations))],
                      [f"it {it}\n{params[it] / 1e6:.3f}M" for it in iterations])
        ax.set_xlabel("pruning iteration, parameters")
        ax.set_title(f"pre-training: {pretrain}")
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel(f"per-node test accuracy ({metric}), last window")
    for pruning in names:
        axes[0][-1].plot([], [], "s", color=colours[pruning], alpha=0.5, label=f"{pruning.upper()} fleet nodes")
    axes[0][-1].legend(loc="lower left", fontsize=8)
    fig.suptitle(f"{title}\nper-node accuracy after adaptation, all seeds", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_budget(results: list[FleetResult], path: Path, title: str, baseline: str) -> None:
    """Fleet accuracy after adaptation against the per-window budget, per criterion and model size."""
    kinds = sorted({r.budget_kind for r in results if r.budget_value is not None})
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=100)
    groups: dict[tuple[str, str, int], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        if r.budget_value is not None:
            groups[(r.pruning, r.pretrain, r.iteration)][r.budget_value].append(r.fleet_mean())
    markers = "osD^v<>p*"
    iterations = sorted({key[2] for key in groups})
    colours = _colours(results, baseline)
    for (pruning, pretrain, iteration), by_budget in sorted(groups.items()):
        if len(by_budget) < 2:  # a setting run at one budget has no curve
            continue
        xs = sorted(by_budget)
        estimates = [estimate(by_budget[x]) for x in xs]
        ys = [e.mean for e in estimates]
        errors = [0 if math.isnan(e.half_width) else e.half_width for e in estimates]
        params = next(r.params for r in results if r.iteration == iteration)
        colour = colours[pruning]
        ax.errorbar(xs, ys, yerr=errors, fmt=STYLES.get(pretrain, ":"), color=colour,
                     marker=markers[iterations.index(iteration) % len(markers)], capsize=3, ms=5,
                     label=f"{_label(pruning, pretrain)}, {params / 1e6:.3f}M (it {iteration})")
        # No training at all (the model as received) and the paper's central adaptation bound the curve.
        group = [r for r in results if (r.pruning, r.pretrain, r.iteration) == (pruning, pretrain, iteration)]
        for value, style in ((estimate(r.received_mean() for r in group).mean, (0, (2, 2))),
                             (estimate(r.reference() for r in group).mean, (0, (1, 3)))):
            if not math.isnan(value):
                ax.axhline(value, color=colour, ls=style, lw=1, alpha=0.6)
    ax.set_xlabel(" / ".join(BUDGET_KINDS[k][1] for k in kinds) or "budget")
    budgets = sorted({r.budget_value for r in results if r.budget_value is not None})
    positive = [b for b in budgets if b > 0]
    if positive and budgets[0] == 0:  # "no training" sits at 0: linear near 0, logarithmic beyond
        ax.set_xscale("symlog", linthresh=positive[0])
    else:
        ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_ylim(top=1.02)
    ax.set_ylabel(f"fleet mean accuracy ({results[0].target_metric}), last window")
    ax.plot([], [], color="gray", ls=(0, (2, 2)), lw=1, label="as received (no training)")
    ax.plot([], [], color="gray", ls=(0, (1, 3)), lw=1, label="reference: central adaptation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
