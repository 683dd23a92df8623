"""``python -m swarm.simulate``: run the project's stages on a scenario.

Today the stages are the coordinator's pre-training (on T ∪ P, or P alone with
``pretrain=task_only``) and a single node's online adaptation of that model (fine-tuning on F,
or continual learning on P ∪ F), each evaluated on P, F and P ∪ F. Structural LRP/IMP pruning and
the Flower fleet plug in between and after these stages as they land.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from swarm import io
from swarm.config import data_options, entry_point, scenario_of
from swarm.data.build import ScenarioData, build
from swarm.models import build_model, count_parameters
from swarm.training import TrainSettings, evaluate, fit, make_loader, resolve_device

log = logging.getLogger("swarm.simulate")


def accuracies(model, data: ScenarioData, settings: TrainSettings) -> dict[str, float]:
    """Test accuracy on P, F and P ∪ F (NaN where a set is empty)."""
    device = resolve_device(settings.device)
    result = {}
    for name, roles in (("P", "P"), ("F", "F"), ("PF", "PF")):
        loader = make_loader(data.union(roles, "test"), 256, shuffle=False, num_workers=settings.num_workers)
        result[f"acc_{name}"] = evaluate(model, loader, device)
    return result


def _fmt(value: float) -> str:
    return "  -  " if math.isnan(value) else f"{value:.3f}"


def run(cfg: DictConfig, run_dir: Path) -> dict:
    scenario = scenario_of(cfg)
    data = build(scenario, data_options(cfg))
    counts = data.counts()
    log.info("scenario %s (%s, pretrain=%s): %s", scenario.name, scenario.mode, scenario.pretrain,
             ", ".join(f"{r} {c['train']}/{c['val']}/{c['test']}" for r, c in counts.items()))
    settings = TrainSettings.from_config(cfg.train, cfg.data.num_workers)
    model = build_model(cfg.model, data.num_outputs, data.channels, data.image_size)
    log.info("model %s: %d parameters, %d outputs", cfg.model.name, count_parameters(model), data.num_outputs)

    pretrain_roles = "TP" if scenario.pretrain == "extra" else "P"
    stages = []
    fitted = fit(model, data.union(pretrain_roles, "train"), data.union(pretrain_roles, "val"), settings,
                 seed=int(cfg.seed), desc=f"pre-train on {'∪'.join(pretrain_roles)}")
    stages.append({"stage": "pretrain", "trained_on": pretrain_roles, "epochs": fitted.epochs,
                   "best_val_acc": fitted.best_val_acc, "seconds": fitted.seconds,
                   **accuracies(model, data, settings)})
    io.save_tensors(run_dir / "pretrained.pt", {"state_dict": model.state_dict()})

    adapt_roles = "F" if scenario.mode == "finetune" else "PF"
    fitted = fit(model, data.union(adapt_roles, "train"), data.union(adapt_roles, "val"), settings,
                 seed=int(cfg.seed) + 1, desc=f"adapt on {'∪'.join(adapt_roles)}")
    stages.append({"stage": "adapt", "trained_on": adapt_roles, "epochs": fitted.epochs,
                   "best_val_acc": fitted.best_val_acc, "seconds": fitted.seconds,
                   **accuracies(model, data, settings)})

    result = {"scenario": scenario.name, "pretrain": scenario.pretrain, "mode": scenario.mode,
              "model": cfg.model.name, "parameters": count_parameters(model), "seed": int(cfg.seed),
              "counts": counts, "stages": stages, "config": OmegaConf.to_container(cfg, resolve=True)}
    io.write_json(run_dir / "results.json", result)
    print(f"\n{scenario.name} · pretrain={scenario.pretrain} · {cfg.model.name} · seed {cfg.seed}")
    print(f"{'stage':<10}{'trained on':<12}{'epochs':>7}{'acc P':>8}{'acc F':>8}{'acc P∪F':>9}")
    for s in stages:
        print(f"{s['stage']:<10}{'∪'.join(s['trained_on']):<12}{s['epochs']:>7}"
              f"{_fmt(s['acc_P']):>8}{_fmt(s['acc_F']):>8}{_fmt(s['acc_PF']):>9}")
    print(f"results: {run_dir / 'results.json'}")
    return result


@entry_point("config")
def main(cfg: DictConfig) -> None:
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
