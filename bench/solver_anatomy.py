"""Where an account's optimizer time goes (pure library, one process, nothing started).

On the accounts of `bench/optimizer.py` (20 securities x 3 lots, every constraint):

1. Clarabel on one compiled problem's data, per setting, side by side on the same accounts:
   setup (building the solver: KKT assembly, ordering) and solve times, iterations, and the
   objective's largest relative difference from the first attempt's settings.
2. The solves an account needs, by the step of the wash-sale resolution that made them
   (`solve.py`: the first solve, the "sure keep" step, the "maybe keep" trial, a diagnosis).
3. Warm start (the issue asks for "Clarabel or OSQP with warm start"; Clarabel, an interior
   point method, has none): on the same accounts without market impact (OSQP takes no power
   cones), the wash-sale re-solve of each account (only the caps differ from its first solve)
   by Clarabel as the optimizer calls it (new solver, setup included) against OSQP (setup not
   counted) cold, warm-started from the account's first solve (primal and dual), and
   warm-started from the previous account's; at OSQP tolerances 1e-6 and 1e-9 (polished), with
   the objective's distance from Clarabel's.

`--json`: one JSON object of the figures as the last line.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from optimizer import make_account  # noqa: E402  (bench/optimizer.py: the same accounts)

from trimtab.rebalance import RebalanceContext, from_snapshot  # noqa: E402
from trimtab.rebalance import solve as S  # noqa: E402
from trimtab.rebalance.drivers import DEFAULT_DRIVER_WEIGHTS, DEFAULT_TUNING, validate_weights  # noqa: E402
from trimtab.rebalance.problem import compiled  # noqa: E402
from trimtab.shared.events import AccountSnapshot  # noqa: E402


def inputs(accounts: int) -> list[Any]:
    out = []
    for seed in range(accounts):
        snap, ctx = make_account(seed, 20, 3, 4)
        out.append(from_snapshot(AccountSnapshot.model_validate(snap), RebalanceContext.from_json(ctx)))
    return out


def clarabel_settings(inps: list[Any]) -> dict[str, Any]:
    import clarabel

    w = validate_weights(DEFAULT_DRIVER_WEIGHTS)
    shape = S.shape_of(inps[0])
    prob = compiled(shape)
    fast = prob.fast
    assert fast is not None, "no fast path"
    thetas = [prob.theta(S.assemble(inp, w, DEFAULT_TUNING, shape, S.Bans())) for inp in inps
              if S.shape_of(inp) == shape]
    base = fast.attempts[0]
    variants = {
        "attempt 0 (ours)": base,
        "Clarabel defaults, our tolerances": fast.attempts[1],
        "iterative refinement on": fast._copy(base, iterative_refinement_enable=True),  # noqa: SLF001
        "faer direct solver": fast._copy(base, direct_solve_method="faer"),  # noqa: SLF001
        "no presolve": fast._copy(base, presolve_enable=False),  # noqa: SLF001
        "no equilibration": fast._copy(base, equilibrate_enable=False),  # noqa: SLF001
        "tolerances 1e-8": fast._copy(base, tol_gap_abs=1e-8, tol_gap_rel=1e-8, tol_feas=1e-8),  # noqa: SLF001
        "max step fraction 0.995": fast._copy(base, max_step_fraction=0.995),  # noqa: SLF001
    }
    out: dict[str, Any] = {"shape": str(shape), "accounts": len(thetas), "variables": fast.A.shape[1],
                           "rows": fast.A.shape[0]}
    ref: list[float] = []
    for name, settings in variants.items():
        setup, solve, iters, objs = [], [], [], []
        for th in thetas:
            t1 = th  # theta ends with the constant 1
            P, q, A, b = fast.P.at(t1), fast.q @ t1, fast.A.at(t1), fast.b @ t1
            t0 = time.perf_counter()
            solver = clarabel.DefaultSolver(P, q, A, b, fast.cones, settings)
            t_mid = time.perf_counter()
            sol = solver.solve()
            solve.append((time.perf_counter() - t_mid) * 1e3)
            setup.append((t_mid - t0) * 1e3)
            iters.append(sol.iterations)
            objs.append(sol.obj_val)
        if not ref:
            ref = objs
        rel = max(abs(o - r) / max(abs(r), 1e-9) for o, r in zip(objs, ref, strict=True))
        out[name] = {"setup_p50_ms": round(statistics.median(setup), 3),
                     "solve_p50_ms": round(statistics.median(solve), 3),
                     "iterations_p50": statistics.median(iters), "objective_max_rel_diff": float(f"{rel:.2g}")}
    return out


def warm_start(accounts: int) -> dict[str, Any]:
    """Section 3: Clarabel (cold, setup included) against OSQP cold and warm-started."""
    import clarabel
    import osqp
    import scipy.sparse as sp

    w = validate_weights(DEFAULT_DRIVER_WEIGHTS)
    inps = []
    for seed in range(accounts):
        snap, ctx = make_account(seed, 20, 3, 4)
        for info in ctx["securities"].values():  # no sigma/ADV: no impact term, no power cones
            info.pop("sigma_daily")
            info.pop("adv_usd")
        inps.append(from_snapshot(AccountSnapshot.model_validate(snap), RebalanceContext.from_json(ctx)))
    shape = S.shape_of(inps[0])
    prob = compiled(shape)
    fast = prob.fast
    assert fast is not None and not shape.impact

    def data(inp: Any, bans: S.Bans) -> tuple[Any, ...]:
        t1 = prob.theta(S._Run(inp, w, DEFAULT_TUNING, shape).data(bans))  # noqa: SLF001
        P, q, A, b = fast.P.at(t1), fast.q @ t1, fast.A.at(t1), fast.b @ t1
        lo, at = np.full(len(b), -np.inf), 0  # Clarabel's A x + s = b, s in {0} or R+
        for cone in fast.cones:
            dim = int(cone.dim)
            if type(cone).__name__ == "ZeroConeT":
                lo[at:at + dim] = b[at:at + dim]
            at += dim
        return P, q, A, b, lo

    pairs = []
    for inp in inps:
        choice = S._choice_groups(S._Run(inp, w, DEFAULT_TUNING, shape), S.Bans())  # noqa: SLF001
        if choice.names:
            pairs.append((data(inp, choice.bans(frozenset(choice.names))), data(inp, choice.bans(frozenset()))))
    out: dict[str, Any] = {"shape": str(shape), "accounts": len(pairs)}
    for eps in (1e-6, 1e-9):
        times: dict[str, list[float]] = collections.defaultdict(list)
        iters: dict[str, list[int]] = collections.defaultdict(list)
        gaps: dict[str, list[float]] = collections.defaultdict(list)
        previous = None
        for first, again in pairs:
            P, q, A, b, lo = again
            t0 = time.perf_counter()
            ref = clarabel.DefaultSolver(P, q, A, b, fast.cones, fast.attempts[0]).solve()
            times["clarabel"].append((time.perf_counter() - t0) * 1e3)
            iters["clarabel"].append(ref.iterations)
            full_p = sp.triu(P) + sp.triu(P, 1).T

            def objective(x: np.ndarray, full_p: Any = full_p, q: np.ndarray = q) -> float:
                return float(0.5 * x @ (full_p @ x) + q @ x)

            best = objective(np.asarray(ref.x))

            def run_osqp(d: tuple[Any, ...], start: tuple[np.ndarray, np.ndarray] | None, eps: float = eps) -> Any:
                m = osqp.OSQP()
                m.setup(d[0], d[1], d[2], d[4], d[3], eps_abs=eps, eps_rel=eps, polishing=True,
                        verbose=False, max_iter=200_000, warm_starting=True)
                if start is not None:
                    m.warm_start(x=start[0], y=start[1])
                t0 = time.perf_counter()
                r = m.solve()
                return (time.perf_counter() - t0) * 1e3, r

            own = run_osqp(first, None)[1]
            for name, start in (("osqp cold", None), ("osqp warm, same account", (own.x, own.y)),
                                ("osqp warm, previous account", previous)):
                if name.endswith("previous account") and start is None:
                    continue
                ms, r = run_osqp(again, start)
                times[name].append(ms)
                iters[name].append(int(r.info.iter))
                gaps[name].append(abs(objective(np.asarray(r.x)) - best) / max(1.0, abs(best)))
            previous = (own.x, own.y)
        out[f"eps {eps:g}"] = {
            name: {"solve_p50_ms": round(statistics.median(times[name]), 3),
                   "iterations_p50": statistics.median(iters[name]),
                   **({"objective_gap_p50": float(f"{statistics.median(gaps[name]):.2g}"),
                       "objective_gap_max": float(f"{max(gaps[name]):.2g}")} if gaps[name] else {})}
            for name in times}
    return out


def solve_paths(inps: list[Any]) -> dict[str, Any]:
    """Solves per account by the line of `solve.py` that asked for them."""
    counts: collections.Counter[str] = collections.Counter()
    names = {"_resolve_wash_sales": "wash-sale resolution", "solve_or_diagnose": "first solve or its diagnosis"}
    original = S._Run.solve

    def counted(self, bans, relax=frozenset()):  # type: ignore[no-untyped-def]
        frame = sys._getframe(1)  # noqa: SLF001
        counts[f"{names.get(frame.f_code.co_name, frame.f_code.co_name)} (solve.py:{frame.f_lineno})"] += 1
        return original(self, bans, relax)

    w = validate_weights(DEFAULT_DRIVER_WEIGHTS)
    S._Run.solve = counted  # type: ignore[method-assign]
    try:
        for inp in inps:
            S.solve_continuous(inp, w)
    finally:
        S._Run.solve = original  # type: ignore[method-assign]
    n = len(inps)
    return {"accounts": n, "solves_per_account": round(sum(counts.values()) / n, 3),
            "by_step_per_account": {k: round(v / n, 3) for k, v in counts.most_common()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    inps = inputs(a.accounts)
    s = clarabel_settings(inps[:60])
    print(f"1. Clarabel on {s['accounts']} accounts' data, {s['shape']}, {s['variables']} variables, "
          f"{s['rows']} rows (p50):")
    for name, r in s.items():
        if isinstance(r, dict):
            print(f"   {name:36s} setup {r['setup_p50_ms']:.3f} ms  solve {r['solve_p50_ms']:.3f} ms  "
                  f"{r['iterations_p50']:.0f} iterations  objective within {r['objective_max_rel_diff']:.1g}")
    p = solve_paths(inps)
    print(f"2. solves per account: {p['solves_per_account']} over {p['accounts']} accounts, by step:")
    for k, v in p["by_step_per_account"].items():
        print(f"   {v:.3f}  {k}")
    ws = warm_start(min(a.accounts, 80))
    print(f"3. warm start, the wash-sale re-solve of {ws['accounts']} accounts, {ws['shape']} (p50):")
    for eps in ("eps 1e-06", "eps 1e-09"):
        for name, r in ws[eps].items():
            gap = (f"  objective off Clarabel's by {r['objective_gap_p50']:.1g} (max {r['objective_gap_max']:.1g})"
                   if "objective_gap_p50" in r else "  (setup included)")
            print(f"   OSQP {eps:9s} {name:28s} {r['solve_p50_ms']:7.3f} ms  {r['iterations_p50']:6.0f} iterations{gap}"
                  if name != "clarabel" else
                  f"   {'Clarabel, as called':42s} {r['solve_p50_ms']:7.3f} ms  {r['iterations_p50']:6.0f} iterations{gap}")
    if a.json:
        print(json.dumps({"clarabel": s, "solve_paths": p, "warm_start": ws}, sort_keys=True))


if __name__ == "__main__":
    main()
