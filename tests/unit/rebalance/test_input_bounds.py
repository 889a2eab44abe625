"""Numbers no account has are refused before a solve (each made the solver fail or the date
arithmetic overflow, found by fuzzing the what-if route); the bounds leave real accounts alone."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from trimtab.rebalance import RebalanceContext, from_snapshot
from trimtab.rebalance.context import SecurityInfo
from trimtab.rebalance.errors import InvalidSnapshot

from .conftest import drifted_account


def _with(snap, **changes):  # type: ignore[no-untyped-def]
    return snap.model_copy(update=changes)


def test_a_real_account_passes() -> None:
    assert from_snapshot(drifted_account(6)).value_usd > 0


def test_a_share_priced_for_a_price_counterfactual_passes() -> None:
    """The explainer's price counterfactual searches up to 20x the price: a $700,000 share is
    re-proposed at $14M, which must not be refused (a refusal reads as "the order still happens")."""
    snap = drifted_account(6, value_usd=2e8)
    secs = [snap.securities[0].model_copy(update={"price_usd": Decimal("14000000")}), *snap.securities[1:]]
    assert from_snapshot(_with(snap, securities=secs)).price_usd.max() == 14_000_000


@pytest.mark.parametrize("as_of", ["0001-01-01T00:00:00+14:00", "9999-12-31T00:00:00+00:00"])
def test_a_snapshot_dated_outside_any_market_is_refused(as_of: str) -> None:
    from datetime import datetime

    with pytest.raises(InvalidSnapshot, match="outside the years"):
        from_snapshot(_with(drifted_account(6), as_of=datetime.fromisoformat(as_of)))


@pytest.mark.parametrize(("edit", "says"), [
    (lambda s: _with(s, cash_usd=Decimal("1e400")), "cash"),
    (lambda s: _with(s, cash_reserve_usd=Decimal("1e14")), "the cash reserve"),
    (lambda s: _with(s, securities=[s.securities[0].model_copy(update={"price_usd": Decimal("1e-300")}),
                                    *s.securities[1:]]), "a price"),
    (lambda s: _with(s, securities=[s.securities[0].model_copy(update={"half_spread_bps": Decimal("1e300")}),
                                    *s.securities[1:]]), "a half spread"),
    (lambda s: _with(s, securities=[s.securities[0].model_copy(update={"commission_usd_per_share": Decimal("5000")}),
                                    *s.securities[1:]]), "a commission"),
])
def test_a_snapshot_beyond_any_account_is_refused(edit, says: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidSnapshot, match=says):
        from_snapshot(edit(drifted_account(6)))


@pytest.mark.parametrize("kwargs", [
    {"withdrawal_usd": 1e14}, {"tax_budget_usd": math.inf}, {"gain_cap_usd": 1e300},
    {"harvest_min_loss_pct": 2.0}, {"impact_b": math.nan},
    {"securities": {"AAA": SecurityInfo(sigma_daily=1e300)}},
    {"securities": {"AAA": SecurityInfo(adv_usd=math.inf)}},
])
def test_a_context_beyond_any_market_is_refused(kwargs: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match="must be between"):
        RebalanceContext(**kwargs)
