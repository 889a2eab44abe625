"""Risk engine benchmark (pure domain, one core, nothing started).

1. Stress: 10,000 SYNTHETIC accounts (seeded random long-only weights over the 20 real S&P 500
   stocks and the 5 real factor ETFs, 0-10 % cash) under the 10 built-in scenarios (5 historical
   replays of the real 1990-2022 closes with their daily paths, 2 market, 2 sector, 1 factor
   shock): the shock matrix is built from the reference history, then every account is valued
   under every scenario (end P&L and worst drawdown inside each window) in one matrix pass.
   Also with a 500-symbol universe (480 synthetic symbols, proxied by the market).
2. Assessment: a model built from real 2021-2022 closes of the 20 stocks; pre- and post-trade
   assessment of a 20-security proposal (every measure: vol, score, parametric and historical
   VaR/CVaR 95/99 1d/10d, drawdown, beta and tracking error to the target, concentration,
   flags against tolerance), timed per call.

`--json`: one JSON object of the figures as the last line.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"  # one core: set before numpy loads its BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from decimal import Decimal  # noqa: E402

import numpy as np  # noqa: E402

from trimtab.risk.domain.assessment import Limits, assess  # noqa: E402
from trimtab.risk.domain.model import RiskModel  # noqa: E402
from trimtab.risk.domain.portfolio import risk_view  # noqa: E402
from trimtab.risk.domain.scenarios import BUILTIN, build_shocks  # noqa: E402
from trimtab.risk.domain.stress import stress  # noqa: E402
from trimtab.risk.reference import load_reference  # noqa: E402


def synthetic_weights(rng: np.random.Generator, accounts: int, n: int, held: int) -> np.ndarray:
    W = np.zeros((accounts, n))
    cols = np.argsort(rng.random((accounts, n)), axis=1)[:, :held]
    raw = rng.gamma(2.0, 1.0, (accounts, held))
    invested = 1.0 - rng.uniform(0.0, 0.10, (accounts, 1))
    np.put_along_axis(W, cols, raw / raw.sum(axis=1, keepdims=True) * invested, axis=1)
    return W


def best_of(fn, repeats: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--assessments", type=int, default=300)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rng = np.random.default_rng(7)
    figures: dict[str, float | int | str] = {"accounts": a.accounts, "scenarios": len(BUILTIN)}

    t0 = time.perf_counter()
    hist = load_reference()
    figures["reference_load_s"] = round(time.perf_counter() - t0, 3)
    symbols = list(hist.symbols)  # 20 stocks + 5 factor ETFs, all real
    closes = hist.prices[-500:, :20]
    model = RiskModel(0.94)
    days = hist.dates[-500:]
    for t, d in enumerate(days):
        as_of = datetime.combine(d.astype(object), datetime.min.time(), tzinfo=UTC)
        for k, s in enumerate(symbols[:20]):
            model.on_tick(s, d.astype(object), float(closes[t, k]), as_of)
    view = risk_view(model.covariance, symbols, min_observations=20)

    # ---- stress: shocks from the history, then one pass over every account and scenario
    shock_s, shocks = best_of(lambda: build_shocks(BUILTIN, symbols, hist, view.cov_daily), a.repeats)
    W = synthetic_weights(rng, a.accounts, len(symbols), 12)
    stress_s, result = best_of(lambda: stress(W, shocks), a.repeats)  # type: ignore[arg-type]
    figures["shock_build_s"] = round(shock_s, 4)
    figures["stress_10k_x10_s"] = round(stress_s, 4)
    figures["stress_10k_x10_incl_shocks_s"] = round(stress_s + shock_s, 4)
    path_days = sum(len(p) for p in shocks.paths if p is not None)  # type: ignore[union-attr]
    figures["historical_path_days"] = path_days
    worst = result.worst  # type: ignore[union-attr]

    big = symbols + [f"SYN{i:03d}" for i in range(500 - len(symbols))]
    big_cov = np.eye(len(big)) * 4e-4 + 1e-4
    big_shocks = build_shocks(BUILTIN, big, hist, big_cov)
    Wb = synthetic_weights(rng, a.accounts, len(big), 40)
    big_s, _ = best_of(lambda: stress(Wb, big_shocks), a.repeats)
    figures["stress_10k_x10_500sym_s"] = round(big_s, 4)

    # ---- assessment of one 20-security proposal, pre and post
    limits = Limits(min_observations=20, shrinkage=0.1)
    stocks = symbols[:20]
    pre = {s: Decimal("0.05") for s in stocks}
    post_raw = rng.dirichlet(np.ones(20)) * 0.97
    post = {s: Decimal(f"{w:.4f}") for s, w in zip(stocks, post_raw, strict=True)}
    target = {s: Decimal("0.048") for s in stocks}
    times = []
    last = None
    for _ in range(a.assessments):
        t0 = time.perf_counter()
        history = model.recent_returns(stocks, limits.history_days)
        last = assess(model.covariance, pre, post, limits, history=history, target=target,
                      sectors=hist.sectors, tolerance=30)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    figures["assess_p50_ms"] = round(times[len(times) // 2], 3)
    figures["assess_p95_ms"] = round(times[int(len(times) * 0.95)], 3)
    figures["assess_history_days"] = last.post.historical_days  # type: ignore[union-attr]

    names = [s.scenario_id for s in BUILTIN]
    mean_worst = worst.mean(axis=0)
    # the readable figures always; --json adds the machine line after them
    print(f"reference history: {hist.first_day}..{hist.last_day}, {len(symbols)} securities "
          f"(load {figures['reference_load_s']} s)")
    print(f"stress: {a.accounts:,} synthetic accounts x {len(BUILTIN)} scenarios "
          f"({path_days} historical path days)")
    print(f"  shock matrix from history      {shock_s * 1000:8.1f} ms")
    print(f"  valuation, one matrix pass     {stress_s * 1000:8.1f} ms   (target <= 1000 ms)")
    print(f"  same, 500-symbol universe      {big_s * 1000:8.1f} ms")
    print("  mean worst loss per scenario:")
    for nm, v in zip(names, mean_worst, strict=True):
        print(f"    {nm:<20} {v * 100:6.1f} %")
    print(f"assessment of a 20-security proposal (pre+post, all measures), {a.assessments} runs")
    print(f"  p50 {figures['assess_p50_ms']} ms, p95 {figures['assess_p95_ms']} ms   (target p50 <= 5 ms)")
    assert last is not None and last.post is not None
    print(f"  post: vol {last.post_vol_annual_pct} %, score {last.post.score}, "
          f"VaR95 1d {last.post.parametric['var_95_1d'] * 100:.2f} % (hist "
          f"{last.post.historical['var_95_1d'] * 100:.2f} %), flags {list(last.flags)}")
    if a.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
