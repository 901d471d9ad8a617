"""A simulated virtual-goods marketplace with honest and abusive refund requests.

It writes a dataset directory (see ``riskmodel.dataset``) plus a ground-truth file that
names the pattern behind every refund request, for training, tests and demos::

    >>> from riskmodel.simulator import SimulationConfig, simulate, write_simulation
    >>> sim = simulate(SimulationConfig(users=2_000, days=60, seed=7))
    >>> write_simulation(sim, "data/sim")                        # doctest: +SKIP
    >>> sim.ground_truth["pattern"].value_counts().index[0]      # doctest: +SKIP
    'honest_partial_use'

Randomised worlds draw a whole marketplace from a number; choices are made on
``DEVELOPMENT_WORLDS`` and figures reported on ``EVALUATION_WORLDS``::

    >>> from riskmodel.simulator import EVALUATION_WORLDS, draw_world
    >>> world = draw_world(EVALUATION_WORLDS[0], users=2_000, days=60)
    >>> sim = simulate(world.config)                             # doctest: +SKIP
    >>> write_world(world, "data/world")                         # doctest: +SKIP

The patterns, every parameter and the worlds are described in ``docs/simulator.md``.
"""

from riskmodel.simulator.config import SimulationConfig
from riskmodel.simulator.output import Simulation, write_simulation
from riskmodel.simulator.simulation import simulate
from riskmodel.simulator.worlds import (
    DEVELOPMENT_WORLDS,
    EVALUATION_WORLDS,
    World,
    draw_world,
    write_world,
)

__all__ = [
    "DEVELOPMENT_WORLDS",
    "EVALUATION_WORLDS",
    "Simulation",
    "SimulationConfig",
    "World",
    "draw_world",
    "simulate",
    "write_simulation",
    "write_world",
]
