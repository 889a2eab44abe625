"""Leaf format 2 (tenth session): a record's time of recording is inside its leaf hash, so under
the chain, the tree and the signed checkpoints. Before, `recorded_at` was a plain column: moving it
passed both verifiers.

The log of a deployment that existed before keeps its records in format 1 (the migration touches
no row), gets format-2 records from then on, and verifies as one log: each record in its own
format. A downgrade that would leave format-2 records unverifiable is refused.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import pool, text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from tests.conftest import _drop as drop_database
from tests.integration.audit.test_audit import one_tick_chain
from tests.integration.audit.test_audit_household_export import _to_revision, envs_of
from trimtab.audit import bulk, handlers, tree
from trimtab.audit.domain import chain, frames
from trimtab.audit.domain.record import facts_of
from trimtab.audit.verify import verify_record
from trimtab.shared.db import async_url
from trimtab.shared.infra import Database, ensure_database

pytestmark = pytest.mark.integration


async def test_a_log_from_before_keeps_format_1_gets_format_2_and_verifies_whole(pg_server: Database):
    url = pg_server.url_for(f"trimtab_test_audit_leaf_{uuid.uuid4().hex[:8]}")
    await ensure_database(url, recreate=True)
    engine = create_async_engine(async_url(url), poolclass=pool.NullPool)
    sm = async_sessionmaker(engine)
    try:
        await _to_revision(url, "d36bc16ab2ab")  # the schema before leaf_format
        # Written as the previous release's handler did: recorded_at left to clock_timestamp(),
        # leaf = SHA-256(0x00 || envelope).
        old_pairs, _ = one_tick_chain("t1")
        old = envs_of(old_pairs)
        rows, leaves, prev = [], [], chain.GENESIS_HASH
        for seq, env in enumerate(old, start=1):
            data = env.to_bytes()
            leaf = chain.leaf_hash(data)
            link = chain.chain_hash(prev, leaf)
            rows.append({**facts_of(env).columns(), "seq": seq, "envelope": data, "leaf_hash": leaf,
                         "prev_hash": prev, "chain_hash": link})
            leaves.append(leaf)
            prev = link
        async with sm() as s, s.begin():
            cols = list(rows[0])
            await s.execute(text(f"INSERT INTO audit.records ({', '.join(cols)}) "
                                 f"VALUES ({', '.join(':' + c for c in cols)})"), rows)
            await tree.append_leaves(s, 0, leaves)

        await _to_revision(url, "head")
        new_pairs, _ = one_tick_chain("t1")
        new = envs_of(new_pairs)
        async with sm() as s, s.begin():
            got = await handlers.append(s, new)
        assert got == list(range(len(old) + 1, len(old) + len(new) + 1))
        async with engine.connect() as c:
            stored = (await c.execute(text(
                "SELECT seq, leaf_format, recorded_at, envelope, leaf_hash FROM audit.records ORDER BY seq"))).all()
        assert [r.leaf_format for r in stored] == [1] * len(old) + [2] * len(new)
        assert all(bytes(r.leaf_hash) == chain.record_leaf_hash(bytes(r.envelope), r.recorded_at, r.leaf_format)
                   for r in stored)
        times = [r.recorded_at for r in stored]
        assert times == sorted(times)  # the writer's clock never goes before the older records'
        rep = await verify_record(sm, trusted_keys=())
        assert rep.ok and rep.records_checked == len(old) + len(new), rep
        # Record frames of format 1 (an earlier release's verifier) carry the format-1 records as
        # before, and refuse a page with a format-2 record rather than serve what it would misread.
        async with sm() as s:
            body, n, last = await bulk.records(s, "t1", 0, len(old), 100, frame_format=1)
            assert (n, last) == (len(old), len(old))
            assert len(body) == sum(8 + 16 + 16 + 2 + len(e.event_type) + 2 + 2 + 4 + len(e.to_bytes()) for e in old)
            with pytest.raises(bulk.FrameFormatTooOld):
                await bulk.records(s, "t1", 0, len(old) + 1, 100, frame_format=1)
            body, n, _ = await bulk.records(s, "t1", 0, len(old) + len(new), 100, frame_format=2)
            assert [f[5] for f in frames.records(body)] == [1] * len(old) + [2] * len(new)

        async def moved(seq: int) -> object:
            async with engine.begin() as c:
                await c.execute(text("ALTER TABLE audit.records DISABLE TRIGGER records_no_update_delete"))
                await c.execute(text("UPDATE audit.records SET recorded_at = recorded_at - interval '1 hour' "
                                     "WHERE seq = :s"), {"s": seq})
                await c.execute(text("ALTER TABLE audit.records ENABLE TRIGGER records_no_update_delete"))
            return await verify_record(sm, trusted_keys=())

        # A format-1 record's time is outside its hash: what the format-1 records keep.
        rep = await moved(2)
        assert rep.ok, rep
        # A format-2 record's time is not: the record is named, and only it.
        seq = len(old) + 3
        rep = await moved(seq)
        assert (rep.ok, rep.first_bad_seq, rep.bad_seqs) == (False, seq, (seq,)), rep
        assert rep.reason == "leaf hash does not match recorded_at and the envelope bytes", rep

        # The downgrade would leave format-2 records that the older release cannot verify.
        with pytest.raises(RuntimeError, match="leaf format 2"):
            await _to_revision(url, "d36bc16ab2ab", down=True)
        async with engine.connect() as c:  # refused whole: the column and the records stay
            assert (await c.execute(text("SELECT count(*) FROM audit.records WHERE leaf_format = 2"))).scalar_one() \
                == len(new)
    finally:
        await engine.dispose()
        await drop_database(url)
