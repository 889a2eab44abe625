"""Stress scenarios and the per-security shocks they imply. Pure.

Kinds:
- `historical` (start, end): every security's actual move between the closes on or before
  `start` and `end`, replayed from the reference history, with the daily path in between (so the
  worst point inside the window is known, not only the end). A security the history lacks moves
  as `beta * market` with beta 1 (the proxy is named in the result).
- `market` ({"market": x}): the market moves x; each security moves beta_i * x, its three-year
  beta against the index (1 for unknown securities).
- `sector` ({sector: x, ...}): the sector's securities move x. With `propagate`, every other
  security moves by its conditional expectation given those moves under the risk model,
  `E[r_o | r_S = s] = S_oS S_SS^+ s` (a sector crash drags correlated names with it).
- `factor` ({factor: x, ...}): long-short factor returns (`market`, `MTUM` = momentum minus
  market, ...) pushed through each security's factor loadings, `r = B f`.
- `vector` ({symbol: x, ...}): user-given moves, propagated to the rest like `sector` if asked.
All shocks are simple returns (-0.2 = down 20 %).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

import numpy as np

from .concentration import UNCLASSIFIED
from .history import MARKET, ReferenceHistory

Kind = Literal["historical", "market", "sector", "factor", "vector"]
KINDS: tuple[str, ...] = ("historical", "market", "sector", "factor", "vector")
#: a shock is a simple return from -100 % to +1,000 %: beyond that it is not a scenario (and a
#: +1e300 move overflows what the results can report)
MIN_SHOCK, MAX_SHOCK = -1.0, 10.0


@dataclass(frozen=True)
class Scenario:
    scenario_id: str
    name: str
    kind: Kind
    start: date | None = None
    end: date | None = None
    shocks: Mapping[str, float] = field(default_factory=dict)
    propagate: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown scenario kind {self.kind!r}")
        if self.kind == "historical":
            if self.start is None or self.end is None or self.end <= self.start:
                raise ValueError("a historical scenario needs start < end")
        elif not self.shocks:
            raise ValueError(f"a {self.kind} scenario needs shocks")
        if self.kind == "market" and set(self.shocks) != {MARKET}:
            raise ValueError('a market scenario has exactly one shock, keyed "market"')
        bad = sorted(k for k, v in self.shocks.items()
                     if not (np.isfinite(v) and MIN_SHOCK <= v <= MAX_SHOCK))
        if bad:
            raise ValueError(f"shocks are simple returns from {MIN_SHOCK:g} to {MAX_SHOCK:g}: "
                             f"{', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}")


def _hist(sid: str, name: str, start: date, end: date, text: str) -> Scenario:
    return Scenario(sid, name, "historical", start, end, description=text)


BUILTIN: tuple[Scenario, ...] = (
    _hist("dotcom-2000", "Dot-com bust", date(2000, 3, 24), date(2002, 10, 9),
          "S&P 500 peak of 24 Mar 2000 to its trough of 9 Oct 2002"),
    _hist("gfc-2008", "2008 financial crisis", date(2008, 9, 1), date(2008, 11, 20),
          "Lehman weekend to the November 2008 low"),
    _hist("aug-2011", "August 2011", date(2011, 7, 22), date(2011, 8, 10),
          "US downgrade and euro-area debt crisis"),
    _hist("covid-2020", "COVID crash", date(2020, 2, 19), date(2020, 3, 23),
          "S&P 500 peak of 19 Feb 2020 to the low of 23 Mar 2020"),
    _hist("drawdown-2022", "2022 drawdown", date(2022, 1, 3), date(2022, 10, 12),
          "Inflation and rate shock, Jan to Oct 2022"),
    Scenario("market-down-10", "Market down 10 %", "market", shocks={MARKET: -0.10},
             description="Each security moves its beta times -10 %"),
    Scenario("market-down-20", "Market down 20 %", "market", shocks={MARKET: -0.20},
             description="Each security moves its beta times -20 %"),
    Scenario("tech-down-30", "Technology down 30 %", "sector",
             shocks={"Information Technology": -0.30},
             description="Technology names fall 30 %; the rest by their conditional expectation"),
    Scenario("financials-down-25", "Financials down 25 %", "sector", shocks={"Financials": -0.25},
             description="Financials fall 25 %; the rest by their conditional expectation"),
    Scenario("momentum-crash", "Momentum crash", "factor", shocks={MARKET: -0.05, "MTUM": -0.10},
             description="Market -5 % and momentum (MTUM minus market) -10 %"),
)
BUILTIN_IDS = frozenset(s.scenario_id for s in BUILTIN)


def problem_under(sc: Scenario, history: ReferenceHistory) -> str | None:
    """Why `build_shocks` cannot shock `sc` with `history` (None: it can): a window the
    history does not cover, a factor it does not know."""
    if sc.kind == "historical":
        assert sc.start is not None and sc.end is not None
        try:
            history.window(sc.start, sc.end)
        except ValueError as e:
            return str(e)
    elif sc.kind == "factor":
        names = (MARKET, *history.factor_names)
        unknown = sorted(set(sc.shocks) - set(names))
        if unknown:
            return f"unknown factor(s): {', '.join(unknown)}; known: {', '.join(names)}"
    return None


@dataclass(frozen=True)
class ShockSet:
    """Shocks of `symbols` under `scenarios`: the (symbols x scenarios) matrix of end moves, and
    for historical scenarios the (days x symbols) path of moves since the start."""

    scenarios: tuple[Scenario, ...]
    symbols: tuple[str, ...]
    shocks: np.ndarray
    paths: tuple[np.ndarray | None, ...]
    path_days: tuple[tuple[date, date] | None, ...]
    proxied: tuple[tuple[str, ...], ...]


def conditional_moves(cov: np.ndarray, given: np.ndarray, values: np.ndarray) -> np.ndarray:
    """E[r | r_given = values] for a zero-mean vector with covariance `cov`."""
    idx = np.flatnonzero(given)
    out = np.zeros(cov.shape[0])
    if len(idx):
        out = cov[:, idx] @ np.linalg.pinv(cov[np.ix_(idx, idx)]) @ values[idx]
    out[idx] = values[idx]
    return out


def _historical(sc: Scenario, symbols: Sequence[str], h: ReferenceHistory
                ) -> tuple[np.ndarray, np.ndarray, tuple[date, date], tuple[str, ...]]:
    assert sc.start is not None and sc.end is not None
    i0, i1 = h.window(sc.start, sc.end)
    mkt = h.market[i0:i1 + 1] / h.market[i0] - 1.0
    path = np.repeat(mkt[:, None], len(symbols), axis=1)  # the proxy: beta 1 to the market
    proxied = []
    for k, s in enumerate(symbols):
        c = h.column(s)
        p = None if c is None else h.prices[i0:i1 + 1, c]
        if p is None or not np.isfinite(p).all():
            proxied.append(s)
            continue
        path[:, k] = p / p[0] - 1.0
    days = (h.dates[i0].astype(object), h.dates[i1].astype(object))
    return path[-1], path, days, tuple(proxied)


def build_shocks(
    scenarios: Sequence[Scenario], symbols: Sequence[str], history: ReferenceHistory,
    cov_daily: np.ndarray | None = None, sectors: Mapping[str, str] | None = None,
) -> ShockSet:
    """The shock matrix of `symbols` under every scenario (see the module docstring)."""
    symbols = tuple(symbols)
    n = len(symbols)
    sectors = {**history.sectors, **(sectors or {})}
    shocks = np.zeros((n, len(scenarios)))
    paths: list[np.ndarray | None] = []
    spans: list[tuple[date, date] | None] = []
    proxied: list[tuple[str, ...]] = []
    betas, beta_known, loadings = None, None, None
    for j, sc in enumerate(scenarios):
        path, span, prox = None, None, ()
        if sc.kind == "historical":
            shocks[:, j], path, span, prox = _historical(sc, symbols, history)
        elif sc.kind == "market":
            if betas is None:
                betas, beta_known = history.betas(symbols)
            shocks[:, j] = betas * sc.shocks[MARKET]
            prox = tuple(s for s, k in zip(symbols, beta_known, strict=True) if not k)
        elif sc.kind == "factor":
            if loadings is None:
                loadings = history.factor_loadings(symbols)
            names, b, known = loadings
            unknown = sorted(set(sc.shocks) - set(names))
            if unknown:
                raise ValueError(f"unknown factor(s): {', '.join(unknown)}; known: {', '.join(names)}")
            f = np.array([sc.shocks.get(nm, 0.0) for nm in names])
            shocks[:, j] = b @ f
            prox = tuple(s for s, k in zip(symbols, known, strict=True) if not k)
        else:
            if sc.kind == "sector":
                member = [sectors.get(s, UNCLASSIFIED) for s in symbols]
                values = np.array([sc.shocks.get(m, np.nan) for m in member])
            else:
                values = np.array([sc.shocks.get(s, np.nan) for s in symbols])
            given = np.isfinite(values)
            values = np.where(given, values, 0.0)
            if sc.propagate and cov_daily is not None:
                values = conditional_moves(cov_daily, given, values)
            shocks[:, j] = values
        paths.append(path)
        spans.append(span)
        proxied.append(prox)
    # a move below -100 % (a beta above 1 times a big fall) is a total loss, not a liability
    return ShockSet(tuple(scenarios), symbols, np.maximum(shocks, -1.0), tuple(paths),
                    tuple(spans), tuple(proxied))
