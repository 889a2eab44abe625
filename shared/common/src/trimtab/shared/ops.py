"""Operator endpoints every service serves: its dead letters, and resolving a parked key.

A handler failure that exhausts its attempts sends the event to `<topic>.dlq`, records a row in the
service's `dead_letters` and *parks* the key: later events with that key go to the DLQ too, so
nothing is applied past the gap (docs/operations.md). These routes let an operator see what is
dead-lettered and, once the cause is fixed, resolve a key: its rows get `resolved_at` and the
running consumers stop parking it at once (no restart). Replaying the dead-lettered messages, in
order, stays the operator's step (the runbook's script), so nothing is re-applied by accident.

The scopes are platform-operator scopes (`ops:read`, `ops:write`): dead letters belong to the
service, not to a tenant.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select, update

from .auth import Principal, requires
from .errors import NotFound

router = APIRouter(prefix="/v1/ops", tags=["operations"])
OpsReader = Annotated[Principal, Depends(requires("ops:read"))]
OpsWriter = Annotated[Principal, Depends(requires("ops:write"))]


class DeadLetterOut(BaseModel):
    id: int
    consumer: str
    topic: str
    partition: int
    offset: int
    key: str | None
    tenant_id: str | None = Field(description="the event's tenant (null: undecodable, or recorded "
                                              "before dead letters carried it)")
    event_id: Any | None
    error: str
    created_at: datetime
    resolved_at: datetime | None


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    consumer: str = Field(min_length=1, max_length=100)
    topic: str = Field(min_length=1, max_length=200)
    key: str = Field(min_length=1, max_length=200)
    tenant_id: str | None = Field(default=None, min_length=1, max_length=64,
                                  description="resolve the key for this tenant only; omitted: for every tenant")


class ResolveOut(BaseModel):
    consumer: str
    topic: str
    key: str
    tenant_id: str | None = None
    resolved: int = Field(description="dead letters of the key marked resolved")
    unparked: bool = Field(description="a running consumer of this service had the key parked")
    untenanted_left: int = Field(
        default=0, description="unresolved dead letters of the key recorded before dead letters carried "
                               "their tenant: they park the key for every tenant (resolve without tenant_id)")


@router.get("/dead-letters", response_model=list[DeadLetterOut],
            summary="This service's dead letters, newest first (unresolved only by default)")
async def dead_letters(
    principal: OpsReader, request: Request,
    consumer: Annotated[str | None, Query(max_length=100)] = None,
    include_resolved: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeadLetterOut]:
    runtime = request.app.state.runtime
    d = runtime.infra.dead_letters
    q = select(d)
    if consumer is not None:
        q = q.where(d.c.consumer == consumer)
    if not include_resolved:
        q = q.where(d.c.resolved_at.is_(None))
    q = q.order_by(d.c.id.desc()).limit(limit)
    async with runtime.sessionmaker() as s:
        rows = (await s.execute(q)).all()
    return [DeadLetterOut.model_validate(r._mapping) for r in rows]


@router.post("/dead-letters/resolve", response_model=ResolveOut,
             summary="Resolve a parked key: its dead letters are marked resolved and the running "
                     "consumers apply its next events again (replay the dead letters first)")
async def resolve(body: ResolveIn, principal: OpsWriter, request: Request) -> ResolveOut:
    runtime = request.app.state.runtime
    d = runtime.infra.dead_letters
    async with runtime.sessionmaker() as s, s.begin():
        which = update(d).where(d.c.consumer == body.consumer, d.c.topic == body.topic, d.c.key == body.key,
                                d.c.resolved_at.is_(None))
        if body.tenant_id is not None:
            which = which.where(d.c.tenant_id == body.tenant_id)
        result = await s.execute(which.values(resolved_at=func.now()).returning(d.c.id))
        resolved = len(result.all())
        untenanted = 0
        if body.tenant_id is not None:
            untenanted = (await s.execute(select(func.count()).select_from(d).where(
                d.c.consumer == body.consumer, d.c.topic == body.topic, d.c.key == body.key,
                d.c.resolved_at.is_(None), d.c.tenant_id.is_(None)))).scalar_one()
    unparked = any([c.unpark(body.topic, body.key, body.tenant_id)
                    for c in runtime.consumers if c.name == body.consumer])
    if not resolved and not unparked:
        whose = f" of tenant {body.tenant_id!r}" if body.tenant_id is not None else ""
        also = (f"; {untenanted} recorded without a tenant (before dead letters carried it) park the key "
                "for every tenant: resolve without tenant_id") if untenanted else ""
        raise NotFound(f"no unresolved dead letter of consumer {body.consumer!r} for key {body.key!r}{whose} "
                       f"on {body.topic!r}{also}")
    return ResolveOut(consumer=body.consumer, topic=body.topic, key=body.key, tenant_id=body.tenant_id,
                      resolved=resolved, unparked=unparked, untenanted_left=untenanted)
