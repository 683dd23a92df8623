"""The one place that calls Flower's simulation engine (``run_simulation`` is deprecated upstream).

Ray is Flower's simulation backend: one actor per CPU core, each given one CPU, runs the
ClientApp for whichever node a message is for. Flower's telemetry and Ray's uv hook are switched
off before Flower is imported.
"""

from __future__ import annotations

import logging
import os
import warnings


def run(server_app, client_app, num_nodes: int, *, cpus_per_node: float = 1.0) -> None:
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from flwr.simulation import run_simulation

        # Flower logs at DEBUG and its state store through alembic at INFO; keep the run's log readable.
        for name in ("flwr", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=num_nodes,
            backend_config={
                "client_resources": {"num_cpus": cpus_per_node, "num_gpus": 0.0},
                "init_args": {"num_cpus": os.cpu_count() or 1, "include_dashboard": False,
                              "logging_level": logging.ERROR, "log_to_driver": True},
            },
        )
