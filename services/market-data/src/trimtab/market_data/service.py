"""Application services of market-data: record ticks (state + outbox in one transaction),
manage the securities master, and run historical replays."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal

from sqlalchemy import or_, select
from sqlalchemy.dialects.postgresql import insert

from trimtab.shared.envelope import Envelope
from trimtab.shared.errors import Invalid
from trimtab.shared.events import PriceTicked
from trimtab.shared.runtime import ServiceRuntime

from .domain import history
from .domain.reference import REFERENCE
from .models import latest_prices, price_history, securities

log = logging.getLogger(__name__)
PRODUCER = "market-data"


@dataclass(frozen=True)
class Tick:
    symbol: str
    price_usd: Decimal
    as_of: datetime


#: rows per INSERT: PostgreSQL (asyncpg) takes at most 32,767 bind parameters per statement
ROWS_PER_INSERT = 1000


#: Default of MARKET_DATA_MAX_FUTURE_S: how far ahead of this service's clock a tick may be dated
#: (the feeds' clock skew). A tick dated later would become the latest price until that time and
#: turn every real tick until then into a stale one.
DEFAULT_MAX_FUTURE_S = 300.0


def future_ticks(ticks: list[Tick], now: datetime, max_future_s: float) -> list[int]:
    """Indexes of the ticks dated more than `max_future_s` seconds after `now`."""
    limit = now + timedelta(seconds=max_future_s)
    return [i for i, t in enumerate(ticks) if t.as_of > limit]


def max_future_s(runtime: ServiceRuntime) -> float:
    return float(getattr(runtime.settings, "market_data_max_future_s", DEFAULT_MAX_FUTURE_S))


def _chunks(rows: list[dict[str, object]]) -> list[list[dict[str, object]]]:
    return [rows[i:i + ROWS_PER_INSERT] for i in range(0, len(rows), ROWS_PER_INSERT)]


def ticks_to_publish(
    ticks: list[Tick], latest: dict[str, datetime],
) -> tuple[dict[tuple[str, date], Tick], list[Tick]]:
    """(the newest tick of each (symbol, day) of the batch, the ticks to publish in order).

    Every day of the batch is published, the newest tick of each, so that a batch spanning
    several days (a catch-up after an outage, posted history) reaches the consumers as the same
    sequence of daily closes a live feed would have given, not as one jump. A day's tick older
    than the symbol's stored latest price is not published (ticks can arrive out of order and a
    stale price must not move anything downstream). Order: by `as_of`, then symbol; at equal
    `as_of` within a (symbol, day) the later tick of the batch wins."""
    by_day: dict[tuple[str, date], Tick] = {}
    for t in ticks:
        key = (t.symbol, t.as_of.date())
        cur = by_day.get(key)
        if cur is None or t.as_of >= cur.as_of:
            by_day[key] = t
    fresh = [t for t in by_day.values() if t.symbol not in latest or t.as_of >= latest[t.symbol]]
    fresh.sort(key=lambda t: (t.as_of, t.symbol))
    return by_day, fresh


async def record_ticks(
    runtime: ServiceRuntime, tenant_id: str, ticks: list[Tick], source: str,
    correlation_id: uuid.UUID | None = None,
) -> tuple[list[uuid.UUID], int, uuid.UUID]:
    """Store ticks and publish `PriceTicked` events, all under one correlation id.

    One event per (symbol, day) of the batch, the day's newest tick, in `as_of` order
    (`ticks_to_publish`); a tick older than the stored latest price is kept in history but not
    re-published. Returns (event ids, count of ticks not published, correlation id).

    Every way ticks enter (the API, replays) comes through here: a tick dated more than
    MARKET_DATA_MAX_FUTURE_S ahead refuses the whole batch (Invalid) before anything is stored.
    """
    ahead = future_ticks(ticks, datetime.now(UTC), max_future_s(runtime))
    if ahead:
        first = ticks[ahead[0]]
        raise Invalid(f"{len(ahead)} tick(s) dated in the future (more than {max_future_s(runtime):g} s "
                      f"ahead of the service's clock), e.g. {first.symbol} at {first.as_of.isoformat()}; "
                      "nothing was stored", future_ticks=ahead[:100])
    correlation_id = correlation_id or uuid.uuid4()
    symbols = sorted({t.symbol for t in ticks})
    async with runtime.uow() as uow:
        s = uow.session
        known = set(
            (await s.execute(select(securities.c.symbol).where(
                securities.c.tenant_id == tenant_id, securities.c.symbol.in_(symbols)))).scalars()
        )
        unknown = [sym for sym in symbols if sym not in known]
        if unknown:
            raise Invalid(f"unknown securities: {', '.join(unknown)}; add them with POST /v1/securities",
                          unknown_symbols=unknown)
        # A stored latest price dated beyond the future limit (stored before ticks from the future
        # were refused) would hold every real tick stale until that date: it counts as none, and
        # the next real tick replaces it.
        horizon = datetime.now(UTC) + timedelta(seconds=max_future_s(runtime))
        latest = {
            r.symbol: r.as_of
            for r in await s.execute(select(latest_prices.c.symbol, latest_prices.c.as_of).where(
                latest_prices.c.tenant_id == tenant_id, latest_prices.c.symbol.in_(symbols)))
            if r.as_of <= horizon
        }
        by_day, fresh = ticks_to_publish(ticks, latest)
        hist = insert(price_history)
        for rows in _chunks([
            {"tenant_id": tenant_id, "symbol": sym, "as_of": d, "price_usd": t.price_usd, "tick_as_of": t.as_of}
            for (sym, d), t in sorted(by_day.items())
        ]):
            await s.execute(hist.values(rows).on_conflict_do_update(
                index_elements=["tenant_id", "symbol", "as_of"],
                set_={"price_usd": hist.excluded.price_usd, "tick_as_of": hist.excluded.tick_as_of},
                # A late tick older than the one that set the day's price changes nothing.
                where=or_(price_history.c.tick_as_of.is_(None),
                          price_history.c.tick_as_of <= hist.excluded.tick_as_of),
            ))
        stale = len(ticks) - len(fresh)
        event_ids: list[uuid.UUID] = []
        if fresh:
            newest = {t.symbol: t for t in fresh}  # fresh is in as_of order: the last one wins
            for rows in _chunks([
                {"tenant_id": tenant_id, "symbol": t.symbol, "price_usd": t.price_usd,
                 "as_of": t.as_of, "source": source} for _, t in sorted(newest.items())
            ]):
                stmt = insert(latest_prices).values(rows)
                await s.execute(stmt.on_conflict_do_update(
                    index_elements=["tenant_id", "symbol"],
                    set_={"price_usd": stmt.excluded.price_usd, "as_of": stmt.excluded.as_of,
                          "source": stmt.excluded.source},
                    where=or_(latest_prices.c.as_of <= stmt.excluded.as_of, latest_prices.c.as_of > horizon),
                ))
            for t in fresh:
                env = Envelope.new(
                    PriceTicked(symbol=t.symbol, price_usd=t.price_usd, as_of=t.as_of, source=source),
                    producer=PRODUCER, tenant_id=tenant_id, correlation_id=correlation_id,
                )
                uow.publish(env, key=t.symbol)
                event_ids.append(env.event_id)
        await uow.commit()
    return event_ids, stale, correlation_id


async def load_reference_securities(runtime: ServiceRuntime, tenant_id: str, symbols: list[str] | None = None) -> int:
    """Upsert the reference securities of the shipped datasets into a tenant's master."""
    refs = [REFERENCE[s] for s in (symbols or sorted(REFERENCE)) if s in REFERENCE]
    async with runtime.uow() as uow:
        stmt = insert(securities).values([
            {"tenant_id": tenant_id, "symbol": r.symbol, "name": r.name, "asset_class": r.asset_class,
             "sector": r.sector, "substitute_group": r.substitute_group,
             "half_spread_bps": r.half_spread_bps, "commission_usd_per_share": r.commission_usd_per_share}
            for r in refs
        ])
        await uow.session.execute(stmt.on_conflict_do_nothing())
        await uow.commit()
    return len(refs)


# --------------------------------------------------------------------------- replays


@dataclass
class Replay:
    replay_id: uuid.UUID
    tenant_id: str
    dataset: str
    start: object
    end: object
    days_total: int
    status: str = "running"
    days_done: int = 0
    ticks_published: int = 0
    error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Replays:
    """Historical replays running in this process (status is lost on restart; the ticks are not)."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self.by_id: dict[uuid.UUID, Replay] = {}

    def start(self, tenant_id: str, dataset: str, start, end, symbols: list[str] | None, speed: float) -> Replay:  # type: ignore[no-untyped-def]
        try:
            days = list(history.price_days(dataset, start, end, symbols))
        except ValueError as e:
            raise Invalid(str(e)) from None
        if not days:
            raise Invalid(f"{dataset} has no trading days between {start} and {end}")
        rp = Replay(uuid.uuid4(), tenant_id, dataset, start, end, len(days))
        rp.task = asyncio.create_task(self._run(rp, days, speed))
        self.by_id[rp.replay_id] = rp
        return rp

    async def _run(self, rp: Replay, days, speed: float) -> None:  # type: ignore[no-untyped-def]
        try:
            await load_reference_securities(self.runtime, rp.tenant_id, sorted(days[0][1]))
            t0 = time.monotonic()
            for i, (day, prices) in enumerate(days):
                as_of = datetime.combine(day, dtime(21, 0), tzinfo=UTC)  # after the US close
                ticks = [Tick(sym, p, as_of) for sym, p in sorted(prices.items())]
                ids, _, _ = await record_ticks(self.runtime, rp.tenant_id, ticks, f"replay:{rp.dataset}")
                rp.days_done = i + 1
                rp.ticks_published += len(ids)
                if speed > 0:
                    delay = t0 + (i + 1) / speed - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
            rp.status = "done"
        except asyncio.CancelledError:
            rp.status = "cancelled"
            raise
        except Exception as e:
            log.exception("replay %s failed", rp.replay_id)
            rp.status, rp.error = "failed", repr(e)

    async def stop_all(self) -> None:
        for rp in self.by_id.values():
            if rp.task and not rp.task.done():
                rp.task.cancel()
