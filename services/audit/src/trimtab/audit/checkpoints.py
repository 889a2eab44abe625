"""Signing checkpoints: on a timer and on demand, stored in `checkpoints` and appended to a file.

A checkpoint signs the tree head the database holds at that moment (size = head seq, root from the
stored nodes). The row and the file line carry the same JSON; the file is the copy meant to
leave the database's reach (a volume shipped elsewhere, WORM storage), so deleting or rewriting
the table cannot erase what was already vouched for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import weakref
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from opentelemetry import metrics
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trimtab.shared.envelope import utcnow

from . import tree
from .domain.checkpoint import Checkpoint, Signer
from .models import checkpoints

log = logging.getLogger(__name__)
FILE_NAME = "checkpoints.jsonl"
meter = metrics.get_meter("trimtab.audit")
_failures = meter.create_counter("trimtab_audit_checkpoint_failures", unit="{attempt}",
                                 description="timer passes that failed to sign a checkpoint")
_live: weakref.WeakSet[Checkpointer] = weakref.WeakSet()


def _observe_age(options: metrics.CallbackOptions) -> list[metrics.Observation]:
    now = utcnow()
    return [metrics.Observation(max(0.0, (now - c.latest_signed_at).total_seconds()))
            for c in list(_live) if c.latest_signed_at is not None]


meter.create_observable_gauge("trimtab_audit_checkpoint_age", callbacks=[_observe_age], unit="s",
                              description="seconds since the newest signed checkpoint (known after the "
                                          "first timer pass); it only advances when the tree grew")


def _from_row(row: object) -> Checkpoint:
    return Checkpoint(tree_size=row.tree_size, root_hash=bytes(row.root_hash),  # type: ignore[attr-defined]
                      signed_at=row.signed_at, key_id=row.key_id,  # type: ignore[attr-defined]
                      signature=bytes(row.signature))  # type: ignore[attr-defined]


async def latest(s: AsyncSession) -> Checkpoint | None:
    row = (await s.execute(select(checkpoints).order_by(checkpoints.c.tree_size.desc(),
                                                        checkpoints.c.id.desc()).limit(1))).first()
    return _from_row(row) if row else None


async def at_size(s: AsyncSession, tree_size: int) -> Checkpoint | None:
    row = (await s.execute(select(checkpoints).where(checkpoints.c.tree_size == tree_size)
                           .order_by(checkpoints.c.id.desc()).limit(1))).first()
    return _from_row(row) if row else None


class Checkpointer:
    def __init__(self, sessions: Callable[[], async_sessionmaker[AsyncSession]], signer: Signer,
                 directory: Path, interval_s: float) -> None:
        self._sessions = sessions
        self.signer = signer
        self.path = directory / FILE_NAME
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        #: signed_at of the newest checkpoint this process signed or found (metrics only).
        self.latest_signed_at: datetime | None = None

    async def sign(self, *, only_if_grown: bool = False) -> Checkpoint | None:
        """Sign the current tree head; with only_if_grown, skip when the latest already covers it."""
        async with self._lock, self._sessions()() as s:
            size = await tree.size(s)
            if only_if_grown:
                last = await latest(s)
                if last is not None and last.tree_size >= size:
                    self.latest_signed_at = last.signed_at
                    return None
            cp = self.signer.sign(size, await tree.root_at(s, size), utcnow())
            await s.execute(insert(checkpoints).values(
                tree_size=cp.tree_size, root_hash=cp.root_hash, signed_at=cp.signed_at,
                key_id=cp.key_id, signature=cp.signature))
            await s.commit()
        self.latest_signed_at = cp.signed_at
        self._append_to_file(cp)
        log.info("signed checkpoint: size %d root %s", cp.tree_size, cp.root_hash.hex()[:16])
        return cp

    def _append_to_file(self, cp: Checkpoint) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(cp.line() + "\n")
            f.flush()
            os.fsync(f.fileno())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.sign(only_if_grown=True)
            except asyncio.CancelledError:
                raise
            except Exception:  # the next tick tries again; a missed checkpoint is not data loss
                _failures.add(1)
                log.exception("checkpoint signing failed")

    def start(self) -> None:
        if self.interval_s > 0 and self._task is None:
            _live.add(self)
            self._task = asyncio.create_task(self._run(), name="audit-checkpoints")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        _live.discard(self)
