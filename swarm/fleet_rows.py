"""The rows of ``nodes.csv``, defined once: their columns, the window of the model as received, and
what each status means. Nodes, the server loop, reports and results all import it.

Statuses a node reports about its own window: ``ok`` (it trained what its budget granted),
``budget_exhausted``, ``data_exhausted``, ``does_not_fit``, ``unavailable``, ``failed`` (its app
raised, or the server found its reply invalid: the node is out for the rest of the run), ``late``
(its answer missed the window's deadline: its result is not used, and it rejoins the next window;
on real devices the server writes it when the deadline passes, in simulation the simulated device
reports it). Statuses the server writes: ``received`` (the model as received, window -1) and, in
simulation only, ``not_simulated`` (the engine never served that node's window: a fact about this
machine, not about the device). Rows with a status in :data:`NO_RESULT` carry no measurement and
are never averaged; :data:`DEVICE_FAULTS` are the ones that make a run exit 1.
"""

from __future__ import annotations

COLUMNS = ("node", "profile", "window", "sim_time_s", "steps", "samples_seen", "flops", "energy_j",
           "acc_P", "acc_F", "acc_PF", "status", "error", "acc_F_groups")
RECEIVED_WINDOW = -1
RECEIVED = "received"
FAILED = "failed"
LATE = "late"
NOT_SIMULATED = "not_simulated"
NODE_STATUSES = ("ok", "budget_exhausted", "data_exhausted", "does_not_fit", "unavailable", FAILED, LATE)
STATUSES = (RECEIVED, *NODE_STATUSES, NOT_SIMULATED)
DEVICE_FAULTS = (FAILED, LATE)
NO_RESULT = (FAILED, LATE, NOT_SIMULATED)
