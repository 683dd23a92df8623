"""Fleet results gathered from run directories, and the statistics the report draws from them.

Every fleet run leaves ``run.json`` (what was run: scenario, pruning, pretrain, seed, iteration,
budget, the coordinator's record) next to its ``nodes.csv``. :func:`collect` finds them under any
number of directories (single runs, multirun sweeps, ``iteration_NN`` folders), drops duplicates
(the same fleet result restored from the cache into two sweeps), and turns each into a
:class:`FleetResult`. Statistics are means with a two-sided 95% Student-t interval over seeds;
differences between settings are paired by seed, using only the seeds both sides have.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from swarm.nodes.device import BUDGET_KINDS
from swarm.nodes.errors import SwarmError
from swarm.nodes.protocol import DEVICE_FAULTS, NO_RESULT, RECEIVED_WINDOW, Status, read_rows
from swarm.nodes.run_folder import NODES_CSV, RUN_RECORD, SHARED_MODEL
from swarm.server.cache import fleet_identity

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom; beyond, the normal 1.96.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


@dataclass(frozen=True)
class Estimate:
    """A mean over ``n`` values with the half-width of its 95% interval (nan when n < 2)."""

    mean: float
    half_width: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def seeds_for(self, half_width: float) -> int | None:
        """How many seeds an estimate of this spread needs for its interval to be within
        ± ``half_width`` (the spread measured on these ``n``; None with fewer than two)."""
        if self.n < 2 or math.isnan(self.half_width):
            return None
        spread = self.half_width * math.sqrt(self.n) / _t95(self.n)
        n = 2
        while _t95(n) * spread / math.sqrt(n) > half_width:
            n += 1
        return n

    def __str__(self) -> str:
        if math.isnan(self.mean):
            return "-"
        if math.isnan(self.half_width):
            return f"{self.mean:.3f} (n={self.n})"
        return f"{self.mean:.3f} ± {self.half_width:.3f} (n={self.n})"


def estimate(values: Iterable[float]) -> Estimate:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return Estimate(math.nan, math.nan, 0)
    if len(values) == 1:
        return Estimate(values[0], math.nan, 1)
    return Estimate(statistics.fmean(values), _t95(len(values)) * statistics.stdev(values) / math.sqrt(len(values)),
                    len(values))


def _t95(n: int) -> float:
    """Student's t for a two-sided 95% interval of a mean over ``n`` values (``n`` - 1 degrees of freedom)."""
    return _T95[n - 2] if n - 1 <= len(_T95) else 1.96


@dataclass
class FleetResult:
    """One fleet run: the model of one pruning iteration adapted by one fleet, with one seed."""

    directory: Path
    scenario: str
    mode: str  # finetune | continual
    model: str
    pruning: str
    pretrain: str
    seed: int
    iteration: int
    params: int
    budget_kind: str
    budget_value: float | None
    fleet_variant: str  # the fleet's settings other than its budget, hashed: runs to compare must share it
    coordinator_key: str
    coordinator: list[dict[str, Any]]  # the coordinator's record, one entry per iteration
    window_s: float
    rows: list[dict[str, Any]] = field(repr=False, default_factory=list)
    shared: list[dict[str, Any]] = field(repr=False, default_factory=list)  # shared_model.json (FedAvg)
    update: str = "full"  # fleet.update: what the nodes trained (runs from before it: full)
    update_budget_kb: float | None = None  # fleet.update_budget_kb (fisher / relevant choose within it)

    @property
    def target_metric(self) -> str:
        """What adaptation is judged on: F for new subclasses or domains, P ∪ F for new classes."""
        return "acc_PF" if self.mode == "continual" else "acc_F"

    @property
    def last_window(self) -> int:
        return max(r["window"] for r in self.rows)

    def final_per_node(self, metric: str | None = None) -> list[float]:
        metric = metric or self.target_metric
        return [r[metric] for r in self.rows if r["window"] == self.last_window and r["status"] not in NO_RESULT
                and not math.isnan(r[metric])]

    def fleet_mean(self, metric: str | None = None) -> float:
        values = self.final_per_node(metric)
        return statistics.fmean(values) if values else math.nan

    def received_mean(self, metric: str | None = None) -> float:
        """Fleet mean of the model as the nodes received it (nodes.csv's window -1 rows)."""
        metric = metric or self.target_metric
        values = [r[metric] for r in self.rows if r["window"] == RECEIVED_WINDOW and not math.isnan(r[metric])]
        return statistics.fmean(values) if values else math.nan

    def gain(self, metric: str | None = None) -> float:
        """Fleet mean after the last window minus as received."""
        return self.fleet_mean(metric) - self.received_mean(metric)

    def improved_share(self, metric: str | None = None) -> float:
        """Share of nodes whose accuracy after the last window beats the model as they received it."""
        metric = metric or self.target_metric
        received = {r["node"]: r[metric] for r in self.rows if r["window"] == RECEIVED_WINDOW}
        final = {r["node"]: r[metric] for r in self.rows if r["window"] == self.last_window and r["status"] not in NO_RESULT}
        pairs = [(received[n], final[n]) for n in set(received) & set(final)
                 if not math.isnan(received[n]) and not math.isnan(final[n])]
        return sum(a > b for b, a in pairs) / len(pairs) if pairs else math.nan

    def shared_final(self, metric: str | None = None) -> float:
        """The shared (FedAvg) model's accuracy after the last window (NaN when the fleet shares none)."""
        metric = metric or self.target_metric
        value = self.shared[-1].get(metric) if self.shared else None
        return math.nan if value is None else float(value)

    def shared_gain(self, metric: str | None = None) -> float:
        """The shared model after the last window minus the model as the nodes received it."""
        return self.shared_final(metric) - self.received_mean(metric)

    def reference_gain(self, metric: str | None = None) -> float:
        """The reference (the paper's central adaptation): after minus before."""
        return self.reference(metric) - self.reference(metric, when="before")

    def reference_epochs(self) -> int | None:
        for entry in self.coordinator:
            if entry["iteration"] == self.iteration and "reference" in entry:
                return entry["reference"].get("epochs")
        return None

    def reference(self, metric: str | None = None, when: str = "after") -> float:
        """The coordinator's central adaptation of this checkpoint (the paper's), ``before`` or ``after``."""
        metric = metric or self.target_metric
        for entry in self.coordinator:
            if entry["iteration"] == self.iteration and "reference" in entry:
                return float(entry["reference"][when].get(metric, math.nan))
        return math.nan

    @property
    def pruned_accuracy(self) -> float:
        """Accuracy on P's test split after pruning and recovery (the coordinator's)."""
        return _coordinator_accuracy(self.coordinator, self.iteration)

    @property
    def forgetting(self) -> float:
        """Drop of accuracy on P from the received model to the fleet after adaptation, on the same
        test subset (older runs without received rows: from the coordinator's P accuracy)."""
        received = self.received_mean("acc_P")
        return (self.pruned_accuracy if math.isnan(received) else received) - self.fleet_mean("acc_P")

    @property
    def failed_nodes(self) -> int:
        """Nodes that failed or were late in some window (device outcomes)."""
        return len({r["node"] for r in self.rows if r["status"] in DEVICE_FAULTS})

    @property
    def not_simulated_nodes(self) -> int:
        """Nodes the simulation engine left unserved in some window (not a device outcome)."""
        return len({r["node"] for r in self.rows if r["status"] == Status.not_simulated})

    def joules_per_node(self, part: str = "energy_j") -> float:
        """Energy a node spent over the run, on average over the fleet's nodes: ``energy_j`` (all of
        it, the radio included) or ``comm_j`` (the radio's share); NaN where not recorded."""
        nodes = len({r["node"] for r in self.rows})
        spent = [r[part] for r in self.rows if r["window"] >= 0 and r["status"] not in NO_RESULT]
        return sum(spent) / nodes if nodes and spent else math.nan

    def accuracy_per_kj(self, metric: str | None = None) -> float:
        """The nodes' mean accuracy after the last window per kJ a node spent (radio included)."""
        joules = self.joules_per_node()
        return self.fleet_mean(metric) / (joules / 1e3) if joules and joules > 0 else math.nan

    def curve(self, metric: str | None = None) -> list[tuple[float, float, float]]:
        """(simulated seconds, joules spent per node so far, fleet mean) after every window."""
        metric = metric or self.target_metric
        points, spent = [], 0.0
        nodes = max(len({r["node"] for r in self.rows}), 1)
        for window in sorted({r["window"] for r in self.rows}):
            here = [r for r in self.rows if r["window"] == window and r["status"] not in NO_RESULT]
            spent += sum(r["energy_j"] for r in here if not math.isnan(r["energy_j"])) / nodes
            values = [r[metric] for r in here if not math.isnan(r[metric])]
            if values:
                points.append(((window + 1) * self.window_s, spent, statistics.fmean(values)))
        return points

    def to_target(self, target: float) -> tuple[float, float]:
        """Simulated seconds and joules per node until the fleet mean first reaches ``target`` (nan: never)."""
        for seconds, joules, value in self.curve():
            if value >= target:
                return seconds, joules
        return math.nan, math.nan

    @property
    def budget_label(self) -> str:
        if self.budget_value is None:
            return "unlimited"
        return f"{self.budget_value:g} {BUDGET_KINDS[self.budget_kind][0]}"


def _coordinator_accuracy(coordinator: list[dict[str, Any]], iteration: int) -> float:
    for entry in coordinator:
        if entry["iteration"] == iteration and entry.get("test_acc") is not None:
            return float(entry["test_acc"])
    return math.nan


def _budget(fleet: dict[str, Any]) -> tuple[str, float | None]:
    budget = fleet.get("budget", {})
    set_ = [(k, float(v)) for k, v in budget.items() if v is not None]
    if not set_:
        return "energy_j", None
    return set_[0]


def load(run_json: Path) -> FleetResult:
    record = json.loads(run_json.read_text())
    fleet = dict(record["fleet"])
    kind, value = _budget(fleet)
    variant = {k: v for k, v in fleet_identity(fleet).items() if k != "budget"}
    rows = read_rows(run_json.parent / NODES_CSV)
    shared_path = run_json.parent / SHARED_MODEL
    shared = json.loads(shared_path.read_text()) if shared_path.exists() else []
    if not rows:
        raise SwarmError(f"{run_json.parent / 'nodes.csv'} has no rows; run the fleet again")
    return FleetResult(
        directory=run_json.parent, scenario=record["scenario"], mode=record["mode"], model=record["model"],
        pruning=record["pruning"], pretrain=record["pretrain"], seed=int(record["seed"]),
        iteration=int(record["iteration"]), params=int(record["params"]), budget_kind=kind, budget_value=value,
        fleet_variant=hashlib.sha256(json.dumps(variant, sort_keys=True).encode()).hexdigest()[:8],
        coordinator_key=record["coordinator_key"], coordinator=record["coordinator"],
        window_s=float(fleet["window_s"]), rows=rows, shared=shared, update=str(fleet.get("update", "full")),
        update_budget_kb=None if fleet.get("update_budget_kb") is None else float(fleet["update_budget_kb"]))


def collect(directories: Sequence[Path]) -> tuple[list[FleetResult], list[str]]:
    """Every fleet result under ``directories``, once each; and a line per run that could not be read."""
    results, problems, seen = [], [], set()
    for directory in directories:
        directory = Path(directory)
        if not directory.exists():
            raise SwarmError(f"{directory} does not exist; pass run or multirun directories of swarm.simulate")
        for run_json in sorted(directory.rglob(RUN_RECORD)):
            if not (run_json.parent / NODES_CSV).exists():
                problems.append(f"{run_json.parent}: run.json without nodes.csv (skipped)")
                continue
            try:
                result = load(run_json)
            except (KeyError, ValueError, json.JSONDecodeError) as error:
                problems.append(f"{run_json.parent}: unreadable ({type(error).__name__}: {error}; skipped)")
                continue
            identity = (result.coordinator_key, result.iteration, result.budget_kind, result.budget_value,
                        result.fleet_variant, result.seed)
            if identity in seen:
                continue
            seen.add(identity)
            results.append(result)
    if not results:
        raise SwarmError(f"no fleet results (run.json with nodes.csv) under {', '.join(map(str, directories))}; "
                         "run python -m swarm.simulate first")
    return results, problems


def criteria(results: Iterable[FleetResult], baseline: str) -> list[str]:
    """The pruning criteria the runs used, in the order reports list them: the others by name,
    then ``baseline`` (the one each other is compared with), where the runs used it."""
    used = sorted({r.pruning for r in results})
    return [c for c in used if c != baseline] + ([baseline] if baseline in used else [])


def compared(results: Iterable[FleetResult], baseline: str) -> list[str]:
    """The criteria compared with ``baseline``: none when the runs did not use it."""
    names = criteria(list(results), baseline)
    return names[:-1] if names and names[-1] == baseline else []


def paired_difference(a: dict[int, float], b: dict[int, float]) -> Estimate:
    """Mean of a − b over the seeds both have, with its 95% interval."""
    seeds = sorted(set(a) & set(b))
    return estimate([a[s] - b[s] for s in seeds if not math.isnan(a[s]) and not math.isnan(b[s])])


def pruning_curve(results: Iterable[FleetResult]) -> dict[int, dict[int, tuple[int, float]]]:
    """Accuracy on P after pruning and recovery: iteration -> seed -> (params, accuracy), from the
    coordinator records (every iteration, also those no fleet adapted)."""
    curve: dict[int, dict[int, tuple[int, float]]] = {}
    for result in results:
        for entry in result.coordinator:
            if entry.get("test_acc") is not None:
                curve.setdefault(int(entry["iteration"]), {})[result.seed] = (int(entry["params"]),
                                                                              float(entry["test_acc"]))
    return curve
