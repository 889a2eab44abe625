"""Composition root of the optimizer: settings, solver engine, handlers, TTL sweep, price-move
expiry, routes.

Run with `uvicorn --factory trimtab.optimizer.app:create`. Nothing runs at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import Field

from trimtab.shared.config import ServiceSettings
from trimtab.shared.http import create_app
from trimtab.shared.outbox import UnitOfWork
from trimtab.shared.runtime import ServiceRuntime

from . import api, handlers, prices, proposals
from .engine import Engine
from .metrics import QueueStats
from .models import SCHEMA, infra, metadata

log = logging.getLogger(__name__)
#: The consumer group (suffix) of the optimizer's tick handler.
PRICES_CONSUMER = "optimizer-prices"
#: The longest run of ticks one transaction takes (the service-wide CONSUMER_BATCH_SIZE stays
#: small for solves); measured about 2x the tick rate of runs of 8 at 2,000 open proposals.
TICK_BATCH = 100


class Settings(ServiceSettings):
    service_name: str = Field(default="optimizer", validation_alias="SERVICE_NAME")
    #: a few solves per proposal: small runs keep proposals flowing while saving commits.
    consumer_batch_size: int = Field(default=8, validation_alias="CONSUMER_BATCH_SIZE", ge=1)
    #: Open proposals (not yet decided) older than this are expired; 0 disables expiry by age.
    proposal_ttl_s: float = Field(default=86_400.0, validation_alias="PROPOSAL_TTL_S", ge=0)
    #: Open proposals expire when the price of an ordered symbol moved more than this fraction
    #: (0.02 = 2 %) either way from the order's estimated price since the snapshot; 0 disables.
    proposal_max_price_move: Decimal = Field(default=prices.DEFAULT_MAX_MOVE,
                                             validation_alias="PROPOSAL_MAX_PRICE_MOVE", ge=0)
    #: The time in force of approved orders (TradesApproved.execute_by = approval time + this);
    #: 0 = none (the OMS is told no deadline, and only fills, its reports or a supervisor end an
    #: approval). Applies to proposals stored from when it is set.
    proposal_execution_window_s: float = Field(default=86_400.0, validation_alias="PROPOSAL_EXECUTION_WINDOW_S",
                                               ge=0)
    #: How long after execute_by the OMS's fills or report may still arrive; past it, the sweep
    #: declares what is left of the approval expired (published on trades.unfilled.v1).
    proposal_execution_grace_s: float = Field(default=3_600.0, validation_alias="PROPOSAL_EXECUTION_GRACE_S", ge=0)
    #: Seconds between sweeps (expiry by age, and the count behind the queue gauges).
    proposal_sweep_s: float = Field(default=60.0, validation_alias="PROPOSAL_SWEEP_S", gt=0)
    #: Worker processes for solves; 0 = one worker thread in the service process.
    solver_processes: int = Field(default=0, validation_alias="SOLVER_PROCESSES", ge=0)


#: Proposals one sweep transaction expires; a pass runs transactions until one expires fewer
#: (at most `SWEEP_MAX_BATCHES`), so a backlog drains in one pass, not 100 a minute.
SWEEP_BATCH = 100
SWEEP_MAX_BATCHES = 50


async def _in_batches(runtime: ServiceRuntime, step: Callable[[UnitOfWork], Awaitable[list[Any]]]) -> int:
    """Run `step` in transactions of up to `SWEEP_BATCH` rows until one does fewer (at most
    `SWEEP_MAX_BATCHES`); returns how many rows it did in all."""
    total = 0
    for _ in range(SWEEP_MAX_BATCHES):
        async with runtime.uow() as uow:
            done = await step(uow)
            await uow.commit()
        total += len(done)
        if len(done) < SWEEP_BATCH:
            break
    return total


async def sweep_once(runtime: ServiceRuntime, ttl_s: float) -> int:
    """Expire what is stale now (transactions of `SWEEP_BATCH`); returns how many expired."""
    total = await _in_batches(runtime, lambda uow: proposals.expire_stale(uow, ttl_s=ttl_s, limit=SWEEP_BATCH))
    if total:
        log.info("expired %d proposals older than %g s", total, ttl_s)
    return total


async def refresh_queue(runtime: ServiceRuntime, stats: QueueStats) -> None:
    """Count the open proposals, and the approvals awaiting execution, for the queue gauges (one
    read-only transaction)."""
    async with runtime.uow() as uow:
        stats.update(await proposals.open_queue(uow), await proposals.awaiting_queue(uow))


async def end_overdue_once(runtime: ServiceRuntime, grace_s: float) -> int:
    """End the approvals past their orders' time in force plus `grace_s` (`proposals.end_overdue`,
    transactions of `SWEEP_BATCH`); returns how many."""
    return await _in_batches(runtime, lambda uow: proposals.end_overdue(uow, grace_s=grace_s, limit=SWEEP_BATCH))


async def release_once(runtime: ServiceRuntime, max_price_move: Decimal) -> int:
    """Approve the ready automatic proposals a concurrent end of their account's approval left
    waiting (`proposals.release_stranded`); returns how many were decided."""
    async with runtime.uow() as uow:
        decided = await proposals.release_stranded(uow, max_price_move)
        await uow.commit()
    return len(decided)


async def _sweep_forever(runtime: ServiceRuntime, ttl_s: float, every_s: float, stats: QueueStats,
                         max_price_move: Decimal = prices.DEFAULT_MAX_MOVE, grace_s: float = 3_600.0) -> None:
    """Every `every_s`: expire what is older than `ttl_s` (0: never), end the approvals past
    their time in force plus `grace_s`, release stranded automatic approvals, then count the
    queue."""
    while True:
        if ttl_s > 0:
            try:
                await sweep_once(runtime, ttl_s)
            except Exception:  # noqa: BLE001 - the next pass retries; a crash would stop expiry
                log.exception("proposal TTL sweep failed")
        try:
            await end_overdue_once(runtime, grace_s)
        except Exception:  # noqa: BLE001 - the next pass retries
            log.exception("ending overdue approvals failed")
        try:
            await release_once(runtime, max_price_move)
        except Exception:  # noqa: BLE001 - the next pass retries
            log.exception("releasing stranded automatic approvals failed")
        try:
            await refresh_queue(runtime, stats)
        except Exception:  # noqa: BLE001 - the gauges go blank after 3 missed passes (QueueStats)
            log.exception("counting the open proposals failed")
        await asyncio.sleep(every_s)


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = ServiceRuntime(settings, schema=SCHEMA, metadata=metadata,
                             migrations_dir=Path(__file__).parent / "migrations", infra=infra)
    engine = Engine(settings.solver_processes)
    move = settings.proposal_max_price_move
    runtime.handle("DriftDetected")(partial(handlers.on_drift_detected, engine=engine, max_price_move=move,
                                            execution_window_s=settings.proposal_execution_window_s or None))
    runtime.handle("RiskAssessed")(partial(handlers.on_risk_assessed, max_price_move=move))
    runtime.handle("ExplanationCreated")(partial(handlers.on_explanation_created, max_price_move=move))
    runtime.handle("TradesExecuted")(handlers.on_trades_executed)
    runtime.handle("OrdersUnfilled")(partial(handlers.on_orders_unfilled, max_price_move=move))
    # n solver processes solve n accounts at once: n partitions of drifts, risk assessments and
    # explanations handled concurrently (each in order; proposals are per account, in rows).
    runtime.concurrent(max(1, settings.solver_processes))
    # Ticks in a consumer group of their own: a burst of ticks never waits behind solves (nor
    # solves behind ticks), and a run of ticks (up to TICK_BATCH) is one upsert and one query.
    runtime.handle_batch(["PriceTicked"], consumer=PRICES_CONSUMER, batch_size=TICK_BATCH)(
        partial(handlers.on_price_ticks, max_price_move=move))

    sweeper: dict[str, asyncio.Task[None]] = {}
    queue = QueueStats(max_age_s=3 * settings.proposal_sweep_s)

    @runtime.on_start
    async def _start() -> None:
        engine.start()
        await engine.warm()
        sweeper["task"] = asyncio.create_task(
            _sweep_forever(runtime, settings.proposal_ttl_s, settings.proposal_sweep_s, queue, move,
                           settings.proposal_execution_grace_s),
            name="optimizer:sweep")

    @runtime.on_stop
    async def _stop() -> None:
        task = sweeper.pop("task", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        engine.stop()
        queue.close()

    app = create_app(runtime, [api.router], title="Trimtab optimizer",
                     description="Tax-aware rebalancing proposals and their lifecycle; consumes "
                                 "portfolio.drift.v1, risk.assessed.v1, explanation.created.v1; "
                                 "publishes rebalance.proposed.v1, rebalance.decided.v1, trades.approved.v1.")
    app.state.engine = engine
    app.state.queue = queue
    return app
