"""Hydra glue shared by the entry points: the config tree and its schema, user-error handling
(one exit-code scheme for every entry point), config to options.

Exit codes: 0 success; 1 the fleet ran but nodes failed (:class:`swarm.nodes.errors.FleetFailure`);
2 a user error: a setting Hydra rejects while composing the config (unknown key, group option,
type or choice), a setting :func:`swarm.schema.check` rejects, missing data, ...; 3 nodes the
simulation engine never served (:class:`swarm.nodes.errors.FleetIncomplete`). Each user error is one
line on stderr that starts with ``error:``; a bug is a traceback.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from swarm import schema
from swarm.nodes.errors import SwarmError
from swarm.server.data.options import DataOptions
from swarm.server.data.scenario import Scenario
from swarm.server.settings import SwarmConfig

# The config tree is the installed `swarm.scenarios` package, so entry points work from any directory.
CONFIG_PATH = "pkg://swarm.scenarios"


def entry_point(config_name: str = "config") -> Callable[[Callable[[SwarmConfig], Any]], Callable[[], Any]]:
    """Wrap a task as a Hydra main whose user errors print as one line and exit with code 2.

    The schema is registered first, so Hydra checks types and choices while composing; the task
    starts only after :func:`swarm.schema.check` passed, and gets the config typed
    (:func:`swarm.schema.typed`): the one place a composed config becomes settings. Under ``--multirun`` a job's error is
    printed and re-raised instead: Hydra records the job as failed, runs the remaining points of
    the sweep, and the sweep exits non-zero at the end."""
    schema.register()

    def decorate(task: Callable[[SwarmConfig], Any]) -> Callable[[], Any]:
        @hydra.main(config_path=CONFIG_PATH, config_name=config_name, version_base="1.3")
        @functools.wraps(task)
        def main(cfg: DictConfig) -> Any:
            try:
                prepare(cfg)
                return task(schema.typed(cfg))
            except SwarmError as error:
                print(f"error: {error}", file=sys.stderr)
                if HydraConfig.get().mode == RunMode.MULTIRUN:
                    raise
                sys.exit(error.exit_code)

        @functools.wraps(task)
        def run() -> Any:
            # Hydra prints its own errors over several lines and exits 1; let them reach us instead.
            os.environ["HYDRA_FULL_ERROR"] = "1"
            try:
                return main()
            except SwarmError as error:  # a sweep's failed job, already printed
                sys.exit(error.exit_code)
            except (HydraException, OmegaConfBaseException) as error:
                print(f"error: {composition_error(error)}", file=sys.stderr)
                sys.exit(SwarmError.exit_code)

        return run

    return decorate


def prepare(cfg: DictConfig, searchpath: list[str] | None = None) -> None:
    """What every entry point does to a composed config before its task: check it, and load the
    device profiles it names (from Hydra's search path: ``--config-dir``, or ``hydra.searchpath``)
    into ``fleet.devices``."""
    if cfg.get("device") is not None:  # device=NAME: a fleet of that one device class
        cfg.fleet.profiles = [cfg.device.name]
    schema.check(cfg)
    if searchpath is None:
        searchpath = list(HydraConfig.get().searchpath) if HydraConfig.initialized() else []
    cfg.fleet.devices = device_profiles(list(cfg.fleet.profiles), searchpath)
    availability = cfg.fleet.availability
    if availability.trace is not None:  # read and checked now, before any work; keyed by its contents
        from swarm.nodes.availability import node_intervals, read_trace, trace_digest

        availability.trace = str(Path(availability.trace).expanduser().resolve())
        trace = read_trace(Path(availability.trace))
        profiles = list(cfg.fleet.profiles)
        for node in range(cfg.fleet.nodes):  # profiles go round-robin (swarm.server.plan_drawing.draw_plan)
            node_intervals(trace, node, profiles[node % len(profiles)])
        availability.digest = trace_digest(Path(availability.trace))


def device_profiles(names: list[str], searchpath: list[str] = ()) -> dict[str, dict[str, Any]]:
    """Each named profile from the config group ``device`` on Hydra's search path (the shipped
    ones, and those in a ``--config-dir``), checked; an unknown name is one line listing the known.
    Needs Hydra initialised (inside an entry point, or :func:`compose_config`)."""
    from hydra import compose

    from swarm.nodes.device import DeviceProfile

    profiles = {}
    for name in dict.fromkeys(names):
        try:
            node = compose(overrides=[f"+device={name}", *_searchpath_override(searchpath)]).device
        except MissingConfigException:
            known = GlobalHydra.instance().config_loader().get_group_options("device")
            raise SwarmError(f"fleet.profiles: unknown device profile '{name}'; choose one of {', '.join(known)} "
                             f"(or add device/{name}.yaml to a --config-dir)") from None
        profile = schema.plain(node)
        DeviceProfile.from_mapping(profile)  # every number checked
        profiles[name] = profile
    return profiles


def _searchpath_override(searchpath: list[str]) -> list[str]:
    """The override that adds config folders to Hydra's search path, as ``--config-dir`` does."""
    return [f"hydra.searchpath=[{','.join(searchpath)}]"] if searchpath else []


def compose_config(overrides: list[str] = (), config_name: str = "config",
                   config_dir: Path | None = None) -> SwarmConfig:
    """The settings an entry point's task would get for these overrides (and ``--config-dir``),
    checked and typed: for scripts and tests."""
    from hydra import compose, initialize_config_module

    schema.register()
    searchpath = [f"file://{Path(config_dir).resolve()}"] if config_dir else []
    with initialize_config_module(config_module="swarm.scenarios", version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=[*overrides, *_searchpath_override(searchpath)])
        prepare(cfg, searchpath)
    return schema.typed(cfg)


def composition_error(error: BaseException) -> str:
    """One line for an error Hydra raised while composing the config: what is wrong, and the
    choices where there are some."""
    if isinstance(error, MissingConfigException):
        line = str(error).strip().splitlines()[0]
        if error.options:
            line += f"; choose one of {', '.join(error.options)}"
        return line
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        message = str(getattr(cause, "msg", "") or cause).strip().splitlines()[0]
        choices = re.fullmatch(r"Invalid value '.*', expected one of \[(.*)\]", message)
        if choices:  # an enum's choices, said as every other check of ours says them
            message = f"choose one of {choices.group(1)}"
        return f"{_override_of(error) or cause.full_key}: {message}"
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return "; ".join(lines[:2]) if lines else type(error).__name__


def _override_of(error: BaseException) -> str:
    """The command-line override Hydra failed to merge (``fleet.strategy=fedprox``), if its message names one."""
    first = (str(error).strip().splitlines() or [""])[0]
    prefix = "Error merging override "
    return first.removeprefix(prefix) if first.startswith(prefix) else ""


def data_options(cfg: SwarmConfig) -> DataOptions:
    data = cfg.data
    return DataOptions(root=Path(data.root).expanduser(), download=data.download, image_size=data.image_size,
                       max_per_class=data.max_per_class, val_fraction=data.val_fraction, seed=cfg.seed,
                       verify_checksums=data.verify_checksums)


def scenario_of(cfg: SwarmConfig) -> Scenario:
    return Scenario.from_config(cfg.scenario, cfg.pretrain.name)
