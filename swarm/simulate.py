"""``python -m swarm.simulate``: the coordinator's stages, then online adaptation of the pruned model.

Today the stages are the coordinator (pre-training on T ∪ P, or P alone with
``pretrain=task_only``, then Algorithm 1's LRP/IMP pruning; cached and reused) and one node's
online adaptation of the chosen checkpoint (``adapt.checkpoint``: the last iteration by default):
fine-tuning on F, or continual learning on P ∪ F. Each stage is evaluated on P, F and P ∪ F. The
Flower fleet replaces the single node when it lands.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from server import coordinator
from swarm import checkpoints, io
from swarm.config import data_options, entry_point, scenario_of
from swarm.data.build import ScenarioData, build
from swarm.errors import SwarmError
from swarm.models import count_parameters
from swarm.prune import table
from swarm.training import TrainSettings, evaluate, fit, make_loader, resolve_device

log = logging.getLogger("swarm.simulate")


def accuracies(model, data: ScenarioData, settings: TrainSettings) -> dict[str, float]:
    """Test accuracy on P, F and P ∪ F (NaN where a set is empty)."""
    device = resolve_device(settings.device)
    result = {}
    for name in ("P", "F", "PF"):
        loader = make_loader(data.union(name, "test"), 256, shuffle=False, num_workers=settings.num_workers)
        result[f"acc_{name}"] = evaluate(model, loader, device)
    return result


def _fmt(value: float) -> str:
    return "  -  " if math.isnan(value) else f"{value:.3f}"


def _chosen_iteration(cfg: DictConfig, result: coordinator.CoordinatorResult) -> int:
    choice = cfg.adapt.checkpoint
    numbers = [it["iteration"] for it in result.iterations]
    if choice in (None, "last", -1):
        return numbers[-1]
    if int(choice) not in numbers:
        raise SwarmError(f"adapt.checkpoint={choice}: the coordinator has iterations {numbers[0]}..{numbers[-1]}")
    return int(choice)


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    scenario = scenario_of(cfg)
    data = build(scenario, data_options(cfg))
    counts = data.counts()
    log.info("scenario %s (%s, pretrain=%s, pruning=%s): %s", scenario.name, scenario.mode, scenario.pretrain,
             cfg.pruning.name, ", ".join(f"{r} {c['train']}/{c['val']}/{c['test']}" for r, c in counts.items()))
    settings = TrainSettings.from_config(cfg.train, cfg.data.num_workers)

    result = coordinator.run(cfg, data)
    iteration = _chosen_iteration(cfg, result)
    model, _, _ = checkpoints.load(coordinator.checkpoint_path(result.directory, iteration))
    before = accuracies(model, data, settings)
    adapt_roles = "F" if scenario.mode == "finetune" else "PF"
    fitted = fit(model, data.union(adapt_roles, "train"), data.union(adapt_roles, "val"), settings,
                 seed=int(cfg.seed) + 1000, desc=f"adapt iteration {iteration} on {'∪'.join(adapt_roles)}")
    after = accuracies(model, data, settings)

    summary = {
        "scenario": scenario.name, "pretrain": scenario.pretrain, "pruning": cfg.pruning.name, "mode": scenario.mode,
        "model": cfg.model.name, "seed": int(cfg.seed), "counts": counts,
        "coordinator": {**result.record, "cache_dir": str(result.directory), "cached": result.cached},
        "adaptation": {"iteration": iteration, "parameters": count_parameters(model), "trained_on": adapt_roles,
                       "epochs": fitted.epochs, "seconds": fitted.seconds, "before": before, "after": after},
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    io.write_json(run_dir / "coordinator.json", summary["coordinator"])
    io.write_json(run_dir / "results.json", summary)
    print(f"\n{scenario.name} · pretrain={scenario.pretrain} · pruning={cfg.pruning.name} · {cfg.model.name} · "
          f"seed {cfg.seed}{' · coordinator from cache' if result.cached else ''}")
    print(table(result.record))
    print(f"\nadapting iteration {iteration} ({count_parameters(model) / 1e6:.2f}M parameters) "
          f"on {'∪'.join(adapt_roles)} for {fitted.epochs} epochs:")
    print(f"{'':<8}{'acc P':>8}{'acc F':>8}{'acc P∪F':>9}")
    for name, acc in (("before", before), ("after", after)):
        print(f"{name:<8}{_fmt(acc['acc_P']):>8}{_fmt(acc['acc_F']):>8}{_fmt(acc['acc_PF']):>9}")
    print(f"results: {run_dir / 'results.json'}")
    return summary


@entry_point("config")
def main(cfg: DictConfig) -> None:
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
