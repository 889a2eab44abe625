"""from_snapshot: the boundary where a snapshot becomes arrays (and bad snapshots are refused)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import numpy as np
import pytest

from trimtab.rebalance import InvalidSnapshot, from_snapshot
from trimtab.rebalance.inputs import _long_term_before, is_long_term
from trimtab.shared.events import LotSnapshot, PositionSnapshot

from .conftest import AS_OF, make_snapshot


def test_securities_are_the_sorted_union_of_held_and_target_symbols() -> None:
    snap = make_snapshot(prices={"ZZZ": 10, "AAA": 20, "MMM": 30, "UNUSED": 5},
                         holdings={"ZZZ": 10}, targets={"AAA": 0.5, "MMM": 0.4}, cash=1000)
    inp = from_snapshot(snap)
    assert inp.symbols == ("AAA", "MMM", "ZZZ")
    assert inp.value_usd == pytest.approx(1100.0)
    assert inp.pre_weight.tolist() == pytest.approx([0, 0, 100 / 1100])
    assert inp.target_weight.tolist() == pytest.approx([0.5, 0.4, 0.0])


def test_lot_rates_follow_holding_period_and_account_type() -> None:
    lots = [(10, 50, 400), (5, 60, 100), (3, 70, 365)]
    snap = make_snapshot(prices={"A": 100}, holdings={"A": lots}, targets={"A": 1.0},
                         tax_rates=(0.4, 0.15))
    inp = from_snapshot(snap)
    # Lots are ordered by acquisition date: 400, 365 and 100 days ago.
    assert inp.lot_shares.tolist() == [10, 3, 5]
    assert inp.lot_long_term.tolist() == [True, False, False]
    assert inp.lot_tax_rate.tolist() == pytest.approx([0.15, 0.4, 0.4])
    assert inp.lot_tax_per_weight.tolist() == pytest.approx([0.5 * 0.15, 0.3 * 0.4, 0.4 * 0.4])
    for account_type in ("tax_deferred", "tax_exempt"):
        other = from_snapshot(make_snapshot(prices={"A": 100}, holdings={"A": lots}, targets={"A": 1.0},
                                            account_type=account_type))
        assert not other.lot_tax_rate.any()


def test_long_term_means_sold_after_the_first_anniversary() -> None:
    assert not is_long_term(date(2023, 6, 28), date(2024, 6, 28))
    assert is_long_term(date(2023, 6, 28), date(2024, 6, 29))
    assert not is_long_term(date(2024, 2, 29), date(2025, 2, 28))
    assert is_long_term(date(2024, 2, 29), date(2025, 3, 1))


def test_from_snapshot_dates_lots_as_is_long_term_does() -> None:
    """from_snapshot compares acquisition dates with one cutoff per trade date instead of calling
    is_long_term per lot: the same answer for every lot around each anniversary, leap days too."""
    for trade in (date(2023, 1, 1) + timedelta(days=k) for k in range(3 * 366)):
        before = _long_term_before(trade)
        for acquired in (trade - timedelta(days=k) for k in range(360, 372)):
            assert (acquired < before) == is_long_term(acquired, trade), (acquired, trade)


def test_shares_without_lot_detail_become_an_untracked_lot_with_no_gain() -> None:
    snap = make_snapshot(prices={"A": 100}, holdings={"A": [(10, 80, 500)]}, targets={"A": 1.0})
    pos = snap.positions[0]
    snap = snap.model_copy(update={"positions": [PositionSnapshot(symbol="A", shares=Decimal("12.5"),
                                                                 lots=pos.lots)]})
    inp = from_snapshot(snap)
    assert inp.lot_ids == ("A-1", "A:untracked") or inp.lot_ids == ("A:untracked", "A-1")
    untracked = inp.lot_ids.index("A:untracked")
    assert inp.lot_shares[untracked] == pytest.approx(2.5)
    assert inp.lot_tax_per_weight[untracked] == 0.0
    assert inp.shares.tolist() == pytest.approx([12.5])


def test_arrays_are_read_only() -> None:
    inp = from_snapshot(make_snapshot(prices={"A": 100}, holdings={"A": 10}, targets={"A": 1.0}))
    with pytest.raises(ValueError):
        inp.price_usd[0] = 1.0
    assert isinstance(inp.lot_security, np.ndarray)


@pytest.mark.parametrize("change, message", [
    ({"targets": {"A": Decimal("0.7"), "B": Decimal("0.4")}}, "targets sum"),
    ({"targets": {"A": Decimal("-0.1")}}, "negative"),
    ({"securities": []}, "no price"),
    ({"positions": [PositionSnapshot(symbol="A", shares=Decimal(5), lots=[
        LotSnapshot(lot_id="x", shares=Decimal(10), cost_basis_usd_per_share=Decimal(1),
                    acquired_on=date(2020, 1, 1))])]}, "lots of A"),
    ({"positions": [PositionSnapshot(symbol="A", shares=Decimal(10), lots=[
        LotSnapshot(lot_id="x", shares=Decimal(10), cost_basis_usd_per_share=Decimal(1),
                    acquired_on=AS_OF.date().replace(year=AS_OF.year + 1))])]}, "after the snapshot"),
])
def test_inconsistent_snapshots_are_refused(change: dict, message: str) -> None:
    snap = make_snapshot(prices={"A": 100, "B": 50}, holdings={"A": 10}, targets={"A": 0.5})
    with pytest.raises(InvalidSnapshot, match=message):
        from_snapshot(snap.model_copy(update=change))
