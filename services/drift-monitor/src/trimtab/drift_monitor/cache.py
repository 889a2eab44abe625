"""Keeps each tenant's in-memory drift engine in step with PostgreSQL.

`sync` runs inside the tick handler's transaction before every screen: it reloads the tenant's
prices (a handful of rows, so a replica that did not see a tick on its own partitions still has
it) and every account whose `revision` differs from the one the engine holds (API writes, fills,
drift-state changes, model edits, from this process or another replica). Comparing revisions
row by row, rather than tracking a high-water mark, cannot miss a transaction that commits late.
The first sync of a tenant loads its whole book; `warm` does that for every tenant at start-up.

Only the consumer task calls `sync` (events are handled one at a time), so no lock is needed.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .book import CHUNK, model_targets_of
from .domain.engine import DriftEngine, EngineAccount
from .domain.policy import ARMED
from .models import accounts, lots, prices

log = logging.getLogger(__name__)


class BookCache:
    def __init__(self) -> None:
        self._engines: dict[str, DriftEngine] = {}

    def engine(self, tenant: str) -> DriftEngine:
        return self._engines.setdefault(tenant, DriftEngine())

    async def sync(self, s: AsyncSession, tenant: str) -> tuple[DriftEngine, dict[str, Row[Any]]]:
        """The tenant's engine, current with the database as this transaction sees it, and the
        tenant's price rows."""
        eng = self.engine(tenant)
        price_rows = {r.symbol: r for r in await s.execute(select(prices).where(prices.c.tenant_id == tenant))}
        for sym, r in price_rows.items():
            eng.set_price(sym, float(r.price_usd))
        revs: dict[str, int] = {r.account_id: r.revision for r in await s.execute(
            select(accounts.c.account_id, accounts.c.revision).where(accounts.c.tenant_id == tenant))}
        for gone in eng.account_ids() - revs.keys():
            eng.remove(gone)
        stale = sorted(a for a, rev in revs.items() if eng.revision(a) != rev)
        for i in range(0, len(stale), CHUNK):
            eng.upsert_many(await self._load(s, tenant, stale[i:i + CHUNK]))
        return eng, price_rows

    async def _load(self, s: AsyncSession, tenant: str, ids: list[str]) -> list[EngineAccount]:
        rows = (await s.execute(select(
            accounts.c.account_id, accounts.c.revision, accounts.c.cash_usd, accounts.c.band_abs,
            accounts.c.model_id, accounts.c.drift_state, accounts.c.rearmed_at,
        ).where(accounts.c.tenant_id == tenant, accounts.c.account_id.in_(ids)))).all()
        shares: dict[str, dict[str, float]] = {i: {} for i in ids}
        for r in await s.execute(
            select(lots.c.account_id, lots.c.symbol, func.sum(lots.c.shares).label("shares"))
            .where(lots.c.tenant_id == tenant, lots.c.account_id.in_(ids))
            .group_by(lots.c.account_id, lots.c.symbol)
        ):
            shares[r.account_id][r.symbol] = float(r.shares)
        targets = await model_targets_of(s, tenant, {r.model_id for r in rows})
        return [EngineAccount(
            account_id=r.account_id, revision=r.revision, cash_usd=float(r.cash_usd),
            band_abs=float(r.band_abs), shares=shares[r.account_id],
            targets={k: float(v) for k, v in targets.get(r.model_id, {}).items() if v > Decimal(0)},
            blocked=r.drift_state != ARMED,
            rearmed_at_s=r.rearmed_at.timestamp() if r.rearmed_at else None,
        ) for r in rows]

    async def warm(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        """Build every tenant's engine from the database (start-up)."""
        async with sessionmaker() as s:
            tenants = (await s.execute(select(accounts.c.tenant_id).distinct())).scalars().all()
            for t in tenants:
                eng, _ = await self.sync(s, t)
                log.info("drift engine for tenant %s: %d accounts x %d securities", t, len(eng), len(eng.symbols))
