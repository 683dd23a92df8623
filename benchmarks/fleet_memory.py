"""What a large fleet holds in memory on this machine, process by process (issue 12, item 3).

    python benchmarks/fleet_memory.py                     # 1,000 nodes x 2 windows
    python benchmarks/fleet_memory.py --nodes 200
    python benchmarks/fleet_memory.py --workdir /tmp/fm fleet.budget.duty_cycle=0.003   # extra Hydra overrides

Runs ``python -m swarm.simulate`` once on the default scenario sized for a large fleet (issue 14's
setting: ``scenario.dataset.train_per_group=150 fleet.eval_samples=50``, duty cycle 0.001 unless
overridden) and samples every process of its tree every 0.5 s from /proc: resident memory (RSS,
which counts the pages processes share once per process) and proportional set size (PSS, which
splits them). It prints the peak of the summed RSS, the summed PSS at that moment and at its own
peak, every process at the RSS peak (the caller, the preparation's process while it lives, the
Flower and Ray processes, the node actors), and the fleet's time per node-window (from the log's
window lines: engine time only). A coordinator already in ``--workdir``'s cache is reused; the
fleet's cache is emptied first, so the fleet really runs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_deadline import fleet_windows  # noqa: E402
from process_tree import descendants, pss_mb, rss_mb, run_sampled  # noqa: E402


def tree(root: int) -> dict[int, dict]:
    """RSS and PSS (MB) and the command line of ``root`` and every process under it."""
    found = {}
    for pid in descendants(root):
        rss, pss = rss_mb(pid), pss_mb(pid)
        try:
            with open(f"/proc/{pid}/cmdline") as f:
                command = f.read().replace("\0", " ").strip()
        except OSError:
            continue
        if rss is not None and pss is not None:
            found[pid] = {"rss": rss, "pss": pss, "command": command}
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--windows", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    options = parser.parse_args()
    work = options.workdir or Path(tempfile.mkdtemp(prefix="fleet_memory_"))
    cache, out = work / "cache", work / f"nodes_{options.nodes}"
    shutil.rmtree(cache / "fleet", ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "swarm.simulate", "scenario.dataset.train_per_group=150",
               f"fleet.nodes={options.nodes}", f"fleet.windows={options.windows}", "fleet.eval_samples=50",
               "fleet.budget.duty_cycle=0.001", f"cache_dir={cache}", *options.overrides, f"hydra.run.dir={out}"]
    log = work / f"nodes_{options.nodes}.log"
    started = time.monotonic()
    peak = {"rss": 0.0, "pss_then": 0.0, "at_s": 0.0, "processes": {}}
    peak_pss = [0.0]

    def sample(pid: int) -> None:
        processes = tree(pid)
        rss = sum(p["rss"] for p in processes.values())
        pss = sum(p["pss"] for p in processes.values())
        peak_pss[0] = max(peak_pss[0], pss)
        if rss > peak["rss"]:
            peak.update(rss=rss, pss_then=pss, at_s=time.monotonic() - started, processes=processes)

    code, wall = run_sampled(command, log, sample)
    served, fleet_s, per_node_window = fleet_windows(log)
    print(f"{options.nodes} nodes x {options.windows} windows: exit {code}, wall {wall:.0f} s, fleet {fleet_s:.0f} s, "
          f"{per_node_window:.3f} s per node-window, served {served}")
    print(f"peak RSS, all processes: {peak['rss'] / 1024:.2f} GB at {peak['at_s']:.0f} s "
          f"(PSS then {peak['pss_then'] / 1024:.2f} GB); peak PSS, all processes: {peak_pss[0] / 1024:.2f} GB")
    for pid, info in sorted(peak["processes"].items(), key=lambda kv: -kv[1]["rss"]):
        print(f"  {info['rss']:6.0f} MB RSS {info['pss']:6.0f} MB PSS  {info['command'][:100]}")
    print(f"log: {log}")
    return code


if __name__ == "__main__":
    sys.exit(main())
