"""The quick start as a new user meets it: ``python -m swarm.simulate`` with an empty cache, timed.

    python benchmarks/default_run.py              # 3 cold runs
    python benchmarks/default_run.py --runs 1 seed=1   # extra Hydra overrides

Each run gets an empty cache and run folder of its own. Reported per run: the wall time (goal <=
60 s on a 2-core box), where it went (from the logs' timestamps: start-up and data, the
coordinator, the reference, the engine's start with the nodes' folders, the windows, the report),
how busy the machine's cores were over it (Linux: ``/proc/stat``, the whole machine, so
measure on an otherwise idle one; busy core-seconds over the core count is the least wall time the
same work could take with every core busy all along: a run near it is bound by its work, not by
waiting), and whether it shows what the README promises: at least 8 nodes of at least two device classes,
the fleet's gain on F over the received model of at least +0.10 (the nodes' mean and the shared
model), the reference's after - before of at least 0.2, and the report and both plots. Exits 1 if a
run misses any of it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
GOALS = {"wall_s": 60.0, "fleet_gain_F": 0.10, "reference_gain_F": 0.20, "nodes": 8, "profiles": 2}


def stamps(log: Path) -> list[tuple[float, str]]:
    """(epoch seconds, line) of every timestamped line of a log."""
    out = []
    for line in log.read_text().splitlines():
        match = STAMP.match(line)
        if match:
            out.append((datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp(), line))
    return out


def first(lines: list[tuple[float, str]], text: str) -> float:
    return next(t for t, line in lines if text in line)


def last(lines: list[tuple[float, str]], text: str) -> float:
    return [t for t, line in lines if text in line][-1]


def busy_core_seconds() -> float | None:
    """Core-seconds the whole machine has spent busy since boot (everything but idle and I/O wait),
    from ``/proc/stat``; None where there is none (not Linux)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # user..steal; guest time is inside user


def one_run(overrides: list[str], workdir: Path) -> dict:
    run_dir, cache = workdir / "run", workdir / "cache"
    busy_before = busy_core_seconds()
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "swarm.simulate", f"cache_dir={cache}", f"hydra.run.dir={run_dir}",
                           *overrides], capture_output=True, text=True)
    ended = time.time()
    busy_after = busy_core_seconds()
    if done.returncode != 0:
        raise SystemExit(f"the run failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    prep, fleet = stamps(run_dir / "simulate.log"), stamps(run_dir / "fleet.log")
    coordinator_done = last(prep, "swarm.coordinator")
    reference_done = last(prep, "swarm.reference")
    windows = [t for t, line in fleet if "window " in line]
    first_window_s = float(re.search(r"; ([\d.]+) s", next(line for _, line in fleet if "window 1/" in line)).group(1))
    windows_start = windows[0] - first_window_s
    phases = {"start-up and data": first(prep, "coordinator: ") - started,
              "coordinator": coordinator_done - first(prep, "coordinator: "),
              "reference": reference_done - coordinator_done,
              "nodes' folders and the engine's start": windows_start - reference_done,
              "windows": windows[-1] - windows_start,
              "report": ended - windows[-1]}
    summary = json.loads((run_dir / "summary.json").read_text())
    coordinator = json.loads((run_dir / "coordinator.json").read_text())
    reference = next(it["reference"] for it in reversed(coordinator["iterations"]) if it.get("reference"))
    rows = [line.split(",") for line in (run_dir / "nodes.csv").read_text().splitlines()[1:]]
    shared = summary["shared_model"][-1]
    gain = summary["gain"]["acc_F"]
    return {"wall_s": ended - started, "phases": phases,
            "busy_core_s": None if busy_before is None or busy_after is None else busy_after - busy_before,
            "nodes": len({r[0] for r in rows}), "profiles": len({r[1] for r in rows}),
            "fleet_gain_F": gain["gain"], "shared_gain_F": shared["acc_F"] - gain["received"],
            "reference_gain_F": reference["after"]["acc_F"] - reference["before"]["acc_F"],
            "outputs": all((run_dir / f).exists() for f in ("report.md", "accuracy_over_time.png",
                                                             "final_accuracy.png"))}


def misses(run: dict) -> list[str]:
    out = []
    if run["wall_s"] > GOALS["wall_s"]:
        out.append(f"wall {run['wall_s']:.1f} s > {GOALS['wall_s']:.0f} s")
    for key in ("fleet_gain_F", "shared_gain_F"):
        if run[key] < GOALS["fleet_gain_F"]:
            out.append(f"{key} {run[key]:+.3f} < +{GOALS['fleet_gain_F']:.2f}")
    if run["reference_gain_F"] < GOALS["reference_gain_F"]:
        out.append(f"reference gain {run['reference_gain_F']:+.3f} < {GOALS['reference_gain_F']}")
    if run["nodes"] < GOALS["nodes"] or run["profiles"] < GOALS["profiles"]:
        out.append(f"{run['nodes']} nodes of {run['profiles']} device classes")
    if not run["outputs"]:
        out.append("report or plots missing")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (none: the default run)")
    args = parser.parse_args()
    failed = False
    for number in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory(prefix="swarm-default-run-") as tmp:
            run = one_run(args.overrides, Path(tmp))
        split = ", ".join(f"{name} {seconds:.1f}" for name, seconds in run["phases"].items())
        problems = misses(run)
        cores = os.cpu_count() or 1
        busy = ("" if run["busy_core_s"] is None else
                f"; the machine's {cores} cores busy {run['busy_core_s']:.1f} core-s "
                f"({run['busy_core_s'] / (cores * run['wall_s']):.0%} of the wall; "
                f"all cores busy all along: {run['busy_core_s'] / cores:.1f} s)")
        failed |= bool(problems)
        print(f"run {number}: {run['wall_s']:.1f} s ({split}){busy}; {run['nodes']} nodes, {run['profiles']} device "
              f"classes; fleet gain on F {run['fleet_gain_F']:+.3f} (shared model {run['shared_gain_F']:+.3f}), "
              f"reference {run['reference_gain_F']:+.3f}" + (f"; MISSED: {'; '.join(problems)}" if problems else ""),
              flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
