"""``python -m swarm.report <run or multirun dir> [more dirs]``: compare fleets across sweeps.

Finds every fleet result under the given directories and writes, into ``--out`` (default
``<first dir>/report``):

* ``results.csv``: one row per fleet result (setting, seed, size, accuracies, cost to target);
* ``fig3_<scenario>.png``: the paper's Fig. 3, accuracy against parameters over the pruning
  iterations, one curve per {criterion} x {extra, task_only}: on P after pruning and recovery, and
  after the fleet's adaptation (F, or P ∪ F for new classes); mean and 95% interval over seeds;
* ``budget_<scenario>.png`` (when several budgets were swept): accuracy after adaptation against the
  compute budget, per pruning method and model size;
* ``fleet_<scenario>.png``: per-node accuracy after adaptation, the criteria side by side;
* ``report.md``: the figures, the gaps the paper reports (extra − task_only, and each criterion −
  the baseline, ``--baseline``, IMP by default: LRP − IMP in the paper, at every size, paired by
  seed), each criterion − the baseline per fleet, forgetting on P, and time and energy to a target.
"""

from __future__ import annotations

import argparse
import csv
import io as text_io
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from swarm.nodes import io
from swarm.nodes.errors import run_command
from swarm.nodes.protocol import ACCURACIES, NO_RESULT
from swarm.nodes.run_folder import REPORT
from swarm.report_plots import plot_budget, plot_fig3, plot_fleets
from swarm.results import (Estimate, FleetResult, collect, compared, criteria, estimate, paired_difference,
                           pruning_curve)

CSV_COLUMNS = ["scenario", "mode", "model", "pruning", "pretrain", "seed", "iteration", "params", "budget",
               "fleet_variant", "p_acc_after_pruning", "adapted_metric", "received_mean", "adapted_mean", "gain",
               "reference_before", "reference_after", "improved_share", "adapted_min",
               "adapted_max", "acc_P_after_adaptation", "forgetting_P", "target", "seconds_to_target",
               "joules_to_target", "steps", "energy_j", "comm_j", "accuracy_per_kj", "failed_nodes", "not_simulated_nodes",
               # every accuracy alone (P, F and, new classes, P ∪ F): as received, the nodes' mean
               # after the last window, the shared model's, the reference's before and after
               *[f"{who}_{metric}" for who in ("received", "nodes", "shared", "reference_before", "reference")
                 for metric in ACCURACIES],
               "shared_gain", "reference_gain", "reference_epochs", "coordinator_epochs", "coordinator_best_epochs",
               "directory"]

# The criterion the others are compared with, unless --baseline names another: the paper's (IMP).
BASELINE = "imp"


def _by(results: Iterable[FleetResult], *fields: str) -> dict[tuple, list[FleetResult]]:
    groups: dict[tuple, list[FleetResult]] = defaultdict(list)
    for result in results:
        groups[tuple(getattr(result, f) for f in fields)].append(result)
    order = lambda k: (0, k, "") if isinstance(k, (int, float)) else (1, 0, str(k))  # noqa: E731 (8 before 10)
    return dict(sorted(groups.items(), key=lambda kv: tuple(order(k) for k in kv[0])))


def targets(results: list[FleetResult], target: float | None) -> dict[str, float]:
    """The accuracy the cost-to-target is measured against, per scenario: the given one, or 90% of
    the best fleet mean any run of that scenario reached."""
    out = {}
    for (scenario,), group in _by(results, "scenario").items():
        best = max((r.fleet_mean() for r in group if not math.isnan(r.fleet_mean())), default=math.nan)
        out[scenario] = target if target is not None else round(0.9 * best, 3)
    return out


def write_csv(path: Path, results: list[FleetResult], target_of: dict[str, float]) -> None:
    buffer = text_io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for r in sorted(results, key=lambda r: (r.scenario, r.pruning, r.pretrain, r.budget_label, r.iteration, r.seed)):
        final = r.final_per_node()
        seconds, joules = r.to_target(target_of[r.scenario])
        ok = [row for row in r.rows if row["status"] not in NO_RESULT]
        writer.writerow({
            "scenario": r.scenario, "mode": r.mode, "model": r.model, "pruning": r.pruning, "pretrain": r.pretrain,
            "seed": r.seed, "iteration": r.iteration, "params": r.params, "budget": r.budget_label,
            "fleet_variant": r.fleet_variant, "p_acc_after_pruning": _num(r.pruned_accuracy),
            "adapted_metric": r.target_metric, "received_mean": _num(r.received_mean()),
            "adapted_mean": _num(r.fleet_mean()), "gain": _num(r.gain()),
            "reference_before": _num(r.reference(when="before")), "reference_after": _num(r.reference()),
            "improved_share": _num(r.improved_share()),
            "adapted_min": _num(min(final, default=math.nan)), "adapted_max": _num(max(final, default=math.nan)),
            "acc_P_after_adaptation": _num(r.fleet_mean("acc_P")), "forgetting_P": _num(r.forgetting),
            "target": target_of[r.scenario], "seconds_to_target": _num(seconds), "joules_to_target": _num(joules),
            "steps": int(sum(row["steps"] for row in ok)), "energy_j": _num(sum(row["energy_j"] for row in ok)),
            "comm_j": _num(sum(row["comm_j"] for row in ok)), "accuracy_per_kj": _num(r.accuracy_per_kj()),
            "failed_nodes": r.failed_nodes, "not_simulated_nodes": r.not_simulated_nodes,
            **{f"received_{m}": _num(r.received_mean(m)) for m in ACCURACIES},
            **{f"nodes_{m}": _num(r.fleet_mean(m)) for m in ACCURACIES},
            **{f"shared_{m}": _num(r.shared_final(m)) for m in ACCURACIES},
            **{f"reference_before_{m}": _num(r.reference(m, when="before")) for m in ACCURACIES},
            **{f"reference_{m}": _num(r.reference(m)) for m in ACCURACIES},
            "shared_gain": _num(r.shared_gain()), "reference_gain": _num(r.reference_gain()),
            "reference_epochs": r.reference_epochs() if r.reference_epochs() is not None else "",
            # the fits of the coordinator's record, iteration 0 (pre-training) on: epochs run, best epoch
            "coordinator_epochs": " ".join(str(e.get("epochs", "")) for e in r.coordinator),
            "coordinator_best_epochs": " ".join(str(e.get("best_epoch", "")) for e in r.coordinator),
            "directory": str(r.directory)})
    io.write_text(path, buffer.getvalue())


def _num(value: float) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.6g}"


def _seed_values(group: list[FleetResult], value) -> dict[int, float]:
    return {r.seed: value(r) for r in group}


def gap_table(results: list[FleetResult], baseline: str = BASELINE) -> list[str]:
    """The paper's two gaps at every size, paired by seed: extra − task_only per criterion, and each
    criterion − the baseline (LRP − IMP in the paper)."""
    lines = ["| size (params) | iteration | gap | after pruning, on P | reference adaptation (paper's) | "
             "fleet: shared model | fleet: nodes' mean |", "|---|---|---|---|---|---|---|"]
    cells = _by(results, "iteration", "pruning", "pretrain")
    prune_curves = {key: pruning_curve(group) for key, group in _by(results, "pruning", "pretrain").items()}
    iterations = sorted({it for curve in prune_curves.values() for it in curve})
    params = {it: next(p for curve in prune_curves.values() for s, (p, _) in curve.get(it, {}).items()) for it in iterations}
    others = compared(results, baseline)
    comparisons = [(f"extra − task_only ({m.upper()})", (m, "extra"), (m, "task_only"))
                   for m in criteria(results, baseline)]
    comparisons += [(f"{m.upper()} − {baseline.upper()} ({p})", (m, p), (baseline, p))
                    for m in others for p in ("extra", "task_only")]

    def pruned(setting: tuple[str, str], it: int) -> dict[int, float]:
        return {s: acc for s, (_, acc) in prune_curves.get(setting, {}).get(it, {}).items()}

    def adapted(setting: tuple[str, str], it: int) -> dict[int, float]:
        return _seed_values(cells.get((it, *setting), []), lambda r: r.fleet_mean())

    def referenced(setting: tuple[str, str], it: int) -> dict[int, float]:
        return _seed_values(cells.get((it, *setting), []), lambda r: r.reference())

    def shared(setting: tuple[str, str], it: int) -> dict[int, float]:
        return _seed_values(cells.get((it, *setting), []), lambda r: r.shared_final())

    def gap(values, method: str, it: int) -> dict[int, float]:
        """extra − task_only per seed, for one pruning method."""
        extra, task = values((method, "extra"), it), values((method, "task_only"), it)
        return {s: extra[s] - task[s] for s in set(extra) & set(task)}

    for it in iterations:
        sources = (pruned, referenced, shared, adapted)
        rows = [(label, *(paired_difference(values(a, it), values(b, it)) for values in sources))
                for label, a, b in comparisons]
        # Claim (b): the pre-training gap under a criterion minus the gap under the baseline, paired by seed.
        rows += [(f"(extra − task_only): {m.upper()} − {baseline.upper()}",
                  *(paired_difference(gap(values, m, it), gap(values, baseline, it)) for values in sources))
                 for m in others]
        for label, *estimates in rows:
            if any(e.n for e in estimates):
                lines.append(f"| {params[it] / 1e6:.3f}M | {it} | {label} | "
                             + " | ".join(_signed(e) for e in estimates) + " |")
    return lines


LAST_SIZES = 3  # the endpoints average over the smallest sizes a fleet adapted
# The widths the published sweep stops at (docs/results/endpoints.md, "Stopping rule"): ± 0.02 for
# each claim (a), ± 0.03 for (b).
ASKED_WIDTH = {"(a)": 0.02, "(b)": 0.03}


def endpoints(results: list[FleetResult], baseline: str = BASELINE) -> list[tuple[str, str, str, Estimate]]:
    """The claims the published results decide, paired by seed, each averaged per seed over the
    ``LAST_SIZES`` smallest sizes both sides adapted: (a) extra − task_only, per pruning method; (b)
    (extra − task_only) under each criterion minus the same under the baseline (the paper: LRP and
    IMP). Each on the target metric and on F
    alone, for the reference (the paper's central adaptation) and the fleet's shared model.
    Returns (claim, who, metric, estimate) rows."""
    iterations = sorted({r.iteration for r in results})[-LAST_SIZES:]
    cells = _by([r for r in results if r.iteration in iterations], "pruning", "pretrain")
    target = results[0].target_metric
    metrics = [target] + (["acc_F"] if target != "acc_F" else [])

    def averaged(pruning: str, pretrain: str, value) -> dict[int, float]:
        """Per seed, the mean over the last sizes (only seeds that have every one of them)."""
        per_seed: dict[int, list[float]] = defaultdict(list)
        for r in cells.get((pruning, pretrain), []):
            per_seed[r.seed].append(value(r))
        return {seed: sum(v) / len(v) for seed, v in per_seed.items() if len(v) == len(iterations)}

    out = []
    for who, value_of in (("reference", lambda r, m: r.reference(m)), ("shared model", lambda r, m: r.shared_final(m))):
        for metric in metrics:
            gaps = {}
            for method in criteria(results, baseline):
                extra = averaged(method, "extra", lambda r: value_of(r, metric))
                task = averaged(method, "task_only", lambda r: value_of(r, metric))
                gaps[method] = {s: extra[s] - task[s] for s in set(extra) & set(task)}
                out.append((f"(a) extra − task_only, {method.upper()}", who, metric, estimate(gaps[method].values())))
            out += [(f"(b) (extra − task_only): {m.upper()} − {baseline.upper()}", who, metric,
                     paired_difference(gaps[m], gaps[baseline])) for m in compared(results, baseline)]
    return out


def endpoint_table(results: list[FleetResult], baseline: str = BASELINE) -> list[str]:
    iterations = sorted({r.iteration for r in results})[-LAST_SIZES:]
    rows = [row for row in endpoints(results, baseline) if row[3].n]
    if not rows:
        return []
    lines = [f"Endpoints (docs/results: decided before the sweep): averaged per seed over iterations "
             f"{', '.join(map(str, iterations))}, paired by seed, 95% interval:", "",
             "| claim | who adapts | accuracy | estimate | half-width | asked | seeds that would take at this spread |",
             "|---|---|---|---|---|---|---|"]
    for claim, who, metric, e in rows:
        asked = ASKED_WIDTH[claim[:3]]
        needed = e.seeds_for(asked)
        lines.append(f"| {claim} | {who} | {metric} | {_signed(e)} | {f'{e.half_width:.3f}' if e.n > 1 else '- (one seed)'} "
                     f"| ± {asked:.2f} | {'-' if needed is None else needed} |")
    return lines


def _signed(e: Estimate) -> str:
    if e.n == 0:
        return "-"
    text = f"{e.mean:+.3f}"
    return text + (f" [{e.low:+.3f}, {e.high:+.3f}] (n={e.n})" if e.n > 1 else " (n=1)")


def setting_table(results: list[FleetResult], target: float) -> list[str]:
    """Per setting and size: accuracy after pruning and after adaptation, forgetting, cost to target."""
    lines = ["| pruning | pretrain | iteration | params | on P after pruning | reference after adaptation | "
             "fleet as received | shared model after | nodes' mean after | nodes' gain | nodes' acc P after "
             "| forgetting on P | s to target | J to target | seeds reaching target |", "|---|" * 1 + "---|" * 14]
    for (pruning, pretrain, iteration), group in _by(results, "pruning", "pretrain", "iteration").items():
        costs = [r.to_target(target) for r in group]
        reached = [c for c in costs if not math.isnan(c[0])]
        lines.append(f"| {pruning} | {pretrain} | {iteration} | {group[0].params / 1e6:.3f}M | "
                     f"{estimate(r.pruned_accuracy for r in group)} | {estimate(r.reference() for r in group)} | "
                     f"{estimate(r.received_mean() for r in group)} | {estimate(r.shared_final() for r in group)} | "
                     f"{estimate(r.fleet_mean() for r in group)} | "
                     f"{estimate(r.gain() for r in group)} | "
                     f"{estimate(r.fleet_mean('acc_P') for r in group)} | {estimate(r.forgetting for r in group)} | "
                     f"{_cost(estimate(c[0] for c in reached))} | {_cost(estimate(c[1] for c in reached))} | "
                     f"{len(reached)}/{len(group)} |")
    return lines


def alone_table(results: list[FleetResult]) -> list[str]:
    """New classes: P ∪ F hides what happened to each part (F is a small share of its test samples),
    so F alone and P alone, per setting and size, for every model that adapts."""
    if results[0].mode != "continual":
        return []
    lines = ["| pruning | pretrain | iteration | accuracy | as received | reference after | shared model after | "
             "nodes' mean after |", "|---|---|---|---|---|---|---|---|"]
    for (pruning, pretrain, iteration), group in _by(results, "pruning", "pretrain", "iteration").items():
        for metric in ("acc_F", "acc_P"):
            lines.append(f"| {pruning} | {pretrain} | {iteration} | {metric} | "
                         f"{estimate(r.received_mean(metric) for r in group)} | "
                         f"{estimate(r.reference(metric) for r in group)} | "
                         f"{estimate(r.shared_final(metric) for r in group)} | "
                         f"{estimate(r.fleet_mean(metric) for r in group)} |")
    return lines


def _cost(e: Estimate) -> str:
    if e.n == 0:
        return "not reached"
    return f"{e.mean:.0f}" + (f" ± {e.half_width:.0f}" if e.n > 1 else "")


def fleet_table(results: list[FleetResult], baseline: str = BASELINE) -> list[str]:
    """Each criterion's fleets against the baseline's, by pre-training and size (one table each)."""
    lines: list[str] = []
    base = baseline.upper()
    for method in compared(results, baseline):
        rows = []
        for (pretrain, iteration), group in _by(results, "pretrain", "iteration").items():
            ours = _seed_values([r for r in group if r.pruning == method], lambda r: r.fleet_mean())
            theirs = _seed_values([r for r in group if r.pruning == baseline], lambda r: r.fleet_mean())
            if ours and theirs:
                energy = [estimate(r.joules_per_node() for r in group if r.pruning == m) for m in (method, baseline)]
                radio = [estimate(r.joules_per_node("comm_j") for r in group if r.pruning == m) for m in (method, baseline)]
                per_kj = [estimate(r.accuracy_per_kj() for r in group if r.pruning == m) for m in (method, baseline)]
                rows.append(f"| {pretrain} | {iteration} | {estimate(ours.values())} | {estimate(theirs.values())} | "
                            f"{_signed(paired_difference(ours, theirs))} | {_joules(energy[0])} ({_joules(radio[0])}) | "
                            f"{_joules(energy[1])} ({_joules(radio[1])}) | {per_kj[0]} | {per_kj[1]} |")
        if rows:
            lines += ([""] if lines else []) + [
                f"| pretrain | iteration | {method.upper()} fleet mean | {base} fleet mean | "
                f"{method.upper()} − {base} (paired by seed) | {method.upper()} J per node (radio) | "
                f"{base} J per node (radio) | {method.upper()} accuracy per kJ | {base} accuracy per kJ |",
                "|---|---|---|---|---|---|---|---|---|", *rows]
    return lines


def _joules(e: Estimate) -> str:
    """Joules as a whole number (intervals: ``estimate``'s); '-' where not recorded."""
    return "-" if e.n == 0 or math.isnan(e.mean) else f"{e.mean:.0f}" + (f" ± {e.half_width:.0f}" if e.n > 1 else "")


def write(directories: list[Path], out: Path, target: float | None = None,
          baseline: str = BASELINE) -> list[FleetResult]:
    results, problems = collect(directories)
    out.mkdir(parents=True, exist_ok=True)
    target_of = targets(results, target)
    write_csv(out / "results.csv", results, target_of)
    lines = ["# Fleet report", "", f"{len(results)} fleet results from {', '.join(str(d) for d in directories)}. "
             "Means over seeds with 95% Student-t intervals; differences are paired by seed (only seeds both "
             "sides ran). Machine-readable: [results.csv](results.csv).", ""]
    if problems:
        lines += ["Skipped:", ""] + [f"- {p}" for p in problems] + [""]
    sections = _by(results, "scenario", "model", "fleet_variant")
    # Figures are named by scenario, unless a scenario was run with several models or fleets.
    one_per_scenario = len(sections) == len(_by(results, "scenario"))
    for (scenario, model, variant), group in sections.items():
        mode = group[0].mode
        metric = "P ∪ F" if mode == "continual" else "F"
        seeds = sorted({r.seed for r in group})
        lines += [f"## {scenario} · {model} · fleet {variant}", "",
                  f"Adaptation is judged on {metric} ({group[0].target_metric}), the fleet mean after the last "
                  f"window; seeds {seeds}; {len({r.budget_label for r in group})} budget(s).", ""]
        failed = sum(r.failed_nodes for r in group)
        if failed:
            lines += [f"**{failed} node(s) failed** in these runs; their rows are left out of the means.", ""]
        unserved = sum(r.not_simulated_nodes for r in group)
        if unserved:
            lines += [f"**INCOMPLETE: {unserved} node(s) were not simulated** in some window of these runs (the "
                      "engine gave no reply); the means cover only the nodes that were.", ""]
        stem = scenario if one_per_scenario else f"{scenario}-{model}-{variant}"
        budgets = _by(group, "budget_kind", "budget_value")
        for budget_group in budgets.values():
            label = budget_group[0].budget_label
            suffix = "" if len(budgets) == 1 else "-" + label.split()[0].replace(".", "p")
            fig3, boxes = f"fig3_{stem}{suffix}.png", f"fleet_{stem}{suffix}.png"
            title = f"{scenario} · {model} · budget {label}"
            plot_fig3(budget_group, out / fig3, title, baseline)
            plot_fleets(budget_group, out / boxes, title, baseline)
            names = criteria(budget_group, baseline)
            lines += [f"### Budget {label}", "", f"![Fig. 3]({fig3})", "",
                      f"![{' vs '.join(n.upper() for n in names)} fleets]({boxes})", "",
                      "Per setting and size (forgetting: P accuracy of the received model minus the fleet's after "
                      f"adaptation; cost to reach the target {target_of[scenario]:.3f} on {metric}, per node, "
                      "over the seeds that reached it):", "", *setting_table(budget_group, target_of[scenario]), "",
                      "Gaps the paper reports, 95% interval over seeds: (a) extra − task_only > 0 at every "
                      f"size; (b) a criterion keeps that gap at high compression better than the baseline "
                      f"({baseline.upper()}), i.e. (extra − task_only): criterion − {baseline.upper()} > 0 at the "
                      "small sizes (the paper: LRP − IMP):", "", *gap_table(budget_group, baseline), ""]
            alone = alone_table(budget_group)
            if alone:
                lines += ["F alone (the new classes) and P alone (the old), the parts of P ∪ F:", "", *alone, ""]
            ends = endpoint_table(budget_group, baseline)
            if ends:
                lines += [*ends, ""]
            comparison = fleet_table(budget_group, baseline)
            if comparison:
                lines += ["Fleet comparison, mean accuracy after adaptation:", "", *comparison, ""]
        if len(budgets) > 1:
            name = f"budget_{stem}.png"
            plot_budget(group, out / name, f"{scenario} · {model}: accuracy after adaptation vs budget", baseline)
            lines += ["### Accuracy against budget", "", f"![budget curves]({name})", ""]
    io.write_text(out / REPORT, "\n".join(lines) + "\n")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swarm.report", description=__doc__.splitlines()[0])
    parser.add_argument("directories", nargs="+", type=Path, help="run or multirun directories of swarm.simulate")
    parser.add_argument("--out", type=Path, help="where report.md, results.csv and figures go "
                                                 "(default: <first directory>/report)")
    parser.add_argument("--target", type=float, help="accuracy for time- and energy-to-accuracy "
                                                     "(default: 90%% of the best fleet mean per scenario)")
    parser.add_argument("--baseline", default=BASELINE,
                        help="the pruning criterion every other one is compared with (default: %(default)s, the "
                             "paper's baseline)")
    args = parser.parse_args(argv)
    if args.target is not None and not 0 < args.target <= 1:
        print(f"error: --target {args.target} is not an accuracy in (0, 1]", file=sys.stderr)
        return 2
    out = args.out or args.directories[0] / "report"
    return run_command(lambda: f"{len(write(args.directories, out, args.target, args.baseline))} fleet results -> "
                               f"{out / REPORT}, {out / 'results.csv'}")


if __name__ == "__main__":
    sys.exit(main())
