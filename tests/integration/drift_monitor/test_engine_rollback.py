"""A batch of ticks shares one transaction; when it rolls back, the in-memory drift engine must
not keep what that transaction wrote. Here the first tick fires the account (its row goes to
"pending", revision 2, uncommitted), the second tick's sync reads that row, and the batch fails:
the ticks handled again one by one must fire the account, and the engine must agree with the
database afterwards (before the fix it held the uncommitted revision and stayed blocked)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, insert, select

from tests.integration.drift_monitor.test_drift_monitor import svc  # noqa: F401  (module fixture)
from trimtab.drift_monitor.book import insert_accounts, upsert_model
from trimtab.drift_monitor.cache import BookCache
from trimtab.drift_monitor.handlers import DriftHandlers
from trimtab.drift_monitor.models import accounts, drift_candidates, infra, prices
from trimtab.drift_monitor.schemas import AccountIn
from trimtab.shared.envelope import Envelope
from trimtab.shared.events import PriceTicked
from trimtab.shared.outbox import UnitOfWork

T0 = datetime(2024, 1, 2, 21, 0, tzinfo=UTC)


def tick(t: str, symbol: str, price: str, minutes: int) -> Envelope:
    return Envelope.new(PriceTicked(symbol=symbol, price_usd=Decimal(price), as_of=T0 + timedelta(minutes=minutes)),
                        producer="test", tenant_id=t)


async def one_account_tenant(sm, *, quiet_s: float) -> tuple[str, BookCache, DriftHandlers]:  # type: ignore[no-untyped-def]
    """A fresh tenant with account A1 on a 50/50 model (10 AAA, 10 BBB at $100), and drift
    handlers (quiet interval `quiet_s`) whose own engine is built from it."""
    t = f"rb-{uuid.uuid4().hex[:8]}"
    lots = [{"lot_id": f"L{k}", "symbol": s, "shares": "10", "cost_basis_usd_per_share": "1",
             "acquired_on": "2020-01-01"} for k, s in enumerate(("AAA", "BBB"))]
    async with sm() as s, s.begin():
        await upsert_model(s, t, "core", "Core", {"AAA": Decimal("0.5"), "BBB": Decimal("0.5")})
        await insert_accounts(s, t, [AccountIn.model_validate(
            {"account_id": "A1", "model_id": "core", "cash_usd": "0", "lots": lots})])
        for sym in ("AAA", "BBB"):
            await s.execute(insert(prices).values(tenant_id=t, symbol=sym, price_usd=Decimal(100), as_of=T0))
    cache = BookCache()
    async with sm() as s:
        await cache.rebuild(s, t)
        await s.rollback()
    return t, cache, DriftHandlers(cache, quiet_s)


async def test_a_rolled_back_batch_leaves_nothing_in_the_engine(svc):  # noqa: F811
    sm = svc[0].state.runtime.sessionmaker
    t, cache, handlers = await one_account_tenant(sm, quiet_s=0)
    e1, e2 = tick(t, "AAA", "200", 1), tick(t, "BBB", "100", 2)

    # What EventConsumer._try_batch does with the run [e1, e2] when its transaction fails.
    try:
        async with UnitOfWork(sm, infra) as uow:
            await uow.mark_processed_many("drift-monitor-test", [e1.event_id, e2.event_id])
            await handlers.on_price_ticked(e1, uow)  # fires A1: pending, revision 2
            await handlers.on_price_ticked(e2, uow)  # its sync reads A1's uncommitted row
            assert cache.engine(t).revision("A1") == 2
            raise RuntimeError("deadlock detected")  # the batch fails before its commit
    except RuntimeError:
        pass

    for e in (e1, e2):  # handled again one by one
        async with UnitOfWork(sm, infra) as uow:
            assert await uow.mark_processed("drift-monitor-test", e.event_id)
            await handlers.on_price_ticked(e, uow)
            await uow.commit()
    async with sm() as s:
        state, revision = (await s.execute(select(accounts.c.drift_state, accounts.c.revision).where(
            accounts.c.tenant_id == t, accounts.c.account_id == "A1"))).one()
        drifts = (await s.execute(select(func.count()).select_from(infra.outbox).where(
            infra.outbox.c.topic == "portfolio.drift.v1", infra.outbox.c.tenant_id == t))).scalar_one()
    assert drifts == 1, "the account fires once the ticks are handled again"
    assert (state, revision) == ("pending", 2)
    # The engine's next sync (another transaction) holds the committed state.
    async with sm() as s:
        await cache.sync(s, t)
        await s.rollback()
    assert cache.engine(t).revision("A1") == 2


async def test_a_price_move_expiry_is_rechecked_at_once_a_rejection_waits(svc):  # noqa: F811
    """A proposal the optimizer expired because its prices moved was nobody's refusal: the account
    is re-armed without the quiet interval and checked at once, so a fresh drift (at the prices
    known now) follows without another tick. A rejection keeps the quiet interval."""
    from trimtab.shared.events import RebalanceDecided

    app = svc[0]
    sm = app.state.runtime.sessionmaker
    for decision, decided_by, drifts_after in (("expired", "optimizer:price-move", 2),
                                               ("rejected", "advisor@firm", 1)):
        t, _, handlers = await one_account_tenant(sm, quiet_s=3600)  # an hour's quiet after a refusal
        async with UnitOfWork(sm, infra) as uow:
            await handlers.on_price_ticked(tick(t, "AAA", "200", 1), uow)  # fires A1
            await uow.commit()
        decided = Envelope.new(RebalanceDecided(proposal_id=uuid.uuid4(), account_id="A1", decision=decision,
                                                decided_by=decided_by, automatic=True,
                                                decided_at=T0 + timedelta(minutes=2)),
                               producer="optimizer", tenant_id=t)
        async with UnitOfWork(sm, infra) as uow:
            await handlers.on_rebalance_decided(decided, uow)
            await uow.commit()
        async with sm() as s:
            n = (await s.execute(select(func.count()).select_from(infra.outbox).where(
                infra.outbox.c.topic == "portfolio.drift.v1", infra.outbox.c.tenant_id == t))).scalar_one()
            state = (await s.execute(select(accounts.c.drift_state).where(
                accounts.c.tenant_id == t, accounts.c.account_id == "A1"))).scalar_one()
        assert (n, state) == (drifts_after, "pending" if drifts_after == 2 else "armed"), decision


async def _drift_payloads(sm, t: str) -> list[dict]:  # type: ignore[no-untyped-def]
    async with sm() as s:
        rows = (await s.execute(select(infra.outbox.c.envelope).where(
            infra.outbox.c.topic == "portfolio.drift.v1", infra.outbox.c.tenant_id == t))).scalars().all()
    return [Envelope.from_bytes(bytes(r)).payload for r in rows]


async def test_a_tick_batch_settles_before_its_accounts_are_decided(svc):  # noqa: F811
    """The ticks of one batch arrive one by one. Decided on the first (AAA doubles), A1 would be
    priced at BBB's old price, which the second tick (BBB +50 %) replaces a moment later:
    a proposal the optimizer expires at once. With a settle window, A1 is decided once, after
    both, at both new prices; its drift continues the last tick that made it a candidate.
    Without the window (0), the first tick fires with BBB's old price: the case this is for."""
    sm = svc[0].state.runtime.sessionmaker
    for settle_s, expected_bbb in ((0.3, "150"), (0.0, "100")):
        t, cache, _ = await one_account_tenant(sm, quiet_s=0)
        handlers = DriftHandlers(cache, 0, settle_s=settle_s, settle_max_s=5, uow=lambda: UnitOfWork(sm, infra))
        e1, e2 = tick(t, "AAA", "200", 1), tick(t, "BBB", "150", 1)  # still 57/43 against 50/50
        for e in (e1, e2):
            async with UnitOfWork(sm, infra) as uow:
                await handlers.on_price_ticked(e, uow)
                await uow.commit()
        await handlers.settled()
        drifts = await _drift_payloads(sm, t)
        assert len(drifts) == 1, (settle_s, drifts)
        px = {sec["symbol"]: Decimal(sec["price_usd"]) for sec in drifts[0]["snapshot"]["securities"]}
        assert px == {"AAA": Decimal("200"), "BBB": Decimal(expected_bbb)}, settle_s
        if settle_s:
            assert handlers.settled_fired == 1


async def test_a_rolled_back_tick_defers_nothing_and_a_failed_decision_is_retried(svc):  # noqa: F811
    sm = svc[0].state.runtime.sessionmaker
    t, cache, _ = await one_account_tenant(sm, quiet_s=0)
    calls = {"n": 0}

    def flaky_uow() -> UnitOfWork:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("database unreachable")  # the first decision attempt fails
        return UnitOfWork(sm, infra)

    handlers = DriftHandlers(cache, 0, settle_s=0.05, settle_max_s=1, uow=flaky_uow)
    e1 = tick(t, "AAA", "200", 1)
    try:
        async with UnitOfWork(sm, infra) as uow:
            await handlers.on_price_ticked(e1, uow)
            raise RuntimeError("the tick's transaction fails")
    except RuntimeError:
        pass
    await handlers.settled()
    assert calls["n"] == 0 and await _drift_payloads(sm, t) == [], "nothing committed, nothing deferred"
    async with UnitOfWork(sm, infra) as uow:
        await handlers.on_price_ticked(e1, uow)
        await uow.commit()
    await handlers.settled()
    assert calls["n"] == 2, "the failed decision was tried again"
    assert len(await _drift_payloads(sm, t)) == 1


async def test_the_start_up_screen_decides_every_breach(svc):  # noqa: F811
    """A breach the service did not see (down, or stopped inside a settle window) is decided
    when it starts: the price is in the database, the engine is built from it."""
    sm = svc[0].state.runtime.sessionmaker
    t, _, _ = await one_account_tenant(sm, quiet_s=0)
    async with sm() as s, s.begin():
        await s.execute(prices.update().where(prices.c.tenant_id == t, prices.c.symbol == "AAA")
                        .values(price_usd=Decimal(300), as_of=T0 + timedelta(minutes=5)))
    cache = BookCache()
    async with sm() as s:
        await cache.rebuild(s, t)
        await s.rollback()
    handlers = DriftHandlers(cache, 0, settle_s=0.3, uow=lambda: UnitOfWork(sm, infra))
    assert await handlers.screen_all() == 1
    drifts = await _drift_payloads(sm, t)
    assert len(drifts) == 1 and drifts[0]["snapshot"]["as_of"].startswith("2024-01-02T21:05")
    # The account is pending now: a second screen (the engine has not seen that yet) decides
    # it again from the database and fires nothing.
    assert await handlers.screen_all() == 0
    assert len(await _drift_payloads(sm, t)) == 1


async def test_a_tick_without_candidates_keeps_the_window_open(svc):  # noqa: F811
    """AAA makes A1 a candidate, ZZZ (held by nobody) arrives 0.7 s later, BBB (putting A1 back
    in balance) 1.4 s after AAA: the window (1 s) must still be open when BBB arrives, since ZZZ
    was a tick of the batch too; A1 is then decided at both prices and does not fire."""
    import asyncio

    sm = svc[0].state.runtime.sessionmaker
    t, cache, _ = await one_account_tenant(sm, quiet_s=0)
    async with sm() as s, s.begin():
        await s.execute(insert(prices).values(tenant_id=t, symbol="ZZZ", price_usd=Decimal(5), as_of=T0))
    handlers = DriftHandlers(cache, 0, settle_s=1.0, settle_max_s=5, uow=lambda: UnitOfWork(sm, infra))
    for e in (tick(t, "AAA", "200", 1), tick(t, "ZZZ", "6", 1), tick(t, "BBB", "200", 1)):
        async with UnitOfWork(sm, infra) as uow:
            await handlers.on_price_ticked(e, uow)
            await uow.commit()
        await asyncio.sleep(0.7)
    await handlers.settled()
    assert await _drift_payloads(sm, t) == [], "decided before the batch's last tick"
    async with sm() as s:
        left = (await s.execute(select(func.count()).select_from(drift_candidates).where(
            drift_candidates.c.tenant_id == t))).scalar_one()
    assert left == 0, "the decided candidate is no longer stored"


async def test_a_window_lost_with_its_process_is_decided_by_the_sweep(svc):  # noqa: F811
    """The candidates are stored with the tick. A process that stops inside the window (here:
    stop() cancels it; a crash or a commit whose reply was lost leaves the same rows) leaves
    them in drift_candidates; the next start's sweep (another replica's, or this one's start-up
    screen) decides them, caused by the tick that made them candidates."""
    sm = svc[0].state.runtime.sessionmaker
    t, cache, _ = await one_account_tenant(sm, quiet_s=0)
    first = DriftHandlers(cache, 0, settle_s=30, settle_max_s=60, uow=lambda: UnitOfWork(sm, infra))
    e1 = tick(t, "AAA", "200", 1)
    async with UnitOfWork(sm, infra) as uow:
        await first.on_price_ticked(e1, uow)
        await uow.commit()
    await first.stop()  # the window is gone, nothing decided
    assert await _drift_payloads(sm, t) == []
    second = DriftHandlers(cache, 0, settle_s=0.3, uow=lambda: UnitOfWork(sm, infra))
    assert await second.sweep_once(older_than_s=0) >= 1
    async with sm() as s:
        rows = (await s.execute(select(infra.outbox.c.envelope).where(
            infra.outbox.c.topic == "portfolio.drift.v1", infra.outbox.c.tenant_id == t))).scalars().all()
    [drift] = [Envelope.from_bytes(bytes(r)) for r in rows]
    assert drift.causation_id == e1.event_id and drift.correlation_id == e1.correlation_id
    assert await second.sweep_once(older_than_s=0) == 0  # decided once


async def test_a_candidate_that_cannot_be_decided_is_given_up_as_a_dead_letter(svc):  # noqa: F811
    """A stored candidate whose decision fails (here: its stored cause is not an envelope) holds
    back no other account, counts its failures, and after `max_attempts` is deleted and recorded
    as a dead letter instead of being retried by every sweep forever."""
    sm = svc[0].state.runtime.sessionmaker
    t, cache, _ = await one_account_tenant(sm, quiet_s=0)
    handlers = DriftHandlers(cache, 0, settle_s=30, settle_max_s=60, uow=lambda: UnitOfWork(sm, infra),
                             max_attempts=2, dead_letters=infra.dead_letters)
    try:
        async with UnitOfWork(sm, infra) as uow:
            await handlers.on_price_ticked(tick(t, "AAA", "200", 1), uow)
            await uow.commit()
        async with sm() as s, s.begin():
            await s.execute(insert(drift_candidates).values(tenant_id=t, account_id="GHOST", tick_as_of=T0,
                                                            cause=b"not an envelope"))

        async def ghost() -> tuple[int, str | None] | None:
            async with sm() as s:
                row = (await s.execute(select(drift_candidates.c.attempts, drift_candidates.c.last_error).where(
                    drift_candidates.c.tenant_id == t, drift_candidates.c.account_id == "GHOST"))).first()
            return None if row is None else (row.attempts, row.last_error)

        async def dead() -> list:  # type: ignore[type-arg]
            async with sm() as s:
                return (await s.execute(select(infra.dead_letters).where(
                    infra.dead_letters.c.consumer == "drift-monitor.settle",
                    infra.dead_letters.c.key == f"{t}:GHOST"))).all()

        assert await handlers.decide_stored(t, ["A1", "GHOST"]) == ["A1"], "the good account is decided"
        attempts, error = await ghost() or (None, None)
        assert attempts == 1 and error is not None and "Error" in error
        assert await dead() == []
        await handlers._failed(t, "GHOST", ConnectionError("database away"))  # noqa: SLF001
        assert (await ghost() or (None,))[0] == 1, "a transient failure is not the candidate's: not counted"
        assert await handlers.decide_stored(t, ["GHOST"]) == []
        assert await ghost() is None, "given up after max_attempts"
        [row] = await dead()
        assert row.topic == "market.ticks.v1" and row.partition == -1 and row.event_id is None
        assert "abandoned after 2 failed decisions" in row.error
        assert len(await _drift_payloads(sm, t)) == 1  # A1's drift, nothing else
    finally:
        await handlers.stop()


async def test_a_far_future_stored_price_is_replaced_by_the_next_real_tick(svc):  # noqa: F811
    """A year-9999 price (a tick market-data accepted before it refused them) would hold every
    real tick of the symbol back for good: the next real tick replaces it."""
    sm = svc[0].state.runtime.sessionmaker
    t, cache, handlers = await one_account_tenant(sm, quiet_s=0)
    async with sm() as s, s.begin():
        await s.execute(prices.update().where(prices.c.tenant_id == t, prices.c.symbol == "AAA")
                        .values(price_usd=Decimal(5), as_of=datetime(9999, 12, 31, tzinfo=UTC)))
    async with UnitOfWork(sm, infra) as uow:
        await handlers.on_price_ticked(tick(t, "AAA", "101", 3), uow)
        await uow.commit()
    async with sm() as s:
        row = (await s.execute(select(prices.c.price_usd, prices.c.as_of).where(
            prices.c.tenant_id == t, prices.c.symbol == "AAA"))).one()
    assert row.price_usd == Decimal(101) and row.as_of == T0 + timedelta(minutes=3)
