"""A fleet of 1,000 on this machine: every node simulated, whatever the wall-clock deadline.

    python benchmarks/fleet_deadline.py                    # 1,000 nodes x 2 windows, deadline 600 s and 1,200 s
    python benchmarks/fleet_deadline.py --nodes 200 --timeout 30
    python benchmarks/fleet_deadline.py fleet.budget.duty_cycle=0.003   # extra Hydra overrides
    python benchmarks/fleet_deadline.py --once          # one fleet at the default budget, its time split

Runs ``python -m swarm.simulate`` on the default scenario sized for a large fleet
(``scenario.dataset.train_per_group=150 fleet.eval_samples=50``) twice with the same seed: with
``fleet.window_timeout_s`` as given and doubled. The coordinator is shared through one cache; the
finished fleet is removed from the cache between the runs, so the second fleet really runs. The
coordinator is trained first (``python -m swarm.prune`` with the same settings, timed apart), so each
fleet run is one command from a cached coordinator. ``--once``: only the first run.
Per run it reports the wall time, the fleet's time per node-window (from the log's window lines,
engine time only) split into the nodes' training, evaluation and other work (their ``timings.csv``)
and the rest, the engine's own (window time x node actors - the nodes' time), the peak resident memory of the whole process tree (the driver and every Ray
process, sampled every 0.5 s) and the statuses in ``nodes.csv``; after the first run, the machine's floor for the steps its nodes
were granted (``node_step.py``'s best training throughput on the fleet's model). It exits 1 if a node was not
simulated or failed, or if the two ``nodes.csv`` differ.
"""

from __future__ import annotations

import argparse
import collections
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from process_tree import run_sampled, tree_rss_mb  # noqa: E402

WINDOW_LINE = re.compile(r"window (\d+)/(\d+): (\d+)/(\d+) nodes.*; ([\d.]+) s( \(node time .*\))?$")


def fleet_windows(log: Path) -> tuple[list[str], float, float]:
    """From a run's log: nodes served per window ("40/40"), the engine's seconds over every window,
    and those seconds per node-window."""
    windows = [m for m in (WINDOW_LINE.search(line) for line in log.read_text().splitlines()) if m]
    fleet_s = sum(float(m.group(5)) for m in windows)
    return [f"{m.group(3)}/{m.group(4)}" for m in windows], fleet_s, fleet_s / max(sum(int(m.group(4)) for m in windows), 1)


def time_split(run_dir: Path, fleet_s: float, node_windows: int, actors: int) -> dict[str, float]:
    """Seconds per node-window on one actor: the nodes' training, evaluation and other work
    (``timings.csv``), and the engine's own share of the actors' time."""
    from swarm.nodes.protocol import read_timings
    from swarm.nodes.run_folder import TIMINGS_CSV

    rows = read_timings(run_dir / TIMINGS_CSV)
    total = {key: sum(r[key] for r in rows) / max(node_windows, 1) for key in ("train_s", "eval_s", "node_s")}
    return {"training": total["train_s"], "evaluation": total["eval_s"],
            "node other": total["node_s"] - total["train_s"] - total["eval_s"],
            "engine": fleet_s * actors / max(node_windows, 1) - total["node_s"]}


def run(args: list[str], out: Path) -> dict:
    command = [sys.executable, "-m", "swarm.simulate", *args, f"hydra.run.dir={out}"]
    log = out.with_suffix(".log")
    peak = [0.0]

    def sample(pid: int) -> None:
        peak[0] = max(peak[0], tree_rss_mb(pid))

    code, wall = run_sampled(command, log, sample)
    served, fleet_s, per_node_window = fleet_windows(log)
    statuses, flops = collections.Counter(), 0.0
    with open(out / "nodes.csv") as f:
        for row in csv.DictReader(f):
            statuses[row["status"]] += 1
            flops += float(row["flops"] or 0.0)
    node_windows = sum(n for s, n in statuses.items() if s != "received")
    return {"code": code, "wall_s": wall, "fleet_s": fleet_s, "s_per_node_window": per_node_window,
            "peak_gb": peak[0] / 1024, "flops": flops, "statuses": dict(statuses), "served": served, "log": log,
            "split": time_split(out, fleet_s, node_windows, os.cpu_count() or 1) if (out / "timings.csv").exists()
            else {}}


def print_floor(plan_path: Path, result: dict) -> None:
    """The machine's floor for the steps the nodes were granted (their FLOPs, as the device model
    charges them, at the best training throughput ``node_step.py`` finds for the fleet's model),
    against the run's wall and engine time."""
    from node_step import machine_floors

    (layout, batch, how), best = max(machine_floors(str(plan_path), repeats=7).items(), key=lambda item: item[1])
    floor_s = result["flops"] / best
    print(f"floor for the granted steps: {result['flops'] / 1e12:.1f} TFLOP at {best / 1e9:.1f} GFLOP/s "
          f"({layout}, batch {batch}, {how}) = {floor_s:.0f} s; wall / floor {result['wall_s'] / floor_s:.2f}, "
          f"fleet / floor {result['fleet_s'] / floor_s:.2f} (goal: wall <= 1 h or <= 1.5 x floor)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--windows", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600, help="fleet.window_timeout_s of the first run")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--once", action="store_true", help="one fleet run, not two")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both runs")
    options = parser.parse_args()
    work = options.workdir or Path(tempfile.mkdtemp(prefix="fleet_deadline_"))
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    common = ["scenario.dataset.train_per_group=150", f"fleet.nodes={options.nodes}",
              f"fleet.windows={options.windows}", "fleet.eval_samples=50", f"cache_dir={cache}", *options.overrides]
    started = time.monotonic()
    prune = subprocess.run([sys.executable, "-m", "swarm.prune", *common, f"hydra.run.dir={work / 'coordinator'}"],
                           capture_output=True, text=True)
    if prune.returncode != 0:
        print(prune.stderr[-2000:], file=sys.stderr)
        return 1
    print(f"coordinator trained and cached in {time.monotonic() - started:.0f} s", flush=True)
    results = {}
    for timeout in (options.timeout,) if options.once else (options.timeout, 2 * options.timeout):
        shutil.rmtree(cache / "fleet", ignore_errors=True)  # the fleet runs again; the coordinator is reused
        out = work / f"timeout_{timeout:g}"
        results[timeout] = run([*common, f"fleet.window_timeout_s={timeout:g}"], out)
        r = results[timeout]
        print(f"window_timeout_s={timeout:g}: exit {r['code']}, wall {r['wall_s']:.0f} s, fleet {r['fleet_s']:.0f} s, "
              f"{r['s_per_node_window']:.3f} s per node-window, peak RSS {r['peak_gb']:.2f} GB, "
              f"served per window {r['served']}, statuses {r['statuses']} (log: {r['log']})", flush=True)
        if r["split"]:
            print("  per node-window on one actor: " + ", ".join(f"{k} {v:.3f} s" for k, v in r["split"].items()),
                  flush=True)
    first_run = results[options.timeout]
    if first_run["flops"] > 0:  # whatever the exit code (late or failed nodes are simulated outcomes)
        print_floor(work / f"timeout_{options.timeout:g}" / "fleet_plan.json", first_run)
    if options.once:
        return 0 if first_run["code"] == 0 else 1
    first, second = (work / f"timeout_{t:g}" / "nodes.csv" for t in results)
    same = first.read_text() == second.read_text()
    complete = all(r["code"] == 0 and set(r["statuses"]) <= {"received", "ok", "budget_exhausted", "data_exhausted",
                                                             "does_not_fit", "unavailable"} for r in results.values())
    print(f"nodes.csv identical with the deadline doubled: {same}; every node simulated in every window: {complete}")
    return 0 if same and complete else 1


if __name__ == "__main__":
    sys.exit(main())
