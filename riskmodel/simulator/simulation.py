"""The whole simulation, stage by stage.

Each stage draws from its own random stream (all derived from ``config.seed``), so the
same config always gives the same data, and a change inside one stage does not reshuffle
the draws of the others. Stages added for randomised worlds come last in ``_STAGES`` (a
stream's seed depends only on its position) and draw nothing in the default
configuration, which therefore gives the same bytes as before they existed.

    >>> from riskmodel.simulator import SimulationConfig, simulate
    >>> sim = simulate(SimulationConfig(users=500, days=14, seed=1))
    >>> bool((sim.refund_requests["amount"] > 0).all())
    True
"""

from __future__ import annotations

import numpy as np

from riskmodel.simulator.abuse import (
    abusive_requests,
    duplicate_refunds,
    group_orders,
    world_abusive_requests,
)
from riskmodel.simulator.catalog import build_catalog
from riskmodel.simulator.common import DAY, MISSING, streams
from riskmodel.simulator.config import SimulationConfig
from riskmodel.simulator.currencies import account_currencies, convert, rate_table
from riskmodel.simulator.fulfilment import fulfil
from riskmodel.simulator.labels import draw_labels
from riskmodel.simulator.orders import Orders, duplicate_charges, regular_orders
from riskmodel.simulator.output import Simulation, assemble
from riskmodel.simulator.population import build_population
from riskmodel.simulator.refunds import honest_requests, price_requests, request_context
from riskmodel.simulator.requests import Picker, Requests
from riskmodel.simulator.turned import draw_turns, turned_orders
from riskmodel.simulator.usage import membership_usage

__all__ = ["simulate"]

_STAGES = (
    "population",
    "catalog",
    "orders",
    "groups",
    "duplicate_charges",
    "fulfilment",
    "abuse",
    "honest",
    "usage",
    "pricing",
    "duplicate_refunds",
    "context",
    "labels",
    "ids",
    # Worlds only: each draws nothing in the default configuration.
    "turns",
    "world_abuse",
    "currencies",
)


def simulate(config: SimulationConfig) -> Simulation:
    """Simulate the marketplace described by ``config``.

    Example::

        >>> from riskmodel.simulator import SimulationConfig, simulate
        >>> sim = simulate(SimulationConfig(users=1_000, days=30, seed=42))
        >>> sorted(sim.ground_truth["is_abuse"].unique().tolist())
        [False, True]
    """
    rng = streams(config.seed, _STAGES)
    start = int(config.start.timestamp())
    end = start + config.days * DAY

    pop = build_population(config, rng["population"])
    catalog = build_catalog(config, rng["catalog"], start, len(pop.schemes))
    regular = regular_orders(pop, catalog, config, rng["orders"])
    grouped = group_orders(pop, catalog, config, rng["groups"])
    copies = duplicate_charges(regular, config, rng["duplicate_charges"])
    turns = draw_turns(pop, catalog, config, rng["turns"])
    turned = turned_orders(turns, pop, catalog, rng["turns"])
    orders = Orders.concat([regular, grouped, copies, turned])
    facts = fulfil(orders, catalog.batches, config, rng["fulfilment"])

    # Abuse is picked first so that an abuser's order is never also an honest refund.
    picker = Picker(len(orders))
    abusive_requests(picker, orders, pop, config, rng["abuse"])
    world_abusive_requests(picker, orders, pop, config, rng["world_abuse"])
    honest_requests(picker, orders, facts, pop, config, rng["honest"])
    first = picker.requests()

    first_at = np.full(len(orders), MISSING, dtype=np.int64)
    first_at[first.order] = first.requested
    first_pattern = np.full(len(orders), MISSING, dtype=np.int64)
    first_pattern[first.order] = first.pattern
    usage = membership_usage(orders, first_at, first_pattern, config, rng["usage"])

    first = price_requests(first, orders, usage.days_per_order, config, rng["pricing"])
    second = duplicate_refunds(first, orders, pop, config, rng["duplicate_refunds"])
    requests = Requests.concat([first, second])
    # A request after the window has not happened yet at export time.
    requests = requests.take(np.flatnonzero(requests.requested < end))

    context = request_context(requests, orders, pop, rng["context"])
    method = orders.method[requests.order]
    labels = draw_labels(requests.requested, requests.pattern, config, rng["labels"], method)

    currency = account_currencies(len(pop.registered), config, rng["currencies"])
    order_currency = currency[orders.user]
    if config.foreign_currency_share > 0:
        requests.amount = convert(requests.amount, order_currency[requests.order], config)
        orders.amount = convert(orders.amount, order_currency, config)
    return assemble(
        pop,
        n_sellers=catalog.n_sellers,
        n_products=len(catalog.seller),
        currencies=rate_table(config),
        order_currency=order_currency,
        orders=orders,
        usage=usage,
        requests=requests,
        context=context,
        labels=labels,
        rng=rng["ids"],
    )
