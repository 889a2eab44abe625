"""Snapshot factories for the rebalancing tests (no I/O).

`make_snapshot` builds an `AccountSnapshot` from plain numbers; `drifted_account` builds a
deterministic drifted account of any size. Both are exposed as fixtures of the same name, so
other test packages can reuse them by importing this module's functions or the fixtures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest

from trimtab.shared.events import (
    AccountSnapshot,
    DriftPolicy,
    LotSnapshot,
    PositionSnapshot,
    SecuritySnapshot,
    TaxRates,
)

AS_OF = datetime(2024, 6, 28, 20, 0, tzinfo=UTC)

#: One lot: (shares, basis per share, acquired) where acquired is a date or "days before as_of".
LotSpec = tuple[float, float, date | int]


def _dec(x: float | str | Decimal, places: int = 6) -> Decimal:
    if isinstance(x, Decimal):
        return x
    return Decimal(str(x)) if isinstance(x, str) else Decimal(repr(float(x))).quantize(Decimal(1).scaleb(-places))


def bench_module(name: str):  # type: ignore[no-untyped-def]
    """`bench/<name>.py` loaded as a module (the benchmarks' account generators and evaluators)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_snapshot(
    *,
    prices: Mapping[str, float],
    holdings: Mapping[str, float | Sequence[LotSpec]] | None = None,
    targets: Mapping[str, float] | None = None,
    cash: float = 0.0,
    reserve: float = 0.0,
    restricted: Sequence[str] = (),
    account_type: str = "taxable",
    as_of: datetime = AS_OF,
    band: float = 0.05,
    max_turnover: float | None = None,
    half_spread_bps: float | Mapping[str, float] = 2.0,
    commission: float = 0.0,
    tax_rates: tuple[float, float] = (0.37, 0.20),
    account_id: str = "acct-1",
) -> AccountSnapshot:
    """An account snapshot. A holding given as a number is one long-term lot with basis = price."""
    holdings = holdings or {}
    positions = []
    for sym, spec in sorted(holdings.items()):
        lots_spec: Sequence[LotSpec] = (
            [(float(spec), prices[sym], 800)] if isinstance(spec, int | float) else spec
        )
        lots = []
        for k, (shares, basis, acquired) in enumerate(lots_spec):
            day = acquired if isinstance(acquired, date) else as_of.date() - timedelta(days=int(acquired))
            lots.append(LotSnapshot(lot_id=f"{sym}-{k + 1}", shares=_dec(shares),
                                    cost_basis_usd_per_share=_dec(basis, 4), acquired_on=day))
        positions.append(PositionSnapshot(symbol=sym, shares=sum((lot.shares for lot in lots), Decimal(0)),
                                          lots=lots))
    spreads = half_spread_bps if isinstance(half_spread_bps, Mapping) else {}
    securities = [
        SecuritySnapshot(symbol=s, price_usd=_dec(p, 4),
                         half_spread_bps=_dec(spreads.get(s, 2.0) if spreads else half_spread_bps, 4),
                         commission_usd_per_share=_dec(commission, 4))
        for s, p in sorted(prices.items())
    ]
    return AccountSnapshot(
        account_id=account_id, account_type=account_type, cash_usd=_dec(cash, 2),
        cash_reserve_usd=_dec(reserve, 2), positions=positions,
        targets={s: _dec(w, 6) for s, w in (targets or {}).items()},
        securities=securities, restricted=list(restricted),
        policy=DriftPolicy(band_abs=_dec(band, 6),
                           max_turnover=None if max_turnover is None else _dec(max_turnover, 6)),
        tax_rates=TaxRates(short_term=_dec(tax_rates[0], 4), long_term=_dec(tax_rates[1], 4)),
        as_of=as_of,
    )


def drifted_account(
    n: int = 6, *, seed: int = 7, value_usd: float = 250_000.0, cash_weight: float = 0.03,
    gains: bool = True, lots_per_security: int = 2, **kwargs: object,
) -> AccountSnapshot:
    """A deterministic drifted account of `n` equally targeted securities (98 % invested).

    With `gains`, lots carry gains and losses (some short-term); otherwise basis = price.
    """
    rng = np.random.default_rng(seed)
    symbols = [f"S{i:02d}" for i in range(n)]
    prices = {s: float(np.round(rng.uniform(20, 400), 2)) for s in symbols}
    weights = rng.dirichlet(np.full(n, 3.0)) * (1 - cash_weight)
    holdings: dict[str, list[LotSpec]] = {}
    for s, w in zip(symbols, weights, strict=True):
        shares = np.floor(w * value_usd / prices[s])
        split = rng.dirichlet(np.ones(lots_per_security)) if lots_per_security > 1 else np.ones(1)
        lots = []
        for k, frac in enumerate(split):
            q = float(np.floor(shares * frac)) if k < lots_per_security - 1 else float(shares - sum(lot[0] for lot in lots))
            if q <= 0:
                continue
            basis = prices[s] * (float(rng.uniform(0.6, 1.4)) if gains else 1.0)
            lots.append((q, round(basis, 2), int(rng.integers(30, 1500))))
        holdings[s] = lots
    invested = sum(sum(lot[0] for lot in holdings[s]) * prices[s] for s in symbols)
    cash = value_usd - invested
    targets = {s: round(0.98 / n, 6) for s in symbols}
    return make_snapshot(prices=prices, holdings=holdings, targets=targets, cash=round(cash, 2),
                         **kwargs)  # type: ignore[arg-type]


@pytest.fixture(name="make_snapshot")
def _make_snapshot_fixture():  # type: ignore[no-untyped-def]
    return make_snapshot


@pytest.fixture(name="drifted_account")
def _drifted_account_fixture():  # type: ignore[no-untyped-def]
    return drifted_account


def exact_best(inp, weights) -> float:  # type: ignore[no-untyped-def]
    """The best objective over every harvest/keep assignment of the wash groups facing the
    choice (2^G solves): what the wash-sale heuristic (`solve._resolve_wash_sales`) is checked
    against, here and in bench/wash_choice.py."""
    import itertools

    from trimtab.rebalance import DEFAULT_TUNING
    from trimtab.rebalance.problem import ProblemInfeasible
    from trimtab.rebalance.solve import Bans, _choice_groups, _Run, shape_of

    run = _Run(inp, weights, DEFAULT_TUNING, shape_of(inp))
    choice = _choice_groups(run, Bans())
    best = np.inf
    for mask in itertools.product([False, True], repeat=len(choice.names)):
        harvest = frozenset(g for g, m in zip(choice.names, mask, strict=True) if m)
        keep = frozenset(choice.names) - harvest
        bans = Bans(no_buy=frozenset(int(i) for g in harvest for i in choice.members[g]),
                    no_sell_lots=frozenset(int(lot) for g in keep for lot in choice.loss_lots[g]))
        try:
            best = min(best, run.objective(run.solve(bans)))
        except ProblemInfeasible:
            continue
    return float(best)
