"""Request and response models of the optimizer API (separate from the tables)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trimtab.shared.events import (
    AccountSnapshot,
    ExplanationCreated,
    OptimizerContext,
    Order,
    RiskAssessed,
    SolverInfo,
)
from trimtab.shared.money import DecimalStr

StateName = Literal["proposed", "assessed", "explained", "ready", "approved", "rejected",
                    "overridden", "executed", "failed", "expired"]


class ApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=2000)


class RejectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000)


class OverrideIn(BaseModel):
    """The advisor's orders replacing the proposal's (prices and costs are recomputed)."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000)
    orders: list[Order] = Field(max_length=1000)


class WhatIfIn(BaseModel):
    """A what-if with a context: the snapshot and what to solve it with beyond it. (A bare
    `AccountSnapshot` body is a what-if without one.) The household's recent trades the optimizer
    knows of are added to the context's, as for a drift."""

    model_config = ConfigDict(extra="forbid")
    snapshot: AccountSnapshot
    context: OptimizerContext | None = None


class DecisionOut(BaseModel):
    decision: Literal["approved", "rejected", "overridden", "expired"]
    decided_by: str
    automatic: bool
    reason: str | None
    decided_at: datetime


class FailureOut(BaseModel):
    kind: str
    constraint: str | None


class ProposalSummary(BaseModel):
    proposal_id: uuid.UUID
    account_id: str
    drift_id: uuid.UUID | None
    state: StateName
    automation: str
    snapshot_hash: str | None
    orders: list[Order]
    est_cost_usd: DecimalStr | None
    est_tax_usd: DecimalStr | None
    has_risk: bool
    has_explanation: bool
    decision: DecisionOut | None
    failure: FailureOut | None
    correlation_id: uuid.UUID
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> ProposalSummary:
        return cls.model_validate(_common(row))


class ProposalOut(ProposalSummary):
    """One proposal with everything it was decided on: input, solution, risk and explanation."""

    snapshot: AccountSnapshot
    pre_weights: dict[str, DecimalStr]
    post_weights: dict[str, DecimalStr]
    objective: dict[str, DecimalStr]
    solver: SolverInfo | None
    risk: RiskAssessed | None
    explanation: ExplanationCreated | None
    fills: list[dict[str, Any]]
    #: The context the proposal was solved with (null: the snapshot alone) and its driver weights.
    context: OptimizerContext | None = None
    driver_weights: dict[str, DecimalStr] | None = None

    @classmethod
    def from_row(cls, row: Any) -> ProposalOut:
        payload = row.payload or {}
        return cls.model_validate({
            **_common(row), "snapshot": row.snapshot,
            "pre_weights": payload.get("pre_weights", {}),
            "post_weights": payload.get("post_weights", {}),
            "objective": payload.get("objective", {}), "solver": payload.get("solver"),
            "risk": row.risk, "explanation": row.explanation, "fills": row.fills or [],
            "context": payload.get("context"), "driver_weights": payload.get("driver_weights"),
        })


def _common(row: Any) -> dict[str, Any]:
    payload = row.payload or {}
    return {
        "proposal_id": row.proposal_id, "account_id": row.account_id, "drift_id": row.drift_id,
        "state": row.state, "automation": row.automation, "snapshot_hash": row.snapshot_hash,
        "orders": row.orders, "est_cost_usd": payload.get("est_cost_usd"),
        "est_tax_usd": payload.get("est_tax_usd"), "has_risk": row.risk is not None,
        "has_explanation": row.explanation is not None,
        "decision": None if row.decision is None else {
            "decision": row.decision, "decided_by": row.decided_by,
            "automatic": row.decision_automatic, "reason": row.decision_reason,
            "decided_at": row.decided_at},
        "failure": None if row.failure_kind is None else {
            "kind": row.failure_kind, "constraint": row.failure_constraint},
        "correlation_id": row.correlation_id, "created_at": row.created_at,
        "updated_at": row.updated_at,
    }
