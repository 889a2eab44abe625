"""The audit replay's comparison (`replay.replay_payloads`, no database): a record made the way the
optimizer and explainer services make it replays as identical, every field included; a record
with any field forged (objective, weights, breakdowns, notes, narratives, ...) does not, and the
field is named. Only the documented run-dependent fields and the replay's inputs are left out."""

from __future__ import annotations

import uuid
from decimal import Decimal
from functools import cache
from typing import Any

import pytest

from tests.unit.rebalance.conftest import drifted_account
from trimtab.audit.replay import (
    EXPLANATION_INPUTS,
    PROPOSAL_INPUTS,
    PROPOSAL_RUN_DEPENDENT,
    replay_payloads,
)
from trimtab.rebalance import explain, explanation_payload
from trimtab.shared.envelope import Envelope
from trimtab.shared.events import ExplanationCreated, RebalanceProposed


def _recorded(payload: Any, cls: type) -> Any:
    """The payload as the audit service reads it back: canonical bytes, parsed."""
    env = Envelope.new(payload, producer="test", tenant_id="t1")
    return Envelope.from_bytes(env.to_bytes()).parse(cls)


@cache
def _service_made(counterfactual_orders: int = 8) -> tuple[RebalanceProposed, ExplanationCreated]:
    """A proposal as the optimizer service publishes it (context and driver weights recorded) and
    its explanation as the explainer service publishes it (six drivers, pruned, counterfactuals)."""
    from trimtab.explainer.engine import explain_proposal
    from trimtab.optimizer.engine import _solve

    out = _solve(drifted_account(6, seed=11).model_dump(mode="json"), str(uuid.uuid4()), str(uuid.uuid4()))
    assert out.proposal is not None, out.failure
    proposal = _recorded(out.proposal, RebalanceProposed)
    ex = explain_proposal(proposal.model_dump(mode="json"), str(uuid.uuid4()),
                          counterfactual_orders=counterfactual_orders)
    assert ex.payload is not None, ex.failure
    return proposal, _recorded(ex.payload, ExplanationCreated)


@pytest.mark.parametrize("counterfactual_orders", [0, 2, 8])
def test_records_made_by_the_services_replay_as_identical(counterfactual_orders: int) -> None:
    proposal, explanation = _service_made(counterfactual_orders)
    assert explanation.narrative_advisor.count("Would not trade if") == min(counterfactual_orders,
                                                                            len(proposal.orders))
    r = replay_payloads(proposal, explanation)
    assert r["hash_ok"] and r["proposal_identical"] and r["explanation_identical"] is True, r["differences"]
    assert r["differences"] == []


def test_a_plain_library_explanation_replays_as_identical() -> None:
    proposal, _ = _service_made()
    plain = _recorded(explanation_payload(explain(proposal)), ExplanationCreated)
    r = replay_payloads(proposal, plain)
    assert r["proposal_identical"] and r["explanation_identical"] is True, r["differences"]


def test_what_two_honest_runs_differ_in_is_not_compared() -> None:
    # The solve's wall-clock time and the OMS key (set on trades.approved, not by the optimizer).
    assert PROPOSAL_RUN_DEPENDENT == ("solver.solve_ms", "orders[].client_order_id")
    assert PROPOSAL_INPUTS == ("proposal_id", "drift_id", "snapshot", "context", "driver_weights")
    assert EXPLANATION_INPUTS == ("explanation_id", "risk_event_id")  # risk: the assessment passed back in
    proposal, explanation = _service_made()
    timed = proposal.model_copy(update={
        "solver": proposal.solver.model_copy(update={"solve_ms": Decimal("98765.4")}),
        "orders": [o.model_copy(update={"client_order_id": f"oms-{i}"}) for i, o in enumerate(proposal.orders)],
    })
    r = replay_payloads(timed, explanation)
    assert r["proposal_identical"] and r["explanation_identical"] is True, r["differences"]


def _forged_proposals(p: RebalanceProposed) -> dict[str, dict[str, Any]]:
    return {
        "objective": {"objective": {k: v * 10 + 1 for k, v in p.objective.items()}},
        "pre_weights": {"pre_weights": {k: Decimal("0") for k in p.pre_weights}},
        "post_weights": {"post_weights": {**p.post_weights, "S00": Decimal("0.5")}},
        "tax_breakdown": {"tax_breakdown": {"tax_total_usd": Decimal("999999")}},
        "cost_breakdown": {"cost_breakdown": {**(p.cost_breakdown or {}), "total_usd": Decimal("123456")}},
        "notes": {"notes": ["forged note"]},
        "pre_drift": {"pre_drift": None},
        "post_drift": {"post_drift": {k: Decimal("0") for k in p.post_drift or {}}},
        "est_tax_usd": {"est_tax_usd": p.est_tax_usd + 1},
        "account_id": {"account_id": "someone-else"},
        "solver": {"solver": p.solver.model_copy(update={"status": "optimal_inaccurate"})},
        "orders": {"orders": p.orders[:-1]},
    }


FORGED_FIELDS = ["account_id", "cost_breakdown", "est_tax_usd", "notes", "objective", "orders", "post_drift",
                 "post_weights", "pre_drift", "pre_weights", "solver", "tax_breakdown"]


@pytest.mark.parametrize("field", FORGED_FIELDS)
def test_a_forged_proposal_field_is_named(field: str) -> None:
    proposal, explanation = _service_made()
    forgeries = _forged_proposals(proposal)
    assert sorted(forgeries) == FORGED_FIELDS
    forged = proposal.model_copy(update=forgeries[field])
    r = replay_payloads(forged, explanation if field != "orders" else None)
    assert r["proposal_identical"] is False
    # The proposal's field is named (a re-explanation of the forged proposal may differ too: the
    # narratives quote the proposal's figures).
    named = [d.split(":", 1)[0] for d in r["differences"]]
    assert [f for f in named if not f.startswith("explanation.")] == [field], r["differences"]


@pytest.mark.parametrize("field,value", [
    ("narrative_advisor", lambda e: e.narrative_advisor.replace("Reasons", "Motives", 1)),
    ("narrative_client", lambda e: e.narrative_client + " Guaranteed returns."),
    ("resolves", lambda e: e.resolves + 1),
    ("method", lambda e: "shapley-sampled/0"),
    ("drivers", lambda e: list(reversed(e.drivers))),
    ("trades", lambda e: e.trades[:-1]),
])
def test_a_forged_explanation_field_is_named(field: str, value: Any) -> None:
    proposal, explanation = _service_made()
    forged = explanation.model_copy(update={field: value(explanation)})
    r = replay_payloads(proposal, forged)
    assert r["proposal_identical"] is True and r["explanation_identical"] is False
    assert f"explanation.{field}" in [d.split(":", 1)[0] for d in r["differences"]], r["differences"]


def test_a_forged_narrative_is_shown_where_it_differs() -> None:
    proposal, explanation = _service_made()
    forged = explanation.model_copy(update={
        "narrative_client": explanation.narrative_client.replace("lower your taxes", "double your money", 1)})
    r = replay_payloads(proposal, forged)
    [line] = r["differences"]
    assert line.startswith("explanation.narrative_client: recorded ") and "double your money" in line


def test_unreadable_inputs_are_an_answer_not_an_error() -> None:
    proposal, explanation = _service_made()
    r = replay_payloads(proposal.model_copy(update={"driver_weights": {"drift": Decimal("-1")}}), None)
    assert r["proposal_identical"] is False and "does not solve now" in r["differences"][-1], r["differences"]
    r = replay_payloads(proposal, explanation.model_copy(update={"drivers": ["drift", "location"]}))
    assert r["explanation_identical"] is False and "does not explain now" in r["differences"][-1], r["differences"]


def test_the_blas_kernel_is_recorded_and_compared_when_it_was() -> None:
    """A proposal records the BLAS kernel it ran on (trimtab.shared.numeric); a replay on another
    kernel names it among the differences; a record made before kernels were recorded compares
    its outputs only."""
    from trimtab.shared.numeric import blas_core

    proposal, explanation = _service_made()
    assert proposal.solver.blas_core == blas_core() and proposal.solver.blas_core
    other = proposal.model_copy(update={"solver": proposal.solver.model_copy(update={"blas_core": "OtherCPU"})})
    r = replay_payloads(other, explanation)
    assert not r["proposal_identical"] and r["differences"] == [
        f'solver: recorded {{"blas_core": "OtherCPU"}} != replayed {{"blas_core": "{blas_core()}"}}'], r
    older = _recorded(proposal.model_copy(update={"solver": proposal.solver.model_copy(update={"blas_core": None})}),
                      RebalanceProposed)
    assert "blas_core" not in older.solver.model_dump(mode="json")  # left out of the JSON when unknown
    r = replay_payloads(older, explanation)
    assert r["proposal_identical"] and r["differences"] == [], r["differences"]
