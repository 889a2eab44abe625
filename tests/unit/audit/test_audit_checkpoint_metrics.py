"""The audit checkpointer's metrics (deploy/prometheus/alerts.yml: TrimtabAuditCheckpointStale,
TrimtabAuditCheckpointFailing) reach the services' Prometheus exposition. The tree and the
database are faked; tests/integration/audit signs real checkpoints."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.support import prometheus_samples, services_telemetry
from trimtab.audit import checkpoints
from trimtab.audit.checkpoints import Checkpointer
from trimtab.audit.domain.checkpoint import Signer


@pytest.fixture(autouse=True, scope="module")
def telemetry() -> None:
    services_telemetry()


def values(name: str) -> list[float]:
    return [s.value for s in prometheus_samples() if s.name == name]


class FakeSession:
    async def __aenter__(self) -> FakeSession:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    async def execute(self, stmt: Any) -> None:
        return None

    async def commit(self) -> None:
        return None


def sessions() -> Any:
    return FakeSession


async def test_checkpoint_age_is_exported_from_the_newest_checkpoint(monkeypatch, tmp_path: Path) -> None:
    size = {"n": 5}
    newest = SimpleNamespace(tree_size=5, signed_at=datetime.now(UTC) - timedelta(seconds=300))

    async def tree_size(s: Any) -> int:
        return size["n"]

    async def latest(s: Any) -> Any:
        return newest

    async def root_at(s: Any, n: int) -> bytes:
        return b"\x00" * 32

    monkeypatch.setattr(checkpoints.tree, "size", tree_size)
    monkeypatch.setattr(checkpoints.tree, "root_at", root_at)
    monkeypatch.setattr(checkpoints, "latest", latest)
    cp = Checkpointer(sessions, Signer.generate(), tmp_path, interval_s=3600)
    cp.start()
    try:
        assert values("trimtab_audit_checkpoint_age_seconds") == []  # unknown until a pass
        assert await cp.sign(only_if_grown=True) is None  # the newest covers the tree
        [age] = values("trimtab_audit_checkpoint_age_seconds")
        assert 299 <= age <= 310
        size["n"] = 6  # the tree grew: a new checkpoint, age back near 0
        assert (await cp.sign(only_if_grown=True)) is not None
        [age] = values("trimtab_audit_checkpoint_age_seconds")
        assert 0 <= age < 5
    finally:
        await cp.stop()
    assert values("trimtab_audit_checkpoint_age_seconds") == []


async def test_a_failing_timer_pass_is_counted(tmp_path: Path) -> None:
    before = sum(values("trimtab_audit_checkpoint_failures_total"))
    cp = Checkpointer(sessions, Signer.generate(), tmp_path, interval_s=0.01)

    async def broken(**kw: Any) -> None:
        raise OSError("checkpoint file unwritable")

    cp.sign = broken  # type: ignore[method-assign]
    cp.start()
    try:
        for _ in range(200):
            if sum(values("trimtab_audit_checkpoint_failures_total")) > before:
                break
            await asyncio.sleep(0.01)
    finally:
        await cp.stop()
    assert sum(values("trimtab_audit_checkpoint_failures_total")) > before
