"""How good is the wash-sale harvest/keep choice, and what does it cost (pure library, one core)?

The choice (`solve._resolve_wash_sales`) is a heuristic over the 2^G harvest/keep assignments of
the G wash groups facing it. On accounts small enough to enumerate every assignment (G up to 10)
this prints how often the heuristic finds the best one, the gap where it does not (in basis
points of the account's value, the objective's unit x 1e4) and its solves per account against
the 2^G of the enumeration. Two SYNTHETIC account families (seeded, the unit tests' generator):

- ``drifted``: 8-12 securities, 2-3 lots, gains and losses, a cash reserve (no substitutes);
- ``substitutes``: the same with securities paired into substitute groups (each its own wash
  group), where the carrier rule (`solve._carriers`) acts.

`--json`: one JSON object of the figures as the last line.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' snapshot generator

from tests.unit.rebalance.conftest import drifted_account, exact_best  # noqa: E402
from trimtab.rebalance import DEFAULT_TUNING, RebalanceContext, SecurityInfo, from_snapshot  # noqa: E402
from trimtab.rebalance import solve as S  # noqa: E402
from trimtab.rebalance.drivers import validate_weights  # noqa: E402

WEIGHTS = validate_weights({"drift": 1.0, "cost": 1.0, "tax": 1.0, "cash": 1e-3, "restrictions": 1.0})
MAX_GROUPS = 10


def accounts(family: str, n: int) -> list:  # type: ignore[type-arg]
    out = []
    for seed in range(n):
        snap = drifted_account(8 + seed % 5, seed=500 + seed, gains=True, reserve=2_000,
                               lots_per_security=2 + seed % 2)
        ctx = None
        if family == "substitutes":
            symbols = sorted(p.symbol for p in snap.positions)
            ctx = RebalanceContext(securities={s: SecurityInfo(substitute_group=f"G{i // 2}")
                                               for i, s in enumerate(symbols)})
        out.append(from_snapshot(snap, ctx))
    return out


def family(name: str, n: int) -> dict[str, float]:
    gaps, solves, groups = [], [], []
    for inp in accounts(name, n):
        sol = S.solve_continuous(inp, WEIGHTS)
        run = S._Run(inp, WEIGHTS, DEFAULT_TUNING, S.shape_of(inp))  # noqa: SLF001
        if len(S._choice_groups(run, S.Bans()).names) > MAX_GROUPS:  # noqa: SLF001
            continue
        best, g = exact_best(inp, WEIGHTS), len(S._choice_groups(run, S.Bans()).names)  # noqa: SLF001
        gaps.append(max(sol.objective - best, 0.0) * 1e4)
        solves.append(sol.solves)
        groups.append(g)
    gaps_a = np.array(gaps)
    return {"accounts": len(gaps), "groups_mean": float(np.mean(groups)),
            "best_found_share": float((gaps_a <= 1e-5).mean()),
            "gap_bps_mean": float(gaps_a.mean()), "gap_bps_max": float(gaps_a.max()),
            "solves_per_account": float(np.mean(solves)),
            "enumeration_solves_per_account": float(np.mean([2 ** g for g in groups]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    out = {}
    for name in ("drifted", "substitutes"):
        r = out[name] = family(name, a.accounts)
        print(f"{name:12s} {r['accounts']} accounts, {r['groups_mean']:.1f} groups facing the choice on "
              f"average: best assignment found in {r['best_found_share']:.0%}, gap mean "
              f"{r['gap_bps_mean']:.2f} bps, max {r['gap_bps_max']:.2f} bps of the account; "
              f"{r['solves_per_account']:.2f} solves per account (enumeration: "
              f"{r['enumeration_solves_per_account']:.0f})")
    if a.json:
        print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
