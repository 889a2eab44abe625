"""The override re-validation (pure): the advisor's orders pass the optimizer's own rules or are
refused with every violation named."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.integration.optimizer.snapshots import drifted
from trimtab.optimizer.domain.override import OverrideRejected, validate_override
from trimtab.shared.events import LotInstruction, Order

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
