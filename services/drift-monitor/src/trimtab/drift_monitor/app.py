"""Composition root of drift-monitor: settings, runtime, drift engine, handlers, routes.
Nothing runs at import time.

Run with `uvicorn --factory trimtab.drift_monitor.app:create`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from pydantic import Field

from trimtab.shared.config import ServiceSettings
from trimtab.shared.http import create_app
from trimtab.shared.runtime import ServiceRuntime

from . import api
from .cache import BookCache
from .handlers import DriftHandlers
from .models import SCHEMA, infra, metadata


class Settings(ServiceSettings):
    # Keep the env alias: docker-compose sets SERVICE_NAME (to this same name) for every service.
    service_name: str = Field(default="drift-monitor", validation_alias="SERVICE_NAME")
    #: After a rejected or expired proposal, seconds of wall time before the account may fire again.
    drift_min_interval_s: float = Field(default=300.0, validation_alias="DRIFT_MIN_INTERVAL_S", ge=0)
    #: A tick's candidates are decided once the tenant's ticks have paused this long (ms), so
    #: that the ticks of one batch are all priced in; 0 decides inside each tick's transaction.
    drift_tick_settle_ms: float = Field(default=300.0, validation_alias="DRIFT_TICK_SETTLE_MS", ge=0)
    #: ... but no later than this long (ms) after the window's first tick (a steady stream).
    drift_tick_settle_max_ms: float = Field(default=2000.0, validation_alias="DRIFT_TICK_SETTLE_MAX_MS", ge=0)
    #: Failed decisions of one stored drift candidate before it is given up as a dead letter.
    drift_candidate_max_attempts: int = Field(default=5, validation_alias="DRIFT_CANDIDATE_MAX_ATTEMPTS", ge=1)


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = ServiceRuntime(settings, schema=SCHEMA, metadata=metadata,
                             migrations_dir=Path(__file__).parent / "migrations", infra=infra)
    cache = BookCache()
    handlers = DriftHandlers(cache, settings.drift_min_interval_s, settle_s=settings.drift_tick_settle_ms / 1000,
                             settle_max_s=settings.drift_tick_settle_max_ms / 1000, uow=runtime.uow,
                             max_attempts=settings.drift_candidate_max_attempts,
                             dead_letters=infra.dead_letters)
    runtime.handle("PriceTicked")(handlers.on_price_ticked)
    runtime.handle("RebalanceDecided")(handlers.on_rebalance_decided)
    runtime.handle("TradesExecuted")(handlers.on_trades_executed)
    runtime.handle("OrdersUnfilled")(handlers.on_orders_unfilled)

    async def warm() -> None:
        assert runtime.sessionmaker is not None
        await cache.warm(runtime.sessionmaker)
        await handlers.screen_all()
        handlers.start_sweeper()

    runtime.on_start(warm)
    runtime.on_stop(handlers.stop)
    app = create_app(runtime, [api.router], title="Trimtab drift-monitor",
                     description="The book (models, households, accounts, tax lots, cash) and drift "
                                 "detection on market.ticks.v1; publishes portfolio.drift.v1.")
    app.state.book_cache = cache
    app.state.drift_handlers = handlers
    app.state.drift_min_interval_s = settings.drift_min_interval_s
    return app
