"""A run folder's files, and what a simulation's processes tell each other through the
environment: the names the coordinator, the ServerApp, the nodes and the reports share.
"""

# The files of a run folder (hydra.run.dir; with several checkpoints, the fleet's files are in
# iteration_NN/ and the nodes' folders are shared).
COORDINATOR = "coordinator.json"  # the coordinator's record, copied from the cache
FLEET_PLAN = "fleet_plan.json"
NODES_CSV = "nodes.csv"
FLEET_PROGRESS = "fleet_progress.json"  # what a killed fleet resumes from
FLEET_LOCK = "fleet.lock"  # held while a fleet runs in the folder
FLEET_LOG = "fleet.log"  # the ServerApp's log of the plan
FLEET_STATUS = "fleet_status.json"  # the ServerApp's outcome of the plan
SUMMARY = "summary.json"
RUN_RECORD = "run.json"  # what swarm.report reads
REPORT = "report.md"
NODE_FOLDERS = "nodes"  # the simulated nodes' own folders: nodes/node_NNN/{data,state}
EVALUATION_DIR = "evaluation"  # beside the plan: the test subsets the server scores the shared model on
SHARED_MODEL = "shared_model.json"  # the shared (FedAvg) model's accuracies after every window
TIMINGS_CSV = "timings.csv"  # each node-window's wall seconds (TIMING) and each window's, as the server saw them

# What a simulation's caller tells the engine's processes through their environment.
NODE_ROOT = "SWARM_NODE_ROOT"  # where the simulated nodes find their node_NNN folders (swarm.nodes.client_app)
CALLER_PID = "SWARM_CALLER_PID"  # the process whose end stops the run (swarm.server.server_app)
