"""Hydra glue shared by the entry points: the config tree, user-error handling, config to options."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from swarm.data.options import DataOptions
from swarm.data.scenario import Scenario
from swarm.errors import SwarmError

# The config tree is the installed `scenarios` package, so entry points work from any directory.
CONFIG_PATH = "pkg://scenarios"


def entry_point(config_name: str = "config") -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """Wrap a task as a Hydra main whose user errors print as one line and exit with code 2.

    Under ``--multirun`` an error is printed and re-raised instead: Hydra records the job as failed,
    runs the remaining points of the sweep, and exits non-zero at the end."""

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        @hydra.main(config_path=CONFIG_PATH, config_name=config_name, version_base="1.3")
        @functools.wraps(task)
        def main(cfg: DictConfig) -> Any:
            try:
                return task(cfg)
            except SwarmError as error:
                print(f"error: {error}", file=sys.stderr)
                if HydraConfig.get().mode == RunMode.MULTIRUN:
                    raise
                sys.exit(error.exit_code)

        return main

    return decorate


def data_options(cfg: DictConfig) -> DataOptions:
    data = cfg.data
    return DataOptions(
        root=Path(str(data.root)).expanduser(),
        download=bool(data.download),
        image_size=None if data.image_size is None else int(data.image_size),
        max_per_class=None if data.max_per_class is None else int(data.max_per_class),
        val_fraction=float(data.val_fraction),
        seed=int(cfg.seed),
        verify_checksums=bool(data.get("verify_checksums", True)),
    )


def scenario_of(cfg: DictConfig) -> Scenario:
    return Scenario.from_config(cfg.scenario, cfg.pretrain)
