"""The whole simulation, stage by stage.

Each stage draws from its own random stream (all derived from ``config.seed``), so the
same config always gives the same data, and a change inside one stage does not reshuffle
the draws of the others. Stages added later come last in ``_STAGES`` (a stream's seed
depends only on its position): those for randomised worlds draw nothing in the default
configuration; those of the issuer's crediting, the outcomes and the honest look-alikes
add requests and columns without moving the draws of the stages before them.

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
from riskmodel.simulator.common import DAY, MISSING, Array, streams
from riskmodel.simulator.config import SimulationConfig
from riskmodel.simulator.currencies import account_currencies, convert, rate_table
from riskmodel.simulator.fulfilment import activation_failures, fulfil, record_credits
from riskmodel.simulator.labels import Labels, draw_labels
from riskmodel.simulator.lookalikes import followups, retries
from riskmodel.simulator.orders import Orders, duplicate_charges, regular_orders
from riskmodel.simulator.outcomes import (
    draw_outcomes,
    export_outcomes,
    paid_before_duplicates,
    settle_duplicates,
)
from riskmodel.simulator.output import Simulation, assemble
from riskmodel.simulator.population import Population, build_population
from riskmodel.simulator.refunds import (
    honest_requests,
    lookalike_requests,
    price_requests,
    request_context,
)
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
    # The issuer's crediting, outcomes and honest look-alikes.
    "credits",
    "lookalikes",
    "outcomes",
    "lookalike_context",
    "lookalike_labels",
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
    failed = activation_failures(orders, config, rng["credits"])

    # Abuse is picked first so that an abuser's order is never also an honest refund.
    picker = Picker(len(orders))
    abusive_requests(picker, orders, pop, config, rng["abuse"])
    world_abusive_requests(picker, orders, pop, config, rng["world_abuse"])
    honest_requests(picker, orders, facts, pop, config, rng["honest"])
    first = picker.requests()
    # Honest look-alikes come after, from a stream of their own.
    failed = lookalike_requests(picker, orders, facts, failed, config, rng["lookalikes"])
    picked = picker.requests()
    extra = picked.take(np.arange(len(first), len(picked)))
    record_credits(orders, failed, config, rng["credits"])

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
    requests, context, labels = _with_lookalikes(
        requests,
        extra,
        context,
        labels,
        orders,
        pop,
        usage.days_per_order,
        config,
        rng,
        order_currency,
    )
    if config.foreign_currency_share > 0:
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
        outcome_columns=config.outcome_report_rate > 0,
        credit_columns=config.credit_report_rate > 0,
    )


def _with_lookalikes(
    requests: Requests,
    extra: Requests,
    context: tuple[Array, Array, Array],
    labels: Labels,
    orders: Orders,
    pop: Population,
    used_days: Array,
    config: SimulationConfig,
    rng: dict[str, np.random.Generator],
    order_currency: Array,
) -> tuple[Requests, tuple[Array, Array, Array], Labels]:
    """Add the honest look-alikes, and every request's outcome, to the ``requests`` made
    before them, whose ``context`` and ``labels`` keep their own draws. Amounts come out
    in the currency of each order (``orders.amount`` is still in the reporting one)."""
    end = int(config.start.timestamp()) + config.days * DAY
    extra = price_requests(extra, orders, used_days, config, rng["lookalikes"])
    extra = extra.take(np.flatnonzero(extra.requested < end))
    base = Requests.concat([requests, extra])
    in_full = settle_duplicates(base, orders)
    draw_outcomes(base, orders, config, rng["outcomes"], paid_in_full=in_full)
    paid_before_duplicates(base)
    asked, asked_parent = followups(base, orders, config, rng["lookalikes"])
    draw_outcomes(asked, orders, config, rng["outcomes"], prorate=False)
    every = Requests.concat([base, asked])
    if config.foreign_currency_share > 0:
        _convert(every, len(base) + np.arange(len(asked)), asked_parent, order_currency, config)
    retry, retry_parent = retries(every, config, rng["lookalikes"])
    export_outcomes(every, config, rng["outcomes"])
    export_outcomes(retry, config, rng["outcomes"])

    fresh = Requests.concat([extra, asked])
    fresh_context = request_context(fresh, orders, pop, rng["lookalike_context"])
    # A retry is the same request sent again: same device, IP and channel.
    columns = []
    for made, fresh_made in zip(context, fresh_context, strict=True):
        both = np.concatenate([made, fresh_made])
        columns.append(np.concatenate([both, both[retry_parent]]))
    device, ip, channel = columns

    new = Requests.concat([fresh, retry])
    method = orders.method[new.order]
    drawn = draw_labels(new.requested, new.pattern, config, rng["lookalike_labels"], method)
    labels = Labels(
        request=np.concatenate([labels.request, len(requests) + drawn.request]),
        labeled_at=np.concatenate([labels.labeled_at, drawn.labeled_at]),
        is_abuse=np.concatenate([labels.is_abuse, drawn.is_abuse]),
        source=np.concatenate([labels.source, drawn.source]),
    )
    return Requests.concat([every, retry]), (device, ip, channel), labels


def _convert(
    requests: Requests,
    followup: Array,
    parent: Array,
    order_currency: Array,
    config: SimulationConfig,
) -> None:
    """Amounts asked and paid in the currency of each order, rounded to cents; a
    follow-up still asks at most what its first request left unpaid."""
    code = order_currency[requests.order]
    requests.amount = convert(requests.amount, code, config)
    paid = requests.paid
    requests.paid = np.where(paid > 0, convert(np.where(paid > 0, paid, 1.0), code, config), paid)
    requests.paid = np.minimum(requests.paid, requests.amount)
    left = requests.amount[parent] - requests.paid[parent]
    requests.amount[followup] = np.maximum(np.minimum(requests.amount[followup], left), 0.01)
    requests.paid[followup] = np.minimum(requests.paid[followup], requests.amount[followup])
