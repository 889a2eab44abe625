"""The audit checkpointer's metrics (deploy/prometheus/alerts.yml: TrimtabAuditCheckpointStale,
TrimtabAuditCheckpointFailing) reach the services' Prometheus exposition. The tree and the
database are faked; tests/integration/audit signs real checkpoints."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support import prometheus_samples, services_telemetry
from trimtab.audit import checkpoints
from trimtab.audit.checkpoints import Checkpointer, CheckpointRefused
from trimtab.audit.domain import merkle
from trimtab.audit.domain.checkpoint import CheckpointError, Signer


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


def fake_tree(monkeypatch, leaves: list[bytes], size: dict[str, int], newest: Any) -> merkle.Tree:
    """The tree is `leaves` in memory (the first size["n"] of them); the database's latest
    checkpoint is `newest`."""
    t = merkle.Tree(leaves)

    async def tree_size(s: Any) -> int:
        return size["n"]

    async def latest(s: Any) -> Any:
        return newest

    async def root_at(s: Any, n: int) -> bytes:
        return t.root(n)

    async def consistency_proof(s: Any, first: int, second: int) -> list[bytes]:
        return t.consistency_proof(first, second)

    monkeypatch.setattr(checkpoints.tree, "size", tree_size)
    monkeypatch.setattr(checkpoints.tree, "root_at", root_at)
    monkeypatch.setattr(checkpoints.tree, "consistency_proof", consistency_proof)
    monkeypatch.setattr(checkpoints, "latest", latest)
    return t


LEAVES = [merkle.leaf_hash(bytes([i])) for i in range(8)]


async def test_checkpoint_age_is_exported_from_the_newest_checkpoint(monkeypatch, tmp_path: Path) -> None:
    size = {"n": 5}
    signer = Signer.generate()
    newest = signer.sign(5, merkle.root(LEAVES[:5]), datetime.now(UTC) - timedelta(seconds=300))
    fake_tree(monkeypatch, LEAVES, size, newest)
    cp = Checkpointer(sessions, signer, tmp_path, interval_s=3600)
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


async def test_a_refused_head_is_counted_and_not_signed(monkeypatch, tmp_path: Path) -> None:
    """The head does not extend the checkpoint file's latest (a record it covers rewritten): the
    signer refuses, counts it, and writes nothing; the timer counts the pass as failed."""
    signer = Signer.generate()
    honest = signer.sign(4, merkle.root(LEAVES[:4]), datetime.now(UTC))
    (tmp_path / checkpoints.FILE_NAME).write_text(honest.line() + "\n")
    forged = [*LEAVES[:2], merkle.leaf_hash(b"forged"), *LEAVES[3:]]
    fake_tree(monkeypatch, forged, {"n": 6}, None)  # the database's checkpoints deleted
    cp = Checkpointer(sessions, signer, tmp_path, interval_s=0.01)
    refused = sum(values("trimtab_audit_checkpoint_refusals_total"))
    failed = sum(values("trimtab_audit_checkpoint_failures_total"))
    with pytest.raises(CheckpointRefused, match="does not extend the checkpoint file's latest"):
        await cp.sign()
    assert sum(values("trimtab_audit_checkpoint_refusals_total")) == refused + 1
    cp.start()
    try:
        for _ in range(200):
            if sum(values("trimtab_audit_checkpoint_failures_total")) > failed:
                break
            await asyncio.sleep(0.01)
    finally:
        await cp.stop()
    assert sum(values("trimtab_audit_checkpoint_failures_total")) > failed
    assert (tmp_path / checkpoints.FILE_NAME).read_text() == honest.line() + "\n"  # nothing signed


def test_the_last_line_of_a_checkpoint_file(tmp_path: Path, monkeypatch) -> None:
    f = tmp_path / checkpoints.FILE_NAME
    assert checkpoints.read_last(f) is None  # no file
    f.write_text("")
    assert checkpoints.read_last(f) is None
    signer = Signer.generate()
    cps = [signer.sign(n, merkle.root(LEAVES[:n]), datetime.now(UTC)) for n in range(1, 8)]
    monkeypatch.setattr(checkpoints, "_BLOCK", 7)  # lines across many blocks
    f.write_text("".join(c.line() + "\n" for c in cps) + "\n")
    assert checkpoints.read_last(f) == cps[-1]
    f.write_text(cps[0].line())  # one line, no newline
    assert checkpoints.read_last(f) == cps[0]
    # A torn last line (a write cut short after the database commit): the last whole line counts,
    # and the next append cuts the fragment off (before, signing and verify refused for good).
    f.write_text(cps[0].line() + "\n" + cps[1].line()[:40])
    assert checkpoints.read_last(f) == cps[0]
    f.write_text(cps[0].line() + "\n" + "x" * (checkpoints.MAX_LINE + 10))
    with pytest.raises(CheckpointError, match="over"):
        checkpoints.read_last(f)


async def test_the_files_fsync_does_not_stall_the_event_loop(monkeypatch, tmp_path: Path) -> None:
    """The checkpoint file's append and fsync run in a thread: on a slow disk (an fsync of 0.4 s
    here) the process's other coroutines (consumers, requests) keep running meanwhile. Before,
    the fsync ran on the event loop and they stopped for its whole length. Lines stay in signing
    order, and a signing cancelled mid-append (shutdown) still leaves a whole line."""
    fake_tree(monkeypatch, LEAVES, {"n": 5}, None)
    real_fsync = checkpoints.os.fsync

    def slow_fsync(fd: int) -> None:
        time.sleep(0.4)
        real_fsync(fd)

    monkeypatch.setattr(checkpoints.os, "fsync", slow_fsync)
    cp = Checkpointer(sessions, Signer.generate(), tmp_path, interval_s=3600)
    beats = 0

    async def heart() -> None:
        nonlocal beats
        while True:
            await asyncio.sleep(0.01)
            beats += 1

    h = asyncio.create_task(heart())
    try:
        first = await cp.sign()
        assert first is not None
        assert beats >= 10, f"the event loop stalled during the fsync ({beats} beats in 0.4 s)"
        signing = asyncio.create_task(cp.sign())
        await asyncio.sleep(0.1)  # in its fsync
        signing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await signing
        third = await cp.sign()  # waits for the cancelled signing's line first
        assert third is not None
    finally:
        h.cancel()
        await cp.stop()
    lines = (tmp_path / checkpoints.FILE_NAME).read_text().splitlines()
    assert len(lines) == 3 and lines[0] == first.line() and lines[2] == third.line()
    assert checkpoints.read_last(tmp_path / checkpoints.FILE_NAME) == third
