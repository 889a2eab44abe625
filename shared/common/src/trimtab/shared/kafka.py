"""Kafka plumbing on aiokafka: producers, topic creation, header encoding.

Nothing here relies on idempotent producers or transactions (the Tansu broker used locally has
neither); effectively-once delivery comes from the outbox and idempotent consumers instead.
aiokafka keeps at most one in-flight batch per partition, so a single relay preserves order.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from .events import TOPICS, dlq_topic

log = logging.getLogger(__name__)


def all_topics(with_dlq: bool = True) -> list[str]:
    topics = list(TOPICS)
    if with_dlq:
        topics += [dlq_topic(t) for t in TOPICS]
    return topics


async def ensure_topics(bootstrap: str, topics: list[str], partitions: int) -> None:
    """Create missing topics; concurrent creators racing each other is fine."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        for topic in missing:
            try:
                await admin.create_topics(
                    [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
                )
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def start_producer(bootstrap: str, client_id: str, attempts: int = 30) -> AIOKafkaProducer:
    """A started producer (acks=all), retrying while the broker is still coming up."""
    last: Exception | None = None
    for _ in range(attempts):
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, client_id=client_id, acks="all", linger_ms=2,
            request_timeout_ms=15_000,
        )
        try:
            await producer.start()
            return producer
        except (KafkaError, OSError) as e:
            last = e
            await producer.stop()
            await asyncio.sleep(0.5)
    raise RuntimeError(f"Kafka at {bootstrap} did not answer: {last!r}")


def encode_headers(headers: dict[str, str]) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in headers.items()]


def decode_headers(headers: list[tuple[str, bytes]] | tuple | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in headers or ():
        try:
            out[k] = v.decode() if v is not None else ""
        except UnicodeDecodeError:
            out[k] = repr(v)
    return out
