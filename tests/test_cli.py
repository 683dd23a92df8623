"""The entry points as a user runs them: JSON out, one-line errors with exit code 2, a full quick run."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import REPO, FakeGrid, nodes_of, run_module
from swarm.nodes.protocol import NO_RESULT

TINY = ["scenario.dataset.train_per_group=6", "scenario.dataset.test_per_group=2", "train.max_epochs=1"]


def test_splits_without_data(tmp_path):
    result = run_module("swarm.splits", "scenario=cifar10_new_classes", f"data.root={tmp_path}")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["scenario"] == "cifar10_new_classes" and out["mode"] == "continual"
    assert out["num_outputs"] == 10 and out["label_names"][0] == "airplane"
    assert out["P"] == {"classes": ["airplane", "automobile", "truck"]}
    assert out["F"] == {"classes": ["ship"]}
    assert "not there" in result.stderr


def test_splits_with_data_has_counts_and_task_only_empties_t(tmp_path, cifar10_root):
    result = run_module("swarm.splits", "scenario=cifar10_new_subclasses", "pretrain=task_only",
                        f"data.root={cifar10_root}", "data.verify_checksums=false")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["label_names"] == ["vehicle", "animal"]
    assert out["T"] == {"classes": [], "counts": {"train": 0, "val": 0, "test": 0}}
    assert out["P"]["counts"] == {"train": 180, "val": 20, "test": 80}


def test_missing_data_is_one_line_exit_2(tmp_path):
    result = run_module("swarm.simulate", "scenario=cifar10_new_classes", f"data.root={tmp_path}",
                        f"hydra.run.dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cifar10 not found"), result.stderr
    assert str(tmp_path / "cifar-10-batches-py") in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_bad_split_is_one_line_exit_2(tmp_path):
    result = run_module("swarm.splits", "scenario=cifar10_new_classes", "scenario.F=[ship,truck]",
                        f"data.root={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: scenario cifar10_new_classes: P and F overlap in truck; "
                                     "T, P and F must be disjoint")


FLEET = ["fleet.nodes=2", "fleet.windows=2", "fleet.window_s=100", "fleet.stream_rate=0.2", "fleet.eval_samples=60",
         "fleet.drift.low=0", "fleet.drift.high=150", "fleet.batch_size=8", "fleet.budget.energy_j=null",
         "fleet.budget.compute_s=0.3", "fleet.profiles=[raspberry_pi_4,jetson_nano]"]


def test_simulate_runs_coordinator_and_a_real_flower_fleet(tmp_path):
    """One real Ray run with 2 nodes, end to end; two model sizes share one engine start."""
    args = [*TINY, "prune.iterations=1", "scenario.dataset.image_size=16", f"cache_dir={tmp_path / 'cache'}", *FLEET]
    run = tmp_path / "run"
    result = run_module("swarm.simulate", *args, "fleet.checkpoint=all", f"hydra.run.dir={run}", timeout=400)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    coordinator = json.loads((run / "coordinator.json").read_text())
    assert [it["iteration"] for it in coordinator["iterations"]] == [0, 1]
    log = result.stdout + result.stderr
    assert log.count("fleet 1/2: ") == 1 and log.count("fleet 2/2: ") == 1
    assert log.count("Flower simulation runtime: ") == 1  # one engine start for both model sizes
    assert "deprecated" not in log.lower()  # Flower's supported path, not run_simulation
    assert "setup plugin" not in log  # alembic's import-time chatter stays out of the log
    for iteration in (0, 1):
        out = run / f"iteration_{iteration:02d}"
        with open(out / "nodes.csv") as f:
            rows = list(csv.DictReader(f))
        assert [(r["window"], r["node"]) for r in rows] == [(w, n) for w in ("-1", "0", "1") for n in ("0", "1")]
        assert {r["profile"] for r in rows} == {"raspberry_pi_4", "jetson_nano"}
        assert all(r["status"] in ("received", "ok", "budget_exhausted", "data_exhausted")
                   and 0 <= float(r["acc_F"]) <= 1 for r in rows)
        summary = json.loads((out / "summary.json").read_text())
        assert len(summary["windows"]) == 2 and summary["totals"]["node_windows"] == 4
        assert {"mean", "median", "min", "max"} <= set(summary["windows"][1]["acc_F"])
        gain = summary["gain"]["acc_F"]
        assert gain["gain"] == pytest.approx(gain["final"] - gain["received"])
        assert set(gain["by_profile"]) == {"raspberry_pi_4", "jetson_nano"} and 0 <= gain["improved_share"] <= 1
        assert len(summary["f_groups"]) == 12  # F: the 12 shapes in the painting style
        reference = coordinator["iterations"][iteration]["reference"]
        assert summary["reference"] == reference and reference["before"]["acc_F"] == pytest.approx(gain["received"], abs=1e-4)
        assert (out / "accuracy_over_time.png").stat().st_size > 1000
        assert (out / "final_accuracy.png").stat().st_size > 1000
        assert "| node | profile |" in (out / "report.md").read_text()
        record = json.loads((out / "run.json").read_text())
        assert record["iteration"] == iteration and record["params"] == coordinator["iterations"][iteration]["params"]
        assert record["pruning"] == "lrp" and record["from_cache"] is False
    assert result.stdout.count("nodes' mean as received -> after the last window: acc_P") == 2
    assert "[reference " in result.stdout

    # A sweep over the same setting: a bad point fails alone, the other points restore the finished
    # fleets from the cache (no engine start), and the sweep exits non-zero at the end.
    sweep = tmp_path / "sweep"
    resumed = run_module("swarm.simulate", "-m", *args, "fleet.checkpoint=7,all,1", f"hydra.sweep.dir={sweep}",
                         timeout=400)
    assert resumed.returncode != 0
    assert "error: fleet.checkpoint=7: the coordinator has iterations 0..1" in resumed.stderr
    assert "Flower simulation runtime" not in resumed.stdout and "fleet 1/2" not in resumed.stdout
    assert "2 from the cache" in resumed.stdout and "1 from the cache" in resumed.stdout
    for job, iteration in (("1", 0), ("1", 1), ("2", 1)):
        where = sweep / job / f"iteration_{iteration:02d}" if job == "1" else sweep / job
        assert (where / "nodes.csv").read_bytes() == (run / f"iteration_{iteration:02d}" / "nodes.csv").read_bytes()
        assert json.loads((where / "run.json").read_text())["from_cache"] is True
        assert (where / "report.md").exists()

    bad = run_module("swarm.simulate", *args, "fleet.checkpoint=[0,x]", f"hydra.run.dir={tmp_path / 'run2'}")
    assert bad.returncode == 2 and "use last, all, an iteration number or a list" in bad.stderr
    unknown = run_module("swarm.simulate", *args, "fleet.profiles=[toaster]", f"hydra.run.dir={tmp_path / 'run4'}")
    assert unknown.returncode == 2 and "unknown device profile 'toaster'; choose one of" in unknown.stderr
    crowded = run_module("swarm.simulate", *args, "fleet.nodes=5000", f"hydra.run.dir={tmp_path / 'run5'}")
    assert crowded.returncode == 2 and "at most 60 nodes get a share" in crowded.stderr


def test_a_fleet_the_engine_serves_slower_than_the_deadline_is_simulated_whole(tmp_path, task_identity):
    """Issue 14: 40 nodes queue on the engine's two actors for longer than fleet.window_timeout_s,
    yet every node is simulated (in simulation the deadline guards only against a hung actor), and
    nodes.csv equals an engine-free run of the same plan with a generous deadline."""
    from swarm.server import fleet

    timeout = 1
    fleet_args = [a for a in FLEET if not a.startswith(("fleet.nodes=", "fleet.budget.compute_s="))]
    args = [*TINY, "scenario.dataset.train_per_group=14", "prune.iterations=0", "reference.adapt=false",
            "scenario.dataset.image_size=16",
            f"cache_dir={tmp_path / 'cache'}", *fleet_args, "fleet.nodes=40", "fleet.budget.compute_s=0.1",
            f"fleet.window_timeout_s={timeout}"]
    run = tmp_path / "run"
    result = run_module("swarm.simulate", *args, f"hydra.run.dir={run}", timeout=400)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    with open(run / "nodes.csv") as f:
        statuses = [r["status"] for r in csv.DictReader(f)]
    assert len(statuses) == 3 * 40 and not set(statuses) & set(NO_RESULT)
    seconds = [float(s) for s in re.findall(r"window \d/2: 40/40 nodes.*; ([\d.]+) s", log)]
    assert len(seconds) == 2 and max(seconds) > timeout, seconds  # the queue outlasted the deadline
    expected = (run / "nodes.csv").read_text()
    for state in (run / "nodes").glob("node_*/state"):  # the nodes' states; their data stays
        shutil.rmtree(state)
    (run / "fleet_progress.json").unlink()  # a fresh run, not a resumed one
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as on an engine actor (one CPU each): the same kernels, the same sums
    try:
        fleet.run_fleet(FakeGrid(40, root=nodes_of(run / "fleet_plan.json")), run / "fleet_plan.json",
                        strategy="fedavg", join_timeout_s=5, window_timeout_s=600)
    finally:
        torch.set_num_threads(threads)
    assert (run / "nodes.csv").read_text() == expected


def test_a_simulation_killed_in_the_fleet_stage_resumes_where_it_stopped(tmp_path, task_identity):
    """Issue 10: SIGKILL during the fleet keeps the finished windows; the same command on the same
    run folder resumes after the last of them and ends with the nodes.csv of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from swarm.server import fleet
    from tests.conftest import REPO

    args = [*TINY, "scenario.dataset.image_size=16", "prune.iterations=0", "reference.adapt=false",
            f"cache_dir={tmp_path / 'cache'}", *FLEET, "fleet.windows=3", "fleet.strategy=fedavg"]
    run = tmp_path / "run"
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    command = [sys.executable, "-m", "swarm.simulate", *args, f"hydra.run.dir={run}"]
    log = open(tmp_path / "killed.log", "w")
    victim = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    progress = run / "fleet_progress.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and victim.poll() is None:
        if progress.exists() and json.loads(progress.read_text())["windows_done"] >= 1:
            break
        time.sleep(0.2)
    os.killpg(victim.pid, signal.SIGKILL)  # the simulation and the SuperLink it started
    victim.wait()
    log.close()
    # Flower runs the fleet in a session of its own; it must end with its caller, within seconds.
    from swarm.server.progress import run_folder_lock

    started = time.monotonic()
    with run_folder_lock(run, wait_s=15):
        stopped_after = time.monotonic() - started
    assert stopped_after < 10, f"the fleet ran on for {stopped_after:.1f} s after its caller was killed"
    done = json.loads(progress.read_text())["windows_done"]
    assert 1 <= done < 3, (tmp_path / "killed.log").read_text()[-2000:]

    resumed = run_module("swarm.simulate", *args, f"hydra.run.dir={run}", timeout=400)
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-3000:]
    assert f"resuming the fleet after window {done}" in output
    assert f"window {done}/3:" not in output  # finished windows are not run again
    expected = (run / "nodes.csv").read_text()
    for state in (run / "nodes").glob("node_*/state"):  # the nodes' states; their data stays
        shutil.rmtree(state)
    (run / "fleet_progress.json").unlink()
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as on an engine actor: the same kernels, the same sums
    try:
        fleet.run_fleet(FakeGrid(2, root=nodes_of(run / "fleet_plan.json")), run / "fleet_plan.json",
                        strategy="fedavg", join_timeout_s=5)
    finally:
        torch.set_num_threads(threads)
    assert (run / "nodes.csv").read_text() == expected  # as if it had never been killed


def test_the_results_script_names_its_scenarios_before_any_work():
    """scripts/results_fmnist runs the published sweep in parts: a wrong scenario or no seed stops
    with one line and exit code 2 before anything is computed."""
    script = REPO / "scripts" / "results_fmnist"
    env = dict(os.environ)
    wrong = subprocess.run([str(script), "run", "fmnist_new_subclasses", "0"], capture_output=True, text=True,
                           env=env, timeout=120)
    assert wrong.returncode == 2 and "must be fmnist_new_tops, fmnist_new_domains or fmnist_new_classes" in wrong.stderr
    bare = subprocess.run([str(script), "run", "fmnist_new_classes"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert bare.returncode == 2 and "usage:" in bare.stderr


def test_the_gpu_check_runs_in_its_reduced_form_on_the_cpu(tmp_path):
    """scripts/gpu_check --reduced: the GPU script's three steps (Algorithm 1 on ResNet-50, the
    default fleet, the large fleet from a cached coordinator), small and on the CPU, so that the
    script a lent GPU runs does not rot. Every step ends and says how long it took; the large fleet
    served every node in both windows."""
    env = {**os.environ, "GPU_CHECK_DIR": str(tmp_path), "FLWR_TELEMETRY_ENABLED": "0"}
    done = subprocess.run([str(REPO / "scripts" / "gpu_check"), "--reduced"], capture_output=True, text=True,
                          env=env, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    timed = re.findall(r"^== (\d\w?/3) .*: (\d+) s$", done.stdout, flags=re.MULTILINE)
    assert [step for step, _ in timed] == ["1/3", "2/3", "3a/3", "3b/3"], done.stdout[-3000:]
    prune = json.loads((tmp_path / "prune" / "coordinator.json").read_text())
    assert prune["model"] == "resnet50" and len(prune["iterations"]) == 2  # before and after the cut
    with open(tmp_path / "large" / "nodes.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["window"] != "-1"]
    assert len(rows) == 4 * 2 and not {r["status"] for r in rows} & set(NO_RESULT)
    assert "(from cache)" in (tmp_path / "large" / "simulate.log").read_text() + done.stdout
    bad = subprocess.run([str(REPO / "scripts" / "gpu_check"), "--fast"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert bad.returncode == 2 and "usage:" in bad.stderr
