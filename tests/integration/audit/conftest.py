"""The audit service under test (one per test module, its own key and checkpoint directory) and a
plain superuser connection to the database, outside the service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.support import running, settings, wait_consumers_assigned
from trimtab.audit.app import Settings, create
from trimtab.shared.db import async_url


@pytest.fixture(scope="module")
def dirs(request, tmp_path_factory) -> Path:
    """The module's signing key and checkpoint files live here."""
    return tmp_path_factory.mktemp(f"audit-{request.module.__name__.rsplit('.', 1)[-1]}")


@pytest.fixture(scope="module")
async def audit(database_url: str, kafka_bootstrap: str, dirs: Path) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """(app, client) with checkpoints signed on demand only (interval 0)."""
    app = create(settings(Settings, database_url, kafka_bootstrap, AUDIT_SIGNING_KEY_FILE=str(dirs / "key"),
                          AUDIT_CHECKPOINT_DIR=str(dirs / "checkpoints"), AUDIT_CHECKPOINT_INTERVAL_S=0))
    async with running(app) as client:
        await wait_consumers_assigned(app)
        yield app, client


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A plain connection to the database, as the superuser, outside the service."""
    engine = create_async_engine(async_url(database_url), poolclass=pool.NullPool)
    yield engine
    await engine.dispose()
