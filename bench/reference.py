"""Reference-data benchmark: what reading a tenant's reference data costs each drift the optimizer
solves (PostgreSQL, nothing else started).

A 20-symbol snapshot; `load_reference` (one query: the symbols' rows and the version of the
tenant's factor model, the parsed model kept per process by version) timed in its own
transaction for tenants with no reference data, 20 rows and no model, a 20 x 3 model and a
3,000 x 20 model (about 1.4 MB of JSON), each p50/p95 of `--runs` calls after a warm-up. Beside
it: the first sight of the big model (cache cold), the alternative of reading and parsing the
whole model JSON per event, the household-trades query every drift already runs, and an empty
transaction, all measured side by side in one run.

`--json`: one JSON object of the figures as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, text

from trimtab.optimizer import household, reference
from trimtab.optimizer.models import SCHEMA, risk_models
from trimtab.shared.db import make_engine, make_sessionmaker
from trimtab.shared.events import (
    AccountSnapshot,
    FactorModelContext,
    PositionSnapshot,
    SecurityContext,
    SecuritySnapshot,
)
from trimtab.shared.infra import ensure_database, resolve_database
from trimtab.shared.migrate import migrations_dir_of, upgrade


async def timed(fn: Callable[[], Awaitable[Any]], n: int) -> dict[str, float]:
    for _ in range(min(20, n)):
        await fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort()
    return {"p50_ms": round(statistics.median(ts), 3), "p95_ms": round(ts[int(0.95 * (len(ts) - 1))], 3)}


async def run(url: str, runs: int) -> dict[str, Any]:
    await ensure_database(url, recreate=True)
    await upgrade(url, migrations_dir_of("trimtab.optimizer"), SCHEMA)
    engine = make_engine(url)
    sm = make_sessionmaker(engine)
    rng = random.Random(1)
    universe = [f"S{i:04d}" for i in range(3000)]
    symbols = universe[100:3000:145][:20]
    async with sm() as s, s.begin():
        for tenant, chosen, k in (("small", symbols, 3), ("big", universe, 20)):
            await reference.upsert_securities(s, tenant, [
                (x, SecurityContext(sigma_daily=Decimal("0.0123"), adv_usd=Decimal("1e9"))) for x in chosen])
            await reference.put_risk_model(s, tenant, FactorModelContext(
                name=tenant, symbols=chosen, loadings=[[rng.gauss(0, 0.01) for _ in range(k)] for _ in chosen],
                specific_var=[rng.uniform(1e-5, 1e-4) for _ in chosen]))
        await reference.upsert_securities(s, "nomodel", [(x, SecurityContext(sigma_daily=Decimal("0.0123")))
                                                         for x in symbols])
    async with sm() as s:
        await s.execute(text(f"ANALYZE {SCHEMA}.security_reference"))
        await s.execute(text(f"ANALYZE {SCHEMA}.risk_models"))
        await s.commit()
    snap = AccountSnapshot(
        account_id="a", cash_usd=Decimal(1000), as_of=datetime(2024, 1, 1, tzinfo=UTC),
        positions=[PositionSnapshot(symbol=x, shares=Decimal(1)) for x in symbols],
        targets={x: Decimal("0.04") for x in symbols},
        securities=[SecuritySnapshot(symbol=x, price_usd=Decimal(10)) for x in symbols])
    wanted = reference.snapshot_symbols([snap])
    out: dict[str, Any] = {"snapshot_symbols": len(symbols), "runs": runs}
    async with sm() as s:
        out["big_model_json_bytes"] = len(json.dumps((await reference.risk_model(s, "big")).model))

    async def load(tenant: str, cold: bool = False) -> Any:
        if cold:
            reference._MODELS.clear()  # noqa: SLF001 - the first sight of a model version
        async with sm() as s, s.begin():
            return await reference.load_reference(s, tenant, wanted)

    out["load_big_cold"] = await timed(lambda: load("big", cold=True), max(runs // 10, 10))
    for tenant in ("none", "nomodel", "small", "big"):
        out[f"load_{tenant}"] = await timed(lambda t=tenant: load(t), runs)

    async def whole_model() -> None:
        async with sm() as s, s.begin():
            row = (await s.execute(select(risk_models.c.model).where(risk_models.c.tenant_id == "big"))).first()
            reference.restrict_model(FactorModelContext.model_validate(row.model), set(symbols))

    async def trades() -> None:
        async with sm() as s, s.begin():
            await household.recent_trades(s, "big", snap)

    async def empty() -> None:
        async with sm() as s, s.begin():
            pass

    out["alternative_whole_model_per_event"] = await timed(whole_model, max(runs // 4, 10))
    out["household_trades_query"] = await timed(trades, runs)
    out["empty_transaction"] = await timed(empty, runs)
    await engine.dispose()
    await ensure_database(url, recreate=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=400)
    ap.add_argument("--database", default="trimtab_bench_reference")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    db = resolve_database()
    out = asyncio.run(run(db.url_for(a.database), a.runs))
    print(f"reference data for a {out['snapshot_symbols']}-symbol snapshot, {a.runs} calls each, p50 / p95:")
    for name, label in (("load_none", "no reference data"), ("load_nomodel", "20 rows, no model"),
                        ("load_small", "20 rows, 20 x 3 model"),
                        ("load_big", f"3,000 x 20 model ({out['big_model_json_bytes']:,} bytes of JSON)"),
                        ("load_big_cold", "3,000 x 20 model, first sight (cache cold)"),
                        ("alternative_whole_model_per_event", "alternative: whole model JSON read + parsed"),
                        ("household_trades_query", "for scale: the household-trades query"),
                        ("empty_transaction", "for scale: an empty transaction")):
        print(f"  {label:48s} {out[name]['p50_ms']:8.3f} / {out[name]['p95_ms']:8.3f} ms")
    if a.json:
        print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
