"""``python -m swarm.updates_table RUNS... --out FILE``: the partial-update comparison from fleet results.

What each ``fleet.update`` mode buys a fleet (docs/partial_updates.md): for every scenario, pruning
criterion, pre-training and received model (pruning iteration: 0 is the unpruned model), a row per
mode and memory budget with the nodes' mean gain on the adapted task (F, or P ∪ F for new classes)
over the model as received, the shared model's gain (for new classes, on F alone too), and the
forgetting on P (as received minus after), each a mean with its two-sided 95% Student-t interval over seeds
(:func:`swarm.results.estimate`). Where ``fisher`` and ``relevant`` ran at the same budget, their
difference on the shared model's gain, paired by seed (:func:`swarm.results.paired_difference`),
says which choice won, or that the interval cannot tell.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from swarm.nodes import io
from swarm.nodes.errors import SwarmError
from swarm.results import Estimate, FleetResult, collect, estimate, paired_difference

MODES = ("full", "bias", "head", "fisher", "relevant")  # the order rows are listed in
Setting = tuple[str, str, str, int]  # scenario, pruning, pretrain, iteration


def _budget(value: float | None) -> str:
    return "-" if value is None else f"{value:g} KB"


def _verdict(difference: Estimate) -> str:
    if difference.n < 2:
        return "too few seeds"
    if difference.low > 0:
        return "relevant wins"
    if difference.high < 0:
        return "fisher wins"
    return "tie (the interval holds 0)"


def grouped(results: Iterable[FleetResult]) -> dict[Setting, dict[tuple[str, float | None], list[FleetResult]]]:
    """Results by setting, then by (mode, budget); a budget only where the mode chooses within one."""
    out: dict[Setting, dict[tuple[str, float | None], list[FleetResult]]] = defaultdict(lambda: defaultdict(list))
    for result in results:
        budget = result.update_budget_kb if result.update in ("fisher", "relevant") else None
        out[(result.scenario, result.pruning, result.pretrain, result.iteration)][(result.update, budget)].append(result)
    return out


def table(results: list[FleetResult]) -> str:
    """The comparison as Markdown: one section per setting."""
    lines = ["# Partial updates compared", "",
             "Means over seeds with their 95% intervals (built by `python -m swarm.updates_table`; "
             "docs/partial_updates.md says how the modes choose and what a budget counts).", ""]
    for (scenario, pruning, pretrain, iteration), by_mode in sorted(grouped(results).items()):
        metric = next(iter(by_mode.values()))[0].target_metric
        on_f = metric != "acc_F"  # new classes are judged on P ∪ F; their gain on F alone is shown beside it
        lines += [f"## {scenario} · {pruning} · pretrain={pretrain} · iteration {iteration}"
                  + (" (unpruned)" if iteration == 0 else ""), "",
                  f"| mode | budget | nodes' gain on {metric} | shared model's gain |"
                  + (" shared model's gain on acc_F |" if on_f else "") + " forgetting on P | seeds |",
                  "|---|---|---|---|" + ("---|" if on_f else "") + "---|---|"]
        order = sorted(by_mode, key=lambda key: (MODES.index(key[0]) if key[0] in MODES else len(MODES), key[1] or 0))
        for mode, budget in order:
            runs = by_mode[(mode, budget)]
            lines.append(f"| `{mode}` | {_budget(budget)} | {estimate(r.gain() for r in runs)} | "
                         f"{estimate(r.shared_gain() for r in runs)} | "
                         + (f"{estimate(r.shared_gain('acc_F') for r in runs)} | " if on_f else "")
                         + f"{estimate(r.forgetting for r in runs)} | "
                         f"{', '.join(str(s) for s in sorted(r.seed for r in runs))} |")
        budgets = sorted({b for m, b in by_mode if m == "relevant"} & {b for m, b in by_mode if m == "fisher"})
        for budget in budgets:
            relevant = {r.seed: r.shared_gain() for r in by_mode[("relevant", budget)]}
            fisher = {r.seed: r.shared_gain() for r in by_mode[("fisher", budget)]}
            difference = paired_difference(relevant, fisher)
            lines += ["", f"At {_budget(budget)}, `relevant` − `fisher` on the shared model's gain: {difference}: "
                          f"{_verdict(difference)}."]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run or multirun directories of swarm.simulate")
    parser.add_argument("--out", type=Path, required=True, help="the Markdown file to write")
    args = parser.parse_args(argv)
    try:
        results, problems = collect(args.runs)
    except SwarmError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    io.write_text(args.out, table(results))
    print(f"{len(results)} fleet results -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
