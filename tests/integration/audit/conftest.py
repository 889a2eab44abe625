"""The audit service under test (one per test module, its own key and checkpoint directory) and a
plain superuser connection to the database, outside the service.

The modules share the session's database, each instance with its own signing key, so the latest
checkpoint may be one an earlier module's instance signed. Verification accepts only checkpoints
signed by a trusted key, so every instance is configured with the public keys of the instances
before it (`AUDIT_TRUSTED_PUBLIC_KEYS`), as a deployment keeps its retired keys after a rotation:
`audit_keys`."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.support import running, settings, wait_consumers_assigned
from trimtab.audit.app import Settings, create
from trimtab.audit.domain.checkpoint import Signer
from trimtab.shared.db import async_url


class KeyRing:
    """The public keys of every signer this session used on its database. `peer` signs for no
    instance but every instance trusts it: for a test that signs with a second signer (another
    instance) on the same database."""

    def __init__(self) -> None:
        self.peer = Signer.generate()
        self.public_keys: list[bytes] = [self.peer.public_key]

    def trusted(self) -> str:
        """AUDIT_TRUSTED_PUBLIC_KEYS: every key so far, base64, comma-separated."""
        return ",".join(base64.b64encode(k).decode() for k in self.public_keys)

    def create(self, database_url: str, kafka_bootstrap: str, *, trusted: list[bytes] | None = None,
               **extra: Any) -> Any:
        """An audit app that trusts every key so far (or exactly `trusted`, besides its own); its
        own key is trusted by the next ones."""
        keys = self.trusted() if trusted is None else ",".join(base64.b64encode(k).decode() for k in trusted)
        app = create(settings(Settings, database_url, kafka_bootstrap, AUDIT_TRUSTED_PUBLIC_KEYS=keys, **extra))
        own = app.state.checkpointer.signer.public_key
        if own not in self.public_keys:
            self.public_keys.append(own)
        return app


@pytest.fixture(scope="session")
def audit_keys() -> KeyRing:
    return KeyRing()


@pytest.fixture(scope="module")
def dirs(request, tmp_path_factory) -> Path:
    """The module's signing key and checkpoint files live here."""
    return tmp_path_factory.mktemp(f"audit-{request.module.__name__.rsplit('.', 1)[-1]}")


@pytest.fixture(scope="module")
async def audit(database_url: str, kafka_bootstrap: str, dirs: Path,
                audit_keys: KeyRing) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """(app, client) with checkpoints signed on demand only (interval 0)."""
    app = audit_keys.create(database_url, kafka_bootstrap, AUDIT_SIGNING_KEY_FILE=str(dirs / "key"),
                            AUDIT_CHECKPOINT_DIR=str(dirs / "checkpoints"), AUDIT_CHECKPOINT_INTERVAL_S=0)
    async with running(app) as client:
        await wait_consumers_assigned(app)
        yield app, client


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A plain connection to the database, as the superuser, outside the service."""
    engine = create_async_engine(async_url(database_url), poolclass=pool.NullPool)
    yield engine
    await engine.dispose()
