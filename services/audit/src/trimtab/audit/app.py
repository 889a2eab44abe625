"""Composition root of audit: settings, runtime, one handler per event type, routes.

Run with `uvicorn --factory trimtab.audit.app:create`. Nothing runs at import time.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from trimtab.shared.config import ServiceSettings
from trimtab.shared.events import EVENTS
from trimtab.shared.http import create_app
from trimtab.shared.runtime import ServiceRuntime

from . import api, handlers
from .models import SCHEMA, infra, metadata


class Settings(ServiceSettings):
    service_name: str = "audit"


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = ServiceRuntime(settings, schema=SCHEMA, metadata=metadata,
                             migrations_dir=Path(__file__).parent / "migrations", infra=infra,
                             park_keys=False)  # the record does not depend on per-key order
    # Every event type, each on its own topic, in the one consumer group "audit": the record
    # must hold everything, and one group keeps one consumer's marker per event.
    for event_type in EVENTS:
        runtime.handle(event_type)(handlers.on_event)
    return create_app(runtime, [api.router], title="Trimtab audit",
                      description="The append-only, hash-chained record of every event; verification.")
