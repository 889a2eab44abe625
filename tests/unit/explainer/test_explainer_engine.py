"""The explainer's pure parts: the worker function, ids, the app's wiring (no I/O)."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from tests.unit.rebalance.conftest import drifted_account, make_snapshot
from trimtab.explainer.api import _trades
from trimtab.explainer.app import Settings, create
from trimtab.explainer.engine import explain_proposal
from trimtab.explainer.handlers import explanation_id_for
from trimtab.rebalance import propose
from trimtab.shared.events import ExplanationCreated


@pytest.fixture(scope="module")
def proposed():  # type: ignore[no-untyped-def]
    return propose(drifted_account(8, gains=True, reserve=3_000, restricted=["S02"])).to_event()


def test_the_worker_explains_a_proposal_event(proposed) -> None:  # type: ignore[no-untyped-def]
    eid = uuid.uuid4()
    out = explain_proposal(proposed.model_dump(mode="json"), str(eid))
    assert out.failure is None and out.payload is not None
    payload = out.payload
    assert isinstance(payload, ExplanationCreated)
    assert payload.explanation_id == eid and payload.proposal_id == proposed.proposal_id
    assert payload.snapshot_hash == proposed.snapshot_hash
    assert {o.symbol for o in proposed.orders} <= {t.symbol for t in payload.trades}
    for t in payload.trades:
        assert abs(t.base_shares + sum(t.contributions_shares.values()) - t.trade_shares) <= Decimal("1e-5")
        d = out.details[t.symbol]
        usd = sum(Decimal(v) for v in d["contributions_usd"].values())
        assert abs(usd - Decimal(d["trade_usd"])) <= Decimal("0.05")
    assert out.elapsed_ms is not None and out.elapsed_ms > 0


def test_the_worker_reports_a_refused_snapshot_as_a_failure() -> None:
    snap = make_snapshot(prices={"A": 100, "B": 50}, holdings={"A": 10}, targets={"B": 0.5})
    event = propose(snap).to_event()
    broken = event.model_copy(update={"snapshot": snap.model_copy(update={"securities": []})})
    out = explain_proposal(broken.model_dump(mode="json"), str(uuid.uuid4()))
    assert out.payload is None and out.failure is not None
    assert out.failure.kind == "invalid_snapshot" and "no price" in out.failure.detail


def test_explanation_ids_are_per_tenant_and_proposal() -> None:
    pid = uuid.uuid4()
    assert explanation_id_for("t1", pid) == explanation_id_for("t1", pid)
    assert explanation_id_for("t1", pid) != explanation_id_for("t2", pid)


def test_stored_rows_render_with_dollars(proposed) -> None:  # type: ignore[no-untyped-def]
    out = explain_proposal(proposed.model_dump(mode="json"), str(uuid.uuid4()))
    assert out.payload is not None
    trades = _trades(out.payload.model_dump(mode="json"), out.details)
    assert trades and all(t.price_usd is not None and t.contributions_usd for t in trades)
    assert set(trades[0].contributions_usd) == set(trades[0].contributions_shares)


def test_the_app_consumes_proposals_and_serves_explanations() -> None:
    app = create(Settings())
    runtime = app.state.runtime
    assert runtime.topics_consumed == ["rebalance.proposed.v1", "risk.assessed.v1"]  # risk: for the narratives
    paths = set(app.openapi()["paths"])
    assert {"/v1/explanations/{proposal_id}", "/v1/explanations/{proposal_id}/narrative",
            "/v1/explanations/{proposal_id}/charts", "/v1/explanations/{proposal_id}/charts/{name}"} <= paths
    assert Settings().explainer_processes == 0 and Settings().explainer_counterfactual_orders == 8


def test_the_worker_stores_counterfactuals_and_wash_sale_status(proposed) -> None:  # type: ignore[no-untyped-def]
    out = explain_proposal(proposed.model_dump(mode="json"), str(uuid.uuid4()), counterfactual_orders=2)
    assert out.payload is not None
    # The event carries the optimizer's drivers (what the audit replay recomputes), the stored
    # detail the six explained ones.
    assert out.payload.drivers == ["drift", "risk", "cost", "tax", "cash", "restrictions", "esg"]
    assert out.details["_drivers"] == ["drift", "risk", "cost", "tax_losses", "tax_gains", "cash", "restrictions", "esg"]
    largest = sorted(proposed.orders, key=lambda o: (-o.est_notional_usd, o.symbol))[:2]
    with_cf = {s for s, d in out.details.items() if s != "_drivers" and d.get("counterfactuals")}
    assert with_cf == {o.symbol for o in largest}
    for o in proposed.orders:
        assert out.details[o.symbol]["wash_sale"]
    trades = _trades(out.payload.model_dump(mode="json"), out.details)
    cf = next(t for t in trades if t.symbol == largest[0].symbol).counterfactuals
    assert {c.parameter for c in cf} >= {"band"} and all(c.resolves > 0 for c in cf)


def test_charts_render_from_a_stored_row(proposed) -> None:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    from trimtab.explainer.api import _chart_trades, _drivers, _names
    from trimtab.rebalance.charts import render

    out = explain_proposal(proposed.model_dump(mode="json"), str(uuid.uuid4()))
    assert out.payload is not None
    row = SimpleNamespace(payload=out.payload.model_dump(mode="json"), details=out.details)
    trades = _chart_trades(row)
    assert {t.symbol for t in trades} == {t.symbol for t in out.payload.trades}
    assert "summary.svg" in _names(row)
    drivers = _drivers(row.payload, row.details)
    assert drivers == ["drift", "risk", "cost", "tax_losses", "tax_gains", "cash", "restrictions", "esg"]
    assert set(trades[0].contributions_usd) == set(drivers)
    body, media_type = render("summary.svg", trades, drivers, "t")
    assert media_type == "image/svg+xml" and b"<svg" in body
