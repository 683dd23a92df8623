"""How much do nodes learn? Variants of on-device training, side by side on the same fleet plan.

    python benchmarks/adaptation_study.py                                   # default scenario, all variants
    python benchmarks/adaptation_study.py --variants before after --set scenario=fmnist_new_classes

Every variant is a list of Hydra overrides on top of ``--set``. The coordinator's result comes from
the cache (it is trained first if missing); the fleet plan is drawn exactly as ``swarm.simulate``
draws it, and every node runs every window in this process through :class:`swarm.nodes.node.NodeRuntime`
(the code the Flower ClientApp runs), without Flower. Per device profile it prints the accuracy of
the model as received, after the last window, the gain, the steps trained, and the wall time.
The findings are written up in ``docs/adaptation.md``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

import torch
from swarm.config import compose_config

# The node training of the landed code before issue 9, then one change at a time.
OLD = ["fleet.batchnorm=track", "fleet.recent_samples=256", "fleet.loss=full", "fleet.sampling=uniform",
       "fleet.replay.finetune=false", "fleet.passes=null"]
OLD_BUDGET = ["fleet.budget.energy_j=20", "fleet.budget.duty_cycle=null"]
NEW_BUDGET = ["fleet.budget.energy_j=null", "fleet.budget.duty_cycle=0.1", "fleet.passes=20"]  # as first studied
VARIANTS: dict[str, list[str]] = {
    "before": [*OLD, *OLD_BUDGET],
    "bn_frozen": [*OLD, *OLD_BUDGET, "fleet.batchnorm=frozen"],
    "all_samples": [*OLD, *OLD_BUDGET, "fleet.recent_samples=null"],
    "replay_finetune": [*OLD, *OLD_BUDGET, "fleet.replay.finetune=true"],
    "masked": [*OLD, *OLD_BUDGET, "fleet.loss=masked"],
    "duty": [*OLD, *NEW_BUDGET],
    "duty_masked": [*OLD, *NEW_BUDGET, "fleet.loss=masked"],
    "duty_balanced": [*OLD, *NEW_BUDGET, "fleet.sampling=balanced"],
    "duty_masked_balanced": [*OLD, *NEW_BUDGET, "fleet.loss=masked", "fleet.sampling=balanced"],
    "after": [],  # the defaults as they are now
}


def run_variant(name: str, overrides: list[str], workdir: Path) -> list[dict]:
    from swarm.config import data_options, scenario_of
    from swarm.nodes import checkpoints
    from swarm.nodes.fleet_plan import FleetPlan
    from swarm.nodes.node import NodeRuntime
    from swarm.server import coordinator
    from swarm.server.data.build import build
    from swarm.server.plan_drawing import plan_from_config

    cfg = compose_config(overrides)
    data = build(scenario_of(cfg), data_options(cfg))
    result = coordinator.run(cfg, data)
    run_dir = workdir / name
    shutil.rmtree(run_dir, ignore_errors=True)
    checkpoint = result.checkpoint(-1)
    plan_from_config(cfg, data, checkpoint=checkpoint,
                     run_dir=run_dir).save(run_dir / "fleet_plan.json")
    plan = FleetPlan.load(run_dir / "fleet_plan.json")
    received_model = checkpoints.load(checkpoint)[0]
    weights = received_model.state_dict()
    rows = []
    for partition in range(len(plan.nodes)):
        node = NodeRuntime(plan, partition, data)
        received = vars(node.received(weights))
        start = time.perf_counter()
        steps = 0
        for window in range(plan.windows):
            metrics, _ = node.run_window(window, weights if window == 0 else None)
            steps += metrics.steps
        rows.append({"profile": metrics.profile, "received": received, "final": metrics, "steps": steps,
                     "seconds": time.perf_counter() - start})
    return rows


def report(name: str, rows: list[dict], metric: str) -> None:
    for profile in sorted({r["profile"] for r in rows}) + ["fleet"]:
        mine = [r for r in rows if profile in ("fleet", r["profile"])]
        before = statistics.fmean(r["received"][metric] for r in mine)
        after = statistics.fmean(getattr(r["final"], metric) for r in mine)
        p_after = statistics.fmean(r["final"].acc_P for r in mine)
        p_before = statistics.fmean(r["received"]["acc_P"] for r in mine)
        print(f"{name:>14} {profile:>15} {len(mine):>3} {before:>9.3f} {after:>7.3f} {after - before:>+7.3f} "
              f"{p_before:>8.3f} {p_after:>8.3f} {sum(r['steps'] for r in mine) / len(mine):>8.0f} "
              f"{sum(r['seconds'] for r in mine):>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--set", nargs="*", default=[], help="Hydra overrides for every variant")
    parser.add_argument("--metric", default=None, help="acc_F (default for finetune) or acc_PF / acc_F")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/swarm-adaptation-study"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    results = {name: run_variant(name, [*args.set, *VARIANTS[name]], args.workdir) for name in args.variants}
    metric = args.metric or "acc_F"
    print(f"\n{' '.join(args.set) or 'default scenario'}; metric {metric}")
    print(f"{'variant':>14} {'profile':>15} {'n':>3} {'received':>9} {'after':>7} {'gain':>7} "
          f"{'P before':>8} {'P after':>8} {'steps':>8} {'wall s':>8}")
    for name, rows in results.items():
        report(name, rows, metric)


if __name__ == "__main__":
    main()
