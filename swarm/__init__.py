"""swarm: pre-training and task-relevant (LRP) pruning for models that must keep learning on the edge.

The library is layered; lower layers never import upper ones:

* ``swarm.server.data``     -- datasets, scenarios (T/P/F splits) and loaders
* ``swarm.nodes.models``   -- model zoo (ResNet-50/18 and a small CPU ResNet)
* ``swarm.nodes.training`` -- the training loop with early stopping used by every stage
* entry points       -- ``python -m swarm.splits``, ``python -m swarm.simulate``
"""

__version__ = "0.1.0"
