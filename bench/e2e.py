"""End-to-end benchmark: N accounts hit by one price shock, through all six services.

Starts its own stack (Tansu, PostgreSQL, six service processes), loads N SYNTHETIC accounts on the
three demo models at real 31 Dec 2019 prices, sends ONE tick batch that moves three securities
(AAPL +50 %, KO +50 %, XOM -50 %) so every account breaches its band, and measures from the
audit record the time from that tick to each stage of every account's chain. All accounts are on
automatic approval, so no human is in the loop.

Figures: p50/p99 ms per stage (tick → drift, proposal, risk, explanation, decision, approved
trades, audited) and the time until every account's chain is audited. The explainer runs with
counterfactuals for the two largest orders of each proposal (EXPLAINER_COUNTERFACTUAL_ORDERS=2);
the optimizer and the explainer run a worker process per core (SOLVER_PROCESSES,
EXPLAINER_PROCESSES; the environment overrides).
`--json`: one JSON object of the figures as the last line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trimtab.shared.auth import mint_token  # noqa: E402
from trimtab.shared.config import ServiceSettings  # noqa: E402
from trimtab_dev.book import build_book  # noqa: E402
from trimtab_dev.chains import STAGES, analyse, fetch_records, pct  # noqa: E402
from trimtab_dev.demo import _check, load_book  # noqa: E402
from trimtab_dev.stack import Stack, say, worker_processes  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    tenant = "bench"
    h = {"Authorization": "Bearer " + mint_token(ServiceSettings(), subject="bench", tenant_id=tenant)}
    from trimtab.market_data.domain.history import price_on

    _, prices = price_on("sp500", date(2019, 12, 31))
    book = [replace(acc, automation="automatic", band_abs=Decimal("0.02"))
            for acc in build_book(a.accounts, date(2019, 12, 31), prices, lambda d: price_on("sp500", d)[1])]
    # As in the demo: counterfactuals for the 2 largest orders per proposal (service default 8).
    # As in the demo: a solver and an explainer worker process per core (each service handles
    # that many partitions at once).
    env = {"EXPLAINER_COUNTERFACTUAL_ORDERS": "2", **worker_processes()}
    with Stack(database_name="trimtab_bench_e2e", extra_env=env) as stack:
        md = httpx.Client(base_url=stack.url("market-data"), headers=h, timeout=120)
        dm = httpx.Client(base_url=stack.url("drift-monitor"), headers=h, timeout=600)
        _check(md.post("/v1/securities/reference"))
        base_day = datetime(2019, 12, 31, 21, tzinfo=UTC)
        _check(md.post("/v1/ticks", json={"ticks": [
            {"symbol": s, "price_usd": str(p), "as_of": base_day.isoformat()} for s, p in prices.items()]}))
        say(f"loading {len(book)} SYNTHETIC accounts")
        load_book(dm, book)
        time.sleep(2)
        shock = {"AAPL": Decimal("1.5"), "KO": Decimal("1.5"), "XOM": Decimal("0.5")}
        shock_day = datetime(2020, 1, 2, 21, tzinfo=UTC)
        say("one tick batch: AAPL +50 %, KO +50 %, XOM -50 %")
        t0 = time.monotonic()
        corr = _check(md.post("/v1/ticks", json={"ticks": [
            {"symbol": s, "price_usd": str((prices[s] * f).quantize(Decimal("0.01"))), "as_of": shock_day.isoformat()}
            for s, f in shock.items()]}))["correlation_id"]
        deadline = time.monotonic() + a.timeout
        # Every account is on automatic approval: its chain ends with approved trades (an
        # expiry is followed by a new proposal, so a decision alone does not end it).
        while time.monotonic() < deadline:
            approved = fetch_records(stack.url("audit"), h, correlation_id=corr, event_type="TradesApproved")
            if len({r["account_id"] for r in approved}) >= a.accounts:
                break
            time.sleep(1)
        wall_s = time.monotonic() - t0
        records = fetch_records(stack.url("audit"), h, correlation_id=corr)
        stats = analyse(records)
    lat = stats.latencies_ms
    figures = {
        "accounts": a.accounts,
        "chains_decided": stats.complete_chains,
        "proposals_superseded": stats.superseded,
        "all_audited_s": round(max(lat["audited"]) / 1000, 3) if lat["audited"] else None,
        "wall_until_decided_s": round(wall_s, 3),
        **{f"tick_to_{s}_p50_ms": round(pct(lat[s], 50), 1) for s in STAGES},
        **{f"tick_to_{s}_p99_ms": round(pct(lat[s], 99), 1) for s in STAGES},
        "tick_to_audit_p99_ms": round(pct(lat["audited"], 99), 1),
    }
    print(f"e2e: {a.accounts} accounts, one shock; {stats.complete_chains} chains decided and audited; "
          f"{stats.superseded} proposal(s) expired and proposed again")
    print(f"{'stage':12s} {'p50 ms':>10s} {'p99 ms':>10s}")
    for s in STAGES:
        print(f"{s:12s} {pct(lat[s], 50):10.1f} {pct(lat[s], 99):10.1f}")
    print(f"all chains audited after {figures['all_audited_s']} s")
    if a.json:
        print(json.dumps(figures))
    return 0 if stats.complete_chains >= a.accounts else 1


if __name__ == "__main__":
    sys.exit(main())
