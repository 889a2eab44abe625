"""audit's Merkle tree against real PostgreSQL: stored nodes equal the tree recomputed from the
leaves, signed checkpoints, inclusion and consistency proofs that verify, lineage and exports, and
the offline verifier naming exactly the row a superuser altered, removed or reordered.

The database is shared with other suites, so the tree holds their records too: assertions are about
proofs and the rows this module appends, never about the table's size.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.audit.test_audit import NOW, one_tick_chain
from tests.support import auth, token
from trimtab.audit import handlers, offline
from trimtab.audit.checkpoints import Checkpointer
from trimtab.audit.domain import chain, frames, merkle
from trimtab.audit.domain.checkpoint import Checkpoint, Signer, verify_checkpoint
from trimtab.audit.offline import State, verify_log
from trimtab.shared.envelope import Envelope
from trimtab.shared.events import PriceTicked
from trimtab.shared.infra import free_port

pytestmark = pytest.mark.integration
READ = ["audit:read"]


async def append(app: Any, envs: list[Envelope]) -> list[int]:
    """Append through the handler in one unit of work each, as the consumer does."""
    rt = app.state.runtime
    for env in envs:
        async with rt.uow() as uow:
            await handlers.on_event(env, uow)
            await uow.commit()
    async with rt.sessionmaker() as s:
        rows = (await s.execute(text("SELECT seq FROM audit.records WHERE event_id = ANY(:ids) ORDER BY seq"),
                                {"ids": [e.event_id for e in envs]})).scalars()
        return list(rows)


def ticks(n: int, tenant: str = "t1") -> list[Envelope]:
    return [Envelope.new(PriceTicked(symbol=f"P{i}", price_usd=Decimal("1.5") + i, as_of=NOW),
                         producer="market-data", tenant_id=tenant, trace={}) for i in range(n)]


async def sign(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.post("/v1/audit/checkpoints", headers=auth("t1", ["audit:write"]))
    assert r.status_code == 201, r.text
    return r.json()


async def latest(client: httpx.AsyncClient) -> tuple[Checkpoint, bytes, dict[str, Any]]:
    r = await client.get("/v1/audit/checkpoints/latest", headers=auth("t1", READ))
    assert r.status_code == 200, r.text
    body = r.json()
    return Checkpoint.from_json(body), base64.b64decode(body["public_key"]), body


def proof_of(record: dict[str, Any]) -> list[bytes]:
    return [bytes.fromhex(h) for h in record["proof"]["inclusion_path"]]


# ------------------------------------------------------------------ the stored tree and proofs


async def test_stored_nodes_are_the_tree_of_the_stored_leaves(audit, db):
    app, _ = audit
    await append(app, ticks(21))
    # A batch in one transaction, with an event twice: recorded once, nodes as for single appends.
    batch = ticks(13)
    async with app.state.runtime.uow() as uow:
        got = await handlers.append(uow.session, [*batch, batch[4]])
        await uow.commit()
    assert len(got) == 13 and got == list(range(got[0], got[0] + 13))
    async with db.connect() as c:
        leaves = [bytes(h) for h in (await c.execute(text("SELECT leaf_hash FROM audit.records ORDER BY seq"))).scalars()]
        stored = {(r.level, r.idx): bytes(r.hash) for r in await c.execute(text("SELECT level, idx, hash FROM audit.tree_nodes"))}
    t = merkle.Tree(leaves)
    expected = {(lv, i): h for lv in range(len(t.levels)) for i, h in enumerate(t.levels[lv])}
    # Exactly the complete subtrees, no more and no fewer (others may append meanwhile: compare
    # the nodes within the size read).
    assert {k: v for k, v in stored.items() if (k[1] + 1) << k[0] <= len(leaves)} == expected


async def test_checkpoint_proofs_and_consistency(audit, dirs):
    app, client = audit
    seqs = await append(app, ticks(5))
    first = await sign(client)
    cp1, key, body = await latest(client)
    assert cp1.tree_size >= seqs[-1] and first["tree_size"] == cp1.tree_size
    verify_checkpoint(cp1, key)  # signed by the key the endpoint publishes
    assert body["signed_message"].encode() == cp1.message()
    assert body["signed_message"].startswith("trimtab-audit checkpoint v1\n")
    # The same line is in the file outside the database.
    lines = [json.loads(x) for x in (dirs / "checkpoints" / "checkpoints.jsonl").read_text().splitlines()]
    assert Checkpoint.from_json(lines[-1]) == cp1

    # A record's proof against the latest checkpoint verifies against the signed root.
    r = (await client.get(f"/v1/audit/records/{seqs[2]}", headers=auth("t1", READ))).json()
    assert r["proof"]["tree_size"] == cp1.tree_size and r["proof"]["root_hash"] == cp1.root_hash.hex()
    assert r["proof"]["checkpoint"]["signature"] == body["signature"]
    at = datetime.fromisoformat(r["recorded_at"])
    micros = (at - datetime.fromisoformat("1970-01-01T00:00:00+00:00")) // timedelta(microseconds=1)
    leaf = hashlib.sha256(b"\x00\x02" + micros.to_bytes(8, "big", signed=True)
                          + base64.b64decode(r["envelope_base64"])).digest()
    assert r["leaf_format"] == 2 and leaf == leaf_of(r)
    merkle.verify_inclusion(seqs[2] - 1, cp1.tree_size, leaf, proof_of(r), cp1.root_hash)
    with pytest.raises(merkle.ProofError):  # and not for its neighbour
        merkle.verify_inclusion(seqs[1] - 1, cp1.tree_size, leaf, proof_of(r), cp1.root_hash)

    # Newer records have no proof until the next checkpoint; ?tree_size= proves against any size.
    later = await append(app, ticks(3))
    r = (await client.get(f"/v1/audit/records/{later[0]}", headers=auth("t1", READ))).json()
    assert r["proof"] is None and "newer" in r["proof_note"]
    r = (await client.get(f"/v1/audit/records/{later[0]}", headers=auth("t1", READ),
                          params={"tree_size": later[-1]})).json()
    assert r["proof"]["tree_size"] == later[-1] and r["proof"]["checkpoint"] is None
    await sign(client)
    cp2, _, _ = await latest(client)
    assert cp2.tree_size >= later[-1]
    merkle.verify_inclusion(later[0] - 1, later[-1], leaf_of(r), proof_of(r), bytes.fromhex(r["proof"]["root_hash"]))
    r2 = (await client.get(f"/v1/audit/records/{later[0]}", headers=auth("t1", READ))).json()
    merkle.verify_inclusion(later[0] - 1, cp2.tree_size, leaf_of(r2), proof_of(r2), cp2.root_hash)

    # The new head extends the old one.
    c = (await client.get("/v1/audit/consistency", headers=auth("t1", READ),
                          params={"from": cp1.tree_size, "to": cp2.tree_size})).json()
    assert (c["from_root"], c["to_root"]) == (cp1.root_hash.hex(), cp2.root_hash.hex())
    merkle.verify_consistency(cp1.tree_size, cp2.tree_size, cp1.root_hash, cp2.root_hash,
                              [bytes.fromhex(h) for h in c["consistency_path"]])
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(cp1.tree_size, cp2.tree_size, cp2.root_hash, cp1.root_hash,
                                  [bytes.fromhex(h) for h in c["consistency_path"]])
    # Leaves endpoint: the served hashes make up the signed root.
    lv = (await client.get("/v1/audit/leaves", headers=auth("t1", READ),
                           params={"start": 0, "end": cp2.tree_size})).json()
    blob = base64.b64decode(lv["leaf_hashes"])
    assert lv["missing_seqs"] == [] and merkle.root([blob[i:i + 32] for i in range(0, len(blob), 32)]) == cp2.root_hash

    h = auth("t1", READ)
    assert (await client.get("/v1/audit/consistency", headers=h, params={"from": 5, "to": 2})).status_code == 422
    assert (await client.get("/v1/audit/consistency", headers=h, params={"from": 1, "to": 10**12})).status_code == 422
    assert (await client.get(f"/v1/audit/records/{seqs[2]}", headers=h, params={"tree_size": seqs[2] - 1})).status_code == 422
    assert (await client.post("/v1/audit/checkpoints", headers=h)).status_code == 403
    other = auth("t-other", READ)
    assert (await client.get(f"/v1/audit/records/{seqs[2]}", headers=other)).status_code == 404


async def test_lineage_and_exports_carry_verifiable_proofs(audit, kafka_bootstrap):
    app, client = audit
    envs, proposal_id = one_tick_chain("t1")
    await append(app, [e for e, _ in envs])
    await sign(client)
    cp, key, _ = await latest(client)
    d = (await client.get(f"/v1/audit/decisions/{proposal_id}", headers=auth("t1", READ))).json()
    # The whole chain: the tick and drift (same correlation, no proposal id) through approval.
    assert [r["event_type"] for r in d["records"]] == [e.event_type for e, _ in envs]
    assert d["checkpoint"]["root_hash"] == cp.root_hash.hex() and not d["truncated"]
    for r in d["records"]:
        merkle.verify_inclusion(r["seq"] - 1, cp.tree_size, leaf_of(r), proof_of(r), cp.root_hash)
    assert (await client.get(f"/v1/audit/decisions/{proposal_id}", headers=auth("t-x", READ))).status_code == 404

    acct = envs[1][0].payload["account_id"]
    r = await client.get("/v1/audit/export", headers=auth("t1", READ), params={"account_id": acct})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(x) for x in r.text.splitlines()]
    head, records, tail = lines[0], lines[1:-1], lines[-1]
    verify_checkpoint(Checkpoint.from_json(head), key)
    # Offline, from the export alone (found by review: the line had no key and no signed text,
    # though the docs said it carried what checks it): the key is the one key_id names, and it
    # verifies the signature over the signed text, which is the checkpoint's own.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    raw = base64.b64decode(head["public_key"])
    assert hashlib.sha256(raw).hexdigest() == head["key_id"]
    assert head["signed_message"].encode() == Checkpoint.from_json(head).message()
    Ed25519PublicKey.from_public_bytes(raw).verify(base64.b64decode(head["signature"]),
                                                   head["signed_message"].encode())
    assert [x["event_type"] for x in records] == [e.event_type for e, _ in envs[1:]]  # the tick names no account
    assert tail == {"type": "page", "records": len(records), "next_after_seq": None}
    for x in records:
        assert x["leaf_format"] == 2 and x["leaf_hash"] == leaf_of(x).hex()
        merkle.verify_inclusion(x["leaf_index"], x["proof"]["tree_size"], leaf_of(x),
                                [bytes.fromhex(h) for h in x["proof"]["inclusion_path"]], cp.root_hash)
    page = await client.get("/v1/audit/export", headers=auth("t1", READ), params={"account_id": acct, "limit": 2})
    assert json.loads(page.text.splitlines()[-1])["next_after_seq"] == records[1]["seq"]
    rep = await client.get("/v1/audit/export", headers=auth("t1", READ), params={"proposal_id": str(proposal_id), "format": "html"})
    assert rep.status_code == 200 and rep.headers["content-type"].startswith("text/html")
    assert "advisor@t1" in rep.text and cp.root_hash.hex() in rep.text and "RebalanceDecided" in rep.text
    nothing = await client.get("/v1/audit/export", headers=auth("t-x", READ), params={"account_id": acct})
    assert [json.loads(x)["type"] for x in nothing.text.splitlines()] == ["checkpoint", "page"]


@pytest.mark.parametrize("table", ["tree_nodes", "checkpoints"])
async def test_nodes_and_checkpoints_are_append_only(audit, db, table):
    with pytest.raises(DBAPIError, match=f"audit.{table} is append-only"):
        async with db.begin() as c:
            await c.execute(text(f"DELETE FROM audit.{table}"))
    with pytest.raises(DBAPIError, match="append-only"):
        async with db.begin() as c:
            await c.execute(text(f"TRUNCATE audit.{table}"))


async def test_checkpoints_are_signed_on_a_timer_only_when_the_tree_grew(audit, audit_keys, tmp_path):
    app, _ = audit
    signer = audit_keys.peer  # a second signer on the database: one the instances trust
    cpr = Checkpointer(lambda: app.state.runtime.sessionmaker, signer, tmp_path, interval_s=0.2)
    await append(app, ticks(1))
    cpr.start()
    try:
        for _ in range(50):
            await asyncio.sleep(0.1)
            if (tmp_path / "checkpoints.jsonl").exists():
                break
        await asyncio.sleep(0.6)  # a few more ticks with nothing new: no new checkpoint
        first = (tmp_path / "checkpoints.jsonl").read_text().splitlines()
        assert len(first) == 1
        await append(app, ticks(1))
        await asyncio.sleep(0.8)
        lines = (tmp_path / "checkpoints.jsonl").read_text().splitlines()
    finally:
        await cpr.stop()
    cps = [Checkpoint.from_json(json.loads(x)) for x in lines]
    assert len(cps) == 2 and cps[1].tree_size > cps[0].tree_size
    for cp in cps:
        verify_checkpoint(cp, signer.public_key)


# ------------------------------------------------------------------ the offline verifier


@asynccontextmanager
async def superuser_edit(db: AsyncEngine, table: str = "records") -> AsyncIterator[Any]:
    """A superuser connection with the refusing trigger switched off: the attack the tree is for."""
    async with db.begin() as c:
        await c.execute(text(f"ALTER TABLE audit.{table} DISABLE TRIGGER {table}_no_update_delete"))
        yield c
        await c.execute(text(f"ALTER TABLE audit.{table} ENABLE TRIGGER {table}_no_update_delete"))


def leaf_of(r: dict[str, Any]) -> bytes:
    """A served record's leaf, recomputed from what it serves (its envelope bytes, recorded_at and
    leaf format, chain.record_leaf_hash)."""
    return chain.record_leaf_hash(base64.b64decode(r["envelope_base64"]), datetime.fromisoformat(r["recorded_at"]),
                                  r["leaf_format"])


async def _row(db: AsyncEngine, seq: int) -> dict[str, Any]:
    async with db.connect() as c:
        return dict((await c.execute(text("SELECT * FROM audit.records WHERE seq = :s"), {"s": seq})).mappings().one())


async def _put_back(db: AsyncEngine, row: dict[str, Any]) -> None:
    async with superuser_edit(db) as c:
        await c.execute(text("DELETE FROM audit.records WHERE seq = :seq"), row)
        cols = ", ".join(row)
        await c.execute(text(f"INSERT INTO audit.records ({cols}) VALUES ({', '.join(':' + k for k in row)})"), row)


@asynccontextmanager
async def served(app: Any) -> AsyncIterator[int]:
    """The app over real HTTP on a free local port (for the command-line verifier): the port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
            await asyncio.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        await task


def verifier_client(app: Any, tenant: str = "t1") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                             headers=auth(tenant, READ))


async def test_the_offline_verifier_names_the_first_altered_removed_or_reordered_record(audit, db, tmp_path):
    app, client = audit
    seqs = await append(app, ticks(6))
    await sign(client)
    cp, key, _ = await latest(client)
    state = State(tmp_path / "kept")
    async with verifier_client(app) as vc:
        rep = await verify_log(vc, state, public_key=key)
        assert rep.ok, rep.to_json()
        assert rep.tree_size == cp.tree_size and rep.records_checked >= 6 and rep.leaves_checked == cp.tree_size
        assert (tmp_path / "kept" / "leaves.bin").stat().st_size == 32 * cp.tree_size

        a, b = seqs[1], seqs[3]
        row_a, row_b = await _row(db, a), await _row(db, b)
        # 1. The envelope edited, its hashes left alone: the recomputed leaf names it.
        forged = bytes(row_a["envelope"]).replace(b'"P1"', b'"P9"')
        assert forged != bytes(row_a["envelope"])
        try:
            async with superuser_edit(db) as c:
                await c.execute(text("UPDATE audit.records SET envelope = :e WHERE seq = :s"), {"e": forged, "s": a})
            rep = await verify_log(vc, state, public_key=key)
            assert (rep.ok, rep.first_bad_seq) == (False, a), rep.to_json()
            assert "envelope" in rep.problems[0].reason
        finally:
            await _put_back(db, row_a)

        # 2. Envelope and leaf hash rewritten consistently: the kept copy names it.
        try:
            async with superuser_edit(db) as c:
                await c.execute(text("UPDATE audit.records SET envelope = :e, leaf_hash = :h WHERE seq = :s"),
                                {"e": forged, "h": chain.record_leaf_hash(forged, row_a["recorded_at"],
                                                                          row_a["leaf_format"]), "s": a})
            rep = await verify_log(vc, state, public_key=key)
            assert (rep.ok, rep.first_bad_seq) == (False, a), rep.to_json()
            # The service's own check sees the record disagree with the tree's leaf.
            v = (await client.post("/v1/audit/verify", headers=auth("t1", READ))).json()
            assert (v["ok"], v["first_bad_seq"]) == (False, a), v
            # A verifier that never saw the log before (no kept copy) still names it, by bisecting
            # with consistency proofs against the signed head.
            fresh = await verify_log(vc, State(tmp_path / "fresh"), public_key=key)
            assert (fresh.ok, fresh.first_bad_seq) == (False, a), fresh.to_json()
            assert "consistency proofs" in " ".join(p.reason for p in fresh.problems)
            assert not (tmp_path / "fresh" / "checkpoint.json").exists()  # nothing accepted
        finally:
            await _put_back(db, row_a)

        # 3. A record removed.
        try:
            async with superuser_edit(db) as c:
                await c.execute(text("DELETE FROM audit.records WHERE seq = :s"), {"s": b})
            rep = await verify_log(vc, state, public_key=key)
            assert (rep.ok, rep.first_bad_seq) == (False, b), rep.to_json()
            assert "missing" in rep.problems[0].reason
        finally:
            await _put_back(db, row_b)

        # 4. Two records swapped (each still hashes right in its new place).
        try:
            async with superuser_edit(db) as c:
                for row, seq in ((row_a, b), (row_b, a)):
                    await c.execute(text("UPDATE audit.records SET envelope = :e, leaf_hash = :h, event_id = :i "
                                         "WHERE seq = :s"),
                                    {"e": row["envelope"], "h": row["leaf_hash"], "i": uuid.uuid4(), "s": seq})
            rep = await verify_log(vc, state, public_key=key)
            assert (rep.ok, rep.first_bad_seq) == (False, a), rep.to_json()
        finally:
            await _put_back(db, row_a)
            await _put_back(db, row_b)

        # 5. A checkpoint signed by another key is refused.
        rep = await verify_log(vc, State(tmp_path / "other-key"), public_key=Signer.generate().public_key)
        assert not rep.ok and "key" in rep.problems[0].reason

        # Restored: clean again, and the next run checks the extension from the kept checkpoint.
        await append(app, ticks(2))
        await sign(client)
        rep = await verify_log(vc, state, public_key=key)
        assert rep.ok and rep.previous_size == cp.tree_size and rep.tree_size > cp.tree_size, rep.to_json()


async def test_the_cli_verifies_over_http(audit, tmp_path):
    app, client = audit
    await append(app, ticks(2))
    await sign(client)
    _, key, _ = await latest(client)
    async with served(app) as port:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "trimtab.audit.cli", "verify", "--url", f"http://127.0.0.1:{port}",
            "--token", token("t1", READ), "--state-dir", str(tmp_path / "cli"),
            "--public-key", base64.b64encode(key).decode(), "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (out, err)
    rep = json.loads(out.decode().strip().splitlines()[-1])
    assert rep["ok"] is True and rep["first_bad_seq"] is None and rep["records_checked"] > 0
    files = (tmp_path / "cli" / "checkpoints.jsonl").read_text().splitlines()
    assert len(files) == 1


async def test_the_parallel_verifier_and_the_binary_pages(audit, db, tmp_path):
    """The verifier's bulk path as it runs on a large log (record pages re-hashed in two worker
    processes, pages of 2 records) names an altered envelope; records.bin is per tenant."""
    app, client = audit
    seqs = await append(app, ticks(5))
    await append(app, ticks(1, tenant="t2"))
    await sign(client)
    cp, key, _ = await latest(client)
    async with verifier_client(app) as vc, verifier_client(app, "t2") as other:
        v2 = {"frame_format": 2}
        r = await vc.get("/v1/audit/records.bin", params={"after_seq": seqs[0] - 1, "limit": 3, **v2})
        assert r.headers["x-frame-format"] == "2"
        got = [f[0] for f in frames.records(r.content)]
        assert got == seqs[:3]
        assert all(f[4] == "t1" for f in frames.records(
            (await vc.get("/v1/audit/records.bin", params={"limit": 50_000, **v2})).content))
        assert all(f[4] == "t2" for f in frames.records(
            (await other.get("/v1/audit/records.bin", params={"limit": 50_000, **v2})).content))
        # A verifier of an earlier release asks for no format and reads format 1, which cannot
        # carry these records: it is told so (review: it misread the new frames as altered content).
        old = await vc.get("/v1/audit/records.bin", params={"after_seq": seqs[0] - 1, "limit": 3})
        assert old.status_code == 409 and "frame_format=2" in old.json()["detail"], old.text
        leaves = (await vc.get("/v1/audit/leaves.bin", params={"start": 0, "end": cp.tree_size})).content
        assert len(leaves) == 40 * cp.tree_size

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(offline, "RECORD_PAGE", 2)
            rep = await verify_log(vc, State(tmp_path / "p"), public_key=key, workers=2, parallel_from=0)
            assert rep.ok and rep.records_checked >= 5, rep.to_json()
            row = await _row(db, seqs[2])
            try:
                async with superuser_edit(db) as c:
                    await c.execute(text("UPDATE audit.records SET envelope = :e WHERE seq = :s"),
                                    {"e": bytes(row["envelope"]).replace(b'"P2"', b'"P7"'), "s": seqs[2]})
                rep = await verify_log(vc, State(tmp_path / "p"), public_key=key, workers=2, parallel_from=0)
                assert (rep.ok, rep.first_bad_seq) == (False, seqs[2]), rep.to_json()
                assert "content altered" in rep.problems[0].reason
            finally:
                await _put_back(db, row)
            # The time of recording moved back a day, the envelope untouched: before leaf format
            # 2 it was outside every hash and both verifiers passed the record.
            try:
                async with superuser_edit(db) as c:
                    await c.execute(text("UPDATE audit.records SET recorded_at = recorded_at - interval '1 day' "
                                         "WHERE seq = :s"), {"s": seqs[2]})
                rep = await verify_log(vc, State(tmp_path / "p"), public_key=key, workers=2, parallel_from=0)
                assert (rep.ok, rep.first_bad_seq) == (False, seqs[2]), rep.to_json()
                assert "its time of recording" in rep.problems[0].reason
                v = (await client.post("/v1/audit/verify", headers=auth("t1", READ))).json()
                assert (v["ok"], v["first_bad_seq"]) == (False, seqs[2]), v
                assert "leaf hash does not match recorded_at and the envelope bytes" in v["reason"], v
            finally:
                await _put_back(db, row)
            rep = await verify_log(vc, State(tmp_path / "p"), public_key=key, workers=2, parallel_from=0)
            assert rep.ok, rep.to_json()


async def test_a_run_is_all_or_nothing_and_recorded_at_ascends(audit, db):
    """A run's records and nodes are written with COPY inside the run's transaction: abandoned,
    it leaves no record and no node behind; committed, its rows carry their time of recording
    (taken under the append lock), ascending with seq and not before the record before it, and
    inside their leaf hashes (leaf format 2)."""
    app, _ = audit
    rt = app.state.runtime
    lost = ticks(9)
    async with rt.uow() as uow:
        got = await handlers.append(uow.session, lost)
        assert len(got) == 9
        leaves = [bytes(h) for h in (await uow.session.execute(text(
            "SELECT leaf_hash FROM audit.records WHERE event_id = ANY(:ids)"), {"ids": [e.event_id for e in lost]}
        )).scalars()]
        inside = (await uow.session.execute(text("SELECT count(*) FROM audit.records WHERE event_id = ANY(:ids)"),
                                            {"ids": [e.event_id for e in lost]})).scalar_one()
        assert inside == 9
        # no commit: leaving the block rolls the run back
    async with db.connect() as c:
        assert (await c.execute(text("SELECT count(*) FROM audit.records WHERE event_id = ANY(:ids)"),
                                {"ids": [e.event_id for e in lost]})).scalar_one() == 0
        assert (await c.execute(text("SELECT count(*) FROM audit.tree_nodes WHERE level = 0 AND hash = ANY(:h)"),
                                {"h": leaves})).scalar_one() == 0

    kept = ticks(9)
    async with rt.uow() as uow:
        got = await handlers.append(uow.session, kept)
        await uow.commit()
    async with db.connect() as c:
        rows = (await c.execute(text(
            "SELECT seq, recorded_at, event_id, envelope, leaf_format, leaf_hash FROM audit.records "
            "WHERE seq >= :a - 1 AND seq <= :b ORDER BY seq"), {"a": got[0], "b": got[-1]})).all()
        nodes = (await c.execute(text("SELECT count(*) FROM audit.tree_nodes WHERE level = 0 AND hash = ANY(:h)"),
                                 {"h": [bytes(r.leaf_hash) for r in rows[-9:]]})).scalar_one()
    assert [r.event_id for r in rows[-9:]] == [e.event_id for e in kept] and nodes == 9
    times = [r.recorded_at for r in rows]
    assert times == sorted(times) and all(t.tzinfo is not None for t in times)
    # Each leaf holds its record's time of recording (leaf format 2) and its exact bytes.
    assert all(r.leaf_format == 2 and bytes(r.leaf_hash) == chain.record_leaf_hash(bytes(r.envelope), r.recorded_at, 2)
               and bytes(r.envelope) == e.to_bytes() for r, e in zip(rows[-9:], kept, strict=True))


async def test_the_servers_verify_checks_the_latest_signed_checkpoint(audit, db):
    """Found by review: `POST /v1/audit/verify` re-checked the chain and the leaves only, so a
    tail of signed records cut off, or a checkpoint whose signature was flipped, passed it (the
    offline verifier caught both). It checks the latest checkpoint now: signature, size, root."""
    app, client = audit
    await append(app, ticks(5))
    r = await client.post("/v1/audit/checkpoints", headers=auth("t1", ["audit:write"]))
    assert r.status_code in (200, 201), r.text
    n = r.json()["tree_size"]

    async def verify() -> dict[str, Any]:
        v = await client.post("/v1/audit/verify", headers=auth("t1", READ))
        assert v.status_code == 200, v.text
        return v.json()  # type: ignore[no-any-return]

    assert (await verify())["ok"]
    # A flipped signature.
    async with db.connect() as c:
        cid, sig = (await c.execute(text("SELECT id, signature FROM audit.checkpoints ORDER BY id DESC LIMIT 1"))).one()
    async with superuser_edit(db, "checkpoints") as c:
        await c.execute(text("UPDATE audit.checkpoints SET signature = :s WHERE id = :i"),
                        {"s": bytes([sig[0] ^ 1]) + bytes(sig[1:]), "i": cid})
    try:
        v = await verify()
        assert not v["ok"] and "does not verify" in v["reason"], v
    finally:
        async with superuser_edit(db, "checkpoints") as c:
            await c.execute(text("UPDATE audit.checkpoints SET signature = :s WHERE id = :i"), {"s": bytes(sig), "i": cid})
    # The last signed record cut off.
    last = await _row(db, n)
    async with superuser_edit(db) as c:
        await c.execute(text("DELETE FROM audit.records WHERE seq = :s"), {"s": n})
    try:
        v = await verify()
        assert not v["ok"] and v["first_bad_seq"] == n and "records are missing" in v["reason"], v
    finally:
        async with superuser_edit(db) as c:
            cols = ", ".join(last)
            await c.execute(text(f"INSERT INTO audit.records ({cols}) VALUES ({', '.join(':' + k for k in last)})"),
                            last)
    assert (await verify())["ok"]
