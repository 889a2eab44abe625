"""`POST /v1/audit/verify` accepts the latest checkpoint only when it is signed by a trusted key: the
service's own, or a retired or peer public key given in `AUDIT_TRUSTED_PUBLIC_KEYS`. The key id a
checkpoint names selects one of those keys; it never brings one.

Found by review: a checkpoint naming another key than the service's was checked for size and root
only, so someone able to rewrite the records, the tree and the checkpoint could rewrite its
`key_id` too and skip the signature check.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.integration.audit.conftest import KeyRing
from tests.integration.audit.test_audit_proofs import append, superuser_edit, ticks, verifier_client
from tests.support import auth, running
from trimtab.audit import cli
from trimtab.audit.domain.checkpoint import Checkpoint, Signer, key_id
from trimtab.audit.offline import State, verify_log

pytestmark = pytest.mark.integration
READ = ["audit:read"]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


async def verify(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.post("/v1/audit/verify", headers=auth("t1", READ))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def sign(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.post("/v1/audit/checkpoints", headers=auth("t1", ["audit:write"]))
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def latest(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/v1/audit/checkpoints/latest", headers=auth("t1", READ))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


@asynccontextmanager
async def instance(keys: KeyRing, database_url: str, kafka_bootstrap: str, directory: Path, signer: Signer,
                   trusted: list[bytes]) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """An audit instance on the shared database signing with `signer` and trusting exactly
    `trusted` besides its own key (as after a rotation: the new key, the retired ones listed)."""
    app = keys.create(database_url, kafka_bootstrap, trusted=trusted, AUDIT_SIGNING_KEY=_b64(signer.raw_private()),
                      AUDIT_CHECKPOINT_DIR=str(directory), AUDIT_CHECKPOINT_INTERVAL_S=0)
    async with running(app) as client:
        yield app, client


async def _latest_row(db: Any) -> tuple[int, str, bytes]:
    async with db.connect() as c:
        cid, kid, sig = (await c.execute(text(
            "SELECT id, key_id, signature FROM audit.checkpoints ORDER BY tree_size DESC, id DESC LIMIT 1"))).one()
    return cid, kid, bytes(sig)


async def _set(db: Any, cid: int, kid: str, sig: bytes) -> None:
    async with superuser_edit(db, "checkpoints") as c:
        await c.execute(text("UPDATE audit.checkpoints SET key_id = :k, signature = :s WHERE id = :i"),
                        {"k": kid, "s": sig, "i": cid})


async def test_a_checkpoint_whose_key_id_was_rewritten_to_an_unknown_key_fails_verify(audit, audit_keys, db):
    app, client = audit
    await append(app, ticks(3))
    signed = await sign(client)
    assert (await verify(client))["ok"]
    cid, kid, sig = await _latest_row(db)
    assert kid == signed["key_id"] == key_id(app.state.checkpointer.signer.public_key)
    stranger = Signer.generate()
    try:
        # 1. Only the key id rewritten, to a key nobody configured: its signature was skipped before.
        await _set(db, cid, key_id(stranger.public_key), sig)
        v = await verify(client)
        assert not v["ok"] and v["first_bad_seq"] is None, v
        assert "not a trusted key" in v["reason"] and key_id(stranger.public_key)[:16] in v["reason"], v
        assert "AUDIT_TRUSTED_PUBLIC_KEYS" in v["reason"]
        # The head is served with the service's own key, never one taken on the checkpoint's word.
        assert (await latest(client))["public_key"] == _b64(app.state.checkpointer.signer.public_key)
        export = await client.get("/v1/audit/export", headers=auth("t1", READ), params={"limit": 1})
        head = json.loads(export.text.splitlines()[0])
        assert head["type"] == "checkpoint" and head["public_key"] is None and "does not trust" in head["public_key_note"]

        # 2. The whole checkpoint re-signed with the intruder's own key (what someone who rewrote
        #    the records and the tree would do): self-consistent, and still refused.
        genuine = Checkpoint.from_json(signed)
        forged = stranger.sign(genuine.tree_size, genuine.root_hash, genuine.signed_at)
        await _set(db, cid, forged.key_id, forged.signature)
        v = await verify(client)
        assert not v["ok"] and "not a trusted key" in v["reason"], v

        # 3. The key id of a trusted key (a configured peer's) over the service's own signature:
        #    the peer's key checks it, and it does not verify.
        await _set(db, cid, key_id(audit_keys.peer.public_key), sig)
        v = await verify(client)
        assert not v["ok"] and "does not verify" in v["reason"], v
    finally:
        await _set(db, cid, kid, sig)
    assert (await verify(client))["ok"]


async def test_a_checkpoint_signed_by_a_configured_retired_key_passes(database_url, kafka_bootstrap, audit_keys,
                                                                     tmp_path):
    retired, current = Signer.generate(), Signer.generate()
    async with instance(audit_keys, database_url, kafka_bootstrap, tmp_path / "retired", retired, []) as (app, client):
        await append(app, ticks(3))
        cp = await sign(client)
    assert cp["key_id"] == retired.key_id
    # The key rotated: the latest checkpoint is still the retired key's.
    async with instance(audit_keys, database_url, kafka_bootstrap, tmp_path / "current", current,
                        [retired.public_key]) as (app, client):
        v = await verify(client)
        assert v["ok"], v
        head = await latest(client)  # served with the key that signed it, so it can be checked
        assert (head["key_id"], head["public_key"]) == (retired.key_id, _b64(retired.public_key))
        export = await client.get("/v1/audit/export", headers=auth("t1", READ), params={"limit": 1})
        assert json.loads(export.text.splitlines()[0])["public_key"] == _b64(retired.public_key)
    # The same genuine checkpoint, the retired key not configured: verification fails closed.
    async with instance(audit_keys, database_url, kafka_bootstrap, tmp_path / "bare", current, []) as (app, client):
        v = await verify(client)
        assert not v["ok"] and "not a trusted key" in v["reason"] and retired.key_id[:16] in v["reason"], v


async def test_a_rotated_key_passes_with_the_retired_key_configured(database_url, kafka_bootstrap, audit_keys,
                                                                    tmp_path):
    old, new = Signer.generate(), Signer.generate()
    kept = State(tmp_path / "verifier")
    async with instance(audit_keys, database_url, kafka_bootstrap, tmp_path / "old", old, []) as (app, client):
        await append(app, ticks(3))
        cp_old = await sign(client)
        assert (await verify(client))["ok"]
        async with verifier_client(app) as vc:
            assert (await verify_log(vc, kept, public_key=old.public_key, workers=0)).ok
    async with instance(audit_keys, database_url, kafka_bootstrap, tmp_path / "new", new,
                        [old.public_key]) as (app, client):
        assert (await verify(client))["ok"]  # the old key's checkpoint, before the new key signed
        await append(app, ticks(3))
        cp_new = await sign(client)
        assert cp_new["key_id"] == new.key_id and cp_new["tree_size"] > cp_old["tree_size"]
        v = await verify(client)
        assert v["ok"], v
        # The offline verifier pins one key: given the new one, it accepts the new head and checks
        # that it extends the one it kept from the old key.
        async with verifier_client(app) as vc:
            rep = await verify_log(vc, kept, public_key=new.public_key, workers=0)
            assert rep.ok and rep.previous_size == cp_old["tree_size"], rep.to_json()
            stale = await verify_log(vc, State(tmp_path / "stale"), public_key=old.public_key, workers=0)
            assert not stale.ok and "key" in stale.problems[0].reason
    # The checkpoint files of both keys, one history: checked with both keys, not with the new one alone.
    f = tmp_path / "checkpoints.jsonl"
    f.write_text((tmp_path / "old" / "checkpoints.jsonl").read_text() + (tmp_path / "new" / "checkpoints.jsonl").read_text())
    both = ["--public-key", _b64(old.public_key), "--public-key", _b64(new.public_key)]
    assert cli.main(["checkpoints", "--file", str(f), *both]) == 0
    assert cli.main(["checkpoints", "--file", str(f), "--public-key", _b64(new.public_key)]) == 1
