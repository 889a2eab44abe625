"""What the offline verifier sees of the caller's own records, and of a log cut below its signed
size, against real PostgreSQL:

* a superuser who edits one of the caller's records and moves its tenant column to another tenant
  makes it vanish from the caller's `records.bin`; a verifier that kept the caller's seqs names it
  (a first run with no kept state cannot: see docs/audit.md);
* records a signed checkpoint covers, deleted from the end of the log, are named as gone at the
  first missing seq (exit 1), with or without kept state, instead of "could not run" (exit 2).

The database is shared with other suites: every test uses its own tenant.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from tests.integration.audit.test_audit_proofs import (
    _put_back,
    _row,
    append,
    latest,
    served,
    sign,
    superuser_edit,
    ticks,
    verifier_client,
)
from tests.support import token
from trimtab.audit import cli
from trimtab.audit.offline import State, verify_log

pytestmark = pytest.mark.integration


def _tenant() -> str:
    return f"vv-{uuid.uuid4().hex[:8]}"


async def test_a_record_moved_to_another_tenant_is_named_by_a_verifier_that_kept_its_seqs(audit, db, tmp_path):
    app, client = audit
    me, elsewhere = _tenant(), _tenant()
    seqs = await append(app, ticks(4, tenant=me))
    await sign(client)
    _, key, _ = await latest(client)
    state = State(tmp_path / "kept")
    async with verifier_client(app, me) as vc, verifier_client(app, elsewhere) as other:
        rep = await verify_log(vc, state, public_key=key, workers=0)
        assert rep.ok and rep.records_checked == 4, rep.to_json()
        kept = json.loads((tmp_path / "kept" / "own_records.json").read_text())
        assert kept["tenant"] == me and kept["count"] == 4 and kept["last_seq"] == seqs[-1]

        hidden = seqs[1]
        row = await _row(db, hidden)
        forged = bytes(row["envelope"]).replace(b'"P1"', b'"P9"')
        assert forged != bytes(row["envelope"])
        try:
            async with superuser_edit(db) as c:
                await c.execute(text("UPDATE audit.records SET envelope = :e, tenant_id = :t WHERE seq = :s"),
                                {"e": forged, "t": elsewhere, "s": hidden})
            rep = await verify_log(vc, state, public_key=key, workers=0)
            assert (rep.ok, rep.first_bad_seq) == (False, hidden), rep.to_json()
            assert "no longer served" in rep.problems[0].reason
            assert rep.records_checked == 3
            # Pinning the tenant gives the same answer; a state directory is one tenant's.
            rep = await verify_log(vc, state, public_key=key, workers=0, tenant=me)
            assert (rep.ok, rep.first_bad_seq) == (False, hidden), rep.to_json()
            with pytest.raises(RuntimeError, match="one state directory per tenant"):
                await verify_log(vc, state, public_key=key, workers=0, tenant=elsewhere)
            # The documented limit: a verifier with no kept state never learns the record was
            # the caller's (leaf hashes name no tenant); the tree and the records served are intact.
            fresh = await verify_log(vc, State(tmp_path / "fresh"), public_key=key, workers=0)
            assert fresh.ok and fresh.records_checked == 3, fresh.to_json()
            # The tenant it was moved to is served a record whose bytes are not its own.
            theirs = await verify_log(other, State(tmp_path / "theirs"), public_key=key, workers=0)
            assert (theirs.ok, theirs.first_bad_seq) == (False, hidden), theirs.to_json()
        finally:
            await _put_back(db, row)
        rep = await verify_log(vc, state, public_key=key, workers=0)
        assert rep.ok, rep.to_json()  # put back: clean again


async def test_records_cut_from_the_end_below_a_signed_checkpoint_are_named_gone(audit, db, tmp_path):
    app, client = audit
    me = _tenant()
    await append(app, ticks(3, tenant=me))
    await sign(client)
    _, key, _ = await latest(client)
    state = State(tmp_path / "kept")
    async with verifier_client(app, me) as vc:
        assert (await verify_log(vc, state, public_key=key, workers=0)).ok
        await append(app, ticks(2, tenant=me))
        await sign(client)
        cp, _, _ = await latest(client)
        cut = cp.tree_size
        row = await _row(db, cut)
        try:
            async with superuser_edit(db) as c:
                await c.execute(text("DELETE FROM audit.records WHERE seq = :s"), {"s": cut})
            for st in (state, State(tmp_path / "fresh")):
                rep = await verify_log(vc, st, public_key=key, workers=0)
                assert (rep.ok, rep.first_bad_seq) == (False, cut), rep.to_json()
                assert any("covered by the signed checkpoint are gone" in p.reason for p in rep.problems), \
                    rep.to_json()
            # The command line says so with exit 1 (tampering), not 2 (could not run).
            async with served(app) as port:
                argv = ["verify", "--url", f"http://127.0.0.1:{port}", "--token", token(me, ["audit:read"]),
                        "--state-dir", str(tmp_path / "cli"), "--public-key", base64.b64encode(key).decode(),
                        "--json"]
                rc = await asyncio.to_thread(cli.main, argv)
            assert rc == 1
        finally:
            await _put_back(db, row)
        assert (await verify_log(vc, state, public_key=key, workers=0)).ok


async def test_the_service_answers_for_its_signed_size(audit, db):
    """`/consistency` and `/leaves.bin` up to the latest signed size answer even when the records
    at its end are gone (proofs from the stored nodes; the lost leaves absent), rather than 422."""
    app, client = audit
    me = _tenant()
    await append(app, ticks(2, tenant=me))
    await sign(client)
    cp, _, _ = await latest(client)
    row: dict[str, Any] = await _row(db, cp.tree_size)
    async with verifier_client(app, me) as vc:
        try:
            async with superuser_edit(db) as c:
                await c.execute(text("DELETE FROM audit.records WHERE seq = :s"), {"s": cp.tree_size})
            r = await vc.get("/v1/audit/consistency", params={"from": cp.tree_size - 1, "to": cp.tree_size})
            assert r.status_code == 200 and r.json()["to_root"] == cp.root_hash.hex(), r.text
            r = await vc.get("/v1/audit/leaves.bin", params={"start": cp.tree_size - 2, "end": cp.tree_size})
            assert r.status_code == 200 and r.headers["x-end"] == str(cp.tree_size) and len(r.content) == 40
            r = await vc.get("/v1/audit/leaves", params={"start": cp.tree_size - 2, "end": cp.tree_size})
            assert r.json()["missing_seqs"] == [cp.tree_size]
        finally:
            await _put_back(db, row)
