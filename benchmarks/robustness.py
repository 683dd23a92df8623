"""The shared model under attack, by aggregation rule, against the same fleet without the attack.

    python benchmarks/robustness.py                        # the default scenario, 8 nodes, seed 0
    python benchmarks/robustness.py --share 0.25 seed=1    # Hydra overrides after the options

Runs ``python -m swarm.simulate`` (one coordinator, cached, for every run) for each aggregation
rule (``fleet.aggregate`` mean, median, trimmed_mean, multikrum) on the clean fleet and with
``fleet.faults.poison=SHARE``, and the mean with ``fleet.faults.inflate=SHARE``; prints, per run,
the shared model's accuracy on F after the last window (``shared_model.json``), its difference
from the clean fleet's under the same rule and under the mean, and the cut claims. Acceptance
(issue "Untrusted nodes"): poison under the mean more than 0.2 below the clean run, under the
robust rules within 0.05; inflate within 0.02 of the clean mean, its nodes' claims cut.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RULES = ("mean", "median", "trimmed_mean", "multikrum")


def simulate(out: Path, cache: Path, overrides: list[str]) -> dict:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "swarm.simulate", f"cache_dir={cache}", f"hydra.run.dir={out}",
                           *overrides], capture_output=True, text=True)
    if not (out / "shared_model.json").exists():
        sys.exit(f"swarm.simulate {' '.join(overrides)} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    with open(out / "nodes.csv") as f:
        cut = sum("claimed" in row["error"] for row in csv.DictReader(f))
    return {"acc_F": json.loads((out / "shared_model.json").read_text())[-1]["acc_F"], "cut_claims": cut,
            "exit": done.returncode, "seconds": time.monotonic() - started}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--share", type=float, default=0.25, help="share of the fleet that attacks")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    options = parser.parse_args()
    work = options.workdir or Path(tempfile.mkdtemp(prefix="swarm-robustness-"))
    cache = work / "cache"
    runs = [(rule, "clean") for rule in RULES] + [(rule, "poison") for rule in RULES] + [("mean", "inflate")]
    results = {}
    for rule, attack in runs:
        extra = [] if attack == "clean" else [f"fleet.faults.{attack}={options.share}"]
        results[rule, attack] = r = simulate(work / f"{rule}_{attack}", cache,
                                             [f"fleet.aggregate={rule}", *extra, *options.overrides])
        print(f"{rule:>12} {attack:>7}: shared model acc_F {r['acc_F']:.3f} "
              f"({r['acc_F'] - results[rule, 'clean']['acc_F']:+.3f} against the clean fleet under {rule}, "
              f"{r['acc_F'] - results['mean', 'clean']['acc_F']:+.3f} against the clean mean); "
              f"claims cut {r['cut_claims']}; exit {r['exit']}; {r['seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
