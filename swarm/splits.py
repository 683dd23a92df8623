"""``python -m swarm.splits scenario=<name> [pretrain=...]``: print a scenario's T/P/F split as JSON.

Works without the dataset on disk (names come from the scenario and the dataset's fixed class
list); where the data is present, each role also gets its train / val / test sample counts.
"""

from __future__ import annotations

import json
import sys
from typing import Any


from swarm.config import data_options, entry_point, scenario_of
from swarm.nodes.errors import DataNotFoundError
from swarm.server.data import sources
from swarm.server.data.build import build
from swarm.server.data.scenario import ROLES
from swarm.server.settings import SwarmConfig


def describe(cfg: SwarmConfig) -> dict[str, Any]:
    """The JSON-able description of the configured scenario."""
    scenario = scenario_of(cfg)
    classes, domains = sources.known_names(scenario.dataset)
    scenario.validate(classes, domains)
    counts = None
    try:
        data = build(scenario, data_options(cfg))
        classes, counts = list(data.catalog.classes), data.counts()
    except DataNotFoundError as missing:
        print(f"note: no counts, the data is not there ({missing})", file=sys.stderr)
    label_names = scenario.label_names(classes)
    result: dict[str, Any] = {
        "scenario": scenario.name,
        "pretrain": scenario.pretrain,
        "dataset": scenario.dataset["name"],
        "split_by": scenario.split_by,
        "num_outputs": len(label_names),
        "label_names": label_names,
        "mode": scenario.mode,
    }
    if scenario.label_groups is not None:
        result["label_groups"] = scenario.label_groups
    for role in ROLES:
        result[role] = {"classes": scenario.active_roles[role]}
        if counts is not None:
            result[role]["counts"] = counts[role]
    return result


@entry_point("splits")
def main(cfg: SwarmConfig) -> None:
    print(json.dumps(describe(cfg), indent=2))


if __name__ == "__main__":
    main()
