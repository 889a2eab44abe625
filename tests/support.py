"""Test helpers shared by integration and e2e suites: tokens, running a service in-process,
reading events back from Kafka. Real PostgreSQL and a real Kafka-protocol broker throughout."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from trimtab.shared.auth import ALL_SCOPES, mint_token
from trimtab.shared.config import ServiceSettings
from trimtab.shared.envelope import Envelope


def token(tenant: str = "t1", scopes: list[str] | None = None, subject: str = "tester@t1") -> str:
    return mint_token(ServiceSettings(), subject=subject, tenant_id=tenant,
                      scopes=scopes if scopes is not None else ALL_SCOPES)


def auth(tenant: str = "t1", scopes: list[str] | None = None, subject: str = "tester@t1") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(tenant, scopes, subject)}"}


@contextlib.asynccontextmanager
async def running(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Run a service app's lifespan (migrations, producer, relay, consumers) and give a client."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def wait_consumers_assigned(app: Any, timeout_s: float = 30.0) -> None:
    """Consumer-group joins take a few seconds on Tansu; wait until every consumer has partitions."""
    rt = app.state.runtime
    await asyncio.wait_for(asyncio.gather(*(c.assigned.wait() for c in rt.consumers)), timeout_s)


async def read_events(
    bootstrap: str, topic: str, *, until: Callable[[list[Envelope]], bool],
    timeout_s: float = 30.0, raw: bool = False,
) -> list[Any]:
    """Read a topic from the beginning (all partitions, no group) until `until(events)` holds."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await c.start()
    try:
        parts = c.partitions_for_topic(topic)
        deadline = time.monotonic() + timeout_s
        while not parts and time.monotonic() < deadline:
            await c._client.force_metadata_update()  # noqa: SLF001 - topic may be brand new
            parts = c.partitions_for_topic(topic)
            await asyncio.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(parts or [])]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        out: list[Any] = []
        while time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=300)
            for recs in batch.values():
                for r in recs:
                    if raw:
                        out.append(r)
                        continue
                    try:  # other tests put deliberately malformed messages on shared topics
                        out.append(Envelope.from_bytes(r.value))
                    except ValueError:
                        continue
            if until(out if not raw else out):
                return out
        raise TimeoutError(f"{topic}: condition not met in {timeout_s}s; saw {len(out)} events")
    finally:
        await c.stop()


def settings(cls: type[ServiceSettings], database_url: str, bootstrap: str, **extra: Any) -> Any:
    """Settings for a service under test: its own consumer-group prefix per call."""
    return cls.model_validate({
        "DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_GROUP_PREFIX": f"test-{uuid.uuid4().hex[:8]}", "KAFKA_PARTITIONS": 2,
        "OUTBOX_POLL_S": 0.05, **extra,
    })


# ------------------------------------------------------------------ metrics


def services_telemetry() -> None:
    """The services' own telemetry setup (Prometheus reader on prometheus_client's registry, as
    /metrics serves it), leaving pytest's logging as it was. Idempotent per process."""
    import logging

    from trimtab.shared.telemetry import setup_telemetry

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    setup_telemetry("metrics-unit-test")
    root.handlers[:] = handlers
    root.setLevel(level)


def prometheus_samples() -> list[Any]:
    """Every sample of the Prometheus exposition, as /metrics would serve it now."""
    from prometheus_client import REGISTRY, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    return [s for fam in text_string_to_metric_families(generate_latest(REGISTRY).decode()) for s in fam.samples]
