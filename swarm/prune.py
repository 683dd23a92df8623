"""``python -m swarm.prune``: run the coordinator stage alone (pre-training + Algorithm 1).

    python -m swarm.prune scenario=fmnist_new_subclasses pruning=lrp pretrain=extra model=resnet_small
    python -m swarm.prune scenario=cifar10_new_classes model=resnet50 prune.dry_run=true

Results are cached (``cache_dir``) and reused; ``coordinator.json`` is also written to the run
directory, and the run ends with a table of iteration, parameters, MACs and P's accuracies.
With ``prune.dry_run=true`` no data is read and nothing is trained: the schedule is applied to an
untrained model (weight-magnitude scores) to count parameters and MACs. With
``reference.in_prune=true`` every iteration's checkpoint is also adapted centrally as the paper
does (``swarm.server.reference``), and the table shows its accuracy on F before and after.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from swarm.allocator import reuse_freed_memory
from swarm.config import data_options, entry_point, scenario_of
from swarm.nodes import io
from swarm.nodes.models import model_name
from swarm.nodes.run_folder import COORDINATOR
from swarm.server import coordinator, reference
from swarm.server.criteria import check_pruning
from swarm.server.data import sources
from swarm.server.data.build import build
from swarm.server.settings import SwarmConfig

log = logging.getLogger("swarm.prune")


def run(cfg: SwarmConfig, run_dir: Path) -> dict[str, Any]:
    check_pruning(cfg.pruning)  # the registries, before any data is read
    reuse_freed_memory()  # faster relevance; this process ends with its task
    scenario = scenario_of(cfg)
    options = data_options(cfg)
    if cfg.prune.dry_run:
        classes, domains = sources.known_names(scenario.dataset)
        scenario.validate(classes, domains)
        channels, size = sources.geometry(scenario.dataset, options)
        record = coordinator.dry_run(cfg, len(scenario.label_names(classes)), channels, size)
    else:
        result = coordinator.cached(cfg)
        data = None
        if result is None or cfg.reference.in_prune:
            data = build(scenario, options)
            result = result or coordinator.run(cfg, data)
        record = result.record
        if cfg.reference.in_prune:
            record = reference.annotate(cfg, data, result, [it["iteration"] for it in result.iterations])
        record = {**record, "cache_dir": str(result.directory), "cached": result.cached}
    io.write_json(run_dir / COORDINATOR, record)
    criterion = "scores: weight magnitude" if cfg.prune.dry_run else f"pruning={cfg.pruning.name}"
    title = (f"{scenario.name} · pretrain={scenario.pretrain} · {criterion} · {model_name(cfg.model)} · "
             f"{cfg.prune.iterations} x {cfg.prune.ratio:.0%} ({cfg.prune.scope})" + (" · dry run" if cfg.prune.dry_run else ""))
    print(f"\n{title}\n{coordinator.table(record)}\nwrote {run_dir / COORDINATOR}")
    return record


@entry_point("config")
def main(cfg: SwarmConfig) -> None:
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
