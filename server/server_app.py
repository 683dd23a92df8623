"""The Flower ServerApp of the fleet (Message API): runs :func:`swarm.server.fleet.run_fleet` on the grid.

Where its settings come from: ``context.run_config["fleet-plan"]`` (``flwr run --run-config
'fleet-plan="..."'``, as ``swarm.simulate`` runs it too). It may list several
plans separated by ``os.pathsep`` (like ``PATH``): they run one after the other on the same nodes,
so one engine start serves every model size of ``fleet.checkpoint=all``. Each plan's log goes to
``fleet.log`` and its outcome to ``fleet_status.json`` next to it, so the caller learns of failures that the engine
would only log; one plan that fails does not stop the next.

Under ``swarm.simulate`` the run's processes end with their caller (:func:`stop_with_caller`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from swarm.nodes import io
from swarm.nodes.fleet_plan import FleetPlan
from swarm.nodes.protocol import DEVICE_FAULTS, Status
from swarm.nodes.run_folder import CALLER_PID, FLEET_LOG, FLEET_STATUS
from swarm.server.fleet import run_fleet

app = ServerApp()


log = logging.getLogger("swarm.fleet")

CALLER_POLL_S = 0.2
HEARTBEAT_S = 5.0


def stop_with_caller(caller_pid: int) -> None:
    """End this run's processes as soon as ``caller_pid`` is gone.

    Flower starts its simulation process (this one, with Ray under it) in a session of its own,
    so killing the caller's process group (a second Ctrl-C, SIGKILL of a job, a CI timeout) would
    leave the fleet running, writing to a run folder that the caller, started again, resumes
    from. Flower's own parent monitor only follows the SuperExec and asks for a graceful stop,
    which lets a window finish. Here a thread polls the caller and, once it is gone, kills this
    process group: the simulation, its Ray processes and the SuperExec, as a kill of the caller's
    group would have. (If this process shares the caller's group, only itself.)"""
    try:
        shared_group = os.getpgid(caller_pid) == os.getpgrp()
    except ProcessLookupError:
        shared_group = False

    def watch() -> None:
        while True:
            time.sleep(CALLER_POLL_S)
            try:
                os.kill(caller_pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                continue  # alive, another user's (a recycled pid would be too; a run outlives that rarely)
        if shared_group:
            os.kill(os.getpid(), signal.SIGKILL)
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, name="swarm-caller-watch", daemon=True).start()


@contextmanager
def heartbeat(path: Path, every_s: float = HEARTBEAT_S) -> Iterator[None]:
    """Touch ``path`` every ``every_s`` seconds while the block runs: the caller that follows the
    run (``swarm.server.flower_sim``) reads a fresh log as "alive" and asks Flower (``flwr ls``, a
    second-long process of ~100 MB) only when the log went stale."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                os.utime(path)
            except OSError:
                pass

    thread = threading.Thread(target=beat, name="swarm-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def plan_paths(context: Context) -> list[Path]:
    value = context.run_config.get("fleet-plan")
    if not value:
        raise RuntimeError("no fleet plan: run with --run-config 'fleet-plan=\"/path/to/fleet_plan.json\"'")
    return [Path(part) for part in str(value).split(os.pathsep) if part]


@app.main()
def main(grid: Grid, context: Context) -> None:
    if os.environ.get(CALLER_PID):
        stop_with_caller(int(os.environ[CALLER_PID]))
    paths = plan_paths(context)
    for number, path in enumerate(paths, 1):
        run_plan(grid, path, f"fleet {number}/{len(paths)}" if len(paths) > 1 else "")


def run_plan(grid: Grid, path: Path, label: str = "") -> None:
    status_file = path.parent / FLEET_STATUS
    # The plan's log, beside it: what swarm.server.flower_sim follows, and a record on a real SuperLink.
    handler = logging.FileHandler(path.parent / FLEET_LOG)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logger = logging.getLogger("swarm")
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        if label:
            log.info("%s: %s", label, path.parent)
        with heartbeat(path.parent / FLEET_LOG):
            _run_plan(grid, path, status_file)
    finally:
        logger.removeHandler(handler)
        handler.close()


def _run_plan(grid: Grid, path: Path, status_file: Path) -> None:
    try:
        fleet = FleetPlan.load(path).fleet
        simulated = is_simulation(grid)
        rows = run_fleet(grid, path, strategy=fleet.strategy, join_timeout_s=fleet.join_timeout_s,
                         window_timeout_s=fleet.window_timeout_s, simulated=simulated,
                         in_flight=simulated_in_flight() if simulated else None)
        failed = sorted({r["node"] for r in rows if r["status"] in DEVICE_FAULTS})
        not_simulated = sorted({r["node"] for r in rows if r["status"] == Status.not_simulated})
        io.write_json(status_file, {"ok": not failed and not not_simulated, "failed_nodes": failed,
                                    "not_simulated_nodes": not_simulated, "error": ""})
    except Exception as error:
        traceback.print_exc()
        io.write_json(status_file, {"ok": False, "failed_nodes": [], "not_simulated_nodes": [],
                                    "error": f"{type(error).__name__}: {error}"})


def simulated_in_flight() -> int:
    """How many messages the ServerApp keeps in Flower's simulation engine at once: four per CPU of
    the Ray cluster (at least 8), enough that no actor waits for work.

    Not the whole fleet: the engine's feeder (``vce_api.add_messages_to_queue``) asks the in-memory
    LinkState for every node's messages ten times a second, and each ask scans every stored
    message (``InMemoryLinkState.get_message_ins``), so the cost is nodes x messages in flight.
    With all of a 1,000-node window in flight that scan took a whole core from the two that run
    the nodes (0.52 s per node-window against 0.28 at 200 nodes); bounded, it stays small, and
    only the messages in flight hold a copy of the weights (docs/benchmarks.md)."""
    cpus = 0.0
    try:
        import ray

        if ray.is_initialized():
            cpus = float(ray.cluster_resources().get("CPU", 0.0))
    except Exception:  # no Ray here (the Deployment Engine, tests): the machine's CPUs
        cpus = 0.0
    return max(8, 4 * int(cpus or os.cpu_count() or 1))


def is_simulation(grid: Grid) -> bool:
    """Flower's simulation engine hands the ServerApp an in-memory grid; the Deployment Engine a
    networked one. Only on real devices does a missed deadline mean that a device failed. (Imported
    here: the module pulls in Flower's state store, whose import logs at INFO before the simulation
    quiets it.)"""
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    return isinstance(grid, InMemoryGrid)
