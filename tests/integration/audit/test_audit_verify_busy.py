"""`POST /v1/audit/verify` re-reads the whole log: one run at a time per instance; a second
call while one runs is a 429 problem+json (it cannot pile full scans onto the database), and the
next call after it ends runs."""

from __future__ import annotations

import pytest

from tests.integration.audit.test_audit import READ
from tests.support import auth

pytestmark = pytest.mark.integration


async def test_one_verification_at_a_time(audit):
    app, client = audit
    from trimtab.audit.api import _verify_lock

    class _Req:  # the lock lives on the app's state, created on first use
        pass

    req = _Req()
    req.app = app  # type: ignore[attr-defined]
    lock = _verify_lock(req)  # type: ignore[arg-type]
    async with lock:  # a verification is running
        r = await client.post("/v1/audit/verify", headers=auth("t1", READ))
        assert r.status_code == 429 and r.headers["content-type"].startswith("application/problem+json")
        assert "already running" in r.json()["detail"]
    r = await client.post("/v1/audit/verify", headers=auth("t1", READ))
    assert r.status_code == 200 and r.json()["ok"] is True
