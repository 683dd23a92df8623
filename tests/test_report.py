"""swarm.report: aggregation over seeds, intervals, paired gaps, missing points, figures, the CLI."""

from __future__ import annotations

import csv
import json
import math
import shutil

import pytest

from swarm import report
from swarm.nodes.protocol import write_rows
from swarm.results import collect, estimate, paired_difference


def fake_run(root, *, pruning="lrp", pretrain="extra", seed=0, iteration=0, finals=(0.6, 0.8), windows=2,
             budget=20.0, mode="finetune", scenario="fmnist_new_subclasses", failed_node=None, p_acc=0.95,
             received=0.3, reference=None, shared=None, radio=math.nan, update="full", update_budget_kb=None):
    """A fleet run directory as swarm.simulate leaves it: run.json and nodes.csv.

    Every node received a model scoring ``received`` (its window -1 row); node n's accuracy rises
    linearly to ``finals[n]`` over the windows; each node spends 5 J a window (``radio`` J of it on
    its link: NaN, a run from before the link was modelled). ``reference``: the
    coordinator's central adaptation of each iteration reaches this accuracy; ``shared``: the shared
    (FedAvg) model's accuracy rises linearly to it (shared_model.json, as the server writes it)."""
    directory = (root / f"{scenario}-{pruning}-{pretrain}-s{seed}-b{budget}-{update}{update_budget_kb or ''}"
                 / f"iteration_{iteration:02d}")
    directory.mkdir(parents=True)
    metric = "acc_PF" if mode == "continual" else "acc_F"
    rows = []
    for node in range(len(finals)):
        rows.append({"node": node, "profile": "raspberry_pi_4", "window": -1, "sim_time_s": 0.0, "steps": 0,
                     "samples_seen": 0, "flops": 0.0, "energy_j": 0.0, "acc_P": 0.95, "acc_F": math.nan,
                     "acc_PF": math.nan, "status": "received", "error": "", metric: received})
    for window in range(windows):
        for node, final in enumerate(finals):
            row = {"node": node, "profile": "raspberry_pi_4", "window": window, "sim_time_s": 100.0 * (window + 1),
                   "steps": 10, "samples_seen": 50, "flops": 1e9, "energy_j": 5.0, "acc_P": 0.9, "acc_F": math.nan,
                   "acc_PF": math.nan, "status": "ok", "error": "", "comm_j": radio}
            row[metric] = final * (window + 1) / windows
            if node == failed_node and window == windows - 1:
                row.update(status="failed", error="RuntimeError: boom", acc_P=math.nan, **{metric: math.nan})
            rows.append(row)
    write_rows(directory / "nodes.csv", rows)
    if shared is not None:
        scores = [{"window": w, "acc_P": 0.9, "acc_F": None, "acc_PF": None, "acc_F_groups": []} for w in range(windows)]
        for w, entry in enumerate(scores):
            entry[metric] = shared * (w + 1) / windows
        (directory / "shared_model.json").write_text(json.dumps(scores))
    coordinator = [{"iteration": i, "params": 1000 * (10 - i), "macs": 1, "test_acc": p_acc - 0.01 * i,
                    "val_acc": p_acc} for i in range(3)]
    if reference is not None:
        for entry in coordinator:
            entry["reference"] = {"before": {"acc_P": p_acc, metric: received}, "after": {"acc_P": p_acc, metric: reference},
                                  "epochs": 7}
    record = {"scenario": scenario, "mode": mode, "pruning": pruning, "pretrain": pretrain, "model": "resnet_small",
              "seed": seed, "iteration": iteration, "params": 1000 * (10 - iteration), "macs": 1,
              "coordinator_key": f"{pruning}-{pretrain}-{seed}", "coordinator": coordinator,
              "fleet_key": f"{pruning}-{pretrain}-{seed}-{iteration}-{budget}",
              "fleet": {"nodes": len(finals), "windows": windows, "window_s": 100.0,
                        "budget": {"energy_j": budget, "compute_s": None, "flops": None},
                        "update": update, "update_budget_kb": update_budget_kb}}
    (directory / "run.json").write_text(json.dumps(record))
    return directory


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_estimate_is_a_student_t_interval():
    e = estimate([0.8, 0.9, 1.0])
    assert e.mean == pytest.approx(0.9) and e.n == 3
    assert e.half_width == pytest.approx(4.303 * 0.1 / math.sqrt(3), rel=1e-6)
    one = estimate([0.7, math.nan])
    assert one.n == 1 and one.mean == 0.7 and math.isnan(one.half_width)
    assert estimate([]).n == 0


def test_the_seeds_an_interval_needs_follow_from_its_spread():
    """Two seeds 0.02 apart (standard deviation 0.0141): ± 0.127 now; ± 0.02 needs five seeds
    (t4 = 2.776: 2.776 x 0.0141 / sqrt 5 = 0.0176; four seeds give 3.182 x 0.0141 / 2 = 0.0225)."""
    e = estimate([0.0, 0.02])
    assert e.half_width == pytest.approx(0.12706, rel=1e-3)
    assert e.seeds_for(0.02) == 5 and e.seeds_for(0.13) == 2 and e.seeds_for(0.023) == 4
    assert estimate([0.3]).seeds_for(0.02) is None


def test_paired_difference_uses_only_seeds_both_sides_have():
    d = paired_difference({0: 0.9, 1: 0.8, 2: 0.7}, {0: 0.5, 1: 0.6})
    assert d.n == 2 and d.mean == pytest.approx((0.4 + 0.2) / 2)


def test_collect_reads_every_run_once(tmp_path):
    first = fake_run(tmp_path / "sweep1", seed=0)
    fake_run(tmp_path / "sweep1", seed=1)
    shutil.copytree(first.parent, tmp_path / "sweep2" / "copy")  # the same result restored into a second sweep
    (tmp_path / "sweep1" / "broken").mkdir()
    (tmp_path / "sweep1" / "broken" / "run.json").write_text("{}")
    results, problems = collect([tmp_path / "sweep1", tmp_path / "sweep2"])
    assert sorted(r.seed for r in results) == [0, 1]
    assert results[0].fleet_mean() == pytest.approx(0.7)
    # The curve starts at the model as received (time 0, nothing spent).
    assert results[0].curve() == [(0.0, 0.0, pytest.approx(0.3)), (100.0, 5.0, pytest.approx(0.35)),
                                  (200.0, 10.0, pytest.approx(0.7))]
    assert results[0].received_mean() == pytest.approx(0.3) and results[0].gain() == pytest.approx(0.4)
    assert len(problems) == 1 and "broken" in problems[0] and "without nodes.csv" in problems[0]


def test_report_aggregates_settings_seeds_and_missing_points(tmp_path):
    runs = tmp_path / "runs"
    for pruning, pretrain, seeds, final in [("lrp", "extra", (0, 1, 2), 0.8), ("lrp", "task_only", (0, 1, 2), 0.6),
                                            ("imp", "extra", (0, 1), 0.7), ("imp", "task_only", (0, 1, 2), 0.55)]:
        for seed in seeds:
            for iteration in (0, 2):
                fake_run(runs, pruning=pruning, pretrain=pretrain, seed=seed, iteration=iteration,
                         finals=(final - 0.1 + 0.01 * seed, final + 0.1 + 0.01 * seed),
                         shared=final + 0.05 + 0.01 * seed)
    out = tmp_path / "report"
    assert report.main([str(runs), "--out", str(out), "--target", "0.5"]) == 0
    rows = read_csv(out / "results.csv")
    assert len(rows) == 2 * (3 + 3 + 2 + 3)
    row = next(r for r in rows if (r["pruning"], r["pretrain"], r["seed"], r["iteration"]) == ("lrp", "extra", "1", "2"))
    assert float(row["adapted_mean"]) == pytest.approx(0.81)
    assert float(row["p_acc_after_pruning"]) == pytest.approx(0.93)
    assert float(row["forgetting_P"]) == pytest.approx(0.95 - 0.9)  # as received (same test subset) − after
    assert float(row["received_mean"]) == pytest.approx(0.3) and float(row["gain"]) == pytest.approx(0.51)
    assert float(row["improved_share"]) == 1.0 and row["reference_after"] == ""
    assert float(row["seconds_to_target"]) == 200 and float(row["joules_to_target"]) == 10.0
    assert row["budget"] == "20 J/window" and row["failed_nodes"] == "0"
    # The shared model after the last window, and each accuracy alone, beside the nodes' mean.
    assert float(row["shared_acc_F"]) == pytest.approx(0.86) and float(row["shared_gain"]) == pytest.approx(0.56)
    assert float(row["nodes_acc_F"]) == pytest.approx(0.81) and float(row["received_acc_F"]) == pytest.approx(0.3)
    assert row["shared_acc_PF"] == "" and row["coordinator_epochs"] == "  "  # the fake record has no epochs
    text = (out / "report.md").read_text()
    # extra − task_only under LRP: 0.2 at every seed, so no spread; LRP − IMP (extra) over the 2 common seeds.
    # Columns: on P after pruning, reference, shared model, nodes' mean.
    assert "| 0.010M | 0 | extra − task_only (LRP) | +0.000 (n=3) |" not in text
    assert ("extra − task_only (LRP) | +0.000 [+0.000, +0.000] (n=3) | - | +0.200 [+0.200, +0.200] (n=3) | "
            "+0.200 [+0.200, +0.200] (n=3) |") in text
    assert ("LRP − IMP (extra) | +0.000 [+0.000, +0.000] (n=2) | - | +0.100 [+0.100, +0.100] (n=2) | "
            "+0.100 [+0.100, +0.100] (n=2) |") in text
    # The endpoints, averaged over the last sizes (here iterations 0 and 2), for the shared model only
    # (these runs have no reference): (a) 0.2 under LRP; (b) 0.2 − 0.15 on the 2 seeds IMP extra has.
    assert "| (a) extra − task_only, LRP | shared model | acc_F | +0.200 [+0.200, +0.200] (n=3) | 0.000 | ± 0.02 | 2 |" in text
    assert "| (b) (extra − task_only): LRP − IMP | shared model | acc_F | +0.050 [+0.050, +0.050] (n=2) |" in text
    assert "| reference |" not in text
    assert "| lrp | extra | 2 | 0.008M |" in text
    # Claim (b): the pre-training gap is 0.2 under LRP and 0.15 under IMP, on the 2 seeds IMP extra has.
    assert "| 0.008M | 2 | (extra − task_only): LRP − IMP | " in text
    assert "| +0.050 [+0.050, +0.050] (n=2) |" in text
    # The IMP extra fleet has two seeds: its cell says so.
    assert ("| imp | extra | 2 | 0.008M | 0.930 ± 0.000 (n=2) | - | 0.300 ± 0.000 (n=2) | 0.755 ± 0.064 (n=2) | "
            "0.705 ± 0.064 (n=2) |") in text
    for name in ("fig3_fmnist_new_subclasses.png", "fleet_fmnist_new_subclasses.png"):
        assert (out / name).stat().st_size > 5000 and f"({name})" in text
    assert not list(out.glob("budget_*.png"))  # one budget: no budget curve


def test_report_draws_budget_curves_and_counts_failed_nodes(tmp_path):
    runs = tmp_path / "runs"
    for budget, final in ((5.0, 0.5), (20.0, 0.7), (80.0, 0.8)):
        for pruning in ("lrp", "imp"):
            for seed in (0, 1):
                fake_run(runs, pruning=pruning, seed=seed, budget=budget, finals=(final, final), mode="continual",
                         scenario="fmnist_new_classes", failed_node=1 if (budget, pruning, seed) == (5.0, "imp", 0) else None)
    out = tmp_path / "out"
    report.write([runs], out)
    assert (out / "budget_fmnist_new_classes.png").stat().st_size > 5000
    text = (out / "report.md").read_text()
    assert "**1 node(s) failed**" in text and "### Budget 80 J/window" in text
    # New classes: F alone and P alone beside P ∪ F.
    assert "F alone (the new classes) and P alone (the old)" in text
    assert "| lrp | extra | 0 | acc_P | 0.950 ± 0.000 (n=2) | - | - | 0.900 ± 0.000 (n=2) |" in text
    failed = [r for r in read_csv(out / "results.csv") if r["failed_nodes"] == "1"]
    assert len(failed) == 1 and float(failed[0]["adapted_mean"]) == pytest.approx(0.5)
    assert failed[0]["adapted_metric"] == "acc_PF"
    # Default target: 90% of the best fleet mean of the scenario (0.8).
    assert {r["target"] for r in read_csv(out / "results.csv")} == {"0.72"}


def test_report_sets_the_fleet_beside_the_papers_reference_adaptation(tmp_path):
    runs = tmp_path / "runs"
    for pretrain, reference, final in (("extra", 0.9, 0.7), ("task_only", 0.8, 0.6)):
        for seed in (0, 1, 2):
            for iteration in (0, 2):
                fake_run(runs, pretrain=pretrain, seed=seed, iteration=iteration, finals=(final, final),
                         reference=reference + 0.01 * seed)
    out = tmp_path / "out"
    results = report.write([runs], out)
    assert {round(r.reference(), 3) for r in results} == {0.9, 0.91, 0.92, 0.8, 0.81, 0.82}
    assert all(r.reference(when="before") == pytest.approx(0.3) for r in results)
    text = (out / "report.md").read_text()
    # Gap (a) on the reference: 0.1 at every seed; on the fleet 0.1 as well.
    assert "extra − task_only (LRP) | +0.000 [+0.000, +0.000] (n=3) | +0.100 [+0.100, +0.100] (n=3) | " in text
    assert "| (a) extra − task_only, LRP | reference | acc_F | +0.100 [+0.100, +0.100] (n=3) | 0.000 |" in text
    row = next(r for r in read_csv(out / "results.csv") if r["pretrain"] == "extra" and r["seed"] == "1")
    assert float(row["reference_after"]) == pytest.approx(0.91) and float(row["reference_before"]) == pytest.approx(0.3)
    assert (out / "fig3_fmnist_new_subclasses.png").stat().st_size > 5000


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().startswith("error: no fleet results")
    assert report.main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert report.main([str(tmp_path), "--target", "75"]) == 2
    assert "not an accuracy" in capsys.readouterr().err


def test_accuracy_matrix_over_drift_events():
    from swarm.fleet_report import accuracy_matrix

    def row(window, t, acc_p, groups, status="ok"):
        return {"node": 0, "window": window, "sim_time_s": t, "acc_P": acc_p, "acc_F_groups": groups, "status": status}

    # Two tasks (groups 0-1, then 2); events begin at 50 s and 250 s; windows of 100 s.
    rows = [row(-1, 0, 0.9, [0.0, 0.0, 0.0], "received"), row(0, 100, 0.85, [0.6, 0.8, 0.0]),
            row(1, 200, 0.8, [0.7, 0.9, 0.0]), row(2, 300, 0.75, [0.5, 0.7, 0.6]), row(3, 400, 0.7, [0.4, 0.6, 0.9])]
    matrix = accuracy_matrix(rows, [[0, 1], [2]], {0: [50.0, 250.0]})
    assert matrix["columns"] == ["P", "task 1", "task 2"]
    assert matrix["matrix"] == [[0.9, 0.0, 0.0], [0.8, pytest.approx(0.8), 0.0], [0.7, pytest.approx(0.5), 0.9]]
    assert matrix["backward_transfer"] == pytest.approx(0.5 - 0.8)  # task 1 forgotten after task 2
    assert matrix["average_after_last"] == pytest.approx((0.7 + 0.5 + 0.9) / 3)
    assert accuracy_matrix(rows, [[0, 1, 2]], {0: [50.0]}) is None  # one event: no matrix


def test_archive_keeps_the_small_files_a_report_is_built_from(tmp_path, capsys):
    from swarm import archive

    runs = tmp_path / "sweep"
    for seed in (0, 1):
        folder = fake_run(runs, seed=seed, shared=0.7)
        (folder / "nodes").mkdir()
        (folder / "nodes" / "stream.pt").write_bytes(b"bulk")  # a node's data: not kept
    (runs / "unfinished").mkdir()
    (runs / "unfinished" / "run.json").write_text("{}")  # no nodes.csv: not a finished run
    kept = tmp_path / "kept"
    assert archive.main([str(runs), str(kept)]) == 0
    assert "2 fleet runs" in capsys.readouterr().out
    files = sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*") if p.is_file())
    assert len(files) == 6 and all(p.endswith(("run.json", "nodes.csv", "shared_model.json")) for p in files)
    # The tables rebuild from the archive alone.
    assert report.main([str(kept), "--out", str(tmp_path / "report")]) == 0
    assert read_csv(tmp_path / "report" / "results.csv")[0]["shared_acc_F"] == "0.7"
    assert archive.main([str(tmp_path / "missing"), str(kept)]) == 2


def test_reports_compare_whatever_criteria_the_runs_used_with_the_baseline(tmp_path):
    """A third criterion (``taylor``, say) appears beside LRP and IMP: each is compared with the
    baseline (``--baseline``, IMP by default), none is left out, and the baseline can be another."""
    for pruning, final in (("lrp", 0.8), ("imp", 0.6), ("taylor", 0.7)):
        for pretrain in ("extra", "task_only"):
            for seed in (0, 1):
                fake_run(tmp_path / "runs", pruning=pruning, pretrain=pretrain, seed=seed,
                         finals=(final + 0.05 * (pretrain == "extra"), final), reference=0.7,
                         radio=1.0 if pruning == "lrp" else math.nan)
    results, _ = collect([tmp_path / "runs"])
    labels = [line.split(" | ")[2] for line in report.gap_table(results)[2:]]
    assert "LRP − IMP (extra)" in labels and "TAYLOR − IMP (extra)" in labels
    assert "(extra − task_only): TAYLOR − IMP" in labels and "extra − task_only (TAYLOR)" in labels
    fleets = "\n".join(report.fleet_table(results))
    assert "| LRP − IMP (paired by seed) |" in fleets and "| TAYLOR − IMP (paired by seed) |" in fleets
    # Beside each side's accuracy, the joules a node spent (the radio's part; '-': not recorded) and
    # the accuracy per kJ: 2 windows x 5 J per node, so 0.825 / 0.010 kJ.
    assert ("| extra | 0 | 0.825 ± 0.000 (n=2) | 0.625 ± 0.000 (n=2) | +0.200 [+0.200, +0.200] (n=2) | "
            "10 ± 0 (2 ± 0) | 10 ± 0 (-) | 82.500 ± 0.000 (n=2) | 62.500 ± 0.000 (n=2) |") in fleets
    other = [line.split(" | ")[2] for line in report.gap_table(results, baseline="taylor")[2:]]
    assert "LRP − TAYLOR (extra)" in other and "IMP − TAYLOR (extra)" in other and "LRP − IMP (extra)" not in other
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--baseline", "taylor"]) == 0
    assert "TAYLOR" in (tmp_path / "out" / "report.md").read_text()
