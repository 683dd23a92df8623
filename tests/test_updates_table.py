"""The partial-update comparison table (python -m swarm.updates_table) from fleet results."""

from __future__ import annotations

import json

from swarm.nodes.protocol import write_rows
from swarm.results import collect
from swarm.updates_table import main, table
from tests.test_report import fake_run, read_csv


def _fleet(root, mode, budget, seed, gain):
    """A run whose two nodes (and shared model) gain ``gain`` on F over the received 0.3."""
    return fake_run(root, seed=seed, iteration=2, finals=(0.3 + gain, 0.3 + gain), shared=0.3 + gain,
                    update=mode, update_budget_kb=budget)


def test_the_table_sets_each_mode_and_budget_beside_the_others_with_intervals(tmp_path):
    for seed, (relevant, fisher) in enumerate([(0.20, 0.10), (0.22, 0.11), (0.18, 0.12)]):
        _fleet(tmp_path, "relevant", 8192.0, seed, relevant)
        _fleet(tmp_path, "fisher", 8192.0, seed, fisher)
        _fleet(tmp_path, "head", None, seed, 0.05)
        _fleet(tmp_path, "fisher", 12288.0, seed, 0.2 + 0.01 * seed)  # no relevant at this budget
    results, problems = collect([tmp_path])
    assert not problems and len(results) == 12
    text = table(results)
    lines = [line for line in text.splitlines() if line.startswith("| `")]
    assert [line.split("|")[1:3] for line in lines] == [[" `head` ", " - "], [" `fisher` ", " 8192 KB "],
                                                        [" `fisher` ", " 12288 KB "], [" `relevant` ", " 8192 KB "]]
    relevant = next(line for line in lines if "`relevant`" in line)
    assert "0.200 ± 0.050 (n=3)" in relevant and relevant.endswith("| 0, 1, 2 |")
    # relevant − fisher, paired by seed: 0.10, 0.11, 0.06 -> mean 0.090, its interval above 0
    assert "At 8192 KB, `relevant` − `fisher` on the shared model's gain: 0.090 ± 0.066 (n=3): relevant wins." in text
    assert "12288 KB, `relevant`" not in text


def test_new_classes_show_the_gain_on_f_beside_the_gain_on_p_and_f(tmp_path):
    for seed in range(2):
        run = fake_run(tmp_path, seed=seed, iteration=2, finals=(0.5, 0.5), shared=0.5, mode="continual",
                       scenario="fmnist_new_tops", update="head")
        shared = json.loads((run / "shared_model.json").read_text())
        for entry in shared:
            entry["acc_F"] = 0.2 + 0.1 * seed
        (run / "shared_model.json").write_text(json.dumps(shared))
        rows = read_csv(run / "nodes.csv")
        for row in rows:
            row["acc_F"] = 0.1 if row["window"] == "-1" else row["acc_F"]
        write_rows(run / "nodes.csv", rows)
    results, _ = collect([tmp_path])
    text = table(results)
    assert "| mode | budget | nodes' gain on acc_PF | shared model's gain | shared model's gain on acc_F |" in text
    head = next(line for line in text.splitlines() if line.startswith("| `head`"))
    # P ∪ F: 0.3 -> 0.5 on both seeds; F: 0.1 as received -> 0.2 and 0.3
    assert head.split("|")[3:6] == [" 0.200 ± 0.000 (n=2) ", " 0.200 ± 0.000 (n=2) ", " 0.150 ± 0.635 (n=2) "]


def test_the_cli_writes_the_table_and_refuses_an_empty_folder_in_one_line(tmp_path, capsys):
    _fleet(tmp_path / "runs", "head", None, 0, 0.05)
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "table.md")]) == 0
    assert "`head`" in (tmp_path / "table.md").read_text()
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--out", str(tmp_path / "t2.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no fleet results")
