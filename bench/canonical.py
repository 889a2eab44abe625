"""Canonical JSON benchmark: `canonical_json` (orjson where it writes the same bytes) against the
standard encoder it replaced (`json.dumps`, which defines the bytes), side by side in one run.

The documents are what the platform hashes and records: a benchmark account's snapshot and
context (`bench/optimizer.py`'s, 20 securities x 3 lots, a 4-factor model; the two hashes every
proposal carries), and two envelopes as they go on the bus and into the audit record: a price
tick and that account's proposal (nulls, small Decimal strings, floats). Each figure is the median
over `--repeats` passes of microseconds per document; the bytes are checked equal first.

`--json`: one JSON object of the figures as the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import optimizer as bench  # noqa: E402  (bench/optimizer.py: the accounts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    from trimtab.rebalance import RebalanceContext, propose
    from trimtab.shared.canonical import _standard, canonical_json
    from trimtab.shared.envelope import Envelope
    from trimtab.shared.events import AccountSnapshot, PriceTicked

    snap_json, ctx_json = bench.make_account(1, 20, 3, 4)
    snapshot = AccountSnapshot.model_validate(snap_json)
    context = RebalanceContext.from_json(ctx_json)
    proposal = propose(snapshot, context=context).to_event()
    tick = PriceTicked(symbol="AAPL", price_usd=Decimal("123.45"), as_of=datetime(2025, 3, 14, 20, tzinfo=UTC))
    documents: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {}
    for name, make in (
        ("snapshot", lambda: snapshot),
        ("context", context.to_json),
        ("tick_envelope", lambda: Envelope.new(tick, producer="market-data", tenant_id="t").model_dump(mode="json")),
        ("proposal_envelope",
         lambda: Envelope.new(proposal, producer="optimizer", tenant_id="t").model_dump(mode="json")),
    ):
        doc = make()
        plain = doc.model_dump(mode="json") if name == "snapshot" else doc  # type: ignore[union-attr]
        if canonical_json(doc) != _standard(plain):
            raise SystemExit(f"{name}: the bytes differ")
        documents[name] = (lambda d=doc: canonical_json(d), lambda d=doc: _standard(
            d.model_dump(mode="json") if isinstance(d, AccountSnapshot) else d))

    def us(f: Callable[[], object], number: int) -> float:
        t0 = time.perf_counter()
        for _ in range(number):
            f()
        return (time.perf_counter() - t0) / number * 1e6

    figures: dict[str, float] = {}
    print(f"canonical JSON, microseconds per document (median of {a.repeats} passes, alternating):")
    for name, (fast, standard) in documents.items():
        number = 200 if "proposal" in name or name == "snapshot" else 2000
        new, old = [], []
        for _ in range(a.repeats):
            new.append(us(fast, number))
            old.append(us(standard, number))
        n, o = statistics.median(new), statistics.median(old)
        figures[f"{name}_us"], figures[f"{name}_standard_us"] = round(n, 2), round(o, 2)
        figures[f"{name}_ratio"] = round(o / n, 2)
        print(f"   {name:18s} canonical_json {n:8.2f} us   json.dumps {o:8.2f} us   {o / n:5.2f}x")
    if a.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
