"""Explainer benchmark (pure domain, one core, nothing started).

A 20-security taxable proposal is explained over the service's drivers (`EXPLAIN_DRIVERS`:
drift, risk, cost, tax_losses, tax_gains, cash, restrictions, esg): exact Shapley values by
`shap`'s exact explainer over the 2^8 = 256 coalitions, each re-solved by the optimizer's own code
(`solve_continuous`, wash-sale resolution included), efficiency checked, both narratives written.
These accounts have no factor model and no ESG screen, so risk and esg are structurally null
(valued exactly without a solve): six drivers act, as the issue's budget assumes. One more
account, ``typical+factors`` (the typical account with a 4-factor risk model, as `make demo`
solves with), has seven acting drivers: it is reported beside the target, not in it. Timed per call after one
warm-up call (compile and shap JIT paid there); the number of solver calls is printed.

Three SYNTHETIC accounts (seeded, the unit tests' generator), all 20 securities, 2 lots each,
a restricted security and a cash reserve:

- ``typical``: lots mostly at gains, a few losses (few wash-sale choices: about one solve per
  coalition);
- ``gains-only``: the same account with every lot at a gain (after a rising market): no
  wash-sale choice (one solve per coalition) and harvesting is a null driver (pruned exactly);
- ``stress``: lots between -40 % and +40 % of price, so most securities hold a loss lot and are
  also buy candidates (the wash-sale disjunction costs the optimizer 2-3 solves per coalition).

The top-level figures are the WORST of the accounts. Counterfactuals (bisection re-solves)
are timed separately and are not part of the attribution budget.

`--json`: one JSON object of the figures as the last line.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"  # one core: set before numpy loads its BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' snapshot generator

from tests.unit.rebalance.conftest import drifted_account, make_snapshot  # noqa: E402
from trimtab.rebalance import explain, propose, warm_up_explainer  # noqa: E402
from trimtab.rebalance.explain import EXPLAIN_DRIVERS  # noqa: E402
from trimtab.rebalance.version import OPTIMIZER_VERSION  # noqa: E402


def typical_account(losses: tuple[int, ...] = (3, 11, 17)):  # type: ignore[no-untyped-def]
    """20 securities, lots at +5..+60 % gains except the `losses` at a loss, a drifted mix."""
    rng = np.random.default_rng(42)
    symbols = [f"S{i:02d}" for i in range(20)]
    prices = {s: float(np.round(rng.uniform(20, 400), 2)) for s in symbols}
    weights = rng.dirichlet(np.full(20, 3.0)) * 0.97
    holdings = {}
    for k, (s, w) in enumerate(zip(symbols, weights, strict=True)):
        shares = float(np.floor(w * 250_000 / prices[s]))
        first = float(np.floor(shares / 2))
        loss = k in losses
        g1 = 1.0 / (1.0 + rng.uniform(0.05, 0.6))
        g2 = float(rng.uniform(1.05, 1.25)) if loss else 1.0 / (1.0 + rng.uniform(0.05, 0.6))
        holdings[s] = [(first, round(prices[s] * g1, 2), int(rng.integers(400, 1500))),
                       (shares - first, round(prices[s] * g2, 2), int(rng.integers(30, 360)))]
    invested = sum(q * prices[s] for s, lots in holdings.items() for q, _, _ in lots)
    return make_snapshot(prices=prices, holdings=holdings, targets={s: 0.049 for s in symbols},
                         cash=round(250_000 - invested, 2), reserve=2_000, restricted=["S07"])


ACCOUNTS = {
    "typical": typical_account,
    "gains-only": lambda: typical_account(losses=()),
    "stress": lambda: drifted_account(20, gains=True, reserve=2_000, restricted=["S07"], seed=21),
}


def factor_context(snapshot):  # type: ignore[no-untyped-def]
    """A 4-factor risk model over the snapshot's symbols (seeded): the risk driver acts."""
    from trimtab.rebalance import RebalanceContext
    from trimtab.rebalance.context import FactorModel

    symbols = tuple(sorted(s.symbol for s in snapshot.securities))
    rng = np.random.default_rng(7)
    loadings = rng.normal(0.0, 0.1, (len(symbols), 4))
    loadings[:, 0] = rng.uniform(0.12, 0.22, len(symbols))  # a market factor
    return RebalanceContext(factor_model=FactorModel(symbols=symbols, loadings=loadings,
                                                     specific_var=rng.uniform(0.01, 0.05, len(symbols))))


#: Reported beside the target (seven acting drivers), not in the worst-of figure.
BEYOND = {"typical+factors": typical_account}


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs), q))


def run(name: str, snapshot, repeats: int, cf_repeats: int,  # type: ignore[no-untyped-def]
        context=None) -> dict[str, object]:
    proposal = propose(snapshot, context=context)
    explain(proposal, drivers=EXPLAIN_DRIVERS, prune=True, context=context)  # warm-up: compile, JIT
    times, attribution = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        e = explain(proposal, drivers=EXPLAIN_DRIVERS, prune=True, context=context)
        times.append((time.perf_counter() - t0) * 1e3)
        attribution.append(e.attribution_ms)
    cf_times = []
    for _ in range(cf_repeats):
        t0 = time.perf_counter()
        cf = explain(proposal, drivers=EXPLAIN_DRIVERS, counterfactuals=True, prune=True, context=context)
        cf_times.append((time.perf_counter() - t0) * 1e3 - cf.attribution_ms)
    n_cf = sum(len(v) for v in cf.counterfactuals.values())
    return {
        "account": name, "securities": len(proposal.snapshot.securities), "orders": len(proposal.orders),
        "drivers": list(e.drivers), "coalitions": e.coalitions, "skipped_coalitions": e.skipped_coalitions,
        "resolves": e.resolves, "efficiency_error_shares": e.efficiency_error_shares,
        "explain_p50_ms": statistics.median(times), "explain_p99_ms": _pct(times, 99),
        "attribution_p50_ms": statistics.median(attribution),
        "ms_per_resolve": statistics.median(attribution) / max(e.resolves, 1),
        "counterfactuals": n_cf, "counterfactual_resolves": cf.counterfactual_resolves,
        "counterfactuals_p50_ms": statistics.median(cf_times),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--cf-repeats", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON on the last line")
    args = ap.parse_args()
    warm_up_explainer()
    results = [run(name, make(), args.repeats, args.cf_repeats) for name, make in ACCOUNTS.items()]
    beyond = [run(name, snap, args.repeats, args.cf_repeats, context=factor_context(snap))
              for name, make in BEYOND.items() for snap in [make()]]
    print(f"explainer bench: optimizer {OPTIMIZER_VERSION}, one core, {args.repeats} calls per account")
    for r in [*results, *beyond]:
        print(f"  {r['account']:8s} {r['securities']} securities, {r['orders']} orders, "
              f"{len(r['drivers'])} drivers {r['drivers']}")
        print(f"           coalitions {r['coalitions']} ({r['skipped_coalitions']} valued exactly without a solve), "
              f"re-solves {r['resolves']} ({r['ms_per_resolve']:.2f} ms each)")
        print(f"           explain p50 {r['explain_p50_ms']:.1f} ms, p99 {r['explain_p99_ms']:.1f} ms "
              f"(attribution p50 {r['attribution_p50_ms']:.1f} ms); efficiency error "
              f"{r['efficiency_error_shares']:.1e} shares")
        print(f"           counterfactuals: {r['counterfactuals']} in {r['counterfactuals_p50_ms']:.0f} ms "
              f"({r['counterfactual_resolves']} re-solves)")
    worst = max(results, key=lambda r: r["explain_p50_ms"])  # type: ignore[arg-type,return-value]
    target = 150.0
    verdict = "meets" if worst["explain_p50_ms"] <= target else "MISSES"  # type: ignore[operator]
    print(f"worst p50 {worst['explain_p50_ms']:.1f} ms ({worst['account']}): {verdict} the {target:.0f} ms target")
    if args.json:
        print(json.dumps({
            "explain_p50_ms": round(float(worst["explain_p50_ms"]), 2),  # type: ignore[arg-type]
            "explain_p99_ms": round(max(float(r["explain_p99_ms"]) for r in results), 2),  # type: ignore[arg-type]
            "resolves": worst["resolves"], "drivers": len(worst["drivers"]),  # type: ignore[arg-type]
            "target_ms": target, "meets_target": verdict == "meets",
            "accounts": {r["account"]: {k: (float(f"{v:.4g}") if isinstance(v, float) else v)
                                        for k, v in r.items() if k != "account"} for r in [*results, *beyond]},
            "beyond_target": [r["account"] for r in beyond],
        }, sort_keys=True))


if __name__ == "__main__":
    main()
