"""The simulation's caller never imports torch: its preparation runs in a process of its own
(:mod:`swarm.isolated`), which answers as the function would and ends with its caller."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from swarm import isolated
from swarm.nodes.errors import FleetIncomplete
from tests.conftest import FLEET_TINY, REPO, compose_config, use_fake_engine

HEAVY = ("torch", "torchvision", "zennit", "torch_pruning")


def test_a_call_in_its_own_process_answers_as_the_function_would():
    assert isolated.call("tests.isolated_targets:double", 21) == 42
    with pytest.raises(FleetIncomplete, match="3 nodes not simulated") as caught:  # the same error, the same exit code
        isolated.call("tests.isolated_targets:refuse")
    assert caught.value.exit_code == 3
    with pytest.raises(isolated.IsolatedCallFailed, match="ValueError: a bug in the preparation") as bug:
        isolated.call("tests.isolated_targets:crash")
    assert "Traceback" in str(bug.value) and "def crash" not in str(bug.value) and "in crash" in str(bug.value)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie is gone, only not yet reaped
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_process_ends_with_its_caller(tmp_path):
    """SIGKILL of the caller (a CI timeout, a killed job): the preparation does not train on alone."""
    pid_file = tmp_path / "child.pid"
    caller = subprocess.Popen([sys.executable, "-c", "from swarm import isolated; "
                               f"isolated.call('tests.isolated_targets:wait_forever', {str(pid_file)!r})"], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert not _gone(child)
        caller.send_signal(signal.SIGKILL)
        caller.wait()
        deadline = time.monotonic() + 5
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(child), "the child outlived its caller"
    finally:
        caller.kill()


def test_the_simulation_caller_never_imports_torch(tmp_path, monkeypatch, task_identity):
    """A run whose coordinator and fleet are cached goes through everything the caller does but
    the engine (which runs in processes of its own): preparation, reports, run records. The
    engine's start, flwr run and the log relay, are imported here too."""
    from swarm import simulate

    overrides = [*FLEET_TINY, "fleet.nodes=2", "fleet.windows=1", "prune.iterations=0", "train.max_epochs=1",
                 "reference.adapt=false", f"cache_dir={tmp_path / 'cache'}"]
    use_fake_engine(monkeypatch)
    simulate.run(compose_config(*overrides), tmp_path / "first")  # fills both caches, in this process
    script = ("import json, sys\n"
              "from pathlib import Path\n"
              "from swarm import simulate\n"
              "from swarm.server import flower_sim\n"
              "from swarm.config import compose_config\n"
              f"simulate.run(compose_config({overrides!r}), Path({str(tmp_path / 'again')!r}))\n"
              f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
    record = json.loads((tmp_path / "again" / "run.json").read_text())
    assert record["from_cache"] is True and (tmp_path / "again" / "report.md").exists()
    assert "coordinator: " in result.stdout and "(from cache)" in result.stdout  # the child's output reaches ours
