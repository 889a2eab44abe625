"""audit's compliance exports against real PostgreSQL and Kafka: a household's records (the ones
naming it and every record of its accounts), as JSON Lines with proofs, HTML or a reproducible PDF;
and the migration that gives existing records their household.

The database is shared with other suites, so assertions are about the records this module appends.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from tests.conftest import _drop as drop_database
from tests.integration.audit.test_audit import NOW, one_tick_chain
from tests.integration.audit.test_audit_proofs import append, latest, proof_of, sign
from tests.support import auth
from tests.unit.audit.test_audit_report import pdf_text
from trimtab.audit import tree
from trimtab.audit.domain import chain, merkle
from trimtab.audit.domain.checkpoint import Checkpoint, verify_checkpoint
from trimtab.audit.domain.record import facts_of
from trimtab.audit.verify import verify_record
from trimtab.shared.db import async_url
from trimtab.shared.envelope import Envelope
from trimtab.shared.events import Fill, TradesExecuted
from trimtab.shared.infra import Database, ensure_database
from trimtab.shared.migrate import alembic_config, migrations_dir_of, upgrade

pytestmark = pytest.mark.integration
READ = ["audit:read"]
REASON = "Client asked to keep the café position 😀 until January"


def executed(tenant: str, acct: str, after: Envelope) -> Envelope:
    """The OMS's fills, later: they name the account only."""
    return after.caused(TradesExecuted(
        execution_id=f"X-{uuid.uuid4().hex[:8]}", account_id=acct, fills=[Fill(
            client_order_id="c-1", symbol="BBB", side="buy", shares=Decimal("10"), price_usd=Decimal("55.4"),
            executed_at=NOW)]), producer="oms")


def envs_of(pairs: list[tuple[Envelope, str]]) -> list[Envelope]:
    return [e for e, _ in pairs]


async def export(client: httpx.AsyncClient, tenant: str = "t1", **params: Any) -> httpx.Response:
    return await client.get("/v1/audit/export", headers=auth(tenant, READ), params=params)


def jsonl(r: httpx.Response) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    assert r.status_code == 200, r.text
    lines = [json.loads(x) for x in r.text.splitlines()]
    return lines[0], lines[1:-1], lines[-1]


@pytest.fixture(scope="module")
async def household(audit) -> dict[str, Any]:
    """Two accounts of one household (their drift and proposal name it; risk, explanation, decision,
    trades and later fills do not), one account of another household, and the same household and
    account ids under another tenant."""
    app, client = audit
    hh, other_hh = f"HH-{uuid.uuid4().hex[:8]}", f"HH-{uuid.uuid4().hex[:8]}"
    a1, a2, b1 = (f"ACC-{uuid.uuid4().hex[:6]}" for _ in range(3))
    c1, _ = one_tick_chain("t1", account_id=a1, household_id=hh, reason=REASON)
    c2, _ = one_tick_chain("t1", account_id=a2, household_id=hh)
    cb, _ = one_tick_chain("t1", account_id=b1, household_id=other_hh)
    cx, _ = one_tick_chain("t-other", account_id=a1, household_id=hh)
    fills = executed("t1", a1, c1[-1][0])
    mine = [e for e in envs_of(c1) + envs_of(c2) + [fills] if e.payload.get("account_id")]
    await append(app, envs_of(c1) + envs_of(cb) + envs_of(c2) + envs_of(cx) + [fills])
    await sign(client)
    return {"hh": hh, "other_hh": other_hh, "a1": a1, "a2": a2, "b1": b1, "mine": mine}


async def test_a_household_export_has_its_accounts_whole_story_and_nothing_else(audit, household):
    app, client = audit
    h = household
    cp, key, _ = await latest(client)
    head, records, tail = jsonl(await export(client, household_id=h["hh"]))
    verify_checkpoint(Checkpoint.from_json(head), key)
    # Exactly this tenant's records of the household's two accounts, in seq order: the drift and
    # proposal that name the household, and the risk, explanation, decision, approval and fills
    # that name only the account. Not the ticks, not the other household, not the other tenant.
    assert {uuid.UUID(x["event_id"]) for x in records} == {e.event_id for e in h["mine"]}
    assert [x["seq"] for x in records] == sorted(x["seq"] for x in records)
    assert {x["account_id"] for x in records} == {h["a1"], h["a2"]} and {x["tenant_id"] for x in records} == {"t1"}
    by_type: dict[str, set[str | None]] = {}
    for x in records:
        by_type.setdefault(x["event_type"], set()).add(x["household_id"])
    assert by_type == {"DriftDetected": {h["hh"]}, "RebalanceProposed": {h["hh"]}, "RiskAssessed": {None},
                       "ExplanationCreated": {None}, "RebalanceDecided": {None}, "TradesApproved": {None},
                       "TradesExecuted": {None}}
    assert tail == {"type": "page", "records": len(records), "next_after_seq": None}
    for x in records:  # every line proves itself against the signed root
        assert x["leaf_format"] == 2  # the time of recording is under the proof too
        leaf = chain.record_leaf_hash(base64.b64decode(x["envelope_base64"]), datetime.fromisoformat(x["recorded_at"]),
                                      x["leaf_format"])
        merkle.verify_inclusion(x["leaf_index"], x["proof"]["tree_size"], leaf, proof_of(x), cp.root_hash)

    # Paged like every export: the pages add up to the whole.
    _, first, t1 = jsonl(await export(client, household_id=h["hh"], limit=4))
    assert t1["next_after_seq"] == first[-1]["seq"] and first == records[:4]
    _, rest, t2 = jsonl(await export(client, household_id=h["hh"], after_seq=t1["next_after_seq"]))
    assert first + rest == records and t2["next_after_seq"] is None
    # With other filters: one account of the household; a time window before everything.
    _, only_a2, _ = jsonl(await export(client, household_id=h["hh"], account_id=h["a2"]))
    assert only_a2 and {x["account_id"] for x in only_a2} == {h["a2"]}
    _, none, _ = jsonl(await export(client, household_id=h["hh"], until="2000-01-01T00:00:00Z"))
    assert none == []
    # The other household has its own account only; the other tenant sees its own records only.
    _, theirs, _ = jsonl(await export(client, household_id=h["other_hh"]))
    assert {x["account_id"] for x in theirs} == {h["b1"]} and len(theirs) == 6
    _, other_tenant, _ = jsonl(await export(client, tenant="t-other", household_id=h["hh"]))
    assert {x["tenant_id"] for x in other_tenant} == {"t-other"} and len(other_tenant) == 6
    # The records API shows the column too.
    drift_seq = next(x["seq"] for x in records if x["event_type"] == "DriftDetected")
    one = (await client.get(f"/v1/audit/records/{drift_seq}", headers=auth("t1", READ))).json()
    assert one["household_id"] == h["hh"]
    # The service's verification holds the new column to the envelope like the others.
    v = (await client.post("/v1/audit/verify", headers=auth("t1", READ))).json()
    assert v["ok"], v


async def test_the_pdf_report_is_the_html_report_reproducibly(audit, household):
    _, client = audit
    h = household
    cp, key, _ = await latest(client)
    r = await export(client, household_id=h["hh"], format="pdf")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["content-disposition"] == 'attachment; filename="trimtab-audit-t1.pdf"'
    pdf = r.content
    assert pdf.startswith(b"%PDF")
    # The same export again: the same bytes (dated by the checkpoint, not the clock).
    again = await export(client, household_id=h["hh"], format="pdf")
    assert again.content == pdf
    text_ = pdf_text(pdf)
    for s in ("Audit report: tenant t1", f"household_id = {h['hh']}", f"Records: {len(h['mine'])}.",
              f"{cp.tree_size} records", cp.root_hash.hex(), cp.key_id, base64.b64encode(key).decode(),
              "trimtab-audit verify", "DriftDetected", "TradesExecuted", h["a1"], h["a2"], "advisor@t1"):
        assert s.encode("latin-1") in text_, s
    # The reason with an accent and an emoji: the accent as is, the emoji named.
    assert "café".encode("latin-1") in text_ and b"<U+1F600>" in text_
    assert h["b1"].encode() not in text_
    # The HTML report of the same filter has the same rows.
    html = (await export(client, household_id=h["hh"], format="html")).text
    assert REASON in html and cp.root_hash.hex() in html and f"household_id = {h['hh']}" in html
    assert html.count("<tr>") == len(h["mine"]) + 1


async def test_bad_export_parameters_are_422(audit):
    _, client = audit
    for params in ({"format": "xls"}, {"household_id": "H" * 65}, {"limit": 0}):
        r = await export(client, **params)
        assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json"), params


# ------------------------------------------------------------------ the migration


def _to_revision(url: str, revision: str, *, down: bool = False) -> Any:
    async def go() -> None:
        engine = create_async_engine(async_url(url), poolclass=pool.NullPool)
        try:
            async with engine.begin() as conn:
                await conn.execute(text('CREATE SCHEMA IF NOT EXISTS "audit"'))

                def up(sync_conn: Connection) -> None:
                    from alembic import command

                    cfg = alembic_config(migrations_dir_of("trimtab.audit"), url, "audit")
                    cfg.attributes["connection"] = sync_conn
                    (command.downgrade if down else command.upgrade)(cfg, revision)

                await conn.run_sync(up)
        finally:
            await engine.dispose()
    return go()


async def test_the_migration_gives_existing_records_their_household(pg_server: Database):
    url = pg_server.url_for(f"trimtab_test_audit_mig_{uuid.uuid4().hex[:8]}")
    await ensure_database(url, recreate=True)
    engine = create_async_engine(async_url(url), poolclass=pool.NullPool)
    try:
        await _to_revision(url, "e790489c45b2")  # the schema before household_id
        hh = "HH-OLD"
        pairs, _ = one_tick_chain("t1", household_id=hh)
        plain, _ = one_tick_chain("t1")
        envs = envs_of(pairs) + envs_of(plain)
        # Written as the previous version of the handler did: every column but household_id.
        rows, leaves, prev = [], [], chain.GENESIS_HASH
        for seq, env in enumerate(envs, start=1):
            data = env.to_bytes()
            leaf = chain.leaf_hash(data)
            link = chain.chain_hash(prev, leaf)
            f = facts_of(env).columns()
            del f["household_id"]
            rows.append({**f, "seq": seq, "envelope": data, "leaf_hash": leaf, "prev_hash": prev, "chain_hash": link})
            leaves.append(leaf)
            prev = link
        sm = async_sessionmaker(engine)
        async with sm() as s, s.begin():
            cols = list(rows[0])
            await s.execute(text(f"INSERT INTO audit.records ({', '.join(cols)}) "
                                 f"VALUES ({', '.join(':' + c for c in cols)})"), rows)
            await tree.append_leaves(s, 0, leaves)

        await upgrade(url, migrations_dir_of("trimtab.audit"), "audit")
        async with engine.connect() as c:
            got = dict((await c.execute(text("SELECT event_id, household_id FROM audit.records"))).all())
        named = {e.event_id for e in envs_of(pairs) if e.event_type in ("DriftDetected", "RebalanceProposed")}
        assert len(named) == 2
        want = {e.event_id: (hh if e.event_id in named else None) for e in envs}
        assert got == want
        rep = await verify_record(sm, trusted_keys=())  # a fresh database: no checkpoint to check
        assert rep.ok and rep.records_checked == len(envs), rep
        # The table refuses edits again once migrated.
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as c:
                await c.execute(text("UPDATE audit.records SET household_id = 'x' WHERE seq = 1"))
    finally:
        await engine.dispose()
        await drop_database(url)
