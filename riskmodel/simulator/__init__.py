"""A simulated virtual-goods marketplace with honest and abusive refund requests.

It writes a dataset directory (see ``riskmodel.dataset``) plus a ground-truth file that
names the pattern behind every refund request, for training, tests and demos::

    >>> from riskmodel.simulator import SimulationConfig, simulate, write_simulation
    >>> sim = simulate(SimulationConfig(users=2_000, days=60, seed=7))
    >>> write_simulation(sim, "data/sim")                        # doctest: +SKIP
    >>> sim.ground_truth["pattern"].value_counts().index[0]      # doctest: +SKIP
    'honest_partial_use'

The patterns and every parameter are described in ``docs/simulator.md``.
"""

from riskmodel.simulator.config import SimulationConfig
from riskmodel.simulator.output import Simulation, write_simulation
from riskmodel.simulator.simulation import simulate

__all__ = ["Simulation", "SimulationConfig", "simulate", "write_simulation"]
