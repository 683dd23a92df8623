"""The one place that starts Flower's Simulation Runtime: ``flwr run`` against a SuperLink of our own.

Flower 1.42 deprecates the in-process ``run_simulation``; the supported path is the CLI's
``flwr run`` against a SuperLink in simulation mode, which runs the app (this repository, built
into a FAB) in a ``flwr-simulation`` process on the Ray backend. Here that SuperLink is started
for the run, on free loopback ports, with a Flower home folder of its own (a temporary folder:
nothing is left in ``~/.flwr``), and stopped when the run ends, so one call is one engine start:

* every plan of the run goes to the ServerApp in ``run_config["fleet-plan"]`` (``os.pathsep``
  separated), so several model sizes share one engine start;
* ``num-supernodes`` and one CPU per node actor go in ``--federation-config``;
* the simulated nodes find their own folders under ``SWARM_NODE_ROOT``, which the SuperLink's
  processes inherit (their ``node_config`` holds only a partition id);
* the app's dependencies are this environment's (``--disable-runtime-dependency-installation``),
  and Flower's telemetry is off.

The ServerApp's log (the fleet's window lines) is streamed to this process's output.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from swarm.errors import SwarmError

APP_DIR = Path(__file__).resolve().parents[1]  # this repository: pyproject.toml's [tool.flwr.app]
STARTUP_S = 60.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _environment(home: Path, node_root: Path) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(APP_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env.update({"FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
                "RAY_DEDUP_LOGS": "0", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0", "SWARM_NODE_ROOT": str(node_root),
                "FLWR_DISABLE_UPDATE_CHECK": "1", "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))})
    return env


def _wait_healthy(port: int, superlink: subprocess.Popen, log: Path) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per probe in the run's log
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if superlink.poll() is not None:
            raise SwarmError(f"Flower's SuperLink exited with code {superlink.returncode} while starting; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SwarmError(f"Flower's SuperLink did not start within {STARTUP_S:.0f} s; see {log}")


def run(plans: list[Path], num_nodes: int, node_root: Path, *, cpus_per_node: float = 1.0) -> None:
    """Simulate ``num_nodes`` nodes running every plan, one after the other, in one engine start."""
    home = Path(tempfile.mkdtemp(prefix="swarm-flwr-"))
    port = _free_port()
    env = _environment(home, node_root)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "swarm"\n\n[superlink.swarm]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')
    log = home / "superlink.log"
    superlink = subprocess.Popen(
        ["flower-superlink", "--insecure", "--simulation", "--isolation", "subprocess", "--host", "127.0.0.1",
         "--port", str(port), "--disable-runtime-dependency-installation"],
        env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_healthy(port, superlink, log)
        federation = f"num-supernodes={num_nodes} client-resources-num-cpus={cpus_per_node:g} client-resources-num-gpus=0"
        command = ["flwr", "run", str(APP_DIR), "swarm", "--stream",
                   "--run-config", f'fleet-plan="{os.pathsep.join(str(p) for p in plans)}"',
                   "--federation-config", federation]
        done = subprocess.run(command, env=env, stdout=sys.stdout, stderr=sys.stderr)
        if done.returncode != 0:
            raise SwarmError(f"flwr run exited with code {done.returncode}; Flower's log: {log}")
    finally:
        if superlink.poll() is None:
            os.killpg(superlink.pid, signal.SIGTERM)
            try:
                superlink.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(superlink.pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)
