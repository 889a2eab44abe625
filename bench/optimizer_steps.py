"""Where one account's time goes, step by step, on one core: the optimizer's `propose` taken apart.

The benchmark accounts of `bench/optimizer.py` (20 securities x 3 lots, every constraint), parsed
once; then each step timed over all of them, three times, the fastest pass kept (the machine is
shared): parsing the snapshot (`model_validate_json`) and the context, the two canonical hashes a
proposal carries, `from_snapshot`, `solve_continuous` (the solver's share printed beside it),
`round_trades`, `build_orders`, and the whole `propose`. Milliseconds per account.

`--json`: one JSON object of the figures as the last line.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import optimizer as bench  # noqa: E402  (bench/optimizer.py: the accounts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=300)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    from trimtab.rebalance import DEFAULT_TUNING, RebalanceContext, propose
    from trimtab.rebalance.drivers import proposal_weights
    from trimtab.rebalance.inputs import from_snapshot
    from trimtab.rebalance.proposal import build_orders
    from trimtab.rebalance.rounding import round_trades
    from trimtab.rebalance.solve import solve_continuous
    from trimtab.shared.canonical import canonical_hash
    from trimtab.shared.events import AccountSnapshot

    n = a.accounts
    raw = [tuple(json.dumps(part).encode() for part in bench.make_account(s, 20, 3, 4)) for s in range(n)]
    snaps = [AccountSnapshot.model_validate_json(s) for s, _ in raw]
    ctxs = [RebalanceContext.from_json(json.loads(c)) for _, c in raw]
    propose(snaps[0], context=ctxs[0])  # compile the shape
    weights = proposal_weights(None)
    inps = [from_snapshot(snaps[i], ctxs[i]) for i in range(n)]
    conts = [solve_continuous(inps[i], weights) for i in range(n)]
    rounded = [round_trades(inps[i], weights, conts[i], DEFAULT_TUNING) for i in range(n)]

    def per_account_ms(step: Callable[[int], object]) -> float:
        passes = []
        for _ in range(3):
            t0 = time.process_time()
            for i in range(n):
                step(i)
            passes.append((time.process_time() - t0) / n * 1e3)
        return min(passes)

    figures = {
        "parse_snapshot_ms": per_account_ms(lambda i: AccountSnapshot.model_validate_json(raw[i][0])),
        "parse_context_ms": per_account_ms(lambda i: RebalanceContext.from_json(json.loads(raw[i][1]))),
        "hash_snapshot_ms": per_account_ms(lambda i: canonical_hash(snaps[i])),
        "hash_context_ms": per_account_ms(lambda i: canonical_hash(ctxs[i].to_json())),
        "from_snapshot_ms": per_account_ms(lambda i: from_snapshot(snaps[i], ctxs[i])),
        "solve_continuous_ms": per_account_ms(lambda i: solve_continuous(inps[i], weights)),
        "solver_in_it_ms": statistics.mean(c.solve_ms for c in conts),
        "solves_per_account": statistics.mean(c.solves for c in conts),
        "round_trades_ms": per_account_ms(lambda i: round_trades(inps[i], weights, conts[i], DEFAULT_TUNING)),
        "build_orders_ms": per_account_ms(lambda i: build_orders(inps[i], snaps[i], rounded[i])),
        "propose_ms": per_account_ms(lambda i: propose(snaps[i], context=ctxs[i])),
    }
    print(f"{n} benchmark accounts (20 x 3, every constraint), one core, ms per account (fastest of 3 passes):")
    for k, v in figures.items():
        print(f"   {k:24s} {v:8.3f}")
    if a.json:
        print(json.dumps({k: round(v, 4) for k, v in figures.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
