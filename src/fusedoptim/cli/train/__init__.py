"""``fusedoptim train``: the course's 2-5-2-1 network on two moons.

* :mod:`.network` -- the data (two moons), the network (He initialization,
  forward and backward passes, cost) and the notes' training loop, updated
  through the course functions (``update_parameters_with_adam`` and friends);
* :mod:`.command` -- the options, the runs and the results table;
  :mod:`.plot` -- the chart.

The network's names are re-exported here.
"""

from .network import (
    DECAYS,
    LAYERS,
    OPTIMIZERS,
    backward_propagation,
    compute_cost,
    forward_propagation,
    initialize_parameters,
    make_moons,
    predict,
    train,
)

__all__ = ["DECAYS", "LAYERS", "OPTIMIZERS", "backward_propagation", "compute_cost",
           "forward_propagation", "initialize_parameters", "make_moons", "predict", "train"]
