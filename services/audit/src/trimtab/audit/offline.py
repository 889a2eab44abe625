"""The offline verifier: checks the audit log over HTTP against checkpoints it keeps itself.

It trusts nothing the service says without proof. What it keeps (its state directory):
  public_key        the pinned signing key (given with --public-key, or the first one seen)
  checkpoint.json   the last checkpoint it accepted
  leaves.bin        every leaf hash up to that checkpoint, 32 bytes each: its own copy of the log
  checkpoints.jsonl every checkpoint it ever accepted
  own_records.json  whose records it checked (the tenant), up to which tree size, how many, the last seq
  own_seqs.bin      the seq of every one of those records, u64 big-endian, ascending

One run:
  1. Fetch the latest checkpoint; check its Ed25519 signature with the pinned key.
  2. Check it extends the kept checkpoint: not smaller, and the served consistency proof holds
     between the kept root and the new one (RFC 9162 2.1.4.2).
  3. Fetch every leaf hash up to the new size; a missing one, or one that differs from the kept
     copy, names the first bad record (records of the signed tree cut from the log's end are named
     as gone); the root of all of them must be the signed root. When it is not and the kept copy
     cannot say where, bisect with consistency proofs (a prefix is good iff its root is consistent
     with the signed head) to the first leaf that is wrong.
  4. Fetch the caller's own records (the token's tenant) and recompute each leaf hash from the
     exact envelope bytes (and, in leaf format 2, the time of recording): an edited envelope or
     recorded_at names its record. Every frame must be the caller's
     tenant's, seqs must strictly ascend, and every record of the caller's that a clean run served
     before (own_seqs.bin, up to its tree size) must be served again: a record moved to another
     tenant, or otherwise withheld, is named by its seq.
Only a fully clean run advances the kept state, so a bad log is reported again on every run.

What a first run (no kept state) cannot see: which leaves are the caller's. Leaf hashes reveal no
tenant, so a record the service never serves to the caller (its tenant column moved before the
verifier first ran) is invisible to it; the tree and the records it does serve are still checked.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import multiprocessing
import os
import struct
import sys
from array import array
from bisect import bisect_right
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .domain import frames, merkle
from .domain.checkpoint import Checkpoint, CheckpointError, verify_checkpoint
from .domain.merkle import ProofError

LEAF_PAGE = 250_000
RECORD_PAGE = 50_000
#: Processes re-hashing record pages while the next page is fetched: two on the usual small box.
WORKERS = min(2, os.cpu_count() or 1)
#: Below this tree size starting worker processes costs more than it saves.
PARALLEL_FROM = 200_000
_HASH = merkle.HASH_BYTES


@dataclass
class Problem:
    seq: int | None
    reason: str


@dataclass
class Report:
    ok: bool = True
    tree_size: int = 0
    previous_size: int | None = None
    leaves_checked: int = 0
    records_checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def first_bad_seq(self) -> int | None:
        seqs = [p.seq for p in self.problems if p.seq is not None]
        return min(seqs) if seqs else None

    def fail(self, seq: int | None, reason: str) -> None:
        self.ok = False
        self.problems.append(Problem(seq, reason))

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "tree_size": self.tree_size, "previous_size": self.previous_size,
                "leaves_checked": self.leaves_checked, "records_checked": self.records_checked,
                "first_bad_seq": self.first_bad_seq,
                "problems": [{"seq": p.seq, "reason": p.reason} for p in self.problems], "notes": self.notes}


@dataclass
class OwnRecords:
    """The caller's records as a clean run saw them: `tenant`'s seqs up to `tree_size`, ascending."""

    tenant: str | None
    tree_size: int
    seqs: array


class State:
    """The verifier's own copy of what it has accepted."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)

    def public_key(self) -> bytes | None:
        p = self.dir / "public_key"
        return base64.b64decode(p.read_text().strip()) if p.exists() else None

    def checkpoint(self) -> Checkpoint | None:
        p = self.dir / "checkpoint.json"
        return Checkpoint.from_json(json.loads(p.read_text())) if p.exists() else None

    def leaves(self) -> bytes:
        p = self.dir / "leaves.bin"
        return p.read_bytes() if p.exists() else b""

    def own_records(self) -> OwnRecords | None:
        """Whose records the last clean run that checked records saw, up to which size, their seqs."""
        meta, blob = self.dir / "own_records.json", self.dir / "own_seqs.bin"
        if not meta.exists():
            return None
        m = json.loads(meta.read_text())
        seqs = array("Q")
        seqs.frombytes(blob.read_bytes() if blob.exists() else b"")
        if sys.byteorder == "little":
            seqs.byteswap()
        if len(seqs) != m["count"] or (seqs[-1] if seqs else None) != m["last_seq"]:
            raise RuntimeError(f"the kept state in {self.dir} is damaged: own_seqs.bin does not match own_records.json")
        return OwnRecords(m["tenant"], int(m["tree_size"]), seqs)

    def save(self, public_key: bytes, cp: Checkpoint, leaves: bytes, own: OwnRecords | None = None) -> None:
        # Leaves (and own records) first, checkpoint last (each replaced atomically): a crash in
        # between leaves a longer leaf copy than the checkpoint, which the next run simply
        # truncates, or own records of a larger size, which were checked clean at that size.
        self._write("leaves.bin", leaves)
        if own is not None:
            seqs = array("Q", own.seqs)
            if sys.byteorder == "little":
                seqs.byteswap()
            self._write("own_seqs.bin", seqs.tobytes())
            self._write("own_records.json", (json.dumps(
                {"tenant": own.tenant, "tree_size": own.tree_size, "count": len(own.seqs),
                 "last_seq": own.seqs[-1] if own.seqs else None}, sort_keys=True) + "\n").encode())
        self._write("public_key", (base64.b64encode(public_key).decode() + "\n").encode())
        self._write("checkpoint.json", (cp.line() + "\n").encode())
        with (self.dir / "checkpoints.jsonl").open("a", encoding="utf-8") as f:
            f.write(cp.line() + "\n")

    def _write(self, name: str, data: bytes) -> None:
        tmp = self.dir / (name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(self.dir / name)


async def _get(client: httpx.AsyncClient, path: str, **params: Any) -> Any:
    r = await client.get(path, params=params)
    if r.status_code != 200:
        raise RuntimeError(f"GET {path} {params}: {r.status_code} {r.text[:300]}")
    return r


async def fetch_leaves(client: httpx.AsyncClient, size: int, page: int = LEAF_PAGE) -> tuple[bytearray, list[int]]:
    """Leaf hashes of indexes [0, size) (zeros where missing) and the missing seqs, read in the
    binary form (domain/frames.py): 40 bytes per leaf, no JSON. A service whose log ends before
    `size` (it answers a shorter range) has lost the records beyond its end: they are missing."""
    out = bytearray()
    missing: list[int] = []
    start = 0
    while start < size:
        end = min(size, start + page)
        r = await _get(client, "/v1/audit/leaves.bin", start=start, end=end)
        got_end = int(r.headers.get("x-end", -1))
        if int(r.headers.get("x-start", -1)) != start or not start <= got_end <= end:
            raise RuntimeError(f"leaves [{start}, {end}): the service answered a different range")
        try:
            blob, gone = frames.leaves(r.content, start, got_end)
        except frames.FrameError as e:
            raise RuntimeError(f"leaves [{start}, {end}): {e}") from e
        out += blob
        missing += gone
        if got_end < end:  # the log ends at got_end: every leaf after it is gone
            out += bytes(_HASH * (size - got_end))
            missing += range(got_end + 1, size + 1)
            break
        start = end
    return out, missing


def report_missing(rep: Report, missing: list[int], n: int) -> None:
    """Name the first missing record; a run of missing records up to the signed size is a cut
    from the log's end, named as such at its first seq."""
    if not missing:
        return
    i = len(missing)
    if missing[-1] == n:
        i -= 1
        while i > 0 and missing[i - 1] == missing[i] - 1:
            i -= 1
    inside, tail = missing[:i], missing[i:]
    if inside:
        rep.fail(inside[0], f"record {inside[0]} is missing ({len(inside)} missing in all"
                            f"{', besides the last ones below' if tail else ''})")
    if tail:
        rep.fail(tail[0], f"records covered by the signed checkpoint are gone: {tail[0]} to {n} ({len(tail)}), "
                          "the last ones it covers (cut from the end of the log)")


def first_difference(a: bytes, b: bytes) -> int | None:
    """The first 32-byte leaf index at which a and b differ (over the shorter length)."""
    n = min(len(a), len(b)) // _HASH
    if a[: n * _HASH] == b[: n * _HASH]:
        return None
    lo, hi = 0, n  # the first differing leaf, by bisecting on equal prefixes (bytes compare is C speed)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[: mid * _HASH] == b[: mid * _HASH]:
            lo = mid
        else:
            hi = mid
    return lo if a[lo * _HASH:(lo + 1) * _HASH] != b[lo * _HASH:(lo + 1) * _HASH] else hi


async def locate_by_consistency(client: httpx.AsyncClient, tree: merkle.Tree, cp: Checkpoint, lo: int) -> int | None:
    """The first leaf index >= lo that is not in the signed tree: the largest prefix k whose root is
    consistent with the signed head is good; leaf k is the first wrong one."""
    async def good(k: int) -> bool:
        if k == 0:
            return True
        d = (await _get(client, "/v1/audit/consistency", **{"from": k, "to": cp.tree_size})).json()
        try:
            merkle.verify_consistency(k, cp.tree_size, tree.root(k), cp.root_hash,
                                      [bytes.fromhex(h) for h in d["consistency_path"]])
        except (ProofError, ValueError):
            return False
        return True

    hi = cp.tree_size  # good(lo) assumed; find the largest good k in [lo, tree_size)
    if not await good(lo):
        return None  # the kept copy said the prefix was fine, the proofs disagree: cannot localize
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if await good(mid):
            lo = mid
        else:
            hi = mid
    return lo


async def recheck_records(client: httpx.AsyncClient, leaves: bytes, n: int, rep: Report,
                          workers: int = WORKERS, tenant: str | None = None) -> tuple[str | None, array]:
    """Re-hash every one of the caller's records with seq <= n against `leaves`. Pages are read in
    the binary form and checked in `workers` processes (0: in this one) while the next page is
    fetched; the problems are reported in seq order. Every frame must be `tenant`'s (when None,
    the tenant of the first record served, which is returned) and seqs must strictly ascend
    across pages; returns the tenant and the seqs checked, ascending."""
    loop = asyncio.get_running_loop()
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if workers else None
    pending: list[asyncio.Future] = []
    seqs = array("Q")
    try:
        after = 0
        while True:
            r = await _get(client, "/v1/audit/records.bin", after_seq=after, max_seq=n, limit=RECORD_PAGE,
                           frame_format=frames.RECORDS_FORMAT)
            if r.headers.get("x-frame-format") != str(frames.RECORDS_FORMAT):
                raise RuntimeError(f"the service serves record frames of format {r.headers.get('x-frame-format', '1')}, "
                                   f"this verifier reads format {frames.RECORDS_FORMAT}: use the verifier of the "
                                   "service's release")
            body, nxt = r.content, r.headers.get("x-next-after-seq") or None
            if body:
                first = struct.unpack_from(">Q", body)[0]
                if tenant is None:
                    tenant = frames.first_frame(body)[1]  # type: ignore[index]
                    rep.notes.append(f"your tenant, as the first record served to you says: {tenant!r}")
                last = int(nxt) if nxt else n
                # Only the leaves this page can touch travel to the worker.
                part = leaves[max(0, first - 1) * _HASH:last * _HASH]
                args = (body, max(0, first - 1), part, n)
                kw = {"after": after, "tenant": tenant, "last": int(nxt) if nxt else None}
                if pool is None:
                    pending.append(loop.create_future())
                    pending[-1].set_result(frames.check_page(*args, **kw))
                else:
                    pending.append(loop.run_in_executor(pool, functools.partial(frames.check_page, *args, **kw)))
            if nxt is None:
                break
            if int(nxt) <= after:
                raise RuntimeError("the service's record pages do not advance")
            after = int(nxt)
        for fut in pending:
            checked, _, problems, page_seqs = await fut
            rep.records_checked += checked
            seqs.frombytes(page_seqs)
            for seq, reason in problems:
                rep.fail(seq, reason)
    except frames.FrameError as e:
        raise RuntimeError(f"records: {e}") from e
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return tenant, seqs


def compare_own(kept: OwnRecords, served: array, rep: Report) -> None:
    """Every record of the caller's up to the kept size is served again, and no other one: a seq
    that is no longer served (moved to another tenant, or withheld) is named, and so is one served
    as the caller's now that was not then."""
    k = bisect_right(served, kept.tree_size)
    if served[:k] == kept.seqs:  # the usual case, compared at C speed
        return
    was, now = set(kept.seqs), {s for s in served if s <= kept.tree_size}
    gone, new = sorted(was - now), sorted(now - was)
    if gone:
        rep.fail(gone[0], f"record {gone[0]} was one of your records when this verifier last checked "
                          f"(tree size {kept.tree_size}) and is no longer served to you ({len(gone)} in all): "
                          "moved to another tenant, or withheld")
    if new:
        rep.fail(new[0], f"record {new[0]} is served as one of your records but was not when this verifier "
                         f"last checked (tree size {kept.tree_size}; {len(new)} in all)")


async def verify_log(client: httpx.AsyncClient, state: State, *, public_key: bytes | None = None,
                     check_records: bool = True, workers: int = WORKERS,
                     parallel_from: int = PARALLEL_FROM, tenant: str | None = None) -> Report:
    """One run (see the module's docstring). `tenant`: the caller's tenant, to pin (default: the
    one kept in `state`, else the tenant of the first record served)."""
    rep = Report()
    own = state.own_records() if check_records else None
    if tenant is not None and own is not None and own.tenant not in (None, tenant):
        raise RuntimeError(f"the state directory {state.dir} keeps the records of tenant {own.tenant!r}, "
                           f"not {tenant!r}: use one state directory per tenant")
    r = await client.get("/v1/audit/checkpoints/latest")
    if r.status_code == 404:
        rep.fail(None, "the service has not signed any checkpoint yet")
        return rep
    if r.status_code != 200:
        raise RuntimeError(f"latest checkpoint: {r.status_code} {r.text[:300]}")
    body = r.json()
    served_key = base64.b64decode(body["public_key"])
    pinned = public_key or state.public_key()
    if pinned is None:
        pinned = served_key
        rep.notes.append("no pinned key: trusting the served public key on first use "
                         f"(key id {body['key_id'][:16]}…); pin it with --public-key to rule that out")
    elif served_key != pinned:
        rep.fail(None, "the service presents a different signing key than the pinned one")
    try:
        cp = Checkpoint.from_json(body)
        verify_checkpoint(cp, pinned)
    except CheckpointError as e:
        rep.fail(None, f"latest checkpoint rejected: {e}")
        return rep
    rep.tree_size = n = cp.tree_size

    prior = state.checkpoint()
    kept = state.leaves()
    if prior is not None:
        rep.previous_size = prior.tree_size
        kept = kept[: prior.tree_size * _HASH]
        if n < prior.tree_size:
            rep.fail(n + 1, f"the log shrank from {prior.tree_size} to {n} records since the kept checkpoint")
        else:
            r = await client.get("/v1/audit/consistency", params={"from": prior.tree_size, "to": n})
            if r.status_code == 409:  # the nodes of its own signed tree are gone from its store
                rep.fail(None, f"the service cannot prove its signed head extends the kept checkpoint: "
                               f"{r.text[:300]}")
            else:
                if r.status_code != 200:
                    raise RuntimeError(f"GET /v1/audit/consistency: {r.status_code} {r.text[:300]}")
                try:
                    merkle.verify_consistency(prior.tree_size, n, prior.root_hash, cp.root_hash,
                                              [bytes.fromhex(h) for h in r.json()["consistency_path"]])
                except (ProofError, ValueError) as e:
                    rep.fail(None, f"the signed head is not an extension of the kept checkpoint: {e}")

    leaves, missing = await fetch_leaves(client, n)
    rep.leaves_checked = n
    report_missing(rep, missing, n)
    diff = first_difference(kept, bytes(leaves))
    if diff is not None:
        rep.fail(diff + 1, f"record {diff + 1} differs from the copy kept at checkpoint "
                           f"{prior.tree_size if prior else 0} (altered, replaced or reordered)")
    if len(kept) > len(leaves):
        rep.fail(len(leaves) // _HASH + 1, "records the kept checkpoint covered are gone")
    frontier = merkle.Frontier()
    frontier.extend(bytes(leaves[i:i + _HASH]) for i in range(0, n * _HASH, _HASH))
    if frontier.root() != cp.root_hash:
        reason = "the leaves served do not make up the signed root"
        if diff is None and not missing:
            tree = merkle.Tree(bytes(leaves[i:i + _HASH]) for i in range(0, n * _HASH, _HASH))
            at = await locate_by_consistency(client, tree, cp, len(kept) // _HASH)
            if at is not None:
                rep.fail(at + 1, f"record {at + 1} is not the one the signed checkpoint covers "
                                 "(located by consistency proofs)")
                reason = ""
        if reason:
            rep.fail(None, reason)

    seen: OwnRecords | None = None
    if check_records:
        who, seqs = await recheck_records(client, bytes(leaves), n, rep, workers if n >= parallel_from else 0,
                                          tenant=tenant or (own.tenant if own else None))
        if own is not None:
            compare_own(own, seqs, rep)
        seen = OwnRecords(who, n, seqs)

    if rep.ok:
        state.save(pinned, cp, bytes(leaves), seen)
    return rep
