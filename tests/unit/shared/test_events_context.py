"""The optimizer's context on the contract: optional (v1 events without it still validate), strict
in shape, money as decimal strings, and a lossless round trip with `RebalanceContext`."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import numpy as np
import pytest
from pydantic import ValidationError

from tests.integration.optimizer.snapshots import drifted
from trimtab.rebalance import FactorModel, HouseholdTrade, RebalanceContext, SecurityInfo, propose
from trimtab.shared.canonical import canonical_hash
from trimtab.shared.envelope import Envelope
from trimtab.shared.events import DriftDetected, OptimizerContext, RebalanceProposed


def _context() -> RebalanceContext:
    return RebalanceContext(
        securities={"VTI": SecurityInfo(sigma_daily=0.0123456789, adv_usd=1.5e9, wash_group="us-total"),
                    "BND": SecurityInfo(substitute_group="bonds")},
        factor_model=FactorModel(symbols=("VTI", "BND"), loadings=np.array([[0.1, 1 / 3], [0.2, 1e-7]]),
                                 specific_var=np.array([1e-4, 2.5e-5]), name="two-factor"),
        recent_trades=(HouseholdTrade("b", "VTI", "buy", date(2024, 4, 25)),
                       HouseholdTrade("c", "BND", "sell", date(2024, 4, 20), realized_loss=True)),
        tax_budget_usd=1234.56, gain_cap_usd=0.1, mode="sell_only", withdrawal_usd=5000.0,
        harvest_min_loss_usd=50.0, harvest_min_loss_pct=0.05, impact_b=0.7)


def _v1_payload(event: DriftDetected | RebalanceProposed) -> dict:
    """The payload as a v1 producer wrote it: without the new fields at all."""
    out = event.model_dump(mode="json")
    for k in ("context", "driver_weights"):
        out.pop(k, None)
    return out


def test_v1_events_without_the_new_fields_still_validate() -> None:
    snap = drifted("acc-v1")
    proposed = propose(snap).to_event()
    old = _v1_payload(proposed)
    assert "context" not in old and "driver_weights" not in old
    back = RebalanceProposed.model_validate(old)
    assert back.context is None and back.driver_weights is None and back.orders == proposed.orders
    drift = DriftDetected.model_validate({
        "drift_id": "6f1d6c9e-3b0a-5b7e-9a51-5d0c2b8f4a10", "account_id": "acc-v1",
        "snapshot": snap.model_dump(mode="json"), "total_value_usd": "100000", "weights": {},
        "deviations": {}, "max_abs_deviation": "0.3", "rule": "band_abs", "breached": ["VTI"]})
    assert drift.context is None


def test_a_context_round_trips_through_an_event_exactly() -> None:
    ctx = _context()
    proposed = propose(drifted("acc-rt").model_copy(update={"household_id": "hh"}), context=ctx).to_event()
    event = proposed.model_copy(update={
        "context": OptimizerContext.model_validate(ctx.to_json()),
        "driver_weights": {"drift": Decimal("1"), "tax": Decimal(repr(1 / 3))}})
    wire = Envelope.new(event, producer="optimizer", tenant_id="t1").to_bytes()
    # Money and fractions are decimal strings on the wire; the factor model's matrix numbers.
    payload = json.loads(wire)["payload"]
    assert payload["context"]["tax_budget_usd"] == "1234.56"
    assert payload["context"]["withdrawal_usd"] == "5000.0"
    assert payload["context"]["securities"]["VTI"]["adv_usd"] == "1500000000.0"
    assert payload["context"]["factor_model"]["loadings"][0] == [0.1, 1 / 3]
    assert payload["driver_weights"]["tax"] == repr(1 / 3)
    back = Envelope.from_bytes(wire).parse(RebalanceProposed)
    assert back.context is not None and back.driver_weights is not None
    again = RebalanceContext.from_json(back.context.model_dump(mode="json"))
    # The same context to the bit: its hash (part of the proposal's identity) is unchanged.
    assert canonical_hash(again.to_json()) == canonical_hash(ctx.to_json())
    assert again.recent_trades == ctx.recent_trades and again.mode == "sell_only"
    assert np.array_equal(again.factor_model.loadings, ctx.factor_model.loadings)  # type: ignore[union-attr]
    assert float(back.driver_weights["tax"]) == 1 / 3


def test_the_empty_context_is_the_defaults() -> None:
    assert RebalanceContext.from_json(OptimizerContext().model_dump(mode="json")) == RebalanceContext()
    assert OptimizerContext.model_validate(RebalanceContext().to_json()) == OptimizerContext()


@pytest.mark.parametrize("bad", [
    {"mode": "sideways"},
    {"withdrawal_usd": "-1"},
    {"gain_cap_usd": "-5"},
    {"harvest_min_loss_pct": "1.5"},
    {"unknown_field": 1},
    {"securities": {"VTI": {"sigma_daily": "0.01", "beta": "1"}}},
    {"recent_trades": [{"account_id": "a", "symbol": "VTI", "side": "hold", "trade_date": "2024-05-01"}]},
    {"factor_model": {"symbols": ["A", "B"], "loadings": [[0.1]], "specific_var": [0.1, 0.1]}},
    {"factor_model": {"symbols": ["A", "B"], "loadings": [[0.1], [0.1, 0.2]], "specific_var": [0.1, 0.1]}},
    {"factor_model": {"symbols": ["A"], "loadings": [[0.1]], "specific_var": [-0.1]}},
])
def test_a_malformed_context_is_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        OptimizerContext.model_validate(bad)


def test_the_published_schema_documents_the_context() -> None:
    from trimtab.shared.contract import event_schema

    s = event_schema("RebalanceProposed")
    props = s["$defs"]["RebalanceProposed"]["properties"]
    assert {"context", "driver_weights"} <= set(props)
    assert "context" not in s["$defs"]["RebalanceProposed"].get("required", [])
    ctx = s["$defs"]["OptimizerContext"]["properties"]
    assert ctx["tax_budget_usd"]["anyOf"][0]["type"] == "string"
    assert set(ctx["mode"]["enum"]) == {"both", "buy_only", "sell_only"}
    assert "context" in event_schema("DriftDetected")["$defs"]["DriftDetected"]["properties"]


def test_the_contract_mirrors_every_field_of_the_librarys_context() -> None:
    """A field the library's JSON has and the contract lacks would make every proposal with it
    fail (the contract forbids unknown fields): keep them in step."""
    import dataclasses

    from trimtab.shared.events import FactorModelContext, SecurityContext
    from trimtab.shared.events import HouseholdTrade as TradeOnWire

    assert {f.name for f in dataclasses.fields(RebalanceContext)} == set(OptimizerContext.model_fields)
    assert {f.name for f in dataclasses.fields(SecurityInfo)} == set(SecurityContext.model_fields)
    assert {f.name for f in dataclasses.fields(HouseholdTrade)} == set(TradeOnWire.model_fields)
    assert {f.name for f in dataclasses.fields(FactorModel)} == set(FactorModelContext.model_fields)
    # Every security field set: the library's JSON validates and comes back the same.
    full = {f.name: (0.5 if f.type in ("float | None", float) else "g")
            for f in dataclasses.fields(SecurityInfo)}
    ctx = RebalanceContext.from_json({"securities": {"VTI": full}})
    assert RebalanceContext.from_json(OptimizerContext.model_validate(ctx.to_json()).model_dump(mode="json")) == ctx
