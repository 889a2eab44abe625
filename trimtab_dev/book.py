"""The demo book: model portfolios over the real securities of the shipped price history, and a
seeded, SYNTHETIC set of client accounts holding them; and the optimizer's reference data for
those securities (`reference_data`).

Accounts are synthetic (fixed seed, labelled so wherever shown); prices and cost bases are real:
each lot's basis is the real closing price on its (synthetic) acquisition date.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

MODELS: dict[str, dict[str, Decimal]] = {
    "growth": {"AAPL": "0.16", "MSFT": "0.16", "AMD": "0.08", "UNH": "0.12", "LLY": "0.10",
               "HD": "0.10", "JPM": "0.10", "BBY": "0.06", "GE": "0.06", "BAC": "0.04"},
    "income": {"KO": "0.12", "PEP": "0.12", "PG": "0.12", "JNJ": "0.12", "XOM": "0.12",
               "CVX": "0.12", "MRK": "0.10", "PFE": "0.08", "WMT": "0.06", "RRC": "0.02"},
    "balanced": {s: "0.049" for s in ["AAPL", "AMD", "BAC", "BBY", "CVX", "GE", "HD", "JNJ", "JPM", "KO",
                                      "LLY", "MRK", "MSFT", "PEP", "PFE", "PG", "RRC", "UNH", "WMT", "XOM"]},
}
MODELS = {k: {s: Decimal(w) for s, w in v.items()} for k, v in MODELS.items()}  # type: ignore[misc]

ACCOUNT_TYPES = [("taxable", 0.6), ("tax_deferred", 0.25), ("tax_exempt", 0.15)]
AUTOMATION = [("automatic", 0.5), ("advisor_approval", 0.4), ("propose_only", 0.1)]


@dataclass(frozen=True)
class Lot:
    lot_id: str
    symbol: str
    shares: Decimal
    cost_basis_usd_per_share: Decimal
    acquired_on: date


@dataclass(frozen=True)
class Account:
    account_id: str
    household_id: str
    account_type: str
    model_id: str
    cash_usd: Decimal
    cash_reserve_usd: Decimal
    band_abs: Decimal
    automation: str
    lots: list[Lot]


def _pick(rng: random.Random, choices: list[tuple[str, float]]) -> str:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


def build_book(n_accounts: int, book_date: date, prices: dict[str, Decimal],
               price_on, seed: int = 7) -> list[Account]:  # type: ignore[no-untyped-def]
    """Accounts at their model's weights (with small noise) as of `book_date`'s real prices.

    `price_on(day) -> dict[symbol, Decimal]` gives real closes for lot cost bases.
    """
    rng = random.Random(seed)
    accounts: list[Account] = []
    for i in range(n_accounts):
        model_id = rng.choice(sorted(MODELS))
        value = Decimal(int(rng.lognormvariate(12.5, 0.8))).quantize(Decimal(1))  # ~ $270k median
        value = max(value, Decimal(25_000))
        lots: list[Lot] = []
        invested = Decimal(0)
        for sym, w in sorted(MODELS[model_id].items()):
            noisy_w = w * Decimal(str(round(rng.uniform(0.97, 1.03), 4)))
            shares = (value * noisy_w / prices[sym]).quantize(Decimal(1), rounding=ROUND_DOWN)
            if shares <= 0:
                continue
            n_lots = rng.randint(1, 3)
            left = shares
            for k in range(n_lots):
                part = left if k == n_lots - 1 else (shares / n_lots).quantize(Decimal(1), rounding=ROUND_DOWN)
                if part <= 0:
                    continue
                left -= part
                acquired = book_date - timedelta(days=rng.randint(40, 5 * 365))
                basis = price_on(acquired).get(sym, prices[sym])
                lots.append(Lot(f"L{i:05d}-{sym}-{k}", sym, part, basis, acquired))
            invested += shares * prices[sym]
        cash = (value - invested).quantize(Decimal("0.01"))
        accounts.append(Account(
            account_id=f"ACC-{i:05d}", household_id=f"HH-{i // 2:05d}",
            account_type=_pick(rng, ACCOUNT_TYPES), model_id=model_id,
            cash_usd=max(cash, Decimal("0.00")), cash_reserve_usd=Decimal("500.00"),
            band_abs=Decimal(rng.choice(["0.02", "0.03", "0.04"])), automation=_pick(rng, AUTOMATION),
            lots=lots,
        ))
    return accounts


# ------------------------------------------------------------------ the optimizer's reference data

#: Daily returns behind the volatilities and the factor model: the last 60 trading days.
RETURNS_WINDOW_DAYS = 60
#: ASSUMED average daily traded value per security, US dollars: the skfolio price history has no
#: volumes, so every security gets this one figure (the order of a large-cap S&P 500 stock's in
#: 2019). Labelled as an assumption wherever the demo shows it; the impact term
#: b sigma sqrt(V0 / ADV) |t|^(3/2) is small for these accounts whatever figure of that order.
ASSUMED_ADV_USD = Decimal("500000000")
#: The statistical factor model: at most this many factors, as many as explain this share of the
#: returns' variance (the risk service's defaults).
MAX_FACTORS = 5
EXPLAINED = 0.8


@dataclass(frozen=True)
class ReferenceData:
    """What `PUT /v1/reference/securities` and `PUT /v1/reference/risk-model` take."""

    securities: list[dict[str, str]]
    risk_model: dict[str, Any]
    window: tuple[date, date]
    explained_fraction: float


def reference_data(closes: Any, symbols: list[str], as_of: date,
                   window_days: int = RETURNS_WINDOW_DAYS) -> ReferenceData:
    """From real closes (a DataFrame by day, one column per symbol; the skfolio data the demo
    replays): per symbol the std of its last `window_days` daily returns up to `as_of`
    (sigma_daily, REAL) and the ASSUMED ADV, and a statistical factor model of the same returns'
    sample covariance (`trimtab.risk.domain.factors.statistical_factors`, the risk service's)."""
    import numpy as np
    import pandas as pd

    from trimtab.risk.domain.factors import statistical_factors
    from trimtab.shared.money import dec

    prices = closes.loc[: pd.Timestamp(as_of), symbols].dropna().tail(window_days + 1)
    returns = prices.pct_change().dropna()
    if len(returns) < window_days:
        raise ValueError(f"only {len(returns)} daily returns up to {as_of}, need {window_days}")
    r = returns.to_numpy(dtype=float)
    sigma = r.std(axis=0, ddof=1)
    fm = statistical_factors(symbols, np.cov(r, rowvar=False, ddof=1), max_factors=MAX_FACTORS,
                             explained=EXPLAINED)
    k = fm.exposures.shape[0]
    securities = [{"symbol": s, "sigma_daily": format(dec(v, 8), "f"), "adv_usd": format(ASSUMED_ADV_USD, "f")}
                  for s, v in zip(symbols, sigma, strict=True)]
    model = {"name": f"demo-statistical-{window_days}d-{k}f", "symbols": list(symbols),
             "loadings": fm.exposures.T.tolist(), "specific_var": fm.specific_var_daily.tolist()}
    return ReferenceData(securities, model, (returns.index[0].date(), returns.index[-1].date()),
                         fm.explained_fraction)
