"""Session fixtures: a real Kafka-protocol broker and a real PostgreSQL database.

Broker: `KAFKA_BOOTSTRAP_SERVERS` if set, else a Tansu broker started for the session.
Database: `DATABASE_URL`'s server if set, else 127.0.0.1:5432, else an embedded server; a fresh
database is created for the session and dropped afterwards. Where a Docker engine answers and
`TRIMTAB_TESTCONTAINERS=1` is set, testcontainers' Kafka and PostgreSQL are used instead.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from trimtab.shared.infra import Broker, Database, ensure_database, resolve_database, start_tansu

ROOT = Path(__file__).resolve().parent.parent

# Property tests: `make test` (and so CI) runs the same examples every time, so a red run is a
# regression, never the luck of the draw; `TRIMTAB_HYPOTHESIS=explore make test` draws new
# random examples (how this session's two rounding bugs were found: run it before a release and
# turn what it finds into example tests).
hypothesis_settings.register_profile("deterministic", derandomize=True, database=None, print_blob=True)
hypothesis_settings.register_profile("explore", derandomize=False, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("TRIMTAB_HYPOTHESIS", "deterministic"))


def _docker_engine() -> bool:
    return os.path.exists("/var/run/docker.sock") and os.environ.get("TRIMTAB_TESTCONTAINERS") == "1"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    if _docker_engine():  # pragma: no cover - no engine on the development machines
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kc:
            yield kc.get_bootstrap_server()
        return
    broker: Broker = start_tansu(log_dir=ROOT / ".trimtab" / "test-logs")
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def pg_server() -> Database:
    return resolve_database(ROOT / ".trimtab")


@pytest.fixture(scope="session")
def database_url(pg_server: Database) -> Iterator[str]:
    url = pg_server.url_for(f"trimtab_test_{uuid.uuid4().hex[:10]}")
    asyncio.run(ensure_database(url, recreate=True))
    yield url
    try:
        asyncio.run(_drop(url))
    except Exception:
        pass


async def _drop(url: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conn = await asyncpg.connect(host=u.query.get("host") or u.host or "127.0.0.1", port=u.port or 5432,
                                 user=u.username or "postgres", database="postgres")
    await conn.execute(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)')
    await conn.close()
