"""Composition root of market-data: settings, runtime, routes. Nothing runs at import time.

Run with `uvicorn --factory trimtab.market_data.app:create`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from pydantic import Field

from trimtab.shared.config import ServiceSettings
from trimtab.shared.http import create_app
from trimtab.shared.runtime import ServiceRuntime

from . import api
from .models import SCHEMA, infra, metadata
from .service import DEFAULT_MAX_FUTURE_S, Replays


class Settings(ServiceSettings):
    service_name: str = Field(default="market-data", validation_alias="SERVICE_NAME")
    #: How far (seconds) a tick's `as_of` may be ahead of this service's clock (feeds' clock skew);
    #: a batch with a tick dated later is refused with 422 and nothing of it is stored.
    market_data_max_future_s: float = Field(default=DEFAULT_MAX_FUTURE_S,
                                            validation_alias="MARKET_DATA_MAX_FUTURE_S", ge=0)


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = ServiceRuntime(settings, schema=SCHEMA, metadata=metadata,
                             migrations_dir=Path(__file__).parent / "migrations", infra=infra)
    app = create_app(runtime, [api.router], title="Trimtab market-data",
                     description="Securities master, latest prices, real historical replays; publishes market.ticks.v1.")
    app.state.replays = replays = Replays(runtime)
    runtime.on_stop(replays.stop_all)
    return app
