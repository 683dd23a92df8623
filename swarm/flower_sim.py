"""The one place that calls Flower's simulation engine (``run_simulation`` is deprecated upstream).

Ray is Flower's simulation backend: one actor per CPU core, each given one CPU, runs the
ClientApp for whichever node a message is for. Flower's telemetry and Ray's uv hook are switched
off before Flower is imported.

Ray is started here rather than by Flower: Flower would start it with a ``runtime_env`` that only
sets ``PYTHONPATH``, and preparing that runtime environment costs about 4 s per run on 2 cores
(``benchmarks/fleet_overhead.py``). Exporting ``PYTHONPATH`` before ``ray.init`` gives the workers
the same import path. Flower shuts Ray down when the run ends.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings


def run(server_app, client_app, num_nodes: int, *, cpus_per_node: float = 1.0) -> None:
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Flower logs at DEBUG and its state store through alembic at INFO (already while being
    # imported); keep the run's log readable.
    for name in ("flwr", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from flwr.simulation import run_simulation

        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        _start_ray()
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=num_nodes,
            backend_config={
                "client_resources": {"num_cpus": cpus_per_node, "num_gpus": 0.0},
            },
        )


def _start_ray() -> None:
    import ray

    if ray.is_initialized():
        return
    paths = [p for p in sys.path if p] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=True)
