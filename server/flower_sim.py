"""The one place that starts Flower's Simulation Runtime: ``flwr run`` against a SuperLink of our own.

Flower 1.42 deprecates the in-process ``run_simulation``; the supported path is the CLI's
``flwr run`` against a SuperLink in simulation mode, which runs the app (swarm's packages, copied
from this repository and built into a FAB: :func:`stage_app`) in a ``flwr-simulation`` process
on the Ray backend. Here that SuperLink is started for the run, on free loopback ports, with a
Flower home folder of its own (a temporary folder: nothing is left in ``~/.flwr``), and stopped
when the run ends, so one call is one engine start:

* every plan of the run goes to the ServerApp in ``run_config["fleet-plan"]`` (``os.pathsep``
  separated), so several model sizes share one engine start;
* ``num-supernodes``, the CPUs and the share of a GPU per node actor go in ``--federation-config``;
* the simulated nodes find their own folders under ``SWARM_NODE_ROOT``, which the SuperLink's
  processes inherit (their ``node_config`` holds only a partition id);
* the run's processes end with this one: Flower detaches its simulation process into a session
  of its own, so the ServerApp watches this process (``SWARM_CALLER_PID``) and kills its group
  when it is gone (:func:`swarm.server.server_app.stop_with_caller`);
* the app's dependencies are this environment's (``--disable-runtime-dependency-installation``),
  and Flower's telemetry is off.

Progress: the ServerApp writes each plan's log to ``fleet.log`` beside the plan; this process
follows those files and prints their new lines until every plan's ``fleet_status.json`` is
written, or Flower says the run ended (``flwr ls``). (``flwr run --stream`` was tried first: it
can miss every line of a run that ends within seconds.)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import httpx

from swarm.nodes.errors import SwarmError
from swarm.nodes.run_folder import CALLER_PID, FLEET_LOG, FLEET_STATUS, NODE_ROOT

APP_DIR = Path(__file__).resolve().parents[1]  # this repository: pyproject.toml's [tool.flwr.app]
# What the Flower app is made of: its pyproject.toml and the package its apps import (with
# `swarm.scenarios`, the device profiles the nodes read). The copy follows swarm/'s links to the
# server/, nodes/ and scenarios/ folders, so the app holds them as swarm's sub-packages.
APP_PARTS = ("pyproject.toml", "swarm")
STARTUP_S = 60.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _scripts() -> str:
    """The folder of this environment's console scripts (``flwr``, ``flower-superlink``, and what the
    SuperLink starts by name), so a run works without an activated virtual environment."""
    return sysconfig.get_path("scripts")


def _tool(name: str) -> str:
    path = Path(_scripts()) / name
    if not path.exists():
        raise SwarmError(f"{name} is missing from {_scripts()}: install swarm's dependencies there (pip install -e .)")
    return str(path)


def _environment(home: Path, node_root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([_scripts(), env.get("PATH", "")])
    paths = [str(APP_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env.update({"FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
                "RAY_DEDUP_LOGS": "0", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0", NODE_ROOT: str(node_root),
                CALLER_PID: str(os.getpid()),
                "FLWR_DISABLE_UPDATE_CHECK": "1", "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))})
    return env


def stage_app(home: Path) -> Path:
    """A copy of the app's own files, for ``flwr run`` to build its FAB from.

    Flower's build lists every file under the folder it is given before it filters them
    (``flwr.cli.utils.collect_files``): in a clone that is the virtual environment (tens of
    thousands of files), the caches and every run folder with its node data, seconds of CPU per
    engine start that grow with what the clone holds (docs/benchmarks.md). The copy holds only
    :data:`APP_PARTS`, so the FAB has the same modules and the build a fixed, small cost."""
    staged = home / "app"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in APP_PARTS:
        source = APP_DIR / part
        if source.is_dir():
            shutil.copytree(source, staged / part, ignore=skip)
        else:
            staged.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, staged / part)
    return staged


def _join_cluster(env: dict[str, str], address: str, node_root: Path) -> None:
    """Make the simulation process's ``ray.init()`` join the Ray cluster at ``address`` instead of
    starting one. The cluster's workers were started by ``ray start``, not by this run, so they
    lack its environment: the node root travels as a runtime-env variable, through the job config
    Ray reads at ``ray.init`` (the hook Ray's own job submission uses; Flower adds its
    ``PYTHONPATH`` to the same runtime env). The node folders must be on a path every machine of
    the cluster sees."""
    env["RAY_ADDRESS"] = address
    env["RAY_JOB_CONFIG_JSON_ENV_VAR"] = json.dumps({"runtime_env": {"env_vars": {NODE_ROOT: str(node_root)}}})


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


POLL_S = 0.5
# A `flwr ls` costs about a CPU-second and 100 MB (its import): only a fallback for a run that died
# without a status, asked when no plan's log was touched for this long (the ServerApp's heartbeat).
STATUS_EVERY_S = 15.0


class LogTail:
    """The lines appended to a file since this object was made."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def new_lines(self) -> str:
        if not self.path.exists():
            return ""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        return complete.decode("utf-8", errors="replace")


def _beating(tails: list[LogTail]) -> bool:
    """Whether a plan's log was written or touched within ``STATUS_EVERY_S``: the ServerApp touches
    the running plan's log every few seconds (:func:`swarm.server.server_app.heartbeat`)."""
    now = time.time()
    for tail in tails:
        try:
            if now - tail.path.stat().st_mtime < STATUS_EVERY_S:
                return True
        except OSError:
            continue
    return False


def _run_status(run_id: str, env: dict[str, str]) -> str:
    """Flower's status of the run ("running", "finished:completed", ...; "" if unknown)."""
    listed = subprocess.run([_tool("flwr"), "ls", "swarm", "--run-id", run_id, "--format", "json"], env=env,
                            capture_output=True, text=True)
    try:
        runs = json.loads(listed.stdout).get("runs", [])
        return str(runs[0]["status"]) if runs else ""
    except (ValueError, KeyError, TypeError, AttributeError):
        return ""


def _follow(plans: list[Path], tails: list[LogTail], run_id: str, env: dict[str, str],
            superlink: subprocess.Popen, log: Path) -> None:
    """Print the fleet's log as it grows until every plan has its status file or the run ended."""
    checked = time.monotonic()
    while True:
        for tail in tails:
            sys.stdout.write(tail.new_lines())
        sys.stdout.flush()
        if all((Path(plan).parent / FLEET_STATUS).exists() for plan in plans):
            return
        if superlink.poll() is not None:
            raise SwarmError(f"Flower's SuperLink stopped during the run (exit {superlink.returncode}); see {log}")
        if time.monotonic() - checked > STATUS_EVERY_S and not _beating(tails):
            checked = time.monotonic()
            if _run_status(run_id, env).startswith("finished"):
                for tail in tails:
                    sys.stdout.write(tail.new_lines())
                return  # swarm.simulate reports the plans without a status file
        time.sleep(POLL_S)


def run(plans: list[Path], num_nodes: int, node_root: Path, *, cpus_per_node: float = 1.0,
        gpus_per_node: float = 0.0, ray_address: str | None = None) -> None:
    """Simulate ``num_nodes`` nodes running every plan, one after the other, in one engine start."""
    if not (APP_DIR / "pyproject.toml").exists():
        raise SwarmError(f"the Flower app is built from swarm's source tree, and {APP_DIR} has no pyproject.toml: "
                         "install swarm from a clone with pip install -e <clone>")
    home = Path(tempfile.mkdtemp(prefix="swarm-flwr-"))
    port = _free_port()
    env = _environment(home, node_root)
    env.pop("RAY_ADDRESS", None)
    if ray_address:
        _join_cluster(env, ray_address, node_root)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "swarm"\n\n[superlink.swarm]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')
    log = home / "superlink.log"
    superlink = subprocess.Popen(
        [_tool("flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess", "--host", "127.0.0.1",
         "--port", str(port), "--disable-runtime-dependency-installation"],
        env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        _wait_healthy(port, superlink, log)
        print(f"Flower simulation runtime: SuperLink on 127.0.0.1:{port}, {num_nodes} simulated nodes, "
              f"{len(plans)} fleet plan{'s' if len(plans) > 1 else ''}", flush=True)
        for plan in plans:  # the run is over when every plan has its status: none may be left from before
            (Path(plan).parent / FLEET_STATUS).unlink(missing_ok=True)
        tails = [LogTail(Path(plan).parent / FLEET_LOG) for plan in plans]  # new lines only, not a killed run's
        federation = (f"num-supernodes={num_nodes} client-resources-num-cpus={cpus_per_node:g} "
                      f"client-resources-num-gpus={gpus_per_node:g}")
        command = [_tool("flwr"), "run", str(stage_app(home)), "swarm", "--format", "json",
                   "--run-config", f'fleet-plan="{os.pathsep.join(str(p) for p in plans)}"',
                   "--federation-config", federation]
        submitted = subprocess.run(command, env=env, capture_output=True, text=True)
        try:
            run_id = str(json.loads(submitted.stdout)["run-id"])
        except (ValueError, KeyError, TypeError):
            raise SwarmError(f"flwr run did not start the fleet (exit {submitted.returncode}): "
                             f"{(submitted.stdout + submitted.stderr).strip()[-500:]}") from None
        _follow(plans, tails, run_id, env, superlink, log)
    finally:
        # The SuperLink is in this process group, so a kill of the group takes it down too; the
        # simulation process follows this process (swarm.server.server_app.stop_with_caller).
        if superlink.poll() is None:
            superlink.terminate()
            try:
                superlink.wait(timeout=20)
            except subprocess.TimeoutExpired:
                superlink.kill()
        shutil.rmtree(home, ignore_errors=True)
