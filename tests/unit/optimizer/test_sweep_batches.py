"""The TTL sweep drains a backlog in one pass, a transaction per batch (tests/integration/optimizer
expires real proposals; here the store is faked to count the transactions)."""

from __future__ import annotations

import contextlib
from typing import Any

from trimtab.optimizer import app, proposals


class FakeRuntime:
    def __init__(self) -> None:
        self.commits = 0

    @contextlib.asynccontextmanager
    async def uow(self) -> Any:
        runtime = self

        class Uow:
            async def commit(self) -> None:
                runtime.commits += 1

        yield Uow()


async def test_a_backlog_of_stale_proposals_expires_in_one_pass(monkeypatch) -> None:
    left = {"n": 2 * app.SWEEP_BATCH + 7}

    async def expire_stale(uow: Any, *, ttl_s: float, limit: int) -> list[int]:
        n = min(limit, left["n"])
        left["n"] -= n
        return list(range(n))

    monkeypatch.setattr(proposals, "expire_stale", expire_stale)
    rt = FakeRuntime()
    assert await app.sweep_once(rt, ttl_s=60) == 2 * app.SWEEP_BATCH + 7  # type: ignore[arg-type]
    assert rt.commits == 3 and left["n"] == 0
    assert await app.sweep_once(rt, ttl_s=60) == 0 and rt.commits == 4  # type: ignore[arg-type]
