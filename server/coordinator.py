"""The coordinator: pre-training and iterative task-relevant pruning (the paper's Algorithm 1).

    M0 <- train(T ∪ P)                                  (or P alone: pretrain=task_only)
    for i in 1..iterations:
        S  <- channel scores of M(i-1) over all of P    (LRP relevance, or filter l1 norm for IMP)
        Mi <- remove the lowest-scoring share of every prunable layer's channels
        Mi <- train(Mi, P)                              (fresh optimizer, early stopping, best weights)

Every iteration's best-validation checkpoint (0 = unpruned) is kept. Results live in a cache
directory keyed by everything they depend on, so a second run or a fleet sweep reuses them; an
interrupted run resumes after its last completed iteration. Each checkpoint is written atomically
before the record that announces it, so a partly written file is never read.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from swarm.nodes import checkpoints, io
from swarm.nodes.choices import Pretrain
from swarm.nodes.models import build_model, model_name
from swarm.nodes.settings import to_plain
from swarm.nodes.run_folder import COORDINATOR
from swarm.nodes.shapes import count_macs_and_params
from swarm.nodes.training import TrainSettings, evaluate, fit, make_loader, progress_bar, resolve_device
from swarm.server import cache
from swarm.server.criteria import CRITERIA, REVISIONS, ScoringContext
from swarm.server.data.build import ScenarioData
from swarm.server.data.scenario import Scenario
from swarm.server.pruning import prunable_layers, prune_step
from swarm.server.relevance import filter_l1
from swarm.server.settings import SwarmConfig

log = logging.getLogger("swarm.coordinator")


def _key_parts(cfg: SwarmConfig) -> dict[str, Any]:
    """What pre-training depends on (not where data lives, not the device)."""
    data = {k: v for k, v in to_plain(cfg.data).items() if k not in ("root", "download", "num_workers")}
    train = {k: v for k, v in to_plain(cfg.train).items() if k != "device"}
    return {"scenario": dict(cfg.scenario), "pretrain": to_plain(cfg.pretrain),
            "model": dict(cfg.model), "train": train, "data": data, "seed": cfg.seed}


def _scenario_name(cfg: SwarmConfig) -> str:
    return Scenario.from_config(cfg.scenario, cfg.pretrain.name).name


def pretrain_key(cfg: SwarmConfig) -> str:
    """A hash of what iteration 0 depends on: LRP and IMP runs of one setting share their pre-training."""
    return cache.key("pretrain", _key_parts(cfg))


def cache_key(cfg: SwarmConfig) -> str:
    """A hash of everything the coordinator's results depend on (not where data lives, not the device).

    Relevance batching is left in: it does not change the scores' meaning, but it changes their
    floating-point sums, and cached results must be exactly reproducible."""
    # Not the number of iterations: iteration i does not depend on how many follow it, so a longer
    # run extends a shorter one and a shorter one reuses a longer one's prefix.
    prune = {k: v for k, v in to_plain(cfg.prune).items() if k not in ("dry_run", "iterations")}
    # A criterion's unused settings (IMP has no LRP composite) are left out, as their absence always was.
    pruning = {k: v for k, v in to_plain(cfg.pruning).items() if v is not None}
    revision = REVISIONS[cfg.pruning.name]
    if revision > 1:  # revision 1 stays out of the key, so that keys from before revisions stay valid
        pruning["revision"] = revision
    return cache.key("coordinator", {**_key_parts(cfg), "pruning": pruning, "prune": prune})


def model_key(cfg: SwarmConfig, iteration: int) -> str:
    """The key of the model a pruning iteration produced: iteration 0 is the pre-trained model, the
    same for LRP and IMP, so whatever is computed from it (the reference, a fleet's adaptation) is
    computed once for both."""
    return pretrain_key(cfg) if iteration == 0 else cache_key(cfg)


def run_directory(cfg: SwarmConfig) -> Path:
    """Where this configuration's coordinator results are (or will be) cached."""
    return cache.folder(cfg.cache_dir, "coordinator",
                        f"{_scenario_name(cfg)}-{cfg.pretrain.name}-{cfg.pruning.name}-{cache_key(cfg)}")


def pretrain_directory(cfg: SwarmConfig) -> Path:
    """Where the pre-trained model (iteration 0) of this setting is cached, shared by LRP and IMP."""
    return cache.folder(cfg.cache_dir, "pretrain", f"{_scenario_name(cfg)}-{cfg.pretrain.name}-{pretrain_key(cfg)}")


def checkpoint_path(directory: Path, iteration: int) -> Path:
    return directory / f"iteration_{iteration:02d}.pt"


@dataclass
class CoordinatorResult:
    directory: Path
    record: dict[str, Any]
    cached: bool

    @property
    def iterations(self) -> list[dict[str, Any]]:
        return self.record["iterations"]

    def checkpoint(self, iteration: int = -1) -> Path:
        number = self.iterations[iteration]["iteration"]
        return checkpoint_path(self.directory, number)


def _read_record(directory: Path) -> dict[str, Any] | None:
    path = directory / COORDINATOR
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    # Keep only iterations whose checkpoint is there (a cache folder may have been pruned by hand).
    record["iterations"] = [it for it in record["iterations"]
                            if checkpoint_path(directory, it["iteration"]).exists()]
    return record


def _scores(cfg: SwarmConfig, model: torch.nn.Module, data: ScenarioData, settings: TrainSettings,
            layers: list[str]) -> dict[str, torch.Tensor]:
    """Channel scores by the chosen criterion (:mod:`swarm.server.criteria`)."""
    def p_batches():
        p_train = data.datasets["P"]["train"]
        if cfg.prune.relevance_samples:
            p_train = torch.utils.data.Subset(p_train, range(min(len(p_train), cfg.prune.relevance_samples)))
        loader = make_loader(p_train, cfg.prune.relevance_batch_size, shuffle=False,
                             num_workers=settings.num_workers)
        return progress_bar(loader, desc="relevance on P", unit="batch")

    context = ScoringContext(p_batches, resolve_device(settings.device), cfg.pruning)
    return CRITERIA[cfg.pruning.name](model, layers, context)


def _p_accuracy(model: torch.nn.Module, data: ScenarioData, settings: TrainSettings) -> dict[str, float]:
    device = resolve_device(settings.device)
    return {split + "_acc": evaluate(model, make_loader(data.datasets["P"][split], 256, shuffle=False,
                                                         num_workers=settings.num_workers), device)
            for split in ("val", "test")}


def cached(cfg: SwarmConfig) -> CoordinatorResult | None:
    """The finished result of this configuration, if the cache has it (no data is read)."""
    iterations = cfg.prune.iterations
    directory = run_directory(cfg)
    record = _read_record(directory)
    if record is None or len(record["iterations"]) < iterations + 1:
        return None
    record["iterations"] = record["iterations"][: iterations + 1]
    log.info("coordinator: cached result in %s", directory)  # logged here: callers check before taking the lock too
    return CoordinatorResult(directory, record, cached=True)


def run(cfg: SwarmConfig, data: ScenarioData) -> CoordinatorResult:
    """Run (or resume, or reuse) Algorithm 1 for this configuration (its settings were checked
    when it was composed: :mod:`swarm.schema`)."""
    with cache.entry(run_directory(cfg), f"the coordinator's {cfg.pruning.name} result"):
        return _run(cfg, data)


def _run(cfg: SwarmConfig, data: ScenarioData) -> CoordinatorResult:
    iterations, ratio, scope = cfg.prune.iterations, cfg.prune.ratio, cfg.prune.scope
    hit = cached(cfg)
    if hit is not None:
        return hit
    directory = run_directory(cfg)
    record = _read_record(directory)

    settings = TrainSettings.from_config(cfg.train, cfg.data.num_workers)
    seed = cfg.seed
    if record is None or not record["iterations"]:
        record = {"key": cache_key(cfg), "scenario": data.scenario.name, "pretrain": str(cfg.pretrain.name),
                  "pruning": cfg.pruning.name, "model": model_name(cfg.model), "seed": seed, "ratio": ratio,
                  "scope": str(scope), "iterations": []}
        log.info("coordinator: computing the %s result %s in %s", cfg.pruning.name, record["key"], directory)
        model, fitted, seconds = _pretrained(cfg, data, settings)
        _finish_iteration(directory, record, model, data, settings, cfg, iteration=0, fitted=fitted,
                          seconds=seconds, timings={})
    else:
        model, _, _ = checkpoints.load(checkpoint_path(directory, record["iterations"][-1]["iteration"]))
        log.info("coordinator: resuming after iteration %d in %s", record["iterations"][-1]["iteration"], directory)

    example = torch.randn(1, data.channels, data.image_size, data.image_size)
    for iteration in range(len(record["iterations"]), iterations + 1):
        start = time.perf_counter()
        scores = _scores(cfg, model, data, settings, prunable_layers(model, scope))
        relevance_seconds = time.perf_counter() - start
        model.cpu()  # torch-pruning traces the graph with CPU example inputs
        prune_step(model, scores, example, ratio=ratio, scope=scope)
        prune_seconds = time.perf_counter() - start - relevance_seconds
        fitted = fit(model, data.datasets["P"]["train"], data.datasets["P"]["val"], settings,
                     seed=seed + iteration, desc=f"iteration {iteration}/{iterations}: recover on P")
        _finish_iteration(directory, record, model, data, settings, cfg, iteration=iteration, fitted=fitted,
                          seconds=time.perf_counter() - start,
                          timings={"score_seconds": relevance_seconds, "prune_seconds": prune_seconds})
    return CoordinatorResult(directory, record, cached=False)


@dataclass
class FitSummary:
    """The part of a fit's record kept for a cached pre-training."""

    epochs: int
    best_epoch: int


def _pretrained(cfg: SwarmConfig, data: ScenarioData, settings: TrainSettings) -> tuple[torch.nn.Module, Any, float]:
    """Pre-train on T ∪ P (or P), or load the result another pruning criterion already paid for."""
    shared = pretrain_directory(cfg)
    with cache.entry(shared, "the pre-training"):
        return _pretrain(cfg, data, settings, shared)


def _pretrain(cfg: SwarmConfig, data: ScenarioData, settings: TrainSettings,
              shared: Path) -> tuple[torch.nn.Module, Any, float]:
    path, record_path = shared / "model.pt", shared / "pretrain.json"
    if path.exists() and record_path.exists():
        log.info("coordinator: pre-trained model from %s", shared)
        model, _, _ = checkpoints.load(path)
        info = json.loads(record_path.read_text())
        return model, FitSummary(info["epochs"], info["best_epoch"]), float(info["seconds"])
    seed = cfg.seed
    log.info("coordinator: pre-training %s in %s", pretrain_key(cfg), shared)
    torch.manual_seed(seed)
    model = build_model(cfg.model, data.num_outputs, data.channels, data.image_size)
    roles = "TP" if cfg.pretrain.name == Pretrain.extra else "P"
    start = time.perf_counter()
    fitted = fit(model, data.union(roles, "train"), data.union(roles, "val"), settings, seed=seed,
                 desc=f"pre-train on {'∪'.join(roles)}")
    seconds = time.perf_counter() - start
    model.cpu()
    arch = checkpoints.architecture(model, cfg.model, data.num_outputs, data.channels, data.image_size)
    checkpoints.save(path, model, arch, iteration=0, scenario=data.scenario.name, label_names=list(data.label_names))
    io.write_json(record_path, {"key": pretrain_key(cfg), "roles": roles, "epochs": fitted.epochs,
                                "best_epoch": fitted.best_epoch, "seconds": round(seconds, 2)})
    return model, fitted, seconds


def _finish_iteration(directory: Path, record: dict[str, Any], model: torch.nn.Module, data: ScenarioData,
                      settings: TrainSettings, cfg: SwarmConfig, *, iteration: int, fitted, seconds: float,
                      timings: dict[str, float]) -> None:
    """Evaluate, checkpoint, then announce the iteration in coordinator.json (in that order)."""
    model.cpu()
    example = torch.randn(1, data.channels, data.image_size, data.image_size)
    macs, params = count_macs_and_params(model, example)
    entry = {"iteration": iteration, "params": params, "macs": macs, **_p_accuracy(model, data, settings),
             "epochs": fitted.epochs, "best_epoch": fitted.best_epoch, "seconds": round(seconds, 2),
             **{k: round(v, 3) for k, v in timings.items()}}
    arch = checkpoints.architecture(model, cfg.model, data.num_outputs, data.channels, data.image_size)
    checkpoints.save(checkpoint_path(directory, iteration), model, arch, iteration=iteration,
                     scenario=data.scenario.name, label_names=list(data.label_names))
    record["iterations"].append(entry)
    io.write_json(directory / COORDINATOR, record)
    log.info("iteration %d: %.2fM params, %.1fM MACs, P val %.3f test %.3f (%d epochs, %.0f s)", iteration,
             params / 1e6, macs / 1e6, entry["val_acc"], entry["test_acc"], fitted.epochs, seconds)


def dry_run(cfg: SwarmConfig, num_outputs: int, in_channels: int, image_size: int) -> dict[str, Any]:
    """Apply the pruning schedule to an untrained model, scoring channels by weight magnitude.

    Needs no data and no training: it answers "how big is the model after each cut?".
    """
    iterations, ratio, scope = cfg.prune.iterations, cfg.prune.ratio, cfg.prune.scope
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, num_outputs, in_channels, image_size)
    example = torch.randn(1, in_channels, image_size, image_size)
    record = {"scenario": _scenario_name(cfg), "model": model_name(cfg.model), "dry_run": True, "ratio": ratio,
              "scope": str(scope), "iterations": []}
    for iteration in progress_bar(range(iterations + 1), desc="dry run", unit="cut"):
        start = time.perf_counter()
        if iteration > 0:
            prune_step(model, filter_l1(model, prunable_layers(model, scope)), example, ratio=ratio, scope=scope)
        seconds = time.perf_counter() - start
        macs, params = count_macs_and_params(model, example)
        record["iterations"].append({"iteration": iteration, "params": params, "macs": macs,
                                     "val_acc": None, "test_acc": None, "seconds": round(seconds, 3)})
    return record


def _acc(value: Any) -> str:
    return "   -  " if value is None or value != value else f"{value:.3f}"


def table(record: dict[str, Any]) -> str:
    """The coordinator's iterations; with reference adaptations, their accuracy on F before and after."""
    with_reference = any("reference" in it for it in record["iterations"])
    head = f"{'iter':>4} {'params':>10} {'vs 0':>6} {'MACs':>10} {'val acc':>8} {'test acc':>8} {'seconds':>8}"
    rows = [head + (f" {'ref F before':>12} {'ref F after':>11}" if with_reference else "")]
    base = record["iterations"][0]["params"] if record["iterations"] else 1
    for it in record["iterations"]:
        line = (f"{it['iteration']:>4} {it['params'] / 1e6:>9.2f}M {it['params'] / base:>6.1%} "
                f"{it['macs'] / 1e6:>9.1f}M {_acc(it['val_acc']):>8} {_acc(it['test_acc']):>8} {it['seconds']:>8.1f}")
        if "reference" in it:
            line += f" {_acc(it['reference']['before']['acc_F']):>12} {_acc(it['reference']['after']['acc_F']):>11}"
        rows.append(line)
    return "\n".join(rows)
