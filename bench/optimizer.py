"""Optimizer benchmark (pure library, nothing started): how many accounts a second, how fast a solve.

1. Throughput: SYNTHETIC accounts of 20 securities with 3 tax lots each (gains and losses, some
   short-term), every constraint of the problem active: cash reserve plus a withdrawal, maximum
   turnover, annual tax budget and hard gain cap, a restricted security, household wash-sale
   bans (recent trades), substitute groups (grouped bands, harvesting into a substitute), market
   impact (sigma, ADV), a 4-factor risk model. A process pool (`--workers`, default 2 = this
   machine's cores), each worker compiles its problem once, then, for its share of the accounts,
   parses the snapshot and context from their JSON bytes (as a message brings them; before the
   eleventh session the pool was handed Python dicts, whose pickling cost the parent about as much
   as the parsing) and runs `propose` (solve, wash-sale resolution, rounding, re-check, Decimal
   orders). Prints
   accounts per second (wall clock, both workers), and p50/p99 of the per-account solver time
   (every convex solve the account needed) and of the whole `propose` call. Run three times in
   one go: Clarabel alone (`TRIMTAB_SOLVER=clarabel`, the library before the tenth session), the
   library's default (the structured solver first, `ipm.py`), Clarabel alone again; the figures
   are the default's, with Clarabel's (the mean of its two runs) beside them.
2. 500 securities with a 15-factor risk model (one lot each, same constraints): median of one
   compiled solve (`n500_p50_ms`, the issue's "per solve") and of `solve_continuous` (all the
   solves one account needed: wash-sale resolution).
3. Fresh: the same problems (the same parameter values) built as a new cvxpy problem with
   constants and solved with Clarabel each time, as code without compilation would: median time
   and the ratio fresh / compiled for one solve. "Compiled" is the library's solve (the
   structured solver where it applies); Clarabel alone on the compiled problem is printed beside.

The machine is shared: figures are medians, and the wall clock of (1) depends on the load.
`--json`: one JSON object of the figures as the last line.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"  # one thread per process: the pool is the parallelism

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from decimal import Decimal  # noqa: E402

import numpy as np  # noqa: E402

AS_OF = datetime(2025, 3, 14, 20, 0, tzinfo=UTC)


def _d(x: float, places: int = 4) -> Decimal:
    return Decimal(repr(round(float(x), places)))


def make_account(seed: int, n: int, lots: int, factors: int) -> tuple[dict, dict]:
    """(snapshot JSON, context JSON) of one synthetic account with every constraint active."""
    rng = np.random.default_rng(seed)
    symbols = [f"S{i:03d}" for i in range(n)]
    prices = np.round(rng.uniform(20, 400, n), 2)
    value = float(rng.uniform(150_000, 2_000_000))
    held = rng.dirichlet(np.full(n, 3.0)) * 0.97
    positions = []
    for i, s in enumerate(symbols):
        shares = np.floor(held[i] * value / prices[i])
        split = rng.dirichlet(np.ones(lots)) if lots > 1 else np.ones(1)
        lot_list, left = [], shares
        for k in range(lots):
            q = float(np.floor(shares * split[k])) if k < lots - 1 else float(left)
            left -= q
            if q <= 0:
                continue
            lot_list.append({"lot_id": f"{s}-{k}", "shares": str(_d(q, 0)),
                             "cost_basis_usd_per_share": str(_d(prices[i] * rng.uniform(0.6, 1.4), 2)),
                             "acquired_on": (AS_OF.date() - timedelta(days=int(rng.integers(40, 1500)))).isoformat()})
        positions.append({"symbol": s, "shares": str(sum(Decimal(x["shares"]) for x in lot_list)),
                          "lots": lot_list})
    invested = sum(float(p["shares"]) * prices[i] for i, p in enumerate(positions))
    cash = max(value - invested, 0.0)
    total = invested + cash
    targets = {s: str(_d(0.97 / n, 6)) for s in symbols}
    snapshot = {
        "account_id": f"acct-{seed}", "household_id": f"hh-{seed // 4}", "account_type": "taxable",
        "cash_usd": str(_d(cash, 2)), "cash_reserve_usd": str(_d(0.01 * total, 2)),
        "positions": positions, "targets": targets,
        "securities": [{"symbol": s, "price_usd": str(_d(prices[i], 2)),
                        "half_spread_bps": str(_d(rng.uniform(1, 6), 2)),
                        "commission_usd_per_share": "0.005"} for i, s in enumerate(symbols)],
        "restricted": [symbols[int(rng.integers(n))]],
        "policy": {"band_abs": "0.02", "max_turnover": "0.6"},
        "as_of": AS_OF.isoformat(),
    }
    # Substitute pairs: (S000, S001), (S002, S003)... share a substitute group (each its own
    # wash group); every fifth security was bought in the household 10 days ago.
    context = {
        "securities": {s: {"sigma_daily": float(rng.uniform(0.008, 0.03)),
                           "adv_usd": float(rng.uniform(5e6, 5e8)),
                           **({"substitute_group": f"G{i // 2}"} if i < 8 else {})}
                       for i, s in enumerate(symbols)},
        "recent_trades": [{"account_id": f"ira-{seed}", "symbol": symbols[i], "side": "buy",
                           "trade_date": (AS_OF.date() - timedelta(days=10)).isoformat()}
                          for i in range(0, n, 5)],
        "tax_budget_usd": 0.004 * total, "gain_cap_usd": 0.03 * total,
        "withdrawal_usd": 0.005 * total, "harvest_min_loss_usd": 200.0, "harvest_min_loss_pct": 0.05,
        "factor_model": _factor_model(symbols, factors, seed),
    }
    return snapshot, context


def _factor_model(symbols: list[str], k: int, seed: int) -> dict:
    rng = np.random.default_rng(10_000 + seed)
    loadings = rng.normal(0.0, 0.15, (len(symbols), k))
    loadings[:, 0] = rng.uniform(0.12, 0.22, len(symbols))  # a market factor (annual vol units)
    specific = rng.uniform(0.01, 0.06, len(symbols))
    return {"name": f"synthetic-{k}", "symbols": symbols, "loadings": loadings.tolist(),
            "specific_var": specific.tolist()}


# ---------------------------------------------------------------- worker side


def _worker_warm(args: tuple[bytes, bytes]) -> float:
    from trimtab.rebalance import RebalanceContext, propose
    from trimtab.shared.events import AccountSnapshot

    t0 = time.perf_counter()
    propose(AccountSnapshot.model_validate_json(args[0]), context=RebalanceContext.from_json(json.loads(args[1])))
    return time.perf_counter() - t0


def _worker_run(batch: list[tuple[bytes, bytes]]) -> list[tuple[float, float, int, int]]:
    """(solver ms, propose ms, solves, orders) per account. Each account arrives as the JSON
    bytes of its snapshot and context, as a message would, and is parsed here (counted in the
    wall clock, not in the propose time)."""
    from trimtab.rebalance import RebalanceContext, propose
    from trimtab.shared.events import AccountSnapshot

    out = []
    for snap_bytes, ctx_bytes in batch:
        snap = AccountSnapshot.model_validate_json(snap_bytes)
        ctx = RebalanceContext.from_json(json.loads(ctx_bytes))
        t0 = time.perf_counter()
        p = propose(snap, context=ctx)
        out.append((float(p.solver.solve_ms), (time.perf_counter() - t0) * 1e3, 0, len(p.orders)))
    return out


def _worker_init(solver: str) -> None:
    os.environ["TRIMTAB_SOLVER"] = solver


def throughput(accounts: int, workers: int, solver: str = "auto") -> dict[str, float]:
    data = [tuple(json.dumps(part).encode() for part in make_account(s, 20, 3, 4)) for s in range(accounts)]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(solver,)) as pool:
        # One compile per worker (each worker gets one warm-up account; spawn order is not
        # guaranteed, so warm more than once per worker).
        warm = list(pool.map(_worker_warm, [data[i % len(data)] for i in range(workers * 2)]))
        chunk = max(1, accounts // (workers * 8))
        batches = [data[i:i + chunk] for i in range(0, accounts, chunk)]
        t0 = time.perf_counter()
        results = [r for batch in pool.map(_worker_run, batches) for r in batch]
        wall = time.perf_counter() - t0
    solve = [r[0] for r in results]
    whole = [r[1] for r in results]
    return {
        "accounts": accounts, "workers": workers, "wall_s": wall, "accounts_per_s": accounts / wall,
        "solve_p50_ms": float(np.percentile(solve, 50)), "solve_p99_ms": float(np.percentile(solve, 99)),
        "propose_p50_ms": float(np.percentile(whole, 50)), "propose_p99_ms": float(np.percentile(whole, 99)),
        "warm_max_s": max(warm), "orders_mean": float(np.mean([r[3] for r in results])),
    }


# ---------------------------------------------------------------- fresh cvxpy, for the ratio


def fresh_solve_ms(shape, data) -> tuple[float, np.ndarray]:  # type: ignore[no-untyped-def]
    """Build the same problem with constants (no Parameters) and solve it: what each account
    would cost without a compiled problem. Returns (ms, buy weights)."""
    import cvxpy as cp
    import scipy.sparse as sp

    from trimtab.rebalance.problem import OBJECTIVE_SCALE, SOLVER_OPTIONS

    t0 = time.perf_counter()
    n, k, m = shape.n_securities, shape.lots_per_security, shape.n_slots
    sell = cp.Variable(m, nonneg=True)
    buy = cp.Variable(n, nonneg=True)
    excess = cp.Variable(n, nonneg=True)
    idle = cp.Variable(nonneg=True)
    trade = cp.Variable(n)
    d = data
    objective = (cp.sum(cp.multiply(d.quad_diag, cp.square(trade))) + d.quad_lin @ trade
                 + d.band_weight * cp.sum(excess) + d.lin_sell @ sell + d.lin_buy @ buy
                 + d.cash_weight * idle)
    cons = [trade == buy - sp.kron(sp.eye(n), np.ones((1, k))).tocsr() @ sell,
            d.tax_row @ sell <= d.tax_cap, d.gain_row @ sell <= d.gain_cap,
            excess - trade >= d.band_lo, excess + trade >= d.band_hi,
            idle + cp.sum(trade) >= d.cash_drag_rhs,
            cp.sum(trade) + d.cost_buy @ buy + d.cost_sell @ sell <= d.cash_floor_rhs,
            sell <= d.sell_cap, buy <= d.buy_cap, cp.sum(sell) + cp.sum(buy) <= d.turnover_cap]
    if shape.impact:
        impact = cp.Variable(n, nonneg=True)
        objective = objective + d.impact @ impact
        cons.append(cp.PowCone3D(impact, np.ones(n), trade, 2.0 / 3.0))
    if shape.n_factors:
        objective = objective + cp.sum_squares(d.factor_scale.T @ trade + d.factor_offset)
    if shape.n_groups:
        gx = cp.Variable(shape.n_groups, nonneg=True)
        objective = objective + d.band_weight * cp.sum(gx)
        cons += [gx - d.group_member.T @ trade >= d.group_lo, gx + d.group_member.T @ trade >= d.group_hi]
    prob = cp.Problem(cp.Minimize(OBJECTIVE_SCALE * objective), cons)
    prob.solve(solver="CLARABEL", **SOLVER_OPTIONS["CLARABEL"])
    return (time.perf_counter() - t0) * 1e3, np.asarray(buy.value)


def single_solves(pairs: list[tuple[dict, dict]], fresh: int) -> dict[str, float]:
    """Per account: all solves of `solve_continuous`, one compiled solve, one fresh solve."""
    from trimtab.rebalance import (
        DEFAULT_DRIVER_WEIGHTS,
        RebalanceContext,
        from_snapshot,
        solve_continuous,
    )
    from trimtab.rebalance.drivers import DEFAULT_TUNING, validate_weights
    from trimtab.rebalance.problem import compiled
    from trimtab.rebalance.solve import assemble, shape_of
    from trimtab.shared.events import AccountSnapshot

    weights = validate_weights(DEFAULT_DRIVER_WEIGHTS)
    inps = [from_snapshot(AccountSnapshot.model_validate(s), RebalanceContext.from_json(c)) for s, c in pairs]
    shape = shape_of(inps[0])
    t0 = time.perf_counter()
    prob = compiled(shape)
    compile_s = time.perf_counter() - t0
    full, one, one_clarabel, fresh_ms, agree, solvers = [], [], [], [], [], set()
    for j, inp in enumerate(inps):
        t0 = time.perf_counter()
        sol = solve_continuous(inp, weights)
        full.append((time.perf_counter() - t0) * 1e3)
        data = assemble(inp, weights, DEFAULT_TUNING, shape_of(inp), sol.bans)
        # The library's own choice (the structured solver where it applies), then Clarabel alone,
        # alternating, on the same problem.
        t0 = time.perf_counter()
        raw = prob.solve(data)
        one.append((time.perf_counter() - t0) * 1e3)
        solvers.add(raw.solver)
        os.environ["TRIMTAB_SOLVER"] = "clarabel"
        try:
            t0 = time.perf_counter()
            prob.solve(data)
            one_clarabel.append((time.perf_counter() - t0) * 1e3)
        finally:
            os.environ.pop("TRIMTAB_SOLVER", None)
        if j < fresh:
            ms, buy = fresh_solve_ms(shape, data)
            fresh_ms.append(ms)
            agree.append(float(np.abs(buy - raw.buy).max()))
    return {"shape": str(shape), "compile_s": compile_s, "solves_per_account": None,
            "solve_continuous_p50_ms": statistics.median(full), "one_solve_p50_ms": statistics.median(one),
            "one_solve_clarabel_p50_ms": statistics.median(one_clarabel), "solvers": sorted(solvers),
            "fresh_p50_ms": statistics.median(fresh_ms) if fresh_ms else float("nan"),
            "fresh_vs_compiled_max_abs_weight_diff": max(agree) if agree else float("nan")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--n500-accounts", type=int, default=15)
    ap.add_argument("--fresh", type=int, default=30, help="accounts also solved afresh (20-security)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    print(f"1. throughput: {a.accounts} accounts x 20 securities x 3 lots, every constraint, "
          f"{a.workers} worker processes; Clarabel alone (TRIMTAB_SOLVER=clarabel, as before the tenth "
          "session), then the library's default (the structured solver first), then Clarabel again")
    runs = {}
    for label, solver in (("clarabel", "clarabel"), ("auto", "auto"), ("clarabel2", "clarabel")):
        tp = runs[label] = throughput(a.accounts, a.workers, solver)
        print(f"   [{solver}] {tp['accounts_per_s']:,.0f} accounts/s ({tp['wall_s']:.2f} s wall); "
              f"solver time per account p50 {tp['solve_p50_ms']:.2f} ms, p99 {tp['solve_p99_ms']:.2f} ms; "
              f"whole propose p50 {tp['propose_p50_ms']:.2f} ms, p99 {tp['propose_p99_ms']:.2f} ms; "
              f"{tp['orders_mean']:.1f} orders/account; first propose per worker (compile) "
              f"<= {tp['warm_max_s']:.1f} s")
    tp = runs["auto"]
    clarabel_rate = statistics.mean([runs["clarabel"]["accounts_per_s"], runs["clarabel2"]["accounts_per_s"]])
    print(f"   default / Clarabel alone: {tp['accounts_per_s'] / clarabel_rate:.2f}x accounts/s")

    print("2. single process, same problems: compiled vs built afresh with cvxpy")
    small = single_solves([make_account(10_000 + s, 20, 3, 4) for s in range(max(a.fresh, 30))], a.fresh)
    print(f"   20 x 3 {small['shape']}: solve_continuous p50 {small['solve_continuous_p50_ms']:.2f} ms, "
          f"one compiled solve p50 {small['one_solve_p50_ms']:.3f} ms ({'/'.join(small['solvers'])}; Clarabel "
          f"alone {small['one_solve_clarabel_p50_ms']:.2f} ms), fresh cvxpy p50 "
          f"{small['fresh_p50_ms']:.1f} ms (same answer to {small['fresh_vs_compiled_max_abs_weight_diff']:.1e})")
    big = single_solves([make_account(20_000 + s, 500, 1, 15) for s in range(a.n500_accounts)],
                        min(3, a.n500_accounts))
    print(f"   500 securities, 15 factors {big['shape']} (compile {big['compile_s']:.1f} s): "
          f"solve_continuous p50 {big['solve_continuous_p50_ms']:.1f} ms, one compiled solve p50 "
          f"{big['one_solve_p50_ms']:.1f} ms ({'/'.join(big['solvers'])}; Clarabel alone "
          f"{big['one_solve_clarabel_p50_ms']:.1f} ms), fresh cvxpy p50 {big['fresh_p50_ms']:.0f} ms")
    def no_impact(pair: tuple[dict, dict]) -> tuple[dict, dict]:
        snap, ctx = pair
        secs = {k: {x: y for x, y in v.items() if x not in ("sigma_daily", "adv_usd")}
                for k, v in ctx["securities"].items()}
        return snap, {**ctx, "securities": secs}

    big_ni = single_solves([no_impact(make_account(20_000 + s, 500, 1, 15)) for s in range(a.n500_accounts)],
                           min(3, a.n500_accounts))
    print(f"   the same without market impact {big_ni['shape']}: solve_continuous p50 "
          f"{big_ni['solve_continuous_p50_ms']:.1f} ms, one compiled solve p50 "
          f"{big_ni['one_solve_p50_ms']:.1f} ms, fresh cvxpy p50 {big_ni['fresh_p50_ms']:.0f} ms")
    ratio = small["fresh_p50_ms"] / small["one_solve_p50_ms"]
    ratio500 = big["fresh_p50_ms"] / big["one_solve_p50_ms"]
    print(f"3. fresh / compiled, one solve: {ratio:.1f}x at 20 securities, {ratio500:.1f}x at 500")
    figures = {
        "accounts_per_s": round(tp["accounts_per_s"], 1),
        "accounts_per_s_clarabel": round(clarabel_rate, 1),
        "propose_p50_ms_clarabel": round(statistics.mean([runs["clarabel"]["propose_p50_ms"],
                                                          runs["clarabel2"]["propose_p50_ms"]]), 3),
        "one_solve_clarabel_p50_ms": round(small["one_solve_clarabel_p50_ms"], 3),
        "n500_clarabel_p50_ms": round(big["one_solve_clarabel_p50_ms"], 2),
        "solve_p50_ms": round(tp["solve_p50_ms"], 3), "solve_p99_ms": round(tp["solve_p99_ms"], 3),
        "propose_p50_ms": round(tp["propose_p50_ms"], 3), "propose_p99_ms": round(tp["propose_p99_ms"], 3),
        # The figure is per solve: one compiled solve of the final problem, median.
        "n500_p50_ms": round(big["one_solve_p50_ms"], 2),
        "n500_all_solves_p50_ms": round(big["solve_continuous_p50_ms"], 2),
        "n500_no_impact_p50_ms": round(big_ni["solve_continuous_p50_ms"], 2),
        "n500_no_impact_one_solve_p50_ms": round(big_ni["one_solve_p50_ms"], 2),
        "fresh_ratio": round(ratio, 2), "fresh_ratio_n500": round(ratio500, 2),
        "one_solve_p50_ms": round(small["one_solve_p50_ms"], 3),
        "fresh_p50_ms": round(small["fresh_p50_ms"], 2), "workers": a.workers, "accounts": a.accounts,
    }
    if a.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
