"""Issue 13: parallel sweep jobs share one cache (each entry computed once), fleets on a Ray cluster."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from tests.conftest import REPO, run_module

TINY = ["scenario.dataset.train_per_group=6", "scenario.dataset.test_per_group=2", "scenario.dataset.image_size=16",
        "train.max_epochs=1", "prune.iterations=1"]


def _logs(sweep) -> str:
    return "\n".join(path.read_text() for path in sorted(sweep.rglob("*.log")))


def test_a_parallel_sweep_computes_each_shared_cache_entry_once(tmp_path):
    """4 points, 2 at a time (Hydra's joblib launcher), 2 coordinator keys (lrp, imp; data.download
    is not part of a key) and one pre-training all four share."""
    sweep = tmp_path / "sweep"
    result = run_module("swarm.prune", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY,
                        "pruning=lrp,imp", "data.download=false,true", f"cache_dir={tmp_path / 'cache'}",
                        f"hydra.sweep.dir={sweep}", "hydra.job.chdir=false", timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    logs = _logs(sweep)
    assert len(list(sweep.glob("*/coordinator.json"))) == 4  # every point finished
    assert len(re.findall(r"coordinator: pre-training ", logs)) == 1, logs
    assert len(re.findall(r"coordinator: computing the lrp result", logs)) == 1, logs
    assert len(re.findall(r"coordinator: computing the imp result", logs)) == 1, logs
    assert len(re.findall(r"coordinator: cached result in", logs)) == 2, logs


def test_a_job_killed_while_it_holds_a_cache_lock_blocks_no_one(tmp_path):
    """SIGKILL a job in the middle of computing an entry; the next job takes the entry over (the
    system released the lock with the process) and finishes it."""
    args = [*TINY, "prune.iterations=3", f"cache_dir={tmp_path / 'cache'}"]
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    victim = subprocess.Popen([sys.executable, "-m", "swarm.prune", *args, f"hydra.run.dir={tmp_path / 'a'}"],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((tmp_path / "cache").rglob("iteration_01.pt")):
        time.sleep(0.1)
    assert list((tmp_path / "cache").rglob("iteration_01.pt")), "the first job never got to pruning"
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    started = time.monotonic()
    second = run_module("swarm.prune", *args, f"hydra.run.dir={tmp_path / 'b'}", timeout=200)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "coordinator: resuming after iteration" in second.stdout + second.stderr
    assert time.monotonic() - started < 120


FLEET = ["fleet.nodes=2", "fleet.windows=2", "fleet.window_s=100", "fleet.stream_rate=0.2", "fleet.eval_samples=60",
         "fleet.drift.low=0", "fleet.drift.high=150", "fleet.batch_size=8", "fleet.budget.energy_j=null",
         "fleet.budget.compute_s=0.3", "fleet.profiles=[raspberry_pi_4,jetson_nano]", "fleet.strategy=fedavg"]


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_fleet_on_a_two_process_ray_cluster_equals_the_default_engine(tmp_path, task_identity):
    """A Ray head and one worker on loopback (one CPU each), started and torn down here; the
    fleet joins them with fleet.ray.address and gives the nodes.csv of the default engine."""
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    try:
        subprocess.run([ray, "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
                       env=env, check=True, capture_output=True, timeout=120)
        subprocess.run([ray, "start", f"--address=127.0.0.1:{port}", *common],
                       env=env, check=True, capture_output=True, timeout=120)
        args = [*TINY, "prune.iterations=0", "reference.adapt=false", f"cache_dir={tmp_path / 'cache'}", *FLEET]
        cluster = run_module("swarm.simulate", *args, f"fleet.ray.address=127.0.0.1:{port}",
                             f"hydra.run.dir={tmp_path / 'cluster'}", timeout=400)
        assert cluster.returncode == 0, (cluster.stdout + cluster.stderr)[-3000:]
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)
    # The same plan as the default engine runs it (an engine actor's one thread; the engine itself
    # is checked against this in tests/test_cli.py): the same nodes.csv, byte for byte.
    import shutil

    import torch

    from swarm.server import fleet
    from tests.conftest import FakeGrid

    run = tmp_path / "cluster"
    expected = (run / "nodes.csv").read_text()
    for state in (run / "nodes").glob("node_*/state"):
        shutil.rmtree(state)
    (run / "fleet_progress.json").unlink()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fleet.run_fleet(FakeGrid(2, root=run / "nodes"), run / "fleet_plan.json", strategy="fedavg", join_timeout_s=5)
    finally:
        torch.set_num_threads(threads)
    assert (run / "nodes.csv").read_text() == expected
