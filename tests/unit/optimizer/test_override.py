"""The override re-validation (pure): the advisor's orders pass the optimizer's own rules or are
refused with every violation named."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.integration.optimizer.snapshots import drifted
from trimtab.optimizer.domain.override import OverrideRejected, validate_override
from trimtab.shared.events import AccountSnapshot, LotInstruction, Order

SNAP = drifted("a1")


def order(symbol: str, side: str, shares: int, lots: dict[str, int] | None = None) -> Order:
    return Order(symbol=symbol, side=side, shares=Decimal(shares), est_price_usd=Decimal(1),  # type: ignore[arg-type]
                 est_notional_usd=Decimal(1),
                 lots=[LotInstruction(lot_id=k, shares=Decimal(v)) for k, v in (lots or {}).items()])


def test_valid_orders_are_repriced_from_the_snapshot() -> None:
    out = validate_override(SNAP, [order("VTI", "sell", 10, {"a1-vti-1": 10}), order("VNQ", "buy", 3)])
    vti, vnq = sorted(out, key=lambda o: o.symbol, reverse=True)
    assert (vti.est_price_usd, vti.est_notional_usd, vti.est_cost_usd) == (Decimal(250), Decimal("2500.00"),
                                                                          Decimal("0.50"))
    assert vnq.est_notional_usd == Decimal("255.00")


@pytest.mark.parametrize("orders, rule", [
    ([order("VTI", "sell", 10, {"a1-vti-2": 10}), order("VTI", "buy", 1)], "wash sale"),
    ([order("VTI", "sell", 200, {"a1-vti-1": 200})], "lot oversold"),
    ([order("BND", "sell", 5, {"a1-vti-1": 5})], "not a lot of"),
    ([order("VTI", "sell", 5, {"a1-vti-1": 4})], "summing to its shares"),
    ([order("VNQ", "buy", 100)], "below the reserve"),
    ([order("XYZ", "buy", 1)], "not in the proposal's snapshot"),
])
def test_rule_breaking_orders_are_refused_with_the_rule(orders: list[Order], rule: str) -> None:
    with pytest.raises(OverrideRejected) as err:
        validate_override(SNAP, orders)
    assert rule in str(err.value)


def test_restricted_securities_cannot_be_traded_by_override() -> None:
    snap = SNAP.model_copy(update={"restricted": ["VXUS"]})
    with pytest.raises(OverrideRejected, match="restricted"):
        validate_override(snap, [order("VXUS", "sell", 10, {"a1-vxus-1": 10})])


def dec_order(symbol: str, side: str, shares: str, lots: dict[str, str] | None = None) -> Order:
    """An order with exact Decimal share counts (fractions, exponents)."""
    return Order(symbol=symbol, side=side, shares=Decimal(shares), est_price_usd=Decimal(1),  # type: ignore[arg-type]
                 est_notional_usd=Decimal(1),
                 lots=[LotInstruction(lot_id=k, shares=Decimal(v)) for k, v in (lots or {}).items()])


def test_an_override_without_orders_is_refused_pointing_to_reject() -> None:
    # Accepted, it would publish RebalanceDecided "overridden" and no trades: the drift monitor
    # would wait for trades that never come.
    with pytest.raises(OverrideRejected, match="reject") as err:
        validate_override(SNAP, [])
    assert err.value.status == 422 and err.value.extra["violations"]


@pytest.mark.parametrize("shares", ["10.37", "0.5", "1E-30"])
def test_a_sell_of_part_of_a_share_of_a_lot_is_refused(shares: str) -> None:
    # a1-vti-1 holds 180 whole shares: 10.37 is no whole number, 1E-30 a $0.00 order.
    with pytest.raises(OverrideRejected, match="sells are whole shares"):
        validate_override(SNAP, [dec_order("VTI", "sell", shares, {"a1-vti-1": shares})])


def fractional_lot_snapshot() -> AccountSnapshot:
    """SNAP with VTI lot 1 holding 180.25 shares and 2.5 VTI shares outside any lot."""
    vti, *rest = SNAP.positions
    lots = [vti.lots[0].model_copy(update={"shares": Decimal("180.25")}), vti.lots[1]]
    vti = vti.model_copy(update={"shares": Decimal("282.75"), "lots": lots})
    return SNAP.model_copy(update={"positions": [vti, *rest]})


@pytest.mark.parametrize("lot, shares", [
    ("a1-vti-1", "180.25"),  # the whole lot, fraction included (as the optimizer sells it)
    ("a1-vti-1", "180"),  # whole shares of a fractional lot
    ("VTI:untracked", "2.5"),  # all the shares without lot detail
    ("VTI:untracked", "2"),
])
def test_a_lot_sold_whole_may_be_fractional(lot: str, shares: str) -> None:
    [out] = validate_override(fractional_lot_snapshot(), [dec_order("VTI", "sell", shares, {lot: shares})])
    assert out.shares == Decimal(shares) and out.est_notional_usd == Decimal(shares) * Decimal(250)


@pytest.mark.parametrize("lot, shares", [("a1-vti-1", "180.2"), ("VTI:untracked", "1.5")])
def test_part_of_a_fractional_lot_is_whole_shares(lot: str, shares: str) -> None:
    with pytest.raises(OverrideRejected, match="sells are whole shares"):
        validate_override(fractional_lot_snapshot(), [dec_order("VTI", "sell", shares, {lot: shares})])


@pytest.mark.parametrize("orders", [
    [dec_order("VTI", "sell", "1000000000000000000000000000", {"a1-vti-1": "1000000000000000000000000000"})],
    [dec_order("VTI", "sell", "10", {"a1-vti-1": "5E+999999"})],
    [dec_order("VNQ", "buy", "1E+999999")],
    [dec_order("VNQ", "buy", "1000000000001")],
])
def test_share_counts_beyond_the_bound_are_refused_before_pricing(orders: list[Order]) -> None:
    # Priced, these overflow Decimal's precision (InvalidOperation: a 500 through the API).
    with pytest.raises(OverrideRejected, match="at most 1,000,000,000,000"):
        validate_override(SNAP, orders)
