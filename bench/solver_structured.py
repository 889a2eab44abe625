"""The structured solver (trimtab/rebalance/ipm.py) against Clarabel on the same problems, one process.

For `--accounts` benchmark accounts (bench/optimizer.py's: 20 securities x 3 lots, every constraint)
it takes each account's final problem (its wash-sale bans decided) and solves it `--reps` times
with each solver, interleaved: Clarabel as the library calls it (`TRIMTAB_SOLVER=clarabel`, the
compiled problem's fast path) and the structured solver (`ipm.solve`). Prints per-problem median
times (median and p99 over the problems), the ratio, the structured solver's iterations and
failures, and how far its answers are from Clarabel's: buy weights, trades per security, the
objective (evaluated from the problem data alone, independently of either solver, relative to
max(|objective|, 1e-3)) and the largest constraint violation. `--n500` more accounts of 500
securities and 15 factors the same way. `--json`: one JSON object as the last line.
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
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


def objective(d, buy: np.ndarray, sell: np.ndarray, k: int) -> float:  # type: ignore[no-untyped-def]
    """The problem's objective (problem.py's docstring) at (buy, sell), its auxiliary variables at
    their least feasible values: solver-independent."""
    n = len(buy)
    t = buy - sell.reshape(n, k).sum(axis=1)
    out = float(d.quad_diag @ (t * t) + d.quad_lin @ t + d.lin_sell @ sell + d.lin_buy @ buy)
    out += d.band_weight * float(np.maximum(0, np.maximum(d.band_lo + t, d.band_hi - t)).sum())
    out += d.cash_weight * max(0.0, d.cash_drag_rhs - float(t.sum()))
    if d.impact is not None:
        out += float(d.impact @ np.abs(t) ** 1.5)
    if d.factor_scale is not None and d.factor_offset is not None:
        y = d.factor_scale.T @ t + d.factor_offset
        out += float(y @ y)
    if d.group_member is not None and d.group_lo is not None and d.group_hi is not None:
        g = d.group_member.T @ t
        out += d.band_weight * float(np.maximum(0, np.maximum(d.group_lo + g, d.group_hi - g)).sum())
    return out


def violation(d, buy: np.ndarray, sell: np.ndarray, k: int) -> float:  # type: ignore[no-untyped-def]
    """The largest amount by which (buy, sell) breaks a constraint (0: feasible)."""
    n = len(buy)
    t = buy - sell.reshape(n, k).sum(axis=1)
    rows = [float(t.sum() + d.cost_buy @ buy + d.cost_sell @ sell - d.cash_floor_rhs),
            float(sell.sum() + buy.sum() - d.turnover_cap)]
    if d.tax_row is not None:
        rows.append(float(d.tax_row @ sell - d.tax_cap))
    if d.gain_row is not None:
        rows.append(float(d.gain_row @ sell - d.gain_cap))
    return max(0.0, *rows, *(sell - d.sell_cap), *(buy - d.buy_cap), *(-sell), *(-buy))


def keep_worst(worst: dict[str, float], d, res, ref, k: int) -> None:  # type: ignore[no-untyped-def]
    """Fold one problem's distance between an answer (`res`) and Clarabel's (`ref`) into `worst`:
    buy weights, trades per security, the objective (how much worse, relative to
    max(|objective|, 1e-3)) and the answer's constraint violation."""
    n = len(res.buy)
    worst["buy"] = max(worst["buy"], float(np.abs(res.buy - ref.buy).max()))
    mine_t = res.buy - res.sell.reshape(n, k).sum(axis=1)
    ref_t = ref.buy - ref.sell.reshape(n, k).sum(axis=1)
    worst["trade"] = max(worst["trade"], float(np.abs(mine_t - ref_t).max()))
    mine, theirs = objective(d, res.buy, res.sell, k), objective(d, ref.buy, ref.sell, k)
    worst["objective"] = max(worst["objective"], (mine - theirs) / max(abs(theirs), 1e-3))
    worst["violation"] = max(worst["violation"], violation(d, res.buy, res.sell, k))


def final_problems(count: int, n: int, lots: int, factors: int, seed0: int) -> list:  # type: ignore[type-arg]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from optimizer import make_account

    from trimtab.rebalance import RebalanceContext, from_snapshot, solve_continuous
    from trimtab.rebalance.drivers import DEFAULT_DRIVER_WEIGHTS, DEFAULT_TUNING, validate_weights
    from trimtab.rebalance.solve import assemble, shape_of
    from trimtab.shared.events import AccountSnapshot

    weights = validate_weights(DEFAULT_DRIVER_WEIGHTS)
    out = []
    for s in range(count):
        snap, ctx = make_account(seed0 + s, n, lots, factors)
        inp = from_snapshot(AccountSnapshot.model_validate(snap), RebalanceContext.from_json(ctx))
        sol = solve_continuous(inp, weights)
        out.append((shape_of(inp), assemble(inp, weights, DEFAULT_TUNING, shape_of(inp), sol.bans)))
    return out


def compare(problems: list, reps: int) -> dict[str, float]:  # type: ignore[type-arg]
    from trimtab.rebalance import ipm
    from trimtab.rebalance.problem import compiled

    if not ipm.available():
        raise SystemExit(f"the structured solver is unavailable: {ipm.unavailable_reason()}")
    clarabel_ms, ipm_ms, iters, failures = [], [], [], 0
    worst = {"buy": 0.0, "trade": 0.0, "objective": 0.0, "violation": 0.0}
    for shape, d in problems:
        n, k, f, g = shape.n_securities, shape.lots_per_security, shape.n_factors, shape.n_groups
        prob = compiled(shape)
        tc, tm = [], []
        for r in range(reps):
            order = (0, 1) if r % 2 == 0 else (1, 0)
            for which in order:
                if which == 0:
                    os.environ["TRIMTAB_SOLVER"] = "clarabel"
                    t0 = time.perf_counter()
                    ref = prob.solve(d)
                    tc.append((time.perf_counter() - t0) * 1e3)
                    os.environ.pop("TRIMTAB_SOLVER", None)
                else:
                    t0 = time.perf_counter()
                    res = ipm.solve(d, n, k, f, g)
                    tm.append((time.perf_counter() - t0) * 1e3)
        clarabel_ms.append(statistics.median(tc))
        ipm_ms.append(statistics.median(tm))
        if not res.usable:
            failures += 1
            continue
        iters.append(res.iterations)
        keep_worst(worst, d, res, ref, k)
    return {
        "problems": len(problems), "clarabel_p50_ms": statistics.median(clarabel_ms),
        "clarabel_p99_ms": float(np.percentile(clarabel_ms, 99)), "structured_p50_ms": statistics.median(ipm_ms),
        "structured_p99_ms": float(np.percentile(ipm_ms, 99)),
        "ratio": statistics.median(clarabel_ms) / statistics.median(ipm_ms),
        "iterations_p50": float(statistics.median(iters)) if iters else float("nan"),
        "iterations_max": float(max(iters)) if iters else float("nan"), "failures": failures,
        "max_buy_diff": worst["buy"], "max_trade_diff": worst["trade"],
        "max_objective_worse_rel": worst["objective"], "max_violation": worst["violation"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=300)
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--n500", type=int, default=5, help="accounts of 500 securities and 15 factors")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    out = {}
    for label, count, shape in (("20x3", a.accounts, (20, 3, 4)), ("500x1", a.n500, (500, 1, 15))):
        if not count:
            continue
        problems = final_problems(count, *shape, seed0=50_000 if label == "20x3" else 51_000)
        c = out[label] = compare(problems, a.reps if label == "20x3" else max(1, a.reps // 4))
        print(f"{label}: {c['problems']} problems; Clarabel p50 {c['clarabel_p50_ms']:.3f} ms (p99 "
              f"{c['clarabel_p99_ms']:.3f}), structured p50 {c['structured_p50_ms']:.3f} ms (p99 "
              f"{c['structured_p99_ms']:.3f}): {c['ratio']:.1f}x; iterations p50 {c['iterations_p50']:.0f} max "
              f"{c['iterations_max']:.0f}; failures {c['failures']}; max |buy diff| {c['max_buy_diff']:.1e}, "
              f"|trade diff| {c['max_trade_diff']:.1e}; objective worse by at most {c['max_objective_worse_rel']:.1e} "
              f"(relative); max violation {c['max_violation']:.1e}")
    if a.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
