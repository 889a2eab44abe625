"""Household-mode benchmark (pure library, nothing started): how fast one household solves.

SYNTHETIC (seeded) households of 4 accounts (2 taxable, a traditional IRA, a Roth) over a
universe of 20 securities (14 equities, 4 bond funds, 2 REITs), each account holding a random
subset with 1-3 lots (gains and losses, some short-term), cash and a reserve; household target
from a 60/40-like mix; with `--factors` a 4-factor risk model and `--impact` sigma/ADV data.
One process. The compiled problem is built once (its time is printed apart), then for each
household:

- one compiled solve (the Parameters set, Clarabel called directly through the fast path);
- `solve_household_continuous` (one to three solves: the household wash-sale choice);
- the whole `propose_household` (solve, rounding per account, re-solves for dropped orders,
  household re-check, Decimal orders);
- with `--explain N`, for the first N households: `explain_household` (exact Shapley values of
  every trade over the drivers, location included: one household solve per coalition).

Prints the medians (and p90) over `--households` households. `--json`: the figures as one JSON
object on the last line.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from decimal import Decimal  # noqa: E402

import numpy as np  # noqa: E402

from trimtab.rebalance import FactorModel, RebalanceContext, SecurityInfo, propose_household  # noqa: E402
from trimtab.rebalance.drivers import DEFAULT_TUNING  # noqa: E402
from trimtab.rebalance.household import (  # noqa: E402
    HouseholdShape,
    assemble,
    compiled_household,
    household_input,
    household_weights,
    solve_household_continuous,
)
from trimtab.rebalance.household_explain import explain_household  # noqa: E402
from trimtab.rebalance.solve import Bans  # noqa: E402
from trimtab.shared.events import (  # noqa: E402
    AccountSnapshot,
    LotSnapshot,
    PositionSnapshot,
    SecuritySnapshot,
)

AS_OF = datetime(2025, 3, 14, 20, 0, tzinfo=UTC)
TYPES = ("taxable", "taxable", "tax_deferred", "tax_exempt")


def universe(rng: np.random.Generator) -> list[tuple[str, Decimal, str]]:
    classes = ["equity"] * 14 + ["bond"] * 4 + ["reit"] * 2
    return [(f"S{i:02d}", Decimal(str(round(float(rng.uniform(20, 400)), 2))), c) for i, c in enumerate(classes)]


def household(seed: int) -> tuple[list[AccountSnapshot], dict[str, Decimal]]:
    rng = np.random.default_rng(seed)
    secs = universe(np.random.default_rng(0))
    securities = [SecuritySnapshot(symbol=s, price_usd=p, asset_class=c) for s, p, c in secs]
    snaps = []
    for a, kind in enumerate(TYPES):
        value = float(rng.uniform(50_000, 400_000))
        held = rng.choice(len(secs), size=int(rng.integers(6, 14)), replace=False)
        weights = rng.dirichlet(np.ones(len(held))) * 0.97
        positions = []
        for i, w in zip(held, weights, strict=True):
            sym, price, _ = secs[i]
            shares = int(w * value / float(price))
            if shares < 3:
                continue
            n_lots = int(rng.integers(1, 4))
            cuts = sorted(rng.choice(np.arange(1, shares), size=n_lots - 1, replace=False)) if n_lots > 1 else []
            sizes = np.diff([0, *cuts, shares])
            lots = [LotSnapshot(lot_id=f"h{seed}-a{a}-{sym}-{k}", shares=Decimal(int(q)),
                                cost_basis_usd_per_share=Decimal(str(round(float(price) * float(rng.uniform(0.6, 1.4)), 2))),
                                acquired_on=AS_OF.date() - timedelta(days=int(rng.integers(40, 1500))))
                    for k, q in enumerate(sizes) if q > 0]
            positions.append(PositionSnapshot(symbol=sym, shares=sum((x.shares for x in lots), Decimal(0)), lots=lots))
        invested = sum(float(p.shares) * float(secs[int(p.symbol[1:])][1]) for p in positions)
        snaps.append(AccountSnapshot(
            account_id=f"h{seed}-a{a}", household_id=f"h{seed}", account_type=kind,  # type: ignore[arg-type]
            cash_usd=Decimal(str(round(value - invested, 2))), cash_reserve_usd=Decimal("500"),
            positions=positions, targets={}, securities=securities, as_of=AS_OF))
    raw = {s: (0.6 / 14 if c == "equity" else 0.3 / 4 if c == "bond" else 0.08 / 2) for s, _, c in secs}
    targets = {s: Decimal(str(round(w, 6))) for s, w in raw.items()}
    return snaps, targets


def context(factors: bool, impact: bool) -> RebalanceContext:
    rng = np.random.default_rng(1)
    syms = [f"S{i:02d}" for i in range(20)]
    fm = FactorModel(symbols=tuple(syms), loadings=rng.normal(0, 0.01, (20, 4)),
                     specific_var=rng.uniform(1e-4, 4e-4, 20)) if factors else None
    secs = {s: SecurityInfo(sigma_daily=0.015, adv_usd=5e7) for s in syms} if impact else {}
    return RebalanceContext(securities=secs, factor_model=fm)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--households", type=int, default=30)
    ap.add_argument("--factors", action="store_true", help="a 4-factor risk model")
    ap.add_argument("--impact", action="store_true", help="market impact (power cones)")
    ap.add_argument("--explain", type=int, default=5, metavar="N",
                    help="explain the first N households (0: none)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    ctx = context(args.factors, args.impact)
    weights = household_weights(None)
    first, targets = household(0)
    shape = HouseholdShape.of(household_input(first, targets, ctx))
    t0 = time.perf_counter()
    prob = compiled_household(shape)
    compile_ms = (time.perf_counter() - t0) * 1e3
    one, cont, whole, solves, orders, why, why_solves = [], [], [], [], [], [], []
    for seed in range(args.households):
        snaps, targets = household(seed)
        hh = household_input(snaps, targets, ctx)
        s = HouseholdShape.of(hh)
        data = assemble(hh, weights, DEFAULT_TUNING, s, [Bans()] * hh.n_accounts)
        t0 = time.perf_counter()
        compiled_household(s).solve(data)
        one.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        sol = solve_household_continuous(hh, weights)
        cont.append((time.perf_counter() - t0) * 1e3)
        solves.append(sol.solves)
        t0 = time.perf_counter()
        p = propose_household(snaps, targets, context=ctx)
        whole.append((time.perf_counter() - t0) * 1e3)
        orders.append(sum(len(a.orders) for a in p.accounts))
        if seed < args.explain:
            t0 = time.perf_counter()
            e = explain_household(hh, weights, full=sol)
            why.append((time.perf_counter() - t0) * 1e3)
            why_solves.append(e.resolves)
    figures = {
        "households": args.households, "accounts": 4, "securities": 20, "shape": str(shape),
        "fast_path": prob.fast is not None, "compile_ms": round(compile_ms, 1),
        "one_solve_ms_p50": round(statistics.median(one), 2), "one_solve_ms_p90": round(pct(one, 90), 2),
        "continuous_ms_p50": round(statistics.median(cont), 2), "continuous_ms_p90": round(pct(cont, 90), 2),
        "solves_per_household_mean": round(float(np.mean(solves)), 2),
        "propose_household_ms_p50": round(statistics.median(whole), 2),
        "propose_household_ms_p90": round(pct(whole, 90), 2),
        "orders_per_household_mean": round(float(np.mean(orders)), 1),
    }
    if why:
        figures.update(explain_ms_p50=round(statistics.median(why), 1), explain_ms_max=round(max(why), 1),
                       explain_solves_mean=round(float(np.mean(why_solves)), 1), explained=len(why))
    print(f"household of 4 accounts x 20 securities, shape {shape}, fast path {figures['fast_path']}")
    print(f"compile (once per shape): {figures['compile_ms']} ms")
    print(f"one compiled solve: p50 {figures['one_solve_ms_p50']} ms, p90 {figures['one_solve_ms_p90']} ms")
    print(f"solve_household_continuous ({figures['solves_per_household_mean']} solves on average): "
          f"p50 {figures['continuous_ms_p50']} ms, p90 {figures['continuous_ms_p90']} ms")
    print(f"propose_household (whole): p50 {figures['propose_household_ms_p50']} ms, "
          f"p90 {figures['propose_household_ms_p90']} ms; {figures['orders_per_household_mean']} orders on average")
    if why:
        print(f"explain_household ({figures['explained']} households, {figures['explain_solves_mean']} "
              f"solves on average): p50 {figures['explain_ms_p50']} ms, max {figures['explain_ms_max']} ms")
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
