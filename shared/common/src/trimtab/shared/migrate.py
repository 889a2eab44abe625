"""Alembic migrations per service schema, run programmatically at start-up.

Each service keeps `migrations/` (env.py + versions/) inside its package; its env.py calls
`run_env(metadata)`. Each schema has its own `alembic_version` table, so services migrate
independently. Start-up takes an advisory lock so replicas do not migrate concurrently.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from .db import async_url


def alembic_config(migrations_dir: Path, database_url: str, schema: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", async_url(database_url).replace("%", "%%"))
    cfg.attributes["schema"] = schema
    return cfg


def _do_run(connection: Connection, metadata: MetaData, schema: str) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=schema,
        include_schemas=True,
        include_name=lambda name, type_, parent: type_ != "schema" or name == schema,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_env(metadata: MetaData) -> None:
    """Body of a service's migrations/env.py (online mode, async engine)."""
    cfg = context.config
    schema = cfg.attributes.get("schema") or metadata.schema
    connection = cfg.attributes.get("connection")
    if connection is not None:
        _do_run(connection, metadata, schema)
        return

    async def go() -> None:
        engine = create_async_engine(cfg.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
        async with engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await conn.run_sync(_do_run, metadata, schema)
        await engine.dispose()

    asyncio.run(go())


async def upgrade(database_url: str, migrations_dir: Path, schema: str) -> None:
    """Upgrade `schema` to head inside one connection holding an advisory lock."""
    engine = create_async_engine(async_url(database_url), poolclass=pool.NullPool)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                               {"k": f"migrate:{schema}"})
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))

            def _up(sync_conn: Connection) -> None:
                cfg = alembic_config(migrations_dir, database_url, schema)
                cfg.attributes["connection"] = sync_conn
                command.upgrade(cfg, "head")

            await conn.run_sync(_up)
    finally:
        await engine.dispose()


def migrations_dir_of(package: str) -> Path:
    import importlib

    mod = importlib.import_module(package)
    assert mod.__file__
    return Path(mod.__file__).parent / "migrations"


async def autogenerate(database_url: str, package: str, message: str) -> None:
    """Write a new revision for `package` by diffing its models against a scratch database
    that holds every earlier revision."""
    import importlib
    import uuid

    from .infra import ensure_database

    models = importlib.import_module(f"{package}.models")
    schema = models.SCHEMA
    mdir = migrations_dir_of(package)
    (mdir / "versions").mkdir(parents=True, exist_ok=True)
    from sqlalchemy.engine import make_url

    scratch = make_url(async_url(database_url)).set(database=f"trimtab_autogen_{uuid.uuid4().hex[:8]}")
    scratch_url = scratch.render_as_string(hide_password=False)
    await ensure_database(scratch_url)
    try:
        await upgrade(scratch_url, mdir, schema)
        engine = create_async_engine(scratch_url, poolclass=pool.NullPool)
        async with engine.begin() as conn:
            def _rev(sync_conn: Connection) -> None:
                cfg = alembic_config(mdir, scratch_url, schema)
                cfg.attributes["connection"] = sync_conn
                command.revision(cfg, message=message, autogenerate=True)

            await conn.run_sync(_rev)
        await engine.dispose()
    finally:
        await ensure_database(scratch_url, recreate=True)
        import asyncpg

        conn2 = await asyncpg.connect(host=scratch.host or "127.0.0.1", port=scratch.port or 5432,
                                      user=scratch.username or "postgres", database="postgres")
        await conn2.execute(f'DROP DATABASE IF EXISTS "{scratch.database}" WITH (FORCE)')
        await conn2.close()


def main() -> None:
    """`trimtab-migrations revision PACKAGE -m MESSAGE`: autogenerate a revision (developers)."""
    import argparse
    import os

    p = argparse.ArgumentParser(description="Autogenerate an Alembic revision for a service.")
    p.add_argument("command", choices=["revision"])
    p.add_argument("package", help="e.g. trimtab.market_data")
    p.add_argument("-m", "--message", required=True)
    a = p.parse_args()
    url = os.environ.get("DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    asyncio.run(autogenerate(url, a.package, a.message))
