"""Why a deeply pruned continual model does not learn its new classes, and one candidate fix.

    python benchmarks/new_class_outputs.py CHECKPOINT --set scenario=byo_continual \
        hydra.searchpath=[file:///tmp/byo/configs]

Adapts the checkpoint centrally as the paper's reference does (P ∪ F, Adam 5e-4, batch 32, early
stopping with patience 4, best weights) three times: as it is; with the output rows of F's classes
reset the way swarm does it (``swarm.nodes.models.reset_outputs``: zero weights, the other rows' mean
bias); and with them drawn at random with the spread of the other rows (bias = their mean), the
other common way to give a class-incremental head fresh outputs. Prints the epochs and the
accuracies, before and after, on the same test subsets the nodes use (docs/adaptation.md, section 9).
"""

from __future__ import annotations

import argparse

import torch
from swarm.config import compose_config

from swarm.config import data_options, scenario_of
from swarm.nodes import checkpoints
from swarm.nodes.evaluation import accuracies
from swarm.nodes.models import classifier, reset_outputs
from swarm.nodes.training import TrainSettings, fit
from swarm.server.data.build import build
from swarm.server.data.evaluation_sets import test_sets


def randomise(model: torch.nn.Module, rows: list[int], seed: int = 0) -> None:
    _, head = classifier(model)
    others = sorted(set(range(head.out_features)) - set(rows))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        spread = head.weight[others].std()
        head.weight[rows] = torch.randn(len(rows), head.in_features, generator=generator) * spread
        head.bias[rows] = head.bias[others].mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--set", nargs="*", default=[], help="Hydra overrides (the scenario)")
    args = parser.parse_args()
    cfg = compose_config(args.set)
    data = build(scenario_of(cfg), data_options(cfg))
    tests = test_sets(data, True, int(cfg.fleet.eval_samples))
    f_rows = data.untrained_outputs()
    variants = {"as received": lambda model: None, "reset (zero rows)": lambda model: reset_outputs(model, f_rows),
                "random rows": lambda model: randomise(model, f_rows)}
    for name, prepare in variants.items():
        model, _, _ = checkpoints.load(args.checkpoint)
        prepare(model)
        before = accuracies(model, tests, torch.device("cpu"))
        fitted = fit(model, data.union("PF", "train"), data.union("PF", "val"),
                     TrainSettings(max_epochs=100, patience=4, device="cpu"), seed=1, desc="reference")
        acc = accuracies(model, tests, torch.device("cpu"))
        print(f"F outputs {name}: before acc_P {before['acc_P']:.3f} acc_F {before['acc_F']:.3f}; after "
              f"{fitted.epochs} epochs acc_P {acc['acc_P']:.3f}, acc_F {acc['acc_F']:.3f}, acc_PF {acc['acc_PF']:.3f}",
              flush=True)


if __name__ == "__main__":
    main()
