"""Event handlers of the optimizer: one function per consumed event, one unit of work each.

The shared consumer has already recorded the event id when a handler runs (a redelivery never
gets here) and commits after it returns: the proposal's state, the events it emits and that
marker commit together. Handlers never commit.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from trimtab.shared.envelope import Envelope
from trimtab.shared.errors import PermanentEventError
from trimtab.shared.events import (
    DriftDetected,
    ExplanationCreated,
    RiskAssessed,
    TradesExecuted,
)
from trimtab.shared.outbox import UnitOfWork

from . import proposals
from .engine import Engine

log = logging.getLogger(__name__)


def _parse(env: Envelope, model):  # type: ignore[no-untyped-def]
    try:
        return env.parse(model)
    except ValidationError as e:
        # Bad content never becomes good by retrying: dead-letter it at once.
        raise PermanentEventError(f"{env.event_type} {env.event_id} is invalid: {e}") from None


async def on_drift_detected(env: Envelope, uow: UnitOfWork, *, engine: Engine) -> None:
    """Solve the drifted account's snapshot and store + publish the proposal (or its failure)."""
    drift: DriftDetected = _parse(env, DriftDetected)
    if drift.snapshot.account_id != drift.account_id:
        raise PermanentEventError(
            f"drift {drift.drift_id}: snapshot is of {drift.snapshot.account_id}, not {drift.account_id}")
    if await proposals.find_by_drift(uow, env.tenant_id, drift.drift_id) is not None:
        # The same drift sent again under a new event id: its proposal exists, solve nothing.
        log.info("drift %s already has a proposal", drift.drift_id)
        return
    proposal_id = proposals.proposal_id_for(env.tenant_id, drift.drift_id)
    outcome = await engine.propose(drift.snapshot, proposal_id=proposal_id, drift_id=drift.drift_id)
    if outcome.failure is not None:
        log.warning("drift %s: no proposal: %s", drift.drift_id, outcome.failure.reason)
        await proposals.record_failure(uow, env, drift, proposal_id, outcome.failure)
        return
    assert outcome.proposal is not None
    await proposals.record_proposal(uow, env, drift, outcome.proposal)


async def on_risk_assessed(env: Envelope, uow: UnitOfWork) -> None:
    risk: RiskAssessed = _parse(env, RiskAssessed)
    await _attach(env, uow, risk.proposal_id, "risk", risk.model_dump(mode="json"))


async def on_explanation_created(env: Envelope, uow: UnitOfWork) -> None:
    explanation: ExplanationCreated = _parse(env, ExplanationCreated)
    await _attach(env, uow, explanation.proposal_id, "explanation", explanation.model_dump(mode="json"),
                  snapshot_hash=explanation.snapshot_hash)


async def _attach(env: Envelope, uow: UnitOfWork, proposal_id, part, payload,  # type: ignore[no-untyped-def]
                  snapshot_hash: str | None = None) -> None:
    row = await proposals.load_for_update(uow, env.tenant_id, proposal_id)
    # Unknown (another tenant's id, another deployment's proposal) or about something else
    # than what was proposed: such a part must not make a proposal ready. Dead-lettering would
    # park every later event of the account, so it is logged and dropped instead.
    if row is None:
        log.warning("%s %s for unknown proposal %s (tenant %s): ignored",
                    env.event_type, env.event_id, proposal_id, env.tenant_id)
        return
    if payload["account_id"] != row.account_id or (
            snapshot_hash is not None and snapshot_hash != row.snapshot_hash):
        log.warning("%s %s does not match proposal %s (account %s, snapshot %s): ignored",
                    env.event_type, env.event_id, proposal_id, row.account_id, row.snapshot_hash)
        return
    await proposals.attach_part(uow, env, row, part, payload)


async def on_trades_executed(env: Envelope, uow: UnitOfWork) -> None:
    executed: TradesExecuted = _parse(env, TradesExecuted)
    if executed.proposal_id is None:
        return  # fills not from a proposal (e.g. a manual trade): the drift monitor's business
    row = await proposals.load_for_update(uow, env.tenant_id, executed.proposal_id)
    if row is None:
        log.warning("fills %s for unknown proposal %s: ignored", executed.execution_id, executed.proposal_id)
        return
    await proposals.record_fills(uow, row, executed.execution_id, executed.fills)
