"""The optimizer's context (pure parts): the worker solves with it and records it exactly, the
household ledger's trades merge into it, and overrides are re-validated under it."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from tests.integration.optimizer.snapshots import drifted
from trimtab.optimizer.domain.override import OverrideRejected, validate_override
from trimtab.optimizer.engine import _solve
from trimtab.optimizer.household import _realized_loss, merge_context
from trimtab.rebalance import DEFAULT_DRIVER_WEIGHTS, RebalanceContext
from trimtab.shared.canonical import canonical_hash
from trimtab.shared.events import Fill, HouseholdTrade, LotInstruction, OptimizerContext, Order

SNAP = drifted("a1").model_copy(update={"household_id": "hh-1"})
#: Another account of the household bought VTI six days before the snapshot (2024-05-01).
BUY_VTI = HouseholdTrade(account_id="b1", symbol="VTI", side="buy", trade_date=date(2024, 4, 25))


def _sold_lots(proposal) -> set[str]:  # type: ignore[no-untyped-def]
    return {li.lot_id for o in proposal.orders if o.side == "sell" for li in o.lots}


def _net_cash_usd(proposal) -> Decimal:  # type: ignore[no-untyped-def]
    return sum(((o.est_notional_usd if o.side == "sell" else -o.est_notional_usd) - o.est_cost_usd
                for o in proposal.orders), Decimal(0))


def test_the_worker_solves_with_the_context_and_records_it() -> None:
    plain = _solve(SNAP.model_dump(mode="json"), str(uuid.uuid4()), None).proposal
    assert plain is not None and "a1-vti-2" in _sold_lots(plain)  # the loss lot is harvested
    assert plain.context is None
    assert plain.driver_weights == {k: Decimal(repr(v)) for k, v in DEFAULT_DRIVER_WEIGHTS.items()}

    ctx = OptimizerContext(recent_trades=[BUY_VTI], withdrawal_usd=Decimal("3000"))
    out = _solve(SNAP.model_dump(mode="json"), str(uuid.uuid4()), None, ctx.model_dump(mode="json"))
    p = out.proposal
    assert out.failure is None and p is not None
    # The household's recent VTI buy bans selling VTI at a loss; the withdrawal raises cash.
    assert "a1-vti-2" not in _sold_lots(p) and "a1-vti-1" in _sold_lots(p)
    assert SNAP.cash_usd + _net_cash_usd(p) >= Decimal("3000")
    assert SNAP.cash_usd + _net_cash_usd(plain) < Decimal("3000")
    # Recorded exactly as the library used it: the same context hash after a trip through JSON.
    assert p.context is not None and p.context.recent_trades == [BUY_VTI]
    used = RebalanceContext.from_json(ctx.model_dump(mode="json"))
    assert canonical_hash(RebalanceContext.from_json(p.context.model_dump(mode="json")).to_json()) == \
        canonical_hash(used.to_json())
    assert p.driver_weights == plain.driver_weights


def test_an_empty_context_is_recorded_as_none_and_a_bad_one_fails_typed() -> None:
    out = _solve(SNAP.model_dump(mode="json"), str(uuid.uuid4()), None, OptimizerContext().model_dump(mode="json"))
    assert out.proposal is not None and out.proposal.context is None
    bad = {"factor_model": {"symbols": ["VTI"], "loadings": [[1.0]], "specific_var": [1.0, 2.0]}}
    failed = _solve(SNAP.model_dump(mode="json"), str(uuid.uuid4()), None, bad)
    assert failed.proposal is None and failed.failure is not None and failed.failure.kind == "invalid_context"


def test_ledger_trades_merge_into_the_drifts_context_once_each_in_order() -> None:
    assert merge_context(None, []) is None
    base = OptimizerContext(tax_budget_usd=Decimal("500"), recent_trades=[BUY_VTI])
    assert merge_context(base, []) is base
    older = HouseholdTrade(account_id="c1", symbol="BND", side="sell", trade_date=date(2024, 4, 10),
                           realized_loss=True)
    merged = merge_context(base, [BUY_VTI, older])
    assert merged is not None and merged.tax_budget_usd == Decimal("500")
    assert merged.recent_trades == [older, BUY_VTI]
    only_ledger = merge_context(None, [BUY_VTI])
    assert only_ledger == OptimizerContext(recent_trades=[BUY_VTI])


def _fill(side: str, price: str, lots: dict[str, int] | None = None) -> Fill:
    return Fill(client_order_id="x", symbol="VTI", side=side, shares=Decimal(10),  # type: ignore[arg-type]
                price_usd=Decimal(price), executed_at=datetime(2024, 5, 2, 15, tzinfo=UTC),
                lots=[LotInstruction(lot_id=k, shares=Decimal(v)) for k, v in (lots or {}).items()])


def test_a_sale_realized_a_loss_when_a_lot_sold_was_bought_above_the_price() -> None:
    assert _realized_loss(_fill("sell", "250", {"a1-vti-2": 10}), SNAP)  # basis 270
    assert not _realized_loss(_fill("sell", "250", {"a1-vti-1": 10}), SNAP)  # basis 190
    assert _realized_loss(_fill("sell", "250"), SNAP)  # no lots named: any lot of VTI at a loss
    assert not _realized_loss(_fill("buy", "250"), SNAP)
    assert not _realized_loss(_fill("sell", "250", {"a1-vti-2": 10}), None)


def _order(symbol: str, side: str, shares: int, lots: dict[str, int] | None = None) -> Order:
    return Order(symbol=symbol, side=side, shares=Decimal(shares), est_price_usd=Decimal(1),  # type: ignore[arg-type]
                 est_notional_usd=Decimal(1),
                 lots=[LotInstruction(lot_id=k, shares=Decimal(v)) for k, v in (lots or {}).items()])


@pytest.mark.parametrize("context, orders, rule", [
    # Another account bought VTI: this account's VTI loss lot may not be sold.
    (OptimizerContext(recent_trades=[BUY_VTI]), [_order("VTI", "sell", 10, {"a1-vti-2": 10})], "household"),
    # Another account sold VNQ at a loss: VNQ may not be bought.
    (OptimizerContext(recent_trades=[HouseholdTrade(account_id="b1", symbol="VNQ", side="sell",
                                                    trade_date=date(2024, 4, 28), realized_loss=True)]),
     [_order("VNQ", "buy", 3)], "household"),
    (OptimizerContext(withdrawal_usd=Decimal("5000")), [_order("VTI", "sell", 10, {"a1-vti-1": 10})],
     "withdrawal"),
    (OptimizerContext(mode="buy_only"), [_order("VTI", "sell", 10, {"a1-vti-1": 10})], "buy-only"),
])
def test_overrides_are_revalidated_under_the_recorded_context(context: OptimizerContext, orders: list[Order],
                                                              rule: str) -> None:
    validate_override(SNAP, orders)  # fine on the snapshot alone
    with pytest.raises(OverrideRejected, match=rule):
        validate_override(SNAP, orders, context=context.model_dump(mode="json"))
