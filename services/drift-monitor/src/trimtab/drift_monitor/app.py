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


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = ServiceRuntime(settings, schema=SCHEMA, metadata=metadata,
                             migrations_dir=Path(__file__).parent / "migrations", infra=infra)
    cache = BookCache()
    handlers = DriftHandlers(cache, settings.drift_min_interval_s)
    runtime.handle("PriceTicked")(handlers.on_price_ticked)
    runtime.handle("RebalanceDecided")(handlers.on_rebalance_decided)
    runtime.handle("TradesExecuted")(handlers.on_trades_executed)

    async def warm() -> None:
        assert runtime.sessionmaker is not None
        await cache.warm(runtime.sessionmaker)

    runtime.on_start(warm)
    app = create_app(runtime, [api.router], title="Trimtab drift-monitor",
                     description="The book (models, households, accounts, tax lots, cash) and drift "
                                 "detection on market.ticks.v1; publishes portfolio.drift.v1.")
    app.state.book_cache = cache
    app.state.drift_min_interval_s = settings.drift_min_interval_s
    return app
