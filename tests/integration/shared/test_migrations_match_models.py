"""Each service's migrations, run from nothing, build exactly the schema its models declare.

The services read and write through the SQLAlchemy tables in `models.py`, and deployments get
their schema from the Alembic migrations: a column, index or default added to one and not the
other works in tests that create tables from the models, then fails (or silently differs) in
production. Here every schema is migrated to head in a fresh database and compared with the
models by Alembic's own autogenerate comparison (tables, columns, types, nullability, indexes,
unique constraints, server defaults)."""

from __future__ import annotations

import asyncio
import importlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import create_async_engine

from trimtab.shared.db import async_url
from trimtab.shared.infra import Database, ensure_database
from trimtab.shared.migrate import upgrade

pytestmark = pytest.mark.integration

SERVICES = ["market_data", "drift_monitor", "optimizer", "risk", "explainer", "audit"]


async def _diff(url: str, package: str) -> list[object]:
    models = importlib.import_module(f"trimtab.{package}.models")
    schema, metadata = models.SCHEMA, models.metadata
    migrations = Path(importlib.import_module(f"trimtab.{package}.app").__file__).parent / "migrations"  # type: ignore[arg-type]
    await upgrade(url, migrations, schema)
    engine = create_async_engine(async_url(url), poolclass=pool.NullPool)
    try:
        async with engine.connect() as conn:
            def compare(sync_conn):  # type: ignore[no-untyped-def]
                mc = MigrationContext.configure(sync_conn, opts={
                    "include_schemas": True, "compare_type": True, "compare_server_default": True,
                    "include_name": lambda name, type_, parent: type_ != "schema" or name == schema,
                    # Alembic's own bookkeeping table lives in the schema but not in the models.
                    "include_object": lambda obj, name, type_, reflected, compare_to:
                        not (type_ == "table" and name == "alembic_version"),
                })
                return compare_metadata(mc, metadata)

            return await conn.run_sync(compare)
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def fresh_url(pg_server: Database) -> Iterator[str]:
    """A database of its own (each service migrates its own schema in it), dropped afterwards."""
    url = pg_server.url_for(f"trimtab_mig_{uuid.uuid4().hex[:10]}")
    asyncio.run(ensure_database(url, recreate=True))
    yield url

    async def drop() -> None:
        import asyncpg
        from sqlalchemy.engine import make_url

        u = make_url(url)
        conn = await asyncpg.connect(host=u.query.get("host") or u.host or "127.0.0.1", port=u.port or 5432,
                                     user=u.username or "postgres", database="postgres")
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.mark.parametrize("package", SERVICES)
def test_migrations_build_the_schema_the_models_declare(fresh_url: str, package: str) -> None:
    diff = asyncio.run(_diff(fresh_url, package))
    assert diff == [], f"{package}: migrations and models differ:\n" + "\n".join(map(repr, diff))
