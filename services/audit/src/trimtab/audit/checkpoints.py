"""Signing checkpoints: on a timer and on demand, stored in `checkpoints` and appended to a file.

A checkpoint signs the tree head the database holds at that moment (size = head seq, root from the
stored nodes). The row and the file line carry the same JSON; the file is the copy meant to
leave the database's reach (a volume shipped elsewhere, WORM storage), so deleting or rewriting
the table cannot erase what was already vouched for.

The file is also the signer's witness (a review found the service would sign a forged head: it
compared the head with the database's latest checkpoint only, which the database's owner can
delete). Before signing, the signer reads the file's last checkpoint, which must be signed by a
trusted key, and the database's latest; the larger is the previous checkpoint, and the current
head must extend both: not smaller, and an RFC 9162 consistency proof from the stored nodes must
lead from each one's signed root to the head's root. Otherwise it refuses (logged as an error,
counted in `trimtab_audit_checkpoint_refusals`, a 409 for `POST /v1/audit/checkpoints`): the
records such a checkpoint covers were rewritten, or records were removed, and signing now would
vouch for the rewrite with the real key. Without a checkpoint directory (AUDIT_CHECKPOINT_DIR
empty) there is no file: only the database's latest is compared, and its owner can delete it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import weakref
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from opentelemetry import metrics
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trimtab.shared.envelope import utcnow
from trimtab.shared.errors import Conflict

from . import tree
from .domain import merkle
from .domain.checkpoint import Checkpoint, CheckpointError, Signer, verify_checkpoint_trusted
from .models import checkpoints

log = logging.getLogger(__name__)
FILE_NAME = "checkpoints.jsonl"
meter = metrics.get_meter("trimtab.audit")
_failures = meter.create_counter("trimtab_audit_checkpoint_failures", unit="{attempt}",
                                 description="timer passes that failed to sign a checkpoint")
_refusals = meter.create_counter("trimtab_audit_checkpoint_refusals", unit="{head}",
                                 description="tree heads the signer refused to sign: they do not extend the "
                                             "previous checkpoint (records rewritten or removed), or the "
                                             "checkpoint file's latest is unreadable or not trusted")
_live: weakref.WeakSet[Checkpointer] = weakref.WeakSet()
#: A checkpoint line is about 300 bytes: a last line longer than this is not one.
MAX_LINE = 64 * 1024
_BLOCK = 4096


class CheckpointRefused(Conflict):
    """The signer will not sign the current head: it does not extend a checkpoint already signed
    (the checkpoint file's latest or the database's), or the file's latest cannot be trusted."""


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


def _complete_end(f: Any) -> int:
    """The offset just after the file's last newline (0 if none): where its complete lines end.
    Lines are written whole with their newline, after the database commit, so bytes past it are
    a torn write (power loss, a full disk) of a checkpoint the database already holds."""
    end = pos = f.seek(0, os.SEEK_END)
    while pos > 0:
        step = min(_BLOCK, pos)
        pos -= step
        f.seek(pos)
        cut = f.read(step).rfind(b"\n")
        if cut >= 0:
            return pos + cut + 1
        if end - pos > MAX_LINE:
            break
    return 0


def _torn(f: Any, start: int, end: int) -> bool:
    """The bytes after the last newline are not a checkpoint line (a write cut short)."""
    if end - start > MAX_LINE:
        return False  # not a torn write of ours: read_last reports the line as over-long
    f.seek(start)
    try:
        Checkpoint.from_line(f.read(end - start).strip())
    except (CheckpointError, ValueError):
        return True
    return False


def read_last(path: Path) -> Checkpoint | None:
    """The last complete checkpoint line of a checkpoint file, None when the file is absent or
    holds none. Read backwards from the end a block at a time, not the whole file (one line per
    signing, for years). A torn last line (no newline after it and not a checkpoint: a write cut
    by power loss or a full disk, after the database commit) is skipped with a warning, and the
    next append cuts it off. CheckpointError when the last line is not a checkpoint."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return None
    with f:
        size = f.seek(0, os.SEEK_END)
        end = _complete_end(f)
        if end < size and _torn(f, end, size):
            log.warning("checkpoint file %s ends with %d bytes of a torn write: ignored", path, size - end)
        else:
            end = size  # a whole line, only its newline missing
        pos = end
        buf = b""
        while True:
            tail = buf.rstrip()
            cut = tail.rfind(b"\n")
            if cut >= 0 or pos == 0:
                line = tail[cut + 1:]
                return Checkpoint.from_line(line) if line else None
            if len(tail) > MAX_LINE:
                raise CheckpointError(f"malformed checkpoint line: the last line is over {MAX_LINE} bytes")
            step = min(_BLOCK, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf


class Checkpointer:
    def __init__(self, sessions: Callable[[], async_sessionmaker[AsyncSession]], signer: Signer,
                 directory: Path | None, interval_s: float, trusted_keys: Iterable[bytes] = ()) -> None:
        """`directory`: where checkpoints.jsonl is appended, None for no file (then the database
        alone says what was signed). `trusted_keys`: besides the signer's own, the public keys
        whose checkpoints count as signed (retired or peer keys), for the file's latest line."""
        self._sessions = sessions
        self.signer = signer
        self.path: Path | None = directory / FILE_NAME if directory is not None else None
        self.trusted_keys = tuple(dict.fromkeys([signer.public_key, *trusted_keys]))
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._appending: asyncio.Future[None] | None = None
        #: signed_at of the newest checkpoint this process signed or found (metrics only).
        self.latest_signed_at: datetime | None = None

    def file_latest(self) -> Checkpoint | None:
        """The checkpoint file's last checkpoint; None without a file (or line). CheckpointRefused
        when it cannot be read. Its signature is not required here: the file is out of the
        database owner's reach, and after a key rotation (a leaked key removed from the trusted
        ones) its last line is the old key's until the next signing; the head must extend it all
        the same (`sign`). Verify still requires a trusted last line."""
        if self.path is None:
            return None
        try:
            return read_last(self.path)
        except (CheckpointError, OSError) as e:
            self._refuse(f"the last line of the checkpoint file {self.path}, the witness of what was signed, "
                         f"cannot be used: {e}")

    def _trusted(self, cp: Checkpoint | None) -> bool:
        try:
            return cp is not None and verify_checkpoint_trusted(cp, self.trusted_keys) is not None
        except CheckpointError:
            return False

    def _refuse(self, reason: str) -> NoReturn:
        _refusals.add(1)
        log.error("refusing to sign a checkpoint: %s", reason)
        raise CheckpointRefused(f"refusing to sign a checkpoint: {reason}")

    async def _check_extends(self, s: AsyncSession, prev: Checkpoint, where: str, size: int, root: bytes) -> None:
        """Refuse unless the head (size, root) extends `prev`: consistency from prev's signed root
        to the head's, with a proof from the stored nodes (O(log n) of them, one round trip)."""
        if prev.tree_size > size:
            self._refuse(f"the log holds {size} records, fewer than the {prev.tree_size} {where} covers: "
                         "records were removed")
        try:
            proof = await tree.consistency_proof(s, prev.tree_size, size)
            merkle.verify_consistency(prev.tree_size, size, prev.root_hash, root, proof)
        except (merkle.ProofError, tree.MissingNode) as e:
            self._refuse(f"the head (size {size}, root {root.hex()[:16]}…) does not extend {where} (size "
                         f"{prev.tree_size}, root {prev.root_hash.hex()[:16]}…): the records it covers were "
                         f"rewritten or its tree nodes removed ({e})")

    async def sign(self, *, only_if_grown: bool = False) -> Checkpoint | None:
        """Sign the current tree head; with only_if_grown, skip when the previous checkpoint (the
        larger of the file's latest and the database's) already covers it. Raises
        CheckpointRefused when the head does not extend either one."""
        async with self._lock:
            if self._appending is not None:  # a cancelled signing's append still running
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._appending)
            cp = await self._sign_locked(only_if_grown)
            if cp is None:
                return None
            # In order with the commits (under the lock), off the event loop: an fsync on a slow
            # disk would otherwise stall every consumer and request of the process meanwhile.
            # Shielded: a cancellation (shutdown) does not stop a line half-written; the next
            # signing waits for it.
            self._appending = asyncio.ensure_future(asyncio.to_thread(self._append_to_file, cp))
            await asyncio.shield(self._appending)
            self._appending = None
        log.info("signed checkpoint: size %d root %s", cp.tree_size, cp.root_hash.hex()[:16])
        return cp

    async def _sign_locked(self, only_if_grown: bool) -> Checkpoint | None:
        async with self._sessions()() as s:
            # Both previous checkpoints before the head: whatever was signed by then is within it.
            witness = await asyncio.to_thread(self.file_latest)
            last = await latest(s)
            size = await tree.size(s)
            # Skip only for a checkpoint a trusted key signed: a database row with a garbage
            # signature at the head's size (a database owner silencing the timer, review) is
            # checked for consistency below and signed over instead.
            covered = [c for c in (witness, last) if c is not None and c.tree_size == size and self._trusted(c)]
            if only_if_grown and covered:
                self.latest_signed_at = covered[0].signed_at
                return None
            root = await tree.root_at(s, size)
            if witness is not None:
                await self._check_extends(s, witness, f"the checkpoint file's latest checkpoint ({self.path})",
                                          size, root)
            if last is not None and (witness is None or (last.tree_size, last.root_hash)
                                     != (witness.tree_size, witness.root_hash)):
                await self._check_extends(s, last, "the database's latest checkpoint", size, root)
            cp = self.signer.sign(size, root, utcnow())
            await s.execute(insert(checkpoints).values(
                tree_size=cp.tree_size, root_hash=cp.root_hash, signed_at=cp.signed_at,
                key_id=cp.key_id, signature=cp.signature))
            await s.commit()
        self.latest_signed_at = cp.signed_at
        return cp

    def _append_to_file(self, cp: Checkpoint) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as f:
            size = f.seek(0, os.SEEK_END)
            if size:
                with self.path.open("rb") as r:
                    end = _complete_end(r)
                    torn = end < size and _torn(r, end, size)
                if torn:  # a torn write of a checkpoint the database holds: cut it off
                    log.warning("checkpoint file %s: cutting off %d bytes of a torn write", self.path, size - end)
                    f.truncate(end)
                elif end < size:  # a whole last line without its newline
                    f.write(b"\n")
            f.write((cp.line() + "\n").encode())
            f.flush()
            os.fsync(f.fileno())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.sign(only_if_grown=True)
            except asyncio.CancelledError:
                raise
            except CheckpointRefused:  # logged with its reason; it will refuse again until repaired
                _failures.add(1)
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
        if self._appending is not None:  # a line being written when the timer was cancelled
            with contextlib.suppress(Exception):
                await self._appending
        _live.discard(self)
