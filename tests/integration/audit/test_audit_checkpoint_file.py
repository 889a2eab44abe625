"""The checkpoint file (AUDIT_CHECKPOINT_DIR/checkpoints.jsonl) is the witness outside the database:
`POST /v1/audit/verify` checks its last checkpoint (trusted signature, size, root of the log's
first tree_size leaves) and that the database's latest checkpoint is not older, and the signer
refuses a head that does not extend it.

Found by review: verify checked only the database's latest checkpoint row, and the signer compared
the head only with that row. Someone with the database owner's rights could rewrite the records
after seq N (chain and tree_nodes included) and delete the checkpoint rows above N, or all of
them: verify passed, and the next checkpoint signed the forged head with the service's real key.

The database is shared with the other modules: every row rewritten or deleted here is put back.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tests.integration.audit.test_audit_proofs import append, sign, ticks
from tests.support import auth, running
from trimtab.audit.checkpoints import Checkpointer, CheckpointRefused
from trimtab.audit.domain import merkle
from trimtab.audit.domain.chain import chain_hash, record_leaf_hash
from trimtab.audit.domain.checkpoint import Checkpoint, Signer

pytestmark = pytest.mark.integration
READ, WRITE = ["audit:read"], ["audit:write"]


async def verify(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.post("/v1/audit/verify", headers=auth("t1", READ))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def try_sign(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post("/v1/audit/checkpoints", headers=auth("t1", WRITE))


@asynccontextmanager
async def triggers_off(db: AsyncEngine, *tables: str) -> AsyncIterator[AsyncConnection]:
    """One superuser transaction with the append-only triggers of `tables` off (their ALTER
    TABLE locks also hold appends back until it commits)."""
    async with db.begin() as c:
        for t in tables:
            await c.execute(text(f"ALTER TABLE audit.{t} DISABLE TRIGGER {t}_no_update_delete"))
        yield c
        for t in tables:
            await c.execute(text(f"ALTER TABLE audit.{t} ENABLE TRIGGER {t}_no_update_delete"))


async def _write(c: AsyncConnection, records: list[dict[str, Any]], nodes: list[dict[str, Any]]) -> None:
    await c.execute(text("UPDATE audit.records SET envelope = :envelope, leaf_hash = :leaf_hash, "
                         "prev_hash = :prev_hash, chain_hash = :chain_hash WHERE seq = :seq"), records)
    await c.execute(text("UPDATE audit.tree_nodes SET hash = :hash WHERE level = :level AND idx = :idx"), nodes)


@asynccontextmanager
async def rewritten(db: AsyncEngine, seq: int) -> AsyncIterator[None]:
    """Record `seq` rewritten as the database's owner could: another price in its envelope, its
    leaf hash, the chain from it to the head and every stored tree node above its leaf, all
    consistent (nothing but a signed root can tell). Put back on exit."""
    async with triggers_off(db, "records", "tree_nodes") as c:
        rows = [dict(r) for r in (await c.execute(text(
            "SELECT seq, envelope, leaf_hash, prev_hash, chain_hash, recorded_at, leaf_format FROM audit.records "
            "WHERE seq >= :s "
            "ORDER BY seq"), {"s": seq})).mappings()]
        leaves = [bytes(h) for h in (await c.execute(text("SELECT leaf_hash FROM audit.records ORDER BY seq"))).scalars()]
        n = len(leaves)
        assert rows[0]["seq"] == seq and rows[-1]["seq"] == n, "seqs are gap-free from 1"
        forged, prev = [], bytes(rows[0]["prev_hash"])
        for r in rows:
            env = bytes(r["envelope"])
            if r["seq"] == seq:
                env = re.sub(rb'"price_usd":"[^"]*"', b'"price_usd":"999.5"', env)
                assert env != bytes(r["envelope"])
            leaf = record_leaf_hash(env, r["recorded_at"], r["leaf_format"])
            forged.append({"seq": r["seq"], "envelope": env, "leaf_hash": leaf, "prev_hash": prev,
                           "chain_hash": chain_hash(prev, leaf)})
            prev = forged[-1]["chain_hash"]
        leaves[seq - 1] = forged[0]["leaf_hash"]
        tree = merkle.Tree(leaves)
        ids = [(lv, (seq - 1) >> lv) for lv in range(64) if (((seq - 1) >> lv) + 1) << lv <= n]
        nodes = [dict(r) for r in (await c.execute(text(
            "SELECT level, idx, hash FROM audit.tree_nodes WHERE (level, idx) IN "
            f"({', '.join(f'({lv}, {i})' for lv, i in ids)})"))).mappings()]
        assert len(nodes) == len(ids)
        await _write(c, forged, [{**nd, "hash": tree.node((nd["level"], nd["idx"]))} for nd in nodes])
    try:
        yield
    finally:
        async with triggers_off(db, "records", "tree_nodes") as c:
            await _write(c, rows, nodes)


@asynccontextmanager
async def checkpoint_rows_deleted(db: AsyncEngine, above: int) -> AsyncIterator[None]:
    """The checkpoint rows with a tree size above `above` deleted (-1: all of them); put back on exit."""
    async with triggers_off(db, "checkpoints") as c:
        rows = [dict(r) for r in (await c.execute(text("SELECT * FROM audit.checkpoints WHERE tree_size > :a"),
                                                  {"a": above})).mappings()]
        await c.execute(text("DELETE FROM audit.checkpoints WHERE tree_size > :a"), {"a": above})
    try:
        yield
    finally:
        if rows:
            async with db.begin() as c:
                cols = ", ".join(rows[0])
                await c.execute(text(f"INSERT INTO audit.checkpoints ({cols}) OVERRIDING SYSTEM VALUE "
                                     f"VALUES ({', '.join(':' + k for k in rows[0])})"), rows)


async def _two_checkpoints(app: Any, client: httpx.AsyncClient) -> tuple[int, list[int], int]:
    """A checkpoint A, three records, a checkpoint B over them, a record past B: (A, the three, B)."""
    await append(app, ticks(2))
    a = (await sign(client))["tree_size"]
    seqs = await append(app, ticks(3))
    b = (await sign(client))["tree_size"]
    assert a < seqs[0] and seqs[-1] <= b
    await append(app, ticks(1))
    return a, seqs, b


async def _rows_above(db: AsyncEngine, size: int) -> int:
    async with db.connect() as c:
        return int((await c.execute(text("SELECT count(*) FROM audit.checkpoints WHERE tree_size > :s"),
                                    {"s": size})).scalar_one())


async def test_records_rewritten_under_the_files_checkpoint_fail_verify_when_the_rows_are_deleted(audit, db):
    app, client = audit
    a, seqs, b = await _two_checkpoints(app, client)
    assert (await verify(client))["ok"]
    async with rewritten(db, seqs[1]):
        # With the database's checkpoint B still there, its signed root catches the rewrite.
        v = await verify(client)
        assert not v["ok"] and "latest checkpoint's signed root" in v["reason"], v
        # The rows above A deleted (A still verifies: the rewrite is past it), then all of them:
        # before, verify passed both; the file's checkpoint B names the rewrite.
        for above in (a, -1):
            async with checkpoint_rows_deleted(db, above):
                v = await verify(client)
                assert not v["ok"] and v["first_bad_seq"] == b, v
                assert "not the signed root of the checkpoint file's latest checkpoint" in v["reason"], v
                assert "checkpoints.jsonl" in v["reason"] and "rewritten" in v["reason"], v
                assert "checkpoint rows were deleted" in v["reason"], v
                assert (f"size {a}" if above == a else "(none)") in v["reason"], v
    assert (await verify(client))["ok"]


async def test_the_newest_checkpoint_rows_deleted_fail_verify(audit, db):
    app, client = audit
    await append(app, ticks(2))
    a = (await sign(client))["tree_size"]
    await append(app, ticks(2))
    b = (await sign(client))["tree_size"]
    assert (await verify(client))["ok"]
    async with checkpoint_rows_deleted(db, a):
        v = await verify(client)
        assert not v["ok"] and v["first_bad_seq"] is None, v
        assert v["reason"] == (f"the database's latest checkpoint (size {a}) is older than the checkpoint file's "
                               f"latest checkpoint ({app.state.checkpointer.path}), size {b}: checkpoint rows "
                               "were deleted"), v
        # The timer takes the larger of the file's and the database's latest as the previous
        # checkpoint: B covers the head, nothing to sign (before, it signed B's size again).
        assert await app.state.checkpointer.sign(only_if_grown=True) is None
        assert await _rows_above(db, a) == 0
    assert (await verify(client))["ok"]


async def test_the_service_refuses_to_sign_a_rewritten_head(audit, db):
    app, client = audit
    a, seqs, b = await _two_checkpoints(app, client)
    path = app.state.checkpointer.path
    filed = path.read_text()
    async with rewritten(db, seqs[0]):
        for above in (b, a, -1):  # no row deleted, the rows above A, all of them
            async with checkpoint_rows_deleted(db, above):
                r = await try_sign(client)
                assert r.status_code == 409, r.text
                assert "does not extend the checkpoint file's latest checkpoint" in r.json()["detail"], r.text
                assert f"size {b}" in r.json()["detail"] and "rewritten" in r.json()["detail"], r.text
                with pytest.raises(CheckpointRefused):  # the timer's pass
                    await app.state.checkpointer.sign(only_if_grown=True)
                assert await _rows_above(db, above) == 0
    assert path.read_text() == filed  # nothing signed
    assert (await verify(client))["ok"]
    assert (await try_sign(client)).status_code == 201


async def _signed_file(app, client) -> tuple[Path, str, Checkpoint]:  # type: ignore[no-untyped-def]
    """Records appended and signed: the checkpoint file, its text and its last checkpoint."""
    await append(app, ticks(2))
    await sign(client)
    path = app.state.checkpointer.path
    filed = path.read_text()
    return path, filed, Checkpoint.from_line(filed.splitlines()[-1])


async def test_the_checkpoint_files_last_line_must_be_a_trusted_checkpoint(audit):
    app, client = audit
    path, filed, last = await _signed_file(app, client)
    flipped = dataclasses.replace(last, signature=bytes([last.signature[0] ^ 1]) + last.signature[1:])
    stranger = Signer.generate().sign(last.tree_size, last.root_hash, last.signed_at)
    cases = [(flipped.line() + "\n", "does not verify"), (stranger.line() + "\n", "not a trusted key")]
    try:
        for tail, reason in cases:
            path.write_text(filed + tail)
            v = await verify(client)
            assert not v["ok"] and "checkpoint file" in v["reason"] and reason in v["reason"], (tail, v)
        # A torn last line (a write cut short after the database commit) is not a line: verify
        # reads the last whole one, and the next signing cuts the fragment off (review: before,
        # signing and verify refused for good).
        path.write_text(filed + last.line()[:50])
        assert (await verify(client))["ok"]
        await append(app, ticks(1))
        assert (await try_sign(client)).status_code == 201
        lines = path.read_text().splitlines()
        assert path.read_text().endswith("\n") and all(Checkpoint.from_line(x) for x in lines)
        assert (await verify(client))["ok"]
    finally:
        path.write_text(filed)


async def test_a_rotation_away_from_a_leaked_key_can_sign_again(audit):
    """The runbook's rotation: the leaked key is no longer trusted, the file's last line is its
    checkpoint. The signer must still sign (the head extends that line; before, it refused for
    good), after which the file's last line is trusted again and verify passes. A database row at
    the head's size with a garbage signature does not make the timer skip (review: a database
    owner could silence it)."""
    app, client = audit
    path, filed, last = await _signed_file(app, client)
    leaked = Signer.generate()
    path.write_text(filed + leaked.sign(last.tree_size, last.root_hash, last.signed_at).line() + "\n")
    assert not (await verify(client))["ok"]  # the leaked key's line is not trusted
    await append(app, ticks(1))
    assert (await try_sign(client)).status_code == 201
    assert (await verify(client))["ok"]
    # A forged database row covering the head, signed by nobody we trust: the timer signs
    # over it rather than skip.
    await append(app, ticks(1))
    head = await app.state.checkpointer.sign()
    assert head is not None
    await append(app, ticks(1))
    from sqlalchemy import insert, select

    from trimtab.audit import tree
    from trimtab.audit.models import checkpoints as cp_table
    async with app.state.runtime.sessionmaker() as s, s.begin():
        size = await tree.size(s)
        root = await tree.root_at(s, size)
        forged = leaked.sign(size, root, last.signed_at)
        await s.execute(insert(cp_table).values(tree_size=size, root_hash=root, signed_at=forged.signed_at,
                                                key_id=forged.key_id, signature=forged.signature))
    signed = await app.state.checkpointer.sign(only_if_grown=True)
    assert signed is not None and signed.tree_size == size
    async with app.state.runtime.sessionmaker() as s:
        newest = (await s.execute(select(cp_table.c.key_id).order_by(cp_table.c.id.desc()).limit(1))).scalar()
    assert newest == signed.key_id != forged.key_id



async def test_normal_operation_verifies_with_the_database_ahead_of_the_file(audit, audit_keys, tmp_path):
    """A regression guard (it passed before too): checkpoints signed while records arrive, the
    head past the file's latest, and a peer on the database signing a larger head than this
    instance's file holds all verify, and the next signing extends both."""
    app, client = audit
    for _ in range(3):
        await append(app, ticks(2))
        await sign(client)
    await append(app, ticks(3))
    assert (await verify(client))["ok"]
    peer = Checkpointer(lambda: app.state.runtime.sessionmaker, audit_keys.peer, tmp_path, 0,
                        audit_keys.public_keys)
    await append(app, ticks(1))
    mine = Checkpoint.from_line(app.state.checkpointer.path.read_text().splitlines()[-1])
    theirs = await peer.sign()
    assert theirs is not None and theirs.tree_size > mine.tree_size
    v = await verify(client)
    assert v["ok"], v
    await append(app, ticks(1))
    assert (await sign(client))["tree_size"] > theirs.tree_size
    assert (await verify(client))["ok"]


async def test_a_service_without_a_checkpoint_dir_has_no_file_and_checks_the_database(
        database_url, kafka_bootstrap, audit_keys, db, tmp_path, monkeypatch):
    """AUDIT_CHECKPOINT_DIR empty: no file (before, `checkpoints.jsonl` in the working directory),
    and the database's latest checkpoint alone is checked, as before: a rewrite under it fails
    verify and is not signed; with the rows deleted, nothing outside the database witnesses."""
    monkeypatch.chdir(tmp_path)
    app = audit_keys.create(database_url, kafka_bootstrap, AUDIT_SIGNING_KEY_FILE=str(tmp_path / "key"),
                            AUDIT_CHECKPOINT_DIR="", AUDIT_CHECKPOINT_INTERVAL_S=0)
    async with running(app) as client:
        assert app.state.checkpointer.path is None
        a, seqs, b = await _two_checkpoints(app, client)
        assert (await verify(client))["ok"]
        assert not (tmp_path / "checkpoints.jsonl").exists()
        async with rewritten(db, seqs[1]):
            v = await verify(client)
            assert not v["ok"] and "latest checkpoint's signed root" in v["reason"], v
            r = await try_sign(client)
            assert r.status_code == 409 and "does not extend the database's latest checkpoint" in r.json()["detail"]
            async with checkpoint_rows_deleted(db, a):
                # The documented limit (docs/audit.md): the database cannot witness against its owner.
                assert (await verify(client))["ok"]
        assert (await verify(client))["ok"]
