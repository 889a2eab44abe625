"""Drift-monitor engine benchmark: 100,000 accounts over 500 securities, ~15 holdings each.

Starts what it needs: a fresh PostgreSQL database (trimtab.shared.infra), the drift-monitor
schema (its migrations), and a SYNTHETIC book bulk-loaded with COPY: 50 models of 15 securities,
accounts holding their model's securities near target (+-3 % noise, 10 % with one off-model
holding), 1-2 lots per holding, a mix of policies (60 % absolute 5 %, 25 % relative 25 %, 15 %
hybrid 20 % / 2 %; 20 % with a portfolio band, 10 % with a cash trigger).

Measures, as medians of repeated runs, wall time and this thread's CPU time:
- rebuild_s: the service's own rebuild of the engine from PostgreSQL (cache.BookCache.rebuild);
- full_batch_ms: a tick batch that moves every price (+-1 %), whole book re-evaluated;
- single_tick_ms: one security ticked, only its holders updated and screened (median per tick);
- sync_ms: the per-tick database sync when nothing changed, and after 100 account writes;
- loop: the same full batch evaluated by a plain per-account Python loop, and the ratio; the
  loop's firing set is checked against the engine's in the same run.
Targets: full batch <= 50 ms, single tick <= 1 ms, rebuild <= 15 s (one core).
`--json`: the figures as one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text  # noqa: E402

from trimtab.drift_monitor.cache import BookCache  # noqa: E402
from trimtab.drift_monitor.domain.engine import DriftEngine  # noqa: E402
from trimtab.drift_monitor.models import SCHEMA  # noqa: E402
from trimtab.shared.db import make_engine, make_sessionmaker  # noqa: E402
from trimtab.shared.infra import ensure_database, resolve_database  # noqa: E402
from trimtab.shared.migrate import migrations_dir_of, upgrade  # noqa: E402

TENANT = "bench"


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall s, thread CPU s, result)"""
    w, c = time.perf_counter(), time.thread_time()
    out = fn()
    return time.perf_counter() - w, time.thread_time() - c, out


# ---------------------------------------------------------------- the synthetic book


def make_book(n_acc: int, n_sec: int, holdings: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    syms = np.array([f"S{j:04d}" for j in range(n_sec)])
    prices = np.round(rng.lognormal(4.0, 0.8, n_sec), 2) + 1.0
    n_models = 50
    m_secs = np.array([rng.choice(n_sec, holdings, replace=False) for _ in range(n_models)])
    m_w = np.round(rng.dirichlet(np.ones(holdings) * 5, n_models) * 0.97, 6)
    acc_model = rng.integers(0, n_models, n_acc)
    value = rng.lognormal(12.0, 1.0, n_acc)
    rows = np.repeat(np.arange(n_acc), holdings)
    secs = m_secs[acc_model].ravel()
    w = m_w[acc_model].ravel()
    shares = np.round(w * value[rows] / prices[secs] * rng.lognormal(0, 0.03, rows.size), 4)
    extra = np.nonzero(rng.random(n_acc) < 0.10)[0]  # one off-model holding
    ex_sec = rng.integers(0, n_sec, extra.size)
    ok = ~(m_secs[acc_model[extra]] == ex_sec[:, None]).any(axis=1)
    extra, ex_sec = extra[ok], ex_sec[ok]
    rows = np.concatenate([rows, extra])
    secs = np.concatenate([secs, ex_sec])
    shares = np.concatenate([shares, np.round(0.01 * value[extra] / prices[ex_sec], 4)])
    keep = shares > 0
    rows, secs, shares = rows[keep], secs[keep], shares[keep]
    cash = np.round(value * 0.03, 2)
    kind = rng.random(n_acc)
    policies = np.where(kind < 0.60, "{}", np.where(kind < 0.85, '{"band_abs": null, "band_rel": "0.25"}',
                                                    '{"band_abs": "0.02", "band_rel": "0.2"}')).astype(object)
    port = rng.random(n_acc) < 0.20
    ctrig = rng.random(n_acc) < 0.10
    for i in np.nonzero(port | ctrig)[0]:
        p = json.loads(policies[i])
        if port[i]:
            p["portfolio_band"] = "0.08"
        if ctrig[i]:
            p["cash_trigger_usd"] = "5000"
        policies[i] = json.dumps(p)
    return dict(syms=syms, prices=prices, m_secs=m_secs, m_w=m_w, acc_model=acc_model, rows=rows, secs=secs,
                shares=shares, cash=cash, policies=policies, n_acc=n_acc)


def _csv(df: pd.DataFrame) -> io.BytesIO:
    buf = io.BytesIO()
    df.to_csv(buf, index=False, header=False)
    buf.seek(0)
    return buf


async def load_db(url: str, book: dict[str, Any]) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conn = await asyncpg.connect(host=u.query.get("host") or u.host or "127.0.0.1", port=u.port or 5432,
                                 user=u.username or "postgres", password=u.password, database=u.database)
    try:
        ids = np.array([f"ACC{i:07d}" for i in range(book["n_acc"])], dtype=object)
        models = [f"M{m:02d}" for m in range(len(book["m_secs"]))]
        cp = conn.copy_to_table

        await cp("model_portfolios", schema_name=SCHEMA, format="csv", columns=["tenant_id", "model_id", "name"],
                 source=_csv(pd.DataFrame({"t": TENANT, "m": models, "n": models})))
        mt = pd.DataFrame({"t": TENANT, "m": np.repeat(models, book["m_secs"].shape[1]),
                           "s": book["syms"][book["m_secs"].ravel()], "w": book["m_w"].ravel()})
        await cp("model_targets", schema_name=SCHEMA, format="csv", columns=["tenant_id", "model_id", "symbol", "weight"],
                 source=_csv(mt))
        acc = pd.DataFrame({"t": TENANT, "a": ids, "type": "taxable", "m": np.array(models)[book["acc_model"]],
                            "cash": book["cash"], "res": 0, "pol": book["policies"], "st": 0.37, "lt": 0.2})
        await cp("accounts", schema_name=SCHEMA, format="csv", source=_csv(acc), columns=[
            "tenant_id", "account_id", "account_type", "model_id", "cash_usd", "cash_reserve_usd", "policy",
            "tax_short_term", "tax_long_term"])
        # 1-2 lots per holding (a third are split in two)
        rows, secs, sh = book["rows"], book["secs"], book["shares"]
        split = (np.arange(rows.size) % 3 == 0) & (sh > 0.001)
        first = np.where(split, np.round(sh / 2, 4), sh)
        lots = pd.DataFrame({"t": TENANT, "a": ids[rows], "l": [f"L{k}" for k in range(rows.size)],
                             "s": book["syms"][secs], "q": first, "c": 50.0, "d": "2021-03-01"})
        rest = np.nonzero(split & (sh - first > 0))[0]
        lots2 = pd.DataFrame({"t": TENANT, "a": ids[rows[rest]], "l": [f"L{k}b" for k in rest],
                              "s": book["syms"][secs[rest]], "q": np.round(sh[rest] - first[rest], 4),
                              "c": 60.0, "d": "2022-06-01"})
        all_lots = pd.concat([lots, lots2])
        await cp("lots", schema_name=SCHEMA, format="csv", source=_csv(all_lots), columns=[
            "tenant_id", "account_id", "lot_id", "symbol", "shares", "cost_basis_usd_per_share", "acquired_on"])
        pr = pd.DataFrame({"t": TENANT, "s": book["syms"], "p": book["prices"], "a": "2024-01-02T21:00:00Z"})
        await cp("prices", schema_name=SCHEMA, format="csv", columns=["tenant_id", "symbol", "price_usd", "as_of"],
                 source=_csv(pr))
        await conn.execute("ANALYZE")
        say(f"loaded {len(acc)} accounts, {len(all_lots)} lots, {len(book['syms'])} prices")
    finally:
        await conn.close()


# ---------------------------------------------------------------- the plain loop


def loop_inputs(eng: DriftEngine) -> list[tuple[str, float, dict[str, float], dict[str, float], dict[str, Any]]]:
    """Each account as plain dicts, read back from the engine's own state (same inputs)."""
    out = []
    names = eng._names
    for aid, i in eng._row.items():
        st, cap = int(eng._start[i]), int(eng._cap[i])
        sh: dict[str, float] = {}
        tg: dict[str, float] = {}
        bands: dict[str, float] = {}
        incl: dict[str, bool] = {}
        for p in range(st, st + cap):
            c = int(eng._ind[p])
            if c == 0:
                continue
            sh[names[c]] = float(eng._sh[p])
            tg[names[c]] = float(eng._tg[p])
            bands[names[c]] = float(eng._band[p])
            incl[names[c]] = bool(eng._incl[p])
        pol = {"port": float(eng._port[i]), "ctrig": float(eng._ctrig[i]), "reserve": float(eng._reserve[i]),
               "bands": bands, "incl": incl}
        out.append((aid, float(eng._cash[i]), sh, tg, pol))
    return out


def loop_drift(accounts: list[Any], prices: dict[str, float]) -> set[str]:
    """The straightforward per-account computation: value, weights, deviations, rules."""
    fired = set()
    for aid, cash, sh, tg, pol in accounts:
        value = cash
        for s, q in sh.items():
            value += q * prices[s]
        if not value > 0:
            continue
        cash_tw = 1.0 - sum(tg.values())
        dsum, breach = 0.0, False
        for s, q in sh.items():
            d = abs(q * prices[s] / value - tg[s])
            if d > pol["bands"][s]:
                breach = True
            if pol["incl"][s]:
                dsum += d
        port = (dsum + abs(cash / value - cash_tw)) / 2 > pol["port"]
        cx = cash - max(pol["reserve"], cash_tw * value) > pol["ctrig"]
        if breach or port or cx:
            fired.add(aid)
    return fired


# ---------------------------------------------------------------- main


async def run(a: argparse.Namespace, url: str) -> dict[str, Any]:
    await ensure_database(url, recreate=True)
    await upgrade(url, migrations_dir_of("trimtab.drift_monitor"), SCHEMA)
    book = make_book(a.accounts, a.securities, a.holdings, a.seed)
    t = time.perf_counter()
    await load_db(url, book)
    say(f"bulk load (COPY): {time.perf_counter() - t:.1f}s")
    engine = make_engine(url)
    sm = make_sessionmaker(engine)
    cache = BookCache()
    rebuild_wall, rebuild_cpu = [], []
    for _ in range(a.rebuilds):
        async with sm() as s:
            w, c = time.perf_counter(), time.thread_time()
            await cache.rebuild(s, TENANT)
            rebuild_wall.append(time.perf_counter() - w)
            rebuild_cpu.append(time.thread_time() - c)
            await s.rollback()
    eng = cache.engine(TENANT)
    say(f"rebuild: median {statistics.median(rebuild_wall):.2f}s wall ({statistics.median(rebuild_cpu):.2f}s CPU), "
        f"{len(eng)} accounts x {len(eng.symbols)} securities")
    # per-tick sync cost (nothing changed; then after 100 account writes)
    sync_idle = []
    for _ in range(a.runs):
        async with sm() as s:
            w = time.perf_counter()
            await cache.sync(s, TENANT)
            sync_idle.append(time.perf_counter() - w)
            await s.rollback()
    async with sm.begin() as s:
        await s.execute(text(f"UPDATE {SCHEMA}.accounts SET cash_usd = cash_usd + 1, revision = revision + 1,"
                             " changed_xid = (pg_current_xact_id()::text)::bigint"
                             " WHERE tenant_id = :t AND account_id IN (SELECT account_id FROM"
                             f" {SCHEMA}.accounts WHERE tenant_id = :t ORDER BY account_id LIMIT 100)"), {"t": TENANT})
    async with sm() as s:
        w = time.perf_counter()
        await cache.sync(s, TENANT)
        sync_100 = time.perf_counter() - w
        await s.rollback()
    await engine.dispose()
    eng = cache.engine(TENANT)
    mem_mb = eng.memory_bytes() / 2**20

    rng = np.random.default_rng(a.seed + 1)
    syms = list(eng.symbols)
    base = {s: float(eng.prices[eng._col[s]]) for s in syms}
    loop_accounts = loop_inputs(eng)
    full_w, full_c, loop_w, loop_c, agree = [], [], [], [], []
    cur = dict(base)
    for r in range(a.runs):
        cur = {s: p * float(rng.uniform(0.99, 1.01)) for s, p in cur.items()}
        w, c, cands = timed(lambda cur=cur: eng.tick_many(cur, now_s=time.time(), min_interval_s=0.0))
        full_w.append(w)
        full_c.append(c)
        if r < a.loop_runs:
            lw, lc, fired = timed(lambda cur=cur: loop_drift(loop_accounts, cur))
            loop_w.append(lw)
            loop_c.append(lc)
            agree.append(set(cands) == fired)
            say(f"  run {r}: engine {w * 1e3:.1f} ms, loop {lw * 1e3:.0f} ms, {len(cands)} accounts fire, "
                f"loop agrees: {agree[-1]}")
    single_w, single_c = [], []
    for _ in range(a.runs):
        ws, cs = [], []
        for s in rng.choice(syms, a.ticks):
            price = cur[s] * float(rng.uniform(0.995, 1.005))
            cur[s] = price
            w, c, _ = timed(lambda s=s, price=price: eng.tick(str(s), price, now_s=time.time(), min_interval_s=0.0))
            ws.append(w)
            cs.append(c)
        single_w.append(statistics.median(ws))
        single_c.append(statistics.median(cs))
    # after thousands of incremental ticks the engine still agrees with the plain loop
    after_ticks = set(eng._eligible(eng.evaluate_all(), time.time(), 0.0)) == loop_drift(loop_accounts, cur)
    holders = float(np.mean([eng._entries_of(eng._col[s]).size for s in syms]))
    med = statistics.median
    out = {
        "accounts": len(eng), "securities": len(syms), "entries": int(eng._nent),
        "holders_per_security": round(holders, 1),
        "full_batch_ms": round(med(full_w) * 1e3, 2), "full_batch_cpu_ms": round(med(full_c) * 1e3, 2),
        "single_tick_ms": round(med(single_w) * 1e3, 4), "single_tick_cpu_ms": round(med(single_c) * 1e3, 4),
        "rebuild_s": round(med(rebuild_wall), 3), "rebuild_cpu_s": round(med(rebuild_cpu), 3),
        "sync_idle_ms": round(med(sync_idle) * 1e3, 2), "sync_after_100_writes_ms": round(sync_100 * 1e3, 2),
        "memory_mb": round(mem_mb, 1),
        "loop_ms": round(med(loop_w) * 1e3, 1), "loop_ratio": round(med(loop_w) / med(full_w), 1),
        "loop_agrees": all(agree) and after_ticks, "runs": a.runs, "ticks_per_run": a.ticks,
        "targets": {"full_batch_ms": 50, "single_tick_ms": 1, "rebuild_s": 15},
    }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--securities", type=int, default=500)
    ap.add_argument("--holdings", type=int, default=15)
    ap.add_argument("--runs", type=int, default=7, help="repeated runs; medians are reported")
    ap.add_argument("--loop-runs", type=int, default=3, help="runs that also time the Python loop")
    ap.add_argument("--ticks", type=int, default=200, help="single-security ticks per run")
    ap.add_argument("--rebuilds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--database", default="trimtab_bench_drift")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    db = resolve_database()  # sync: it runs its own event loop
    say(f"PostgreSQL: {db.origin}; database {a.database} (recreated)")
    out = asyncio.run(run(a, db.url_for(a.database)))
    ok = (out["full_batch_ms"] <= 50 and out["single_tick_ms"] <= 1 and out["rebuild_s"] <= 15
          and out["loop_agrees"])
    print(f"accounts {out['accounts']:,} x securities {out['securities']} ({out['entries']:,} slots, "
          f"{out['holders_per_security']} holders per security)")
    print(f"full batch (every price moves): {out['full_batch_ms']} ms wall, {out['full_batch_cpu_ms']} ms CPU  "
          f"(target 50)")
    print(f"single-security tick:           {out['single_tick_ms']} ms wall, {out['single_tick_cpu_ms']} ms CPU  "
          f"(target 1)")
    print(f"rebuild from PostgreSQL:        {out['rebuild_s']} s wall, {out['rebuild_cpu_s']} s CPU  (target 15)")
    print(f"per-tick sync: {out['sync_idle_ms']} ms idle, {out['sync_after_100_writes_ms']} ms after 100 writes")
    print(f"engine memory: {out['memory_mb']} MiB")
    print(f"per-account Python loop: {out['loop_ms']} ms -> vectorized is {out['loop_ratio']}x faster; "
          f"same accounts fire: {out['loop_agrees']}")
    print("all targets met" if ok else "NOT all targets met")
    if a.json:
        print(json.dumps(out))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
