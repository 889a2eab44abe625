"""Thin HTTP routes of market-data (`/v1`): ticks, securities, latest prices, replays."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import StringConstraints
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from trimtab.shared.auth import Principal, requires
from trimtab.shared.errors import NotFound
from trimtab.shared.http import BULK_BODY

from .models import latest_prices, securities
from .schemas import (
    PriceOut,
    ReplayIn,
    ReplayOut,
    SecurityIn,
    SecurityList,
    SecurityOut,
    TickBatchIn,
    TickBatchOut,
)
from .service import (
    Replay,
    Tick,
    future_ticks,
    load_reference_securities,
    max_future_s,
    record_ticks,
)

router = APIRouter(prefix="/v1")
Reader = Annotated[Principal, Depends(requires("market:read"))]
Writer = Annotated[Principal, Depends(requires("market:write"))]


def _runtime(request: Request):  # type: ignore[no-untyped-def]
    return request.app.state.runtime


@router.post("/ticks", status_code=status.HTTP_202_ACCEPTED, response_model=TickBatchOut, tags=["ticks"],
             summary="Publish a batch of price ticks (one correlation id for the batch)", openapi_extra=BULK_BODY)
async def post_ticks(body: TickBatchIn, principal: Writer, request: Request) -> TickBatchOut:
    ticks = [Tick(t.symbol, t.price_usd, t.as_of) for t in body.ticks]
    # A tick from the future is bad input, like a negative price: the whole batch is a 422 naming
    # each such tick, and nothing is stored (record_ticks checks again for its other callers).
    limit_s = max_future_s(_runtime(request))
    ahead = future_ticks(ticks, datetime.now(UTC), limit_s)
    if ahead:
        raise RequestValidationError([
            {"loc": ("body", "ticks", i, "as_of"), "type": "future_as_of",
             "msg": f"as_of is more than {limit_s:g} s ahead of the service's clock (MARKET_DATA_MAX_FUTURE_S)"}
            for i in ahead])
    ids, stale, corr = await record_ticks(_runtime(request), principal.tenant_id, ticks, body.source)
    return TickBatchOut(accepted=len(ids), stale_ignored=stale, correlation_id=corr, event_ids=ids)


def _security_out(row, price=None) -> SecurityOut:  # type: ignore[no-untyped-def]
    return SecurityOut(
        symbol=row.symbol, name=row.name, asset_class=row.asset_class, sector=row.sector,
        substitute_group=row.substitute_group, half_spread_bps=row.half_spread_bps,
        commission_usd_per_share=row.commission_usd_per_share, esg_score=row.esg_score,
        price_usd=price.price_usd if price else None, price_as_of=price.as_of if price else None,
    )


@router.get("/securities", response_model=list[SecurityOut], tags=["securities"])
async def list_securities(principal: Reader, request: Request) -> list[SecurityOut]:
    rt = _runtime(request)
    async with rt.sessionmaker() as s:
        rows = (await s.execute(select(securities).where(securities.c.tenant_id == principal.tenant_id)
                                .order_by(securities.c.symbol))).all()
        prices = {p.symbol: p for p in await s.execute(
            select(latest_prices).where(latest_prices.c.tenant_id == principal.tenant_id))}
    return [_security_out(r, prices.get(r.symbol)) for r in rows]


@router.get("/securities/{symbol}", response_model=SecurityOut, tags=["securities"])
async def get_security(symbol: str, principal: Reader, request: Request) -> SecurityOut:
    rt = _runtime(request)
    async with rt.sessionmaker() as s:
        row = (await s.execute(select(securities).where(
            securities.c.tenant_id == principal.tenant_id, securities.c.symbol == symbol))).first()
        if row is None:
            raise NotFound(f"security {symbol} not found")
        price = (await s.execute(select(latest_prices).where(
            latest_prices.c.tenant_id == principal.tenant_id, latest_prices.c.symbol == symbol))).first()
    return _security_out(row, price)


@router.post("/securities", response_model=list[SecurityOut], tags=["securities"],
             summary="Create or update securities in the tenant's master", openapi_extra=BULK_BODY)
async def upsert_securities(body: SecurityList, principal: Writer, request: Request) -> list[SecurityOut]:
    rt = _runtime(request)
    if not body:
        return []
    async with rt.uow() as uow:
        stmt = insert(securities).values([{**b.model_dump(), "tenant_id": principal.tenant_id} for b in body])
        cols = {c: stmt.excluded[c] for c in SecurityIn.model_fields if c != "symbol"}
        await uow.session.execute(stmt.on_conflict_do_update(index_elements=["tenant_id", "symbol"], set_=cols))
        rows = (await uow.session.execute(select(securities).where(
            securities.c.tenant_id == principal.tenant_id,
            securities.c.symbol.in_([b.symbol for b in body])).order_by(securities.c.symbol))).all()
        await uow.commit()
    return [_security_out(r) for r in rows]


@router.post("/securities/reference", tags=["securities"],
             summary="Load the reference securities of the shipped real datasets")
async def load_reference(principal: Writer, request: Request) -> dict[str, int]:
    return {"loaded": await load_reference_securities(_runtime(request), principal.tenant_id)}


#: A symbol in a query, as the master spells them (`make fuzz`: any text was looked up and gave []).
QuerySymbol = Annotated[str, StringConstraints(min_length=1, max_length=16, pattern=r"^[A-Z0-9.\-]+$")]


@router.get("/prices/latest", response_model=list[PriceOut], tags=["prices"])
async def latest(principal: Reader, request: Request,
                 symbols: Annotated[list[QuerySymbol] | None, Query(max_length=1000)] = None) -> list[PriceOut]:
    rt = _runtime(request)
    q = select(latest_prices).where(latest_prices.c.tenant_id == principal.tenant_id)
    if symbols:
        q = q.where(latest_prices.c.symbol.in_(symbols))
    async with rt.sessionmaker() as s:
        rows = (await s.execute(q.order_by(latest_prices.c.symbol))).all()
    return [PriceOut(symbol=r.symbol, price_usd=r.price_usd, as_of=r.as_of, source=r.source) for r in rows]


def _replay_out(rp: Replay) -> ReplayOut:
    return ReplayOut(replay_id=rp.replay_id, dataset=rp.dataset, start=rp.start, end=rp.end,  # type: ignore[arg-type]
                     status=rp.status, days_total=rp.days_total, days_done=rp.days_done,  # type: ignore[arg-type]
                     ticks_published=rp.ticks_published, error=rp.error)


@router.post("/replays", status_code=status.HTTP_202_ACCEPTED, response_model=ReplayOut, tags=["replays"],
             summary="Replay real daily prices from the skfolio datasets at a chosen speed")
async def start_replay(body: ReplayIn, principal: Writer, request: Request) -> ReplayOut:
    rp = request.app.state.replays.start(principal.tenant_id, body.dataset, body.start, body.end,
                                         body.symbols, body.speed_days_per_s)
    return _replay_out(rp)


@router.get("/replays/{replay_id}", response_model=ReplayOut, tags=["replays"])
async def get_replay(replay_id: uuid.UUID, principal: Reader, request: Request) -> ReplayOut:
    rp = request.app.state.replays.by_id.get(replay_id)
    if rp is None or rp.tenant_id != principal.tenant_id:
        raise NotFound(f"replay {replay_id} not found")
    return _replay_out(rp)
