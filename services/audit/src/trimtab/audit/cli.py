"""`trimtab-audit`: the command line of the audit log's offline verifier.

    trimtab-audit verify --url https://audit.example --token $TOKEN --state-dir ~/.trimtab-audit
    trimtab-audit checkpoints --file checkpoints.jsonl --public-key <base64> [--public-key <retired>]

`verify` exits 0 when the log checks out, 1 when anything is wrong (the first bad record is named),
2 when it could not run. `checkpoints` checks every signature in a checkpoint file (the copy the
service writes outside its database) with the keys given (after a rotation the file holds lines of
the retired key, then of the new one: give both; a line naming any other key fails), that no size
is signed with two roots (a fork), that sizes never go down and that signing times never go back;
it exits 1 on the first line that breaks one.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from pathlib import Path

import httpx

from .domain.checkpoint import Checkpoint, CheckpointError, verify_checkpoint_trusted
from .offline import State, verify_log


async def _verify(a: argparse.Namespace) -> int:
    key = base64.b64decode(a.public_key) if a.public_key else None
    token = a.token or os.environ.get("TRIMTAB_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=a.url, headers=headers, timeout=a.timeout) as client:
        rep = await verify_log(client, State(Path(a.state_dir)), public_key=key,
                               check_records=not a.skip_records, tenant=a.tenant)
    took = time.perf_counter() - t0
    if a.json:
        print(json.dumps({**rep.to_json(), "seconds": round(took, 3)}))
    else:
        for note in rep.notes:
            print(f"note: {note}")
        print(f"tree size {rep.tree_size} (kept: {rep.previous_size}), {rep.leaves_checked} leaves and "
              f"{rep.records_checked} of your records checked in {took:.1f} s")
        if rep.ok:
            print("OK: the log is consistent with every checkpoint kept, and every record checked is intact")
        else:
            print(f"FAILED: first bad record: {rep.first_bad_seq}")
            for p in rep.problems:
                print(f"  - {'seq ' + str(p.seq) + ': ' if p.seq else ''}{p.reason}")
    return 0 if rep.ok else 1


def _checkpoints(a: argparse.Namespace) -> int:
    """Every line signed by one of the keys (each line's key id selects the key; it never brings
    one), and the lines one history: a size is signed with one root only (two roots for one size
    are a fork: two different logs vouched for), sizes never go down, and signing times never go
    back (the file is written in signing order)."""
    keys = [base64.b64decode(k) for k in a.public_key]
    last: Checkpoint | None = None
    roots: dict[int, tuple[bytes, int]] = {}  # tree size -> (root, the first line that signed it)
    for i, line in enumerate(Path(a.file).read_text().splitlines(), start=1):
        try:
            cp = Checkpoint.from_line(line)
            verify_checkpoint_trusted(cp, keys)
        except (CheckpointError, ValueError) as e:
            print(f"FAILED: line {i}: {e}")
            return 1
        seen = roots.setdefault(cp.tree_size, (cp.root_hash, i))
        if seen[0] != cp.root_hash:
            print(f"FAILED: line {i}: a fork: tree size {cp.tree_size} is signed with root {cp.root_hash.hex()} "
                  f"here and with root {seen[0].hex()} on line {seen[1]}")
            return 1
        if last is not None and cp.tree_size < last.tree_size:
            print(f"FAILED: line {i}: tree size went down from {last.tree_size} to {cp.tree_size}")
            return 1
        if last is not None and cp.signed_at < last.signed_at:
            print(f"FAILED: line {i}: signing time went back from {last.to_json()['signed_at']} to "
                  f"{cp.to_json()['signed_at']} (tree size {last.tree_size} -> {cp.tree_size})")
            return 1
        last = cp
    print(f"OK: every checkpoint signed by a given key, one root per size, sizes and times never going back; "
          f"latest size {last.tree_size if last else -1}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="trimtab-audit", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="verify the log against the checkpoints kept in --state-dir")
    v.add_argument("--url", required=True, help="base URL of the audit service")
    v.add_argument("--token", help="bearer token with audit:read (default: $TRIMTAB_TOKEN)")
    v.add_argument("--state-dir", required=True, help="where this verifier keeps its checkpoints")
    v.add_argument("--public-key", help="base64 Ed25519 public key to pin (default: first seen)")
    v.add_argument("--tenant", help="your tenant, to pin (default: the one kept in --state-dir, else the "
                                    "tenant of the first record served)")
    v.add_argument("--skip-records", action="store_true", help="check the tree only, not your records")
    v.add_argument("--timeout", type=float, default=120.0)
    v.add_argument("--json", action="store_true", help="one JSON object")
    c = sub.add_parser("checkpoints", help="check a checkpoint file's signatures")
    c.add_argument("--file", required=True)
    c.add_argument("--public-key", required=True, action="append",
                   help="base64 Ed25519 public key; repeat it for the retired keys of a rotation")
    a = ap.parse_args(argv)
    try:
        if a.command == "verify":
            return asyncio.run(_verify(a))
        return _checkpoints(a)
    except (httpx.HTTPError, RuntimeError, OSError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
