"""Which currency each account pays in, and what each currency is worth.

The simulator prices everything in the reporting currency (``SimulationConfig.currency``).
In a world with several currencies, ``foreign_currency_share`` of accounts pay in one of
``foreign_rates`` (each as likely); at output, an order's amount and the amounts asked
back on it are the reporting-currency amounts divided by the currency's rate, rounded to
cents (never below one cent), and the ``rates`` table lists every currency with its rate
(the reporting currency at 1). Nothing is drawn with a single currency.

    >>> import numpy as np
    >>> from riskmodel.simulator.config import SimulationConfig
    >>> cfg = SimulationConfig(foreign_currency_share=0.5, foreign_rates=(("USD", 7.1),))
    >>> rate_table(cfg)
    (('CNY', 1.0), ('USD', 7.1))
    >>> convert(np.array([71.0, 0.01]), np.array([1, 1]), cfg).tolist()
    [10.0, 0.01]
"""

from __future__ import annotations

import numpy as np

from riskmodel.simulator.common import Array
from riskmodel.simulator.config import SimulationConfig

__all__ = ["account_currencies", "convert", "rate_table"]


def rate_table(cfg: SimulationConfig) -> tuple[tuple[str, float], ...]:
    """``(currency, rate)`` of every currency, the reporting one first; a code below is a
    position in this table."""
    return ((cfg.currency, 1.0), *cfg.foreign_rates)


def account_currencies(n: int, cfg: SimulationConfig, rng: np.random.Generator) -> Array:
    """The currency code of each of ``n`` accounts (0: the reporting currency)."""
    if cfg.foreign_currency_share <= 0:
        return np.zeros(n, dtype=np.int64)
    foreign = rng.random(n) < cfg.foreign_currency_share
    which = 1 + rng.integers(0, len(cfg.foreign_rates), n)
    return np.where(foreign, which, 0).astype(np.int64)


def convert(amount: Array, code: Array, cfg: SimulationConfig) -> Array:
    """Reporting-currency amounts in the currency of each ``code``, rounded to cents."""
    rates = np.array([rate for _, rate in rate_table(cfg)])
    converted: Array = np.maximum(np.round(amount / rates[code], 2), 0.01)
    return converted
