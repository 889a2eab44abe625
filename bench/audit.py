"""Audit benchmark: append rate, inclusion-proof latency at a large tree, offline verification time.

Starts what it needs itself: a fresh PostgreSQL database (trimtab.shared.infra) and a Tansu broker,
and runs the audit service in-process. Then:

1. Bulk-loads `--records` records (default 1,000,000) straight into the database with COPY: real
   canonical envelopes (one template, fresh event ids), their leaf and chain hashes, and every
   Merkle node, computed exactly as the service does. Kafka is not involved: this builds the state,
   it is not the append measurement.
2. Append rate, on top of that tree:
   - `append_per_s`: `--kafka-appends` events (default 50,000) are published while the service is
     stopped, then the service starts and its consumer records the backlog (the production path:
     runs of up to CONSUMER_BATCH_SIZE events per transaction with their processed markers, one
     `handlers.append` each). The rate is over the records' own `recorded_at` (first to last
     append, taken under the table lock); `append_kafka_wall_per_s` is over wall time from the
     consumers' assignment. Publishing first keeps this process's producer (same event loop, same
     CPU) out of the service's figure; `publish_per_s` says what the producer managed.
   - `append_direct_per_s`: `--appends` events, one transaction each, called directly (no
     broker): what a caller that never batches gets;
   - `append_batch_per_s`: `--kafka-appends` events, `--batch` per transaction, markers written by
     the shared `UnitOfWork.mark_processed_many` exactly as the consumer does, no broker.
3. Signs a checkpoint, then times inclusion proofs for random records: `proof_p50_ms` is the proof
   read from the database (the O(log n) node fetch and hashing), `proof_http_p50_ms` the whole
   `GET /v1/audit/records/{seq}` in-process (auth, record, proof, JSON).
4. `verify_1m_s`: the offline verifier (trimtab.audit.offline, as `trimtab-audit verify` runs it)
   from an empty state against the service in-process: signature, every leaf hash, the root, and
   every record's envelope re-hashed (all records belong to the benchmark tenant).

`--only append` stops after step 2 (no checkpoint, proofs or verifier), `--only kafka` after the
Kafka drain; with a small `--records` that is a quick append measurement. `--profile FILE` writes
cProfile statistics of this process during the Kafka drain (the service's consumer runs in it).
`kafka_runs` is how many transactions the drain took (distinct `xmin` of its records). During the
drain the CPU seconds of the three parties sharing the cores are reported too:
`cpu_service_s` (this process: the consumer), `cpu_broker_s` (Tansu), `cpu_db_s` (the PostgreSQL
backends connected to the benchmark's database).

`--json`: one JSON object of the figures as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trimtab.audit import handlers, tree  # noqa: E402
from trimtab.audit.app import Settings, create  # noqa: E402
from trimtab.audit.domain import chain, merkle  # noqa: E402
from trimtab.audit.offline import State, verify_log  # noqa: E402
from trimtab.shared.auth import mint_token  # noqa: E402
from trimtab.shared.config import ServiceSettings  # noqa: E402
from trimtab.shared.envelope import Envelope  # noqa: E402
from trimtab.shared.events import PriceTicked, topic_of  # noqa: E402
from trimtab.shared.infra import ensure_database, resolve_database, start_tansu  # noqa: E402
from trimtab.shared.kafka import encode_headers, start_producer  # noqa: E402
from trimtab.shared.outbox import kafka_headers  # noqa: E402

TENANT = "bench"
NOW = datetime(2024, 1, 2, 21, 0, tzinfo=UTC)


def say(msg: str) -> None:
    print(f"[audit-bench] {msg}", flush=True)


def tick(i: int) -> Envelope:
    return Envelope.new(PriceTicked(symbol=f"S{i % 500}", price_usd=Decimal("100.25") + i % 97, as_of=NOW),
                        producer="market-data", tenant_id=TENANT, trace={})


async def bulk_load(engine_url: str, n: int) -> None:
    """COPY n records and their tree nodes, seq 1..n (the service's tables must be empty)."""
    import asyncpg
    from sqlalchemy.engine import make_url

    template = tick(0)
    tb = template.to_bytes()
    eid, cid = str(template.event_id).encode(), str(template.correlation_id).encode()
    assert tb.count(eid) == 1 and tb.count(cid) == 1
    u = make_url(engine_url)
    conn = await asyncpg.connect(host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username or "postgres",
                                 database=u.database)
    try:
        t = merkle.Tree()
        prev = chain.GENESIS_HASH
        batch, nodes = [], []
        recorded = datetime.now(UTC)
        cols = ["seq", "event_id", "topic", "event_type", "tenant_id", "correlation_id", "causation_id",
                "occurred_at", "recorded_at", "proposal_id", "account_id", "payload_valid", "envelope",
                "leaf_format", "leaf_hash", "prev_hash", "chain_hash"]
        topic = topic_of("PriceTicked")
        t0 = time.perf_counter()
        for seq in range(1, n + 1):
            e, c = uuid.uuid4(), uuid.uuid4()
            data = tb.replace(eid, str(e).encode()).replace(cid, str(c).encode())
            leaf = chain.record_leaf_hash(data, recorded, chain.LEAF_FORMAT)
            link = chain.chain_hash(prev, leaf)
            batch.append((seq, e, topic, "PriceTicked", TENANT, c, None, template.occurred_at, recorded,
                          None, None, True, data, chain.LEAF_FORMAT, leaf, prev, link))
            prev = link
            nodes.append((0, seq - 1, leaf))
            nodes.extend(t.append(leaf))
            if len(batch) == 50_000 or seq == n:
                await conn.copy_records_to_table("records", schema_name="audit", records=batch, columns=cols)
                await conn.copy_records_to_table("tree_nodes", schema_name="audit", records=nodes,
                                                 columns=["level", "idx", "hash"])
                batch, nodes = [], []
                # The in-memory tree only needs the right edge to keep appending; drop the rest.
                for level in t.levels:
                    keep = len(level) & ~1
                    for i in range(max(0, keep - 2)):
                        level[i] = b""
                if seq % 200_000 == 0 or seq == n:
                    say(f"  loaded {seq:,} records ({time.perf_counter() - t0:.0f} s)")
        await conn.execute("ANALYZE audit.records; ANALYZE audit.tree_nodes")
    finally:
        await conn.close()


async def _drop(url: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    try:
        conn = await asyncpg.connect(host=u.host or "127.0.0.1", port=u.port or 5432,
                                     user=u.username or "postgres", database="postgres")
        await conn.execute(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)')
        await conn.close()
    except Exception as e:  # a leftover database is untidy, not a wrong figure
        say(f"could not drop {u.database}: {e!r}")


async def append_direct(app, n: int) -> float:
    rt = app.state.runtime
    envs = [tick(i) for i in range(n)]
    t0 = time.perf_counter()
    for env in envs:
        async with rt.uow() as uow:
            await uow.mark_processed("audit", env.event_id)
            await handlers.on_event(env, uow)
            await uow.commit()
    return n / (time.perf_counter() - t0)


async def append_batched(app, n: int, batch: int) -> float:
    """The same records, `batch` events per transaction (markers included): what the consumer
    does with a run, without the broker."""
    rt = app.state.runtime
    envs = [tick(i) for i in range(n)]
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        part = envs[i:i + batch]
        async with rt.uow() as uow:
            # The markers as the shared consumer writes a batch's (UnitOfWork.mark_processed_many).
            await uow.mark_processed_many("audit", [e.event_id for e in part])
            await handlers.append(uow.session, part)
            await uow.commit()
    return n / (time.perf_counter() - t0)


async def publish(bootstrap: str, n: int) -> tuple[list[Envelope], float]:
    """Put n events on the topic (nobody consuming yet); the producer's rate."""
    envs = [tick(i) for i in range(n)]
    p = await start_producer(bootstrap, "audit-bench")
    t0 = time.perf_counter()
    try:
        futs = [await p.send(topic_of(e.event_type), value=e.to_bytes(), key=f"S{i % 500}".encode(),
                             headers=encode_headers(kafka_headers(e))) for i, e in enumerate(envs)]
        await asyncio.gather(*futs)
    finally:
        await p.stop()
    return envs, n / (time.perf_counter() - t0)


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of the live processes among `pids` (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def _db_pids(app) -> list[int]:
    async with app.state.runtime.sessionmaker() as s:
        return list((await s.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"))).scalars())


async def drain_kafka(app, start: int, n: int, timeout_s: float) -> tuple[float, float, int]:
    """Wait until the consumer has recorded the n published events; (rate by the records' own
    recorded_at span, i.e. first to last append under the lock; rate by wall time from the
    consumers' assignment, which includes fetching from the broker; how many transactions)."""
    rt = app.state.runtime
    await asyncio.wait_for(asyncio.gather(*(c.assigned.wait() for c in rt.consumers)), 60)
    t0 = time.perf_counter()
    while True:
        async with rt.sessionmaker() as s:
            now = await tree.size(s)
        if now - start >= n:
            wall = time.perf_counter() - t0
            break
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError(f"only {now - start} of {n} recorded in {timeout_s} s")
        await asyncio.sleep(0.05)
    async with rt.sessionmaker() as s:
        # xmin is the inserting transaction: one per consumer run.
        span, runs = (await s.execute(text(
            "SELECT extract(epoch FROM max(recorded_at) - min(recorded_at)), count(DISTINCT xmin::text) "
            "FROM audit.records WHERE seq > :s"), {"s": start})).one()
    return (n - 1) / float(span), n / wall, int(runs)


async def run(a: argparse.Namespace, url: str) -> dict[str, object]:
    await ensure_database(url, recreate=True)
    broker = start_tansu(log_dir=ROOT / ".trimtab")
    tmp = Path(tempfile.mkdtemp(prefix="trimtab-audit-bench-"))
    figures: dict[str, object] = {"records": a.records}
    try:
        settings = Settings.model_validate({
            "DATABASE_URL": url, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_PARTITIONS": 4,
            "KAFKA_GROUP_PREFIX": f"bench-{uuid.uuid4().hex[:6]}", "LOG_LEVEL": "WARNING",
            "AUDIT_SIGNING_KEY_FILE": str(tmp / "key"), "AUDIT_CHECKPOINT_DIR": str(tmp / "checkpoints"),
            "AUDIT_CHECKPOINT_INTERVAL_S": 0,
            **({"CONSUMER_BATCH_SIZE": a.consumer_batch} if a.consumer_batch else {})})
        app = create(settings)
        async with app.router.lifespan_context(app):
            rt = app.state.runtime
            await asyncio.wait_for(asyncio.gather(*(c.assigned.wait() for c in rt.consumers)), 60)
            say(f"bulk-loading {a.records:,} records and their Merkle nodes (COPY)")
            t0 = time.perf_counter()
            await bulk_load(url, a.records)
            figures["load_s"] = round(time.perf_counter() - t0, 1)
        # The append rate through Kafka is the consumer draining a backlog, so the figure is the
        # service's and not this process's producer (which shares the event loop and the CPU).
        say(f"publishing {a.kafka_appends:,} events with the service stopped")
        _, figures["publish_per_s"] = await publish(broker.bootstrap, a.kafka_appends)
        figures["publish_per_s"] = round(figures["publish_per_s"], 1)
        app = create(settings)  # same consumer group: it resumes and finds the backlog
        async with app.router.lifespan_context(app):
            rt = app.state.runtime
            say(f"the service's consumer appending the {a.kafka_appends:,} events")
            pids = {"service": [os.getpid()], "broker": [broker.process.pid] if broker.process else [],
                    "db": await _db_pids(app)}
            cpu0 = {k: _cpu_s(v) for k, v in pids.items()}
            prof = cProfile.Profile() if a.profile else None
            if prof:
                prof.enable()
            rate, wall, figures["kafka_runs"] = await drain_kafka(app, a.records, a.kafka_appends, 600)
            if prof:
                prof.disable()
                prof.dump_stats(a.profile)
                say(f"  profile of the drain written to {a.profile}")
            pids["db"] = sorted(set(pids["db"]) | set(await _db_pids(app)))
            for k, v in pids.items():
                figures[f"cpu_{k}_s"] = round(_cpu_s(v) - cpu0.get(k, 0.0), 2)
            figures["append_per_s"], figures["append_kafka_wall_per_s"] = round(rate, 1), round(wall, 1)
            say(f"  {figures['append_per_s']:,} events/s (first to last record); "
                f"{figures['append_kafka_wall_per_s']:,} events/s from assignment to the last")
            say(f"  {figures['kafka_runs']} transactions; CPU during the drain: service {figures['cpu_service_s']} s, broker {figures['cpu_broker_s']} s, "
                f"database {figures['cpu_db_s']} s")
            if a.only == "kafka":
                return figures
            say(f"appending {a.appends:,} events directly (same unit of work, no broker)")
            figures["append_direct_per_s"] = round(await append_direct(app, a.appends), 1)
            say(f"  {figures['append_direct_per_s']:,} events/s")
            say(f"appending {a.kafka_appends:,} events in transactions of {a.batch} (batched append)")
            figures["append_batch_per_s"] = round(await append_batched(app, a.kafka_appends, a.batch), 1)
            say(f"  {figures['append_batch_per_s']:,} events/s")
            if a.only == "append":
                return figures

            cp = await app.state.checkpointer.sign()
            size = cp.tree_size
            figures["tree_size"] = size
            say(f"checkpoint signed at size {size:,}; timing {a.proofs} inclusion proofs")
            rng = random.Random(7)
            picks = [rng.randint(1, size) for _ in range(a.proofs)]
            db_ms = []
            async with rt.sessionmaker() as s:
                for seq in picks:
                    t1 = time.perf_counter()
                    path = await tree.inclusion_proof(s, seq - 1, size)
                    db_ms.append((time.perf_counter() - t1) * 1000)
                    assert len(path) <= size.bit_length()
            figures["proof_p50_ms"] = round(statistics.median(db_ms), 3)
            figures["proof_p99_ms"] = round(sorted(db_ms)[int(0.99 * len(db_ms)) - 1], 3)
            token = mint_token(ServiceSettings(), subject="bench", tenant_id=TENANT, scopes=["audit:read"])
            http_ms = []
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench",
                                         headers={"Authorization": f"Bearer {token}"}) as client:
                for seq in picks[: max(1, a.proofs // 2)]:
                    t1 = time.perf_counter()
                    r = await client.get(f"/v1/audit/records/{seq}")
                    http_ms.append((time.perf_counter() - t1) * 1000)
                    body = r.json()
                    merkle.verify_inclusion(seq - 1, size, bytes.fromhex(body["leaf_hash"]),
                                            [bytes.fromhex(h) for h in body["proof"]["inclusion_path"]], cp.root_hash)
                figures["proof_http_p50_ms"] = round(statistics.median(http_ms), 3)
                say(f"  proof from the database p50 {figures['proof_p50_ms']} ms (p99 {figures['proof_p99_ms']} ms); "
                    f"whole HTTP request p50 {figures['proof_http_p50_ms']} ms")

                say(f"offline verifier over {size:,} records (fresh state)")
                t1 = time.perf_counter()
                rep = await verify_log(client, State(tmp / "verifier"), public_key=app.state.checkpointer.signer.public_key)
                took = time.perf_counter() - t1
                if not rep.ok:
                    raise RuntimeError(f"verifier failed: {rep.to_json()}")
                figures["verified_records"] = rep.records_checked
                figures["verified_leaves"] = rep.leaves_checked
                # Scaled to one million when the tree is another size (stated, not hidden).
                figures["verify_s"] = round(took, 2)
                figures["verify_1m_s"] = round(took * 1_000_000 / size, 2)
                say(f"  {rep.leaves_checked:,} leaves and {rep.records_checked:,} records verified in {took:.1f} s "
                    f"({figures['verify_1m_s']} s per million)")
    finally:
        broker.stop()
        await _drop(url)
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000, help="records bulk-loaded before measuring")
    ap.add_argument("--kafka-appends", type=int, default=50_000, help="events appended through Kafka")
    ap.add_argument("--appends", type=int, default=1_000, help="events appended one per transaction (direct)")
    ap.add_argument("--batch", type=int, default=500, help="events per transaction in the batched append")
    ap.add_argument("--proofs", type=int, default=1_000, help="inclusion proofs timed")
    ap.add_argument("--consumer-batch", type=int, default=None,
                    help="the service's CONSUMER_BATCH_SIZE (default: the audit setting's default)")
    ap.add_argument("--only", choices=["all", "append", "kafka"], default="all",
                    help="append: stop after the append rates; kafka: after the Kafka drain")
    ap.add_argument("--profile", metavar="FILE", help="cProfile statistics of the Kafka drain to FILE")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    db = resolve_database(ROOT / ".trimtab")  # runs its own event loop: outside ours
    url = db.url_for(f"trimtab_bench_audit_{uuid.uuid4().hex[:8]}")
    figures = asyncio.run(run(a, url))
    say("figures: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    if a.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
