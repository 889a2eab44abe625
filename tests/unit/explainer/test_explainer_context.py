"""The explainer re-solves the problem the optimizer solved: the proposal's recorded context and
driver weights, not the snapshot alone."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

from tests.integration.optimizer.snapshots import drifted
from trimtab.explainer.engine import explain_proposal, recorded_problem
from trimtab.rebalance import HouseholdTrade, RebalanceContext, propose
from trimtab.shared.events import OptimizerContext

SNAP = drifted("ex-1").model_copy(update={"household_id": "hh-ex"})
CTX = RebalanceContext(recent_trades=(HouseholdTrade("ex-2", "VTI", "buy", date(2024, 4, 25)),),
                       withdrawal_usd=3000.0)
WEIGHTS = {"drift": 1.0, "cost": 1.0, "tax": 0.5, "cash": 1.0, "restrictions": 1.0}


def _event(ctx: RebalanceContext | None, weights: dict[str, float] | None = None):  # type: ignore[no-untyped-def]
    p = propose(SNAP, context=ctx, drivers=weights)
    return p.to_event().model_copy(update={
        "context": None if ctx is None else OptimizerContext.model_validate(ctx.to_json()),
        "driver_weights": {k: Decimal(repr(v)) for k, v in p.driver_weights.items()}})


def test_the_recorded_context_and_weights_are_what_the_library_gets() -> None:
    event = _event(CTX, WEIGHTS)
    ctx, weights = recorded_problem(event)
    assert ctx is not None and ctx.recent_trades == CTX.recent_trades and ctx.withdrawal_usd == 3000.0
    assert weights is not None and weights["tax"] == 0.5
    assert recorded_problem(event.model_copy(update={"context": None, "driver_weights": None})) == (None, None)


def _trade_shares(out) -> dict[str, Decimal]:  # type: ignore[no-untyped-def]
    assert out.failure is None and out.payload is not None, out.failure
    return {t.symbol: t.trade_shares for t in out.payload.trades}


def test_a_context_driven_proposal_is_explained_under_its_context() -> None:
    event = _event(CTX)
    out = explain_proposal(event.model_dump(mode="json"), str(uuid.uuid4()))
    explained = _trade_shares(out)
    # Attributions add up to the trade the optimizer made under the context (efficiency holds).
    for t in out.payload.trades:  # type: ignore[union-attr]
        assert abs(t.base_shares + sum(t.contributions_shares.values()) - t.trade_shares) <= Decimal("1e-5")
    # Explained without its context the same snapshot is another problem: other trades.
    bare = explain_proposal(event.model_copy(update={"context": None}).model_dump(mode="json"), str(uuid.uuid4()))
    assert _trade_shares(bare) != explained
    # The withdrawal makes the optimizer sell more VTI (cash) and buy less of the rest.
    assert explained["VTI"] < _trade_shares(bare)["VTI"] < 0


def test_recorded_driver_weights_are_explained_as_recorded() -> None:
    event = _event(None, WEIGHTS)
    out = explain_proposal(event.model_dump(mode="json"), str(uuid.uuid4()))
    default = explain_proposal(event.model_copy(update={"driver_weights": None}).model_dump(mode="json"),
                               str(uuid.uuid4()))
    assert _trade_shares(out) != _trade_shares(default)
