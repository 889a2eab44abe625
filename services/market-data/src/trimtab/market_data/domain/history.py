"""Real daily closing prices from the datasets shipped in the `skfolio` wheel, as replay steps.

`sp500`: 20 S&P 500 stocks, 1990-01-02 to 2022-12-28. `factors`: five factor ETFs, 2014 to 2022.
Prices are adjusted closes as skfolio ships them; they are real, not synthetic.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from functools import lru_cache

import pandas as pd

DATASETS = ("sp500", "factors")


@lru_cache(maxsize=2)
def load(dataset: str) -> pd.DataFrame:
    from skfolio import datasets

    if dataset == "sp500":
        df = datasets.load_sp500_dataset()
    elif dataset == "factors":
        df = datasets.load_factors_dataset()
    else:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")
    return df.sort_index()


def price_days(
    dataset: str, start: date, end: date, symbols: list[str] | None = None
) -> Iterator[tuple[date, dict[str, Decimal]]]:
    """Each trading day in [start, end] with the closing price of every symbol that has one."""
    df = load(dataset)
    if symbols:
        unknown = sorted(set(symbols) - set(df.columns))
        if unknown:
            raise ValueError(f"not in dataset {dataset}: {', '.join(unknown)}")
        df = df[symbols]
    window = df.loc[pd.Timestamp(start) : pd.Timestamp(end)]
    for ts, row in window.iterrows():
        prices = {
            sym: Decimal(repr(float(v))).quantize(Decimal("0.000001"))
            for sym, v in row.items()
            if pd.notna(v) and float(v) > 0
        }
        yield ts.date(), prices


def price_on(dataset: str, day: date, symbols: list[str] | None = None) -> tuple[date, dict[str, Decimal]]:
    """The last trading day at or before `day`, with its prices."""
    df = load(dataset)
    window = df.loc[: pd.Timestamp(day)]
    if window.empty:
        raise ValueError(f"{dataset} has no prices on or before {day}")
    last = window.index[-1].date()
    return next(iter(price_days(dataset, last, last, symbols)))
