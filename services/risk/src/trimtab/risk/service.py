"""The risk service's in-memory models per tenant, kept equal to what the stored closes imply.

The covariance lives in memory (rebuilding it is cheap, storing it per tick is not); the closes in
`daily_closes` are the truth. `RiskModels` loads every tenant's model at start-up and keeps it
current as the tick handler records closes. A handler changes the in-memory model *before* its
transaction commits; should the transaction roll back instead, the tenant's model is marked stale
and reloaded from the table on next use, so memory never holds a close the database does not.

One process consumes all partitions of the tick topic (one consumer, see `app.py`). With several
replicas each would only see its own partitions' ticks; the model would then have to be
refreshed from the table before a read (not done yet: run the risk service as one replica).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal

from sqlalchemy import event, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from trimtab.shared.events import RiskModelInfo

from .domain.assessment import Limits
from .domain.model import MODEL_NAME, RiskModel
from .domain.portfolio import Prior
from .models import daily_closes, risk_models

log = logging.getLogger(__name__)

#: closes are stored as Numeric(18, 6); memory holds exactly what the table will give back.
PRICE_PLACES = Decimal("0.000001")
MAX_PRICE_USD = Decimal("1e12")

CloseRow = tuple[str, date, float, datetime]


def stored_price(price_usd: Decimal) -> Decimal:
    return price_usd.quantize(PRICE_PLACES, rounding=ROUND_HALF_EVEN)


def model_info(model: RiskModel) -> RiskModelInfo:
    return RiskModelInfo(
        name=MODEL_NAME, version=str(model.version), window_start=model.window_start,
        window_end=model.window_end, observations=model.observations,
        halflife_days=Decimal(repr(model.halflife_days)).quantize(Decimal("0.0001")),
    )


class RiskModels:
    """Per-tenant risk models of this process."""

    def __init__(self, decay: float, limits: Limits) -> None:
        self.decay = decay
        self.limits = limits
        self._models: dict[str, RiskModel] = {}
        self._stale: set[str] = set()

    async def load_all(self, session: AsyncSession) -> None:
        """Rebuild every tenant's model from the stored closes (start-up)."""
        versions = {r.tenant_id: r.version for r in await session.execute(
            select(risk_models.c.tenant_id, risk_models.c.version))}
        rows: dict[str, list[CloseRow]] = defaultdict(list)
        result = await session.stream(
            select(daily_closes).order_by(daily_closes.c.tenant_id, daily_closes.c.day,
                                          daily_closes.c.symbol))
        async for r in result:
            rows[r.tenant_id].append((r.symbol, r.day, float(r.close_usd), r.as_of))
        self._models = {
            t: RiskModel.from_closes(rs, self.decay, versions.get(t, 0)) for t, rs in rows.items()
        }
        self._stale.clear()
        log.info("risk models rebuilt for %d tenant(s)", len(self._models))

    async def _load(self, session: AsyncSession, tenant_id: str) -> RiskModel:
        version = (await session.execute(select(risk_models.c.version).where(
            risk_models.c.tenant_id == tenant_id))).scalar_one_or_none() or 0
        rows = [(r.symbol, r.day, float(r.close_usd), r.as_of) for r in await session.execute(
            select(daily_closes).where(daily_closes.c.tenant_id == tenant_id)
            .order_by(daily_closes.c.day, daily_closes.c.symbol))]
        model = RiskModel.from_closes(rows, self.decay, version)
        self._models[tenant_id] = model
        self._stale.discard(tenant_id)
        return model

    async def get(self, session: AsyncSession, tenant_id: str) -> RiskModel:
        model = self._models.get(tenant_id)
        if model is None or tenant_id in self._stale:
            model = await self._load(session, tenant_id)
        return model

    def watch(self, session: AsyncSession, tenant_id: str) -> None:
        """Mark the tenant's model stale if `session`'s transaction rolls back."""
        event.listen(session.sync_session, "after_rollback",
                     lambda _s: self._stale.add(tenant_id), once=True)


async def save_close(session: AsyncSession, tenant_id: str, symbol: str, day: date,
                     price_usd: Decimal, as_of: datetime) -> None:
    stmt = insert(daily_closes).values(tenant_id=tenant_id, symbol=symbol, day=day,
                                       close_usd=price_usd, as_of=as_of)
    # The last tick of a day wins, whatever order the ticks arrive in.
    await session.execute(stmt.on_conflict_do_update(
        index_elements=["tenant_id", "symbol", "day"],
        set_={"close_usd": stmt.excluded.close_usd, "as_of": stmt.excluded.as_of},
        where=stmt.excluded.as_of >= daily_closes.c.as_of,
    ))


async def save_model_info(session: AsyncSession, tenant_id: str, model: RiskModel) -> None:
    info = model_info(model)
    values = {"name": info.name, "version": model.version, "decay": Decimal(repr(model.decay)),
              "halflife_days": info.halflife_days, "window_start": info.window_start,
              "window_end": info.window_end, "observations": info.observations,
              "symbols": len(model.book.symbols())}
    stmt = insert(risk_models).values(tenant_id=tenant_id, **values)
    await session.execute(stmt.on_conflict_do_update(
        index_elements=["tenant_id"], set_={**values, "updated_at": func.now()}))


def limits_from(prior_vol_annual_pct: Decimal, prior_correlation: float, min_observations: int,
                vol_increase_pct: Decimal, concentration_limit: Decimal, shrinkage: float = 0.0,
                sector_limit: Decimal = Decimal("0.5"), history_days: int = 500,
                stale_model_days: int = 10, stale_model_if_empty: bool = False) -> Limits:
    return Limits(vol_increase_pct=vol_increase_pct, concentration_limit=concentration_limit,
                  min_observations=min_observations,
                  prior=Prior(float(prior_vol_annual_pct) / 100.0, prior_correlation),
                  shrinkage=shrinkage, sector_limit=sector_limit, history_days=history_days,
                  stale_model_days=stale_model_days, stale_model_if_empty=stale_model_if_empty)
