"""Thin HTTP route of the early warnings (`/v1`): the conditions of one account (`risk:read`),
tenant-scoped: another tenant's account is 404."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select

from trimtab.shared.auth import Principal, requires
from trimtab.shared.errors import NotFound

from .models import alert_states, watched_portfolios
from .schemas import AccountAlertsOut, AccountId, AlertStateOut

router = APIRouter(prefix="/v1", tags=["alerts"])
Reader = Annotated[Principal, Depends(requires("risk:read"))]


@router.get("/accounts/{account_id}/alerts", response_model=AccountAlertsOut,
            summary="The account's active early-warning conditions (all of them with ?include_cleared=true)")
async def account_alerts(account_id: AccountId, principal: Reader, request: Request,
                         include_cleared: bool = False) -> AccountAlertsOut:
    async with request.app.state.runtime.sessionmaker() as s:
        watched = (await s.execute(select(watched_portfolios).where(
            watched_portfolios.c.tenant_id == principal.tenant_id,
            watched_portfolios.c.account_id == account_id))).first()
        query = select(alert_states).where(alert_states.c.tenant_id == principal.tenant_id,
                                           alert_states.c.account_id == account_id)
        if not include_cleared:
            query = query.where(alert_states.c.active.is_(True))
        rows = (await s.execute(query.order_by(alert_states.c.condition))).all()
    if watched is None and not rows:
        raise NotFound(f"account {account_id} is not watched")
    return AccountAlertsOut(
        account_id=account_id,
        watched_units={k: Decimal(v) for k, v in watched.units.items()} if watched else {},
        watched_since=watched.since_day if watched else None,
        alerts=[AlertStateOut(condition=r.condition, active=r.active,
                              values={k: Decimal(v) for k, v in r.values.items()},
                              alert_id=r.alert_id, raised_at=r.raised_at, cleared_at=r.cleared_at)
                for r in rows])
