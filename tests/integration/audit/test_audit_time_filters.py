"""The export's `since` / `until` filters: a time that has no UTC value (before year 1 or after
year 9999 once its offset is applied) is a 422 problem+json, in every format; the extreme times
that do exist still filter as they say."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.integration.audit.test_audit_proofs import append, ticks
from tests.support import auth

pytestmark = pytest.mark.integration
READ = ["audit:read"]
OUT_OF_RANGE = ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:00:00-01:00"]


@pytest.mark.parametrize("param", ["since", "until"])
@pytest.mark.parametrize("value", OUT_OF_RANGE)
@pytest.mark.parametrize("fmt", ["jsonl", "html", "pdf"])
async def test_a_time_without_a_utc_value_is_a_422(audit, param, value, fmt):
    _, client = audit
    r = await client.get("/v1/audit/export", headers=auth("t1", READ),
                         params={param: value, "format": fmt, "limit": 1})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == 422
    assert body["errors"][0]["loc"] == ["query", param]


async def test_the_extreme_times_that_exist_filter_as_they_say(audit):
    app, client = audit
    tenant = f"tf-{uuid.uuid4().hex[:8]}"
    [seq] = await append(app, ticks(1, tenant))

    async def seqs(**params: str) -> list[int]:
        r = await client.get("/v1/audit/export", headers=auth(tenant, READ), params={**params, "proofs": "false"})
        assert r.status_code == 200, r.text
        return [line["seq"] for line in map(json.loads, r.text.splitlines())
                if line["type"] == "record"]

    assert await seqs(since="0001-01-01T00:00:00Z", until="9999-12-31T23:59:59.999999Z") == [seq]
    assert await seqs(since="0001-01-01T14:00:00+14:00", until="9999-12-31T09:59:59-14:00") == [seq]
    assert await seqs(since="9999-12-31T23:59:59Z") == []
    assert await seqs(until="0001-01-01T00:00:00") == []  # no offset: UTC
    assert await seqs(since="2000-01-01T00:00:00") == [seq]
