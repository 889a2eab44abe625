"""Event handler of the explainer: `RebalanceProposed` -> stored explanation + `ExplanationCreated`.

One unit of work per proposal: the explanation row, the outgoing event and the consumed-event
marker (written by the shared consumer) commit together; the handler never commits.

Idempotency: the consumer drops a redelivered event by its id; the row is also unique per
(tenant, proposal_id) and the explanation id is derived from them, so a proposal re-published
under a new event id is explained once and announced once. A recorded failure is retried when
the proposal arrives again (a fixed deployment can then explain it).

Risk figures: `RiskAssessed` events are kept (`risk_assessments`, consumer group
`explainer-risk`, so that an explanation waiting for its assessment never waits on its own
consumer). The narratives quote the proposal's assessment when it is known; for a proposal
published less than `EXPLAINER_RISK_WAIT_MS` ago the handler waits up to then for it (the risk
service answers in milliseconds; a backlog's proposals are older and find theirs stored, or go
without: the wait never holds a backlog back). `ExplanationCreated.risk_event_id` names it.
The stored assessments are deleted `EXPLAINER_RISK_RETENTION_H` after they arrived (a sweep
every `EXPLAINER_RISK_PURGE_S`): the one a narrative quoted stays in the audit record.

What is refused (recorded as a failure, nothing published): a snapshot whose canonical hash is
not the one the proposal claims (the explanation would be of something else than what was
proposed), a snapshot of another account, and anything the library refuses (`RebalanceError`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert

from trimtab.shared.canonical import canonical_hash
from trimtab.shared.envelope import Envelope
from trimtab.shared.errors import PermanentEventError
from trimtab.shared.events import RebalanceProposed, RiskAssessed
from trimtab.shared.outbox import UnitOfWork

from .engine import ExplainEngine, Failure
from .models import explanations, risk_assessments

log = logging.getLogger(__name__)

PRODUCER = "explainer"
#: explanation ids derive from (tenant, proposal): one proposal, one explanation id, ever
EXPLANATION_NAMESPACE = uuid.UUID("0c6f1f0e-52a4-4b8e-9d3c-7e1a2b9f4d61")


def explanation_id_for(tenant_id: str, proposal_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(EXPLANATION_NAMESPACE, f"{tenant_id}:{proposal_id}")


def _version() -> str:
    from trimtab.rebalance.version import OPTIMIZER_VERSION

    return OPTIMIZER_VERSION


async def on_risk_assessed(env: Envelope, uow: UnitOfWork) -> None:
    """Keep a proposal's risk assessment for its explanation (the first one wins)."""
    try:
        r = env.parse(RiskAssessed)
    except ValidationError as e:
        raise PermanentEventError(f"{env.event_type} {env.event_id} is invalid: {e}") from None
    stmt = insert(risk_assessments).values(tenant_id=env.tenant_id, proposal_id=r.proposal_id,
                                           event_id=env.event_id, payload=r.model_dump(mode="json"))
    await uow.session.execute(stmt.on_conflict_do_nothing(index_elements=["tenant_id", "proposal_id"]))


async def purge_risk_assessments(uow: UnitOfWork, older_than_s: float, *, limit: int = 10_000) -> int:
    """Delete stored risk assessments received more than `older_than_s` ago (at most `limit`);
    returns how many. A narrative quotes its proposal's assessment within seconds of the
    proposal; the quoted one stays in the audit record (`ExplanationCreated.risk_event_id`
    names it), so the explainer's copy is only a cache of a few minutes' use."""
    ra = risk_assessments.c
    oldest = (select(ra.tenant_id, ra.proposal_id)
              .where(ra.received_at < func.now() - timedelta(seconds=older_than_s))
              .order_by(ra.received_at).limit(limit).cte("oldest"))
    result = await uow.session.execute(
        delete(risk_assessments).where(tuple_(ra.tenant_id, ra.proposal_id).in_(
            select(oldest.c.tenant_id, oldest.c.proposal_id))).returning(ra.proposal_id))
    return len(result.all())


async def risk_for(uow: UnitOfWork, env: Envelope, p: RebalanceProposed, wait_s: float
                   ) -> tuple[uuid.UUID, dict[str, Any]] | None:
    """(event id, payload) of the proposal's stored `RiskAssessed`, waiting until `wait_s` after
    the proposal was published for one to arrive; None if none did (or it names another account)."""
    q = select(risk_assessments.c.event_id, risk_assessments.c.payload).where(
        risk_assessments.c.tenant_id == env.tenant_id, risk_assessments.c.proposal_id == p.proposal_id)
    published = env.occurred_at if env.occurred_at.tzinfo else env.occurred_at.replace(tzinfo=UTC)
    # On the producer's clock, and never longer than `wait_s` on ours: a skewed clock or a
    # timestamp in the future must not hold the partition.
    deadline = min(published.timestamp(), datetime.now(UTC).timestamp()) + wait_s
    while True:
        row = (await uow.session.execute(q)).first()  # read committed: each query sees new rows
        if row is not None:
            if row.payload.get("account_id") != p.account_id:
                log.warning("risk assessment %s of proposal %s names account %s, not %s: not quoted",
                            row.event_id, p.proposal_id, row.payload.get("account_id"), p.account_id)
                return None
            return row.event_id, dict(row.payload)
        left = deadline - datetime.now(UTC).timestamp()
        if left <= 0:
            return None
        await asyncio.sleep(min(0.05, left))


async def on_rebalance_proposed(env: Envelope, uow: UnitOfWork, *, engine: ExplainEngine,
                                risk_wait_s: float = 0.0) -> None:
    try:
        p = env.parse(RebalanceProposed)
    except ValidationError as e:
        raise PermanentEventError(f"{env.event_type} {env.event_id} is invalid: {e}") from None
    existing = (await uow.session.execute(
        select(explanations.c.status).where(explanations.c.tenant_id == env.tenant_id,
                                            explanations.c.proposal_id == p.proposal_id)
        .with_for_update())).first()
    if existing is not None and existing.status == "created":
        log.info("proposal %s is already explained", p.proposal_id)
        return
    explanation_id = explanation_id_for(env.tenant_id, p.proposal_id)
    base = {
        "tenant_id": env.tenant_id, "proposal_id": p.proposal_id, "explanation_id": explanation_id,
        "account_id": p.account_id, "snapshot_hash": p.snapshot_hash[:128],
        "optimizer_version": _version(), "proposal_optimizer_version": p.solver.optimizer_version[:64],
        "correlation_id": env.correlation_id, "causation_id": env.event_id,
    }
    if p.snapshot.account_id != p.account_id:
        await _save(uow, base, failure=Failure(
            "invalid_proposal", f"snapshot is of {p.snapshot.account_id}, not {p.account_id}"))
        return
    if canonical_hash(p.snapshot) != p.snapshot_hash:
        await _save(uow, base, failure=Failure(
            "snapshot_mismatch", "the snapshot's canonical hash is not the proposal's snapshot_hash"))
        return
    risk = await risk_for(uow, env, p, risk_wait_s)
    outcome = await engine.explain(p, explanation_id=explanation_id, risk=risk[1] if risk else None)
    if outcome.failure is not None:
        log.warning("proposal %s: no explanation: %s: %s", p.proposal_id, outcome.failure.kind,
                    outcome.failure.detail)
        await _save(uow, base, failure=outcome.failure)
        return
    assert outcome.payload is not None
    payload = outcome.payload if risk is None else outcome.payload.model_copy(
        update={"risk_event_id": risk[0]})  # the narratives quote it: name it
    out = env.caused(payload, producer=PRODUCER)
    if await _save(uow, base, payload=payload.model_dump(mode="json"), details=outcome.details,
                   resolves=payload.resolves, elapsed_ms=outcome.elapsed_ms, event_id=out.event_id):
        uow.publish(out, key=p.account_id)
    else:  # a copy of this proposal under another event id was explained meanwhile: announced once
        log.info("proposal %s was explained meanwhile; this explanation is not announced", p.proposal_id)


async def _save(uow: UnitOfWork, base: dict[str, Any], *, failure: Failure | None = None,
                payload: dict[str, Any] | None = None, details: dict[str, Any] | None = None,
                resolves: int | None = None, elapsed_ms: float | None = None,
                event_id: uuid.UUID | None = None) -> bool:
    """Insert the row, or replace a recorded failure (a created explanation is never replaced);
    False when nothing was written (a created explanation was there)."""
    values = {
        **base,
        "status": "failed" if failure else "created",
        "payload": payload, "details": details, "resolves": resolves,
        "elapsed_ms": None if elapsed_ms is None else Decimal(f"{elapsed_ms:.3f}"),
        "event_id": event_id,
        "error_kind": failure.kind if failure else None,
        "error": failure.detail if failure else None,
    }
    stmt = insert(explanations).values(**values)
    written = await uow.session.execute(stmt.on_conflict_do_update(
        index_elements=["tenant_id", "proposal_id"],
        set_={k: stmt.excluded[k] for k in values if k not in ("tenant_id", "proposal_id")},
        where=explanations.c.status == "failed",
    ).returning(explanations.c.proposal_id))
    return written.first() is not None

