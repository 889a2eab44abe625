"""Shapley explanations: efficiency, null drivers, an independent computation, the two voices."""

from __future__ import annotations

import itertools
import math
import time
import uuid
from decimal import Decimal

import numpy as np
import pytest

from trimtab.rebalance import (
    DEFAULT_DRIVER_WEIGHTS,
    DRIVERS,
    explain,
    explanation_payload,
    from_snapshot,
    propose,
    shapley_values,
    solve_trades,
)
from trimtab.shared.events import ExplanationCreated, RiskAssessed, RiskModelInfo

from .conftest import drifted_account, make_snapshot

ACCOUNTS = {
    "taxable-losses-reserve-restricted": lambda: drifted_account(
        8, gains=True, reserve=4_000, restricted=["S02"], seed=11),
    "taxable-20": lambda: drifted_account(20, gains=True, seed=3),
    "deferred-short-cash": lambda: drifted_account(
        6, gains=True, account_type="tax_deferred", cash_weight=0.0, reserve=6_000),
}


@pytest.fixture(scope="module", params=sorted(ACCOUNTS))
def explained(request):  # type: ignore[no-untyped-def]
    snap = ACCOUNTS[request.param]()
    proposal = propose(snap)
    return snap, proposal, explain(proposal)


def test_efficiency_base_plus_contributions_is_the_trade(explained) -> None:  # type: ignore[no-untyped-def]
    snap, proposal, e = explained
    inp = from_snapshot(snap)
    full = solve_trades(inp, DEFAULT_DRIVER_WEIGHTS)
    by_symbol = {t.symbol: t for t in e.trades}
    for i, sym in enumerate(inp.symbols):
        t = by_symbol.get(sym)
        if t is None:
            assert abs(full[i]) <= 1e-4
            continue
        total = t.base_shares + sum(t.contributions_shares.values())
        assert total == pytest.approx(full[i], rel=1e-6, abs=1e-9)
        assert t.base_shares == 0.0  # the all-off trade is zero: the regularizer's promise
        assert t.trade_shares == pytest.approx(proposal.continuous_trade_shares[sym], rel=1e-9, abs=1e-9)
    assert e.efficiency_error_shares < 1e-6
    assert e.coalitions == 2 ** len(DRIVERS) and e.resolves >= e.coalitions


def test_every_order_is_explained(explained) -> None:  # type: ignore[no-untyped-def]
    _, proposal, e = explained
    assert {o.symbol for o in proposal.orders} <= {t.symbol for t in e.trades}


def brute_force_shapley(inp, weights, drivers):  # type: ignore[no-untyped-def]
    """Shapley's formula, term by term, with no shap: an independent check of the library call."""
    k = len(drivers)
    value = {}
    for on in itertools.product([False, True], repeat=k):
        w = dict(weights)
        for d, flag in zip(drivers, on, strict=True):
            if not flag:
                w[d] = 0.0
        value[on] = solve_trades(inp, w)
    phi = np.zeros((k, inp.n_securities))
    for j in range(k):
        for on in value:
            if on[j]:
                continue
            size = sum(on)
            weight = math.factorial(size) * math.factorial(k - size - 1) / math.factorial(k)
            with_j = tuple(True if i == j else f for i, f in enumerate(on))
            phi[j] += weight * (value[with_j] - value[on])
    return phi


def test_shap_exact_matches_shapleys_formula() -> None:
    inp = from_snapshot(drifted_account(6, gains=True, reserve=3_000, restricted=["S04"], seed=5))
    sv = shapley_values(inp, DEFAULT_DRIVER_WEIGHTS)
    np.testing.assert_allclose(sv.values, brute_force_shapley(inp, DEFAULT_DRIVER_WEIGHTS, DRIVERS),
                               atol=1e-9, rtol=1e-9)


def test_null_drivers_get_nothing() -> None:
    # Tax-deferred: the tax driver changes no coefficient. Nothing restricted: relaxing
    # restrictions changes no bound. Both get zero (to shap's float arithmetic: every coalition
    # with the driver solves the very same problem as the one without).
    snap = drifted_account(8, gains=True, account_type="tax_deferred", reserve=2_000)
    e = explain(propose(snap))
    for t in e.trades:
        assert abs(t.contributions_shares["tax"]) < 1e-9
        assert abs(t.contributions_shares["restrictions"]) < 1e-9
    assert any(abs(t.contributions_shares["drift"]) > 1 for t in e.trades)


def test_a_restriction_is_credited_with_what_it_prevents() -> None:
    # A is restricted and far under target: without the restriction it would be bought.
    snap = make_snapshot(prices={"A": 100, "B": 50, "C": 20}, holdings={"A": 100, "B": 400, "C": 500},
                         targets={"A": 0.4, "B": 0.3, "C": 0.3}, restricted=["A"], cash=2000)
    e = explain(propose(snap))
    by = {t.symbol: t for t in e.trades}
    assert "A" in by and by["A"].trade_shares == pytest.approx(0.0, abs=1e-6)
    assert by["A"].contributions_shares["restrictions"] < -20
    assert by["A"].contributions_shares["drift"] > 20
    assert "Restricted, not traded: A (the restriction holds back a purchase of $" in e.narrative_advisor


def test_payload_is_a_valid_event_and_keeps_efficiency_in_decimals(explained) -> None:  # type: ignore[no-untyped-def]
    _, proposal, e = explained
    payload = explanation_payload(e)
    assert isinstance(payload, ExplanationCreated)
    again = ExplanationCreated.model_validate_json(payload.model_dump_json())
    assert again == payload
    assert payload.proposal_id == proposal.proposal_id and payload.snapshot_hash == proposal.snapshot_hash
    assert payload.drivers == list(DRIVERS) and payload.resolves == e.resolves
    for t in payload.trades:
        total = t.base_shares + sum(t.contributions_shares.values(), Decimal(0))
        assert abs(total - t.trade_shares) <= Decimal("0.00001")
    assert explanation_payload(e).explanation_id == payload.explanation_id  # deterministic id
    assert explanation_payload(e, explanation_id=uuid.UUID(int=1)).explanation_id == uuid.UUID(int=1)


def test_narratives_are_deterministic_and_speak_two_voices(explained) -> None:  # type: ignore[no-untyped-def]
    _, proposal, e = explained
    again = explain(proposal)
    assert (again.narrative_advisor, again.narrative_client) == (e.narrative_advisor, e.narrative_client)
    for o in proposal.orders:
        assert f"{o.side.upper()} {o.shares.normalize():f} {o.symbol}" in e.narrative_advisor
        assert o.symbol in e.narrative_client
        for li in o.lots:
            assert li.lot_id in e.narrative_advisor
    assert "pp" in e.narrative_advisor and "$" in e.narrative_advisor
    for jargon in ("drift", "Shapley", " pp", "bps", "basis", "lot"):
        assert jargon not in e.narrative_client


def test_risk_is_told_when_given() -> None:
    proposal = propose(drifted_account(6, gains=False))
    risk = RiskAssessed(proposal_id=proposal.proposal_id, account_id=proposal.account_id,
                        pre_vol_annual_pct=Decimal("18.2"), post_vol_annual_pct=Decimal("15.9"),
                        model=RiskModelInfo(name="ewma", version="1"))
    e = explain(proposal, risk=risk)
    assert "18.2% -> 15.9%" in e.narrative_advisor
    assert "a little less than before" in e.narrative_client


def test_the_event_explains_like_the_proposal() -> None:
    proposal = propose(drifted_account(6, gains=True, seed=9))
    from_event = explain(proposal.to_event())
    direct = explain(proposal)
    assert from_event.trades == direct.trades
    assert from_event.narrative_client == direct.narrative_client


def test_explaining_twenty_securities_is_well_under_a_second() -> None:
    proposal = propose(drifted_account(20, gains=True, reserve=2_000, restricted=["S07"], seed=21))
    explain(proposal)  # compile and JIT paid here
    t0 = time.perf_counter()
    e = explain(proposal)
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0, f"{elapsed:.3f} s for {e.resolves} solves"
