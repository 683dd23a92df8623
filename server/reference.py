"""The paper's own adaptation of a checkpoint, as the yardstick for the fleet.

The paper adapts every pruned model centrally: ``finetune`` scenarios train on F, ``continual``
ones on P ∪ F (all of P replayed), with the pre-training recipe (Adam 5e-4, batch 32, early
stopping on a validation split of that training set with patience 4, best weights kept). Its
"after adaptation" accuracy is what Fig. 3's lower panel shows; the fleet, which adapts on-device
on skewed shares of F under budgets, is compared against it.

The result is recorded per iteration as ``{"before": accs, "after": accs, "epochs": N}`` where
``accs`` holds ``acc_P``, ``acc_F`` (and ``acc_PF`` for continual scenarios) on the same test
subsets the nodes evaluate on (:mod:`swarm.nodes.evaluation`). It is cached next to the coordinator's
checkpoints, keyed by everything it depends on, so sweeps compute it once per checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

from swarm.nodes import checkpoints, io
from swarm.nodes.choices import NewClassOutputs
from swarm.nodes.evaluation import accuracies
from swarm.nodes.layout import place
from swarm.nodes.models import reset_outputs
from swarm.nodes.training import TrainSettings, fit, resolve_device
from swarm.server import cache
from swarm.server.coordinator import CoordinatorResult, checkpoint_path, model_key, pretrain_directory
from swarm.server.data.build import ScenarioData
from swarm.server.data.evaluation_sets import test_sets
from swarm.server.settings import SwarmConfig

log = logging.getLogger("swarm.reference")

# Seeds of the reference fits are offset from the coordinator's so the two never share a stream.
SEED_OFFSET = 10_000


def _settings(cfg: SwarmConfig) -> TrainSettings:
    """The coordinator's training recipe, capped at the reference's own ``max_epochs``."""
    train = dataclasses.replace(cfg.train, max_epochs=cfg.reference.max_epochs)
    return TrainSettings.from_config(train, cfg.data.num_workers)


def reference_key(cfg: SwarmConfig, mode: str, iteration: int) -> str:
    settings = _settings(cfg)
    return cache.key("reference", {
            "coordinator": model_key(cfg, iteration), "iteration": iteration,
            "train": [settings.lr, settings.batch_size, settings.patience, settings.max_epochs],
            "eval_samples": cfg.fleet.eval_samples, "mode": mode,
            "new_class_outputs": str(cfg.reference.new_class_outputs)})


def _round(accs: dict[str, Any]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in accs.items() if k != "acc_F_groups" and not math.isnan(float(v))}


def adapt(cfg: SwarmConfig, data: ScenarioData, result: CoordinatorResult, iteration: int) -> dict[str, Any]:
    """The reference record of one coordinator iteration: from the cache, or trained now."""
    key = reference_key(cfg, data.scenario.mode, iteration)
    # The pre-trained model's reference is shared by LRP and IMP: it lives with the pre-training.
    directory = pretrain_directory(cfg) if iteration == 0 else result.directory
    path = directory / f"reference_{iteration:02d}-{key}.json"
    with cache.entry(directory, f"the reference adaptation of iteration {iteration}"):
        if path.exists():
            return json.loads(path.read_text())
        return _adapt(cfg, data, result, iteration, path)


def _adapt(cfg: SwarmConfig, data: ScenarioData, result: CoordinatorResult, iteration: int,
           path: Path) -> dict[str, Any]:
    continual = data.scenario.mode == "continual"
    roles = "PF" if continual else "F"
    model, _, _ = checkpoints.load(checkpoint_path(result.directory, iteration))
    if cfg.reference.new_class_outputs == NewClassOutputs.reset:  # the same start as the fleet's (swarm.nodes.fleet_plan)
        reset_outputs(model, data.untrained_outputs())
    settings = _settings(cfg)
    tests = test_sets(data, continual, cfg.fleet.eval_samples)
    device = resolve_device(settings.device)
    place(model, device)
    before = accuracies(model, tests, device)
    fitted = fit(model, data.union(roles, "train"), data.union(roles, "val"), settings,
                 seed=cfg.seed + SEED_OFFSET + iteration,
                 desc=f"reference: iteration {iteration} adapted centrally on {'∪'.join(roles)}")
    after = accuracies(model, tests, device)
    record = {"before": _round(before), "after": _round(after), "epochs": fitted.epochs}
    io.write_json(path, record)
    log.info("reference, iteration %d: acc_F %.3f -> %.3f (%d epochs on %s)", iteration, before["acc_F"],
             after["acc_F"], fitted.epochs, "∪".join(roles))
    return record


def annotate(cfg: SwarmConfig, data: ScenarioData, result: CoordinatorResult, iterations: list[int]) -> dict[str, Any]:
    """A copy of the coordinator's record whose chosen iterations carry their ``reference``
    (all of them unchanged when ``reference.adapt`` is false)."""
    record = json.loads(json.dumps(result.record))
    if not cfg.reference.adapt:
        return record
    for entry in record["iterations"]:
        if entry["iteration"] in iterations:
            entry["reference"] = adapt(cfg, data, result, int(entry["iteration"]))
    return record
