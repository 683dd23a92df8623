"""Where the fleet's extra − task_only gap on new classes comes from: the on-device loss rule.

    python benchmarks/loss_rule.py multirun/loss_study

reads fleet runs of a continual scenario that differ in ``fleet.loss`` and ``pretrain`` (made with
``python -m swarm.simulate -m +experiment=fmnist_results scenario=fmnist_new_classes
fleet.checkpoint=0 prune.iterations=0 pretrain=extra,task_only fleet.loss=batch,masked,full
seed=0,1,...``) and prints, per loss rule and pre-training, over seeds: the nodes' mean after the
last window on P ∪ F, F and P; and, for the shared model after the last window
(``fleet_shared_wNNNN.pt`` of the run), the share of F's and of P's test images it assigns to an
output outside the deployed task (T's classes: ``FleetPlan.undeployed_outputs``). A model that
gives F's images to T's classes has never been taught that T is gone. Then the gap extra −
task_only on each, paired by seed (docs/adaptation.md, section 10).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch

from swarm.nodes import io
from swarm.nodes.checkpoints import received_model
from swarm.nodes.evaluation import _predict
from swarm.nodes.fleet_plan import FleetPlan
from swarm.nodes.local_data import load_evaluation_set
from swarm.nodes.run_folder import EVALUATION_DIR, FLEET_PLAN
from swarm.results import collect, estimate, paired_difference


def undeployed_share(run_dir: Path) -> dict[str, float]:
    """Share of F's and P's test images the run's last shared model assigns to T's outputs."""
    plan = FleetPlan.load(run_dir / FLEET_PLAN)
    shared = sorted(run_dir.glob("fleet_shared_w*.pt"))
    model = received_model(plan)
    if shared:
        model.load_state_dict(io.load_tensors(shared[-1]))
    tests = load_evaluation_set(run_dir / EVALUATION_DIR, plan.evaluation_id())
    out = {}
    for name in ("F", "P"):
        predicted, _ = _predict(model.eval(), tests.sets[name], torch.device("cpu"))
        out[f"to_T_{name}"] = float(torch.isin(predicted, torch.tensor(plan.undeployed_outputs)).float().mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="multirun folders of the loss study")
    args = parser.parse_args()
    results, _ = collect(args.runs)
    values: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)
    for result in results:
        loss = json.loads((result.directory / "run.json").read_text())["fleet"]["loss"]
        measured = {m: result.fleet_mean(m) for m in ("acc_PF", "acc_F", "acc_P")}
        measured.update(undeployed_share(result.directory))
        for metric, value in measured.items():
            values[(loss, result.pretrain, metric)][result.seed] = value
    metrics = ("acc_PF", "acc_F", "acc_P", "to_T_F", "to_T_P")
    print("| fleet.loss | measure | extra | task_only | extra − task_only (paired) |\n|---|---|---|---|---|")
    for loss in sorted({key[0] for key in values}):
        for metric in metrics:
            extra, task = values[(loss, "extra", metric)], values[(loss, "task_only", metric)]
            gap = paired_difference(extra, task)
            print(f"| {loss} | {metric} | {estimate(extra.values())} | {estimate(task.values())} | "
                  f"{gap.mean:+.3f} [{gap.low:+.3f}, {gap.high:+.3f}] (n={gap.n}) |")


if __name__ == "__main__":
    main()
