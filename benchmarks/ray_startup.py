"""Where the fixed cost of a Flower simulation goes: Ray's start, its actors, its shutdown.

    python benchmarks/ray_startup.py

1. Plain Ray: ``ray.init``, two actors that import torch, ``ray.shutdown`` (each timed).
2. Flower's ``run_simulation`` with trivial apps (8 nodes, one query round, then a second round),
   once with Ray started by Flower (it passes a ``runtime_env``) and once with Ray started before
   (:mod:`swarm.flower_sim` does this), each in a fresh process.

The fleet's ``fleet_overhead.py`` ratio is this fixed cost plus per-message work, over the work.
"""

from __future__ import annotations

import json
import subprocess
import sys

PLAIN_RAY = r"""
import json, logging, time
t0 = time.perf_counter()
import ray
t1 = time.perf_counter()
ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
t2 = time.perf_counter()

@ray.remote(num_cpus=1)
class Actor:
    def ready(self):
        import torch  # noqa: F401
        return 1

actors = [Actor.remote() for _ in range(2)]
ray.get([a.ready.remote() for a in actors])
t3 = time.perf_counter()
ray.shutdown()
t4 = time.perf_counter()
print(json.dumps({"import ray": t1 - t0, "ray.init": t2 - t1, "2 actors + import torch": t3 - t2,
                  "ray.shutdown": t4 - t3}))
"""

FLOWER = r"""
import json, logging, os, sys, time, warnings
PRESTART = sys.argv[1] == "prestart"
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

client, server, marks = ClientApp(), ServerApp(), {}

@client.query("ping")
def ping(msg, context):
    import torch  # noqa: F401  (as the fleet's ClientApp does)
    return Message(RecordDict({"r": ConfigRecord({"p": 1})}), reply_to=msg)

@server.main()
def main(grid, context):
    marks["main"] = time.perf_counter()
    while len(list(grid.get_node_ids())) < 8:
        time.sleep(0.05)
    ids = list(grid.get_node_ids())
    for name in ("first round", "second round"):
        list(grid.send_and_receive([Message(RecordDict(), dst_node_id=i, message_type="query.ping") for i in ids],
                                   timeout=120))
        marks[name] = time.perf_counter()

os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
for name in ("flwr", "alembic"):
    logging.getLogger(name).setLevel(logging.WARNING)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from flwr.simulation import run_simulation
start = time.perf_counter()
if PRESTART:
    from swarm.flower_sim import _start_ray
    _start_ray()
run_simulation(server_app=server, client_app=client, num_supernodes=8,
               backend_config={"client_resources": {"num_cpus": 1.0, "num_gpus": 0.0}})
end = time.perf_counter()
print(json.dumps({"start to ServerApp": marks["main"] - start, "first round (actors start)": marks["first round"] - marks["main"],
                  "second round": marks["second round"] - marks["first round"], "shutdown": end - marks["second round"],
                  "total": end - start}))
"""


def measure(code: str, *args: str) -> dict[str, float]:
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise SystemExit(f"measurement failed:\n{result.stderr[-2000:]}")
    return json.loads(lines[-1])


def main() -> None:
    rows = [("plain Ray", measure(PLAIN_RAY)), ("Flower, Ray started by Flower (runtime_env)", measure(FLOWER, "flower")),
            ("Flower, Ray started before (swarm.flower_sim)", measure(FLOWER, "prestart"))]
    for title, timings in rows:
        print(f"\n{title}")
        for name, seconds in timings.items():
            print(f"  {name:<28} {seconds:6.2f} s")


if __name__ == "__main__":
    main()
