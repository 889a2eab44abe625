"""`POST /v1/audit/verify` reports the extent of a tampering, not only its first place.

Before, verify stopped at the first mismatch: a compliance officer learned that the record was
tampered with and where it started, not which records. The top level (`ok`, `records_checked`,
`first_bad_seq`, `reason`) is still the first failure, exactly as before; `bad_seqs`, `bad_count`
and `mismatches` list every place that fails its own checks (a run of missing records once), up to
caps.

The database is shared with the other modules: every row rewritten or deleted here is put back.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.audit.test_audit_checkpoint_file import triggers_off
from tests.integration.audit.test_audit_proofs import append, sign, ticks
from tests.support import auth
from trimtab.audit.domain.chain import chain_hash, record_leaf_hash
from trimtab.audit.verify import verify_record

pytestmark = pytest.mark.integration
READ = ["audit:read"]
LEAF_VS_ENVELOPE = "leaf hash does not match recorded_at and the envelope bytes"  # leaf format 2
LEAF_VS_TREE = "leaf hash differs from the Merkle tree's leaf for this seq"


async def verify(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.post("/v1/audit/verify", headers=auth("t1", READ))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _other_price(envelope: bytes, price: str) -> bytes:
    forged = re.sub(rb'"price_usd":"[^"]*"', f'"price_usd":"{price}"'.encode(), envelope)
    assert forged != envelope
    return forged


@asynccontextmanager
async def tampered(db: AsyncEngine, *, edited: Sequence[int] = (), rewritten: int | None = None,
                   deleted: Sequence[int] = ()) -> AsyncIterator[None]:
    """As the database's owner could, in one transaction: the envelopes of `edited` changed with
    their hashes left alone; record `rewritten` given another envelope, its leaf hash and the chain
    from it to the head recomputed (consistent: only the tree's own leaf still tells); the rows
    `deleted` removed. Every row is put back on exit."""
    first = min([*edited, *deleted, *([] if rewritten is None else [rewritten])])
    async with triggers_off(db, "records") as c:
        rows = [dict(r) for r in (await c.execute(text(
            "SELECT * FROM audit.records WHERE seq >= :s ORDER BY seq"), {"s": first})).mappings()]
        by_seq = {r["seq"]: r for r in rows}
        assert sorted(by_seq) == list(range(first, rows[-1]["seq"] + 1)), "gap-free from the first tampered seq"
        for seq in edited:
            await c.execute(text("UPDATE audit.records SET envelope = :e WHERE seq = :s"),
                            {"e": _other_price(bytes(by_seq[seq]["envelope"]), "777.25"), "s": seq})
        if rewritten is not None:
            prev = bytes(by_seq[rewritten]["prev_hash"])
            for r in rows:
                if r["seq"] < rewritten:
                    continue
                env = bytes(r["envelope"])
                if r["seq"] == rewritten:
                    env = _other_price(env, "999.5")
                leaf = record_leaf_hash(env, r["recorded_at"], r["leaf_format"])
                link = chain_hash(prev, leaf)
                await c.execute(text("UPDATE audit.records SET envelope = :e, leaf_hash = :l, prev_hash = :p, "
                                     "chain_hash = :h WHERE seq = :s"),
                                {"e": env, "l": leaf, "p": prev, "h": link, "s": r["seq"]})
                prev = link
        for seq in deleted:
            await c.execute(text("DELETE FROM audit.records WHERE seq = :s"), {"s": seq})
    try:
        yield
    finally:
        async with triggers_off(db, "records") as c:
            await c.execute(text("DELETE FROM audit.records WHERE seq = ANY(:s)"), {"s": list(by_seq)})
            cols = ", ".join(rows[0])
            await c.execute(text(f"INSERT INTO audit.records ({cols}) VALUES ({', '.join(':' + k for k in rows[0])})"),
                            rows)


async def test_an_honest_log_has_no_bad_places(audit):
    app, client = audit
    await append(app, ticks(3))
    v = await verify(client)
    assert v["ok"] is True and v["first_bad_seq"] is None and v["reason"] is None, v
    assert (v["bad_seqs"], v["bad_count"], v["mismatches"]) == ([], 0, []), v


async def test_three_tamperings_are_all_named_and_nothing_else(audit, db):
    app, client = audit
    seqs = await append(app, ticks(10))
    a, b, c = seqs[1], seqs[4], seqs[7]
    assert (await verify(client))["ok"]
    async with tampered(db, edited=[a], rewritten=b, deleted=[c]):
        v = await verify(client)
        # The top level: the first failure, as before the extent was kept.
        assert (v["ok"], v["first_bad_seq"], v["reason"], v["records_checked"]) == (False, a, LEAF_VS_ENVELOPE, a), v
        # The extent: the three places, the deletion once (its successor's link is not blamed),
        # the rewritten chain after b not at all.
        assert (v["bad_seqs"], v["bad_count"]) == ([a, b, c], 3), v
        assert v["mismatches"] == [
            {"seq": a, "last_seq": None, "reason": LEAF_VS_ENVELOPE},
            {"seq": b, "last_seq": None, "reason": LEAF_VS_TREE},
            {"seq": c, "last_seq": c, "reason": f"record missing: expected seq {c}, found seq {c + 1}"},
        ], v
        # The same in tiny batches (batch edges everywhere, one of them at the gap).
        for size in (2, 3):
            small = await verify_record(app.state.runtime.sessionmaker, trusted_keys=app.state.trusted_keys,
                                        checkpoint_file=app.state.checkpointer.path, batch_size=size)
            assert (small.first_bad_seq, small.records_checked, small.bad_seqs) == (a, a, (a, b, c)), small
            assert [m.seq for m in small.mismatches] == [a, b, c]
    v = await verify(client)
    assert v["ok"] and v["bad_seqs"] == [] and v["mismatches"] == [], v


async def test_a_run_of_deleted_records_is_one_place(audit, db):
    app, client = audit
    seqs = await append(app, ticks(6))
    async with tampered(db, deleted=seqs[1:4]):
        v = await verify(client)
        assert (v["first_bad_seq"], v["bad_seqs"], v["bad_count"]) == (seqs[1], [seqs[1]], 1), v
        assert v["mismatches"][0]["last_seq"] == seqs[3], v
    assert (await verify(client))["ok"]


async def test_the_extent_is_capped_and_counted_in_full(audit, db):
    app, client = audit
    seqs = await append(app, ticks(9))
    bad = seqs[::2]  # five non-adjacent records edited
    assert len(bad) == 5
    async with tampered(db, edited=bad):
        rep = await verify_record(app.state.runtime.sessionmaker, trusted_keys=app.state.trusted_keys,
                                  checkpoint_file=app.state.checkpointer.path, max_bad_seqs=3, max_mismatches=2)
        assert (rep.ok, rep.first_bad_seq, rep.reason) == (False, bad[0], LEAF_VS_ENVELOPE), rep
        assert (rep.bad_seqs, rep.bad_count) == (tuple(bad[:3]), 5), rep
        assert [(m.seq, m.reason) for m in rep.mismatches] == [(s, LEAF_VS_ENVELOPE) for s in bad[:2]], rep
        v = await verify(client)  # the service's caps (1,000 seqs, 100 reasons) hold them all
        assert (v["bad_seqs"], v["bad_count"], len(v["mismatches"])) == (bad, 5, 5), v
    assert (await verify(client))["ok"]


async def test_a_failed_checkpoint_is_the_report_and_the_records_are_still_read(audit, db):
    """The last signed record cut off (a checkpoint failure, found before any record is read: the
    report as before) and an earlier record edited: both places are listed."""
    app, client = audit
    seqs = await append(app, ticks(4))
    n = (await sign(client))["tree_size"]
    assert n == seqs[-1]
    async with tampered(db, edited=[seqs[0]], deleted=[n]):
        v = await verify(client)
        assert (v["ok"], v["first_bad_seq"], v["records_checked"]) == (False, n, 0), v
        assert "records are missing" in v["reason"], v
        assert (v["bad_seqs"], v["bad_count"]) == ([seqs[0], n], 2), v
        assert v["mismatches"][0] == {"seq": seqs[0], "last_seq": None, "reason": LEAF_VS_ENVELOPE}, v
        assert (v["mismatches"][1]["seq"], v["mismatches"][1]["last_seq"]) == (n, n), v
    assert (await verify(client))["ok"]
