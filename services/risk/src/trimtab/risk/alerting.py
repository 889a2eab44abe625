"""Early warnings (`risk.alerts.v1`): the glue between the watched portfolios, the tenant's risk
model, the stored condition states and the outbox.

- A proposal makes its snapshot's holdings the account's watched portfolio (`establish`).
- When a day of ticks completes, every watched account of the tenant is valued and measured in
  one vectorized pass and `domain.alerts.step` decides, per condition, what raises and what
  clears (`on_day_complete`). Only transitions touch the database: a raise upserts the
  condition's `alert_states` row (active, its numbers, its alert id) and publishes `RiskAlerted`
  with kind = the condition; a clear marks the row inactive and publishes `RiskAlerted` with kind
  `<condition>.cleared`. The stored states are the truth for "already raised": a condition is
  never raised twice while its row is active.

The watched books live in memory per tenant (rebuilt from `watched_portfolios` and the model's
closes on first use, or after a rolled-back transaction touched them).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np
from sqlalchemy import event, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from trimtab.shared.envelope import Envelope
from trimtab.shared.events import RebalanceProposed, RiskAlerted
from trimtab.shared.outbox import UnitOfWork

from .analytics import sectors_for
from .domain.alerts import (
    CLEARED_SUFFIX,
    CONDITIONS,
    drawdown_pct,
    portfolio_vol_annual,
    step,
    vol_regime,
)
from .domain.assessment import Limits, risk_inputs
from .domain.concentration import concentration
from .domain.model import RiskModel
from .domain.portfolio import TRADING_DAYS, is_cash
from .domain.score import score
from .domain.watched import WatchedBook
from .models import alert_states, risk_profiles, watched_portfolios

PRODUCER = "risk"
#: alert ids derive from (tenant, account, condition, day): a replayed day cannot raise twice
WATCH_NAMESPACE = uuid.UUID("0f6c2f0e-3b8d-4a57-9a3e-2d1c7b5e8a90")
WARMUP_DAYS = 20


@dataclass(frozen=True)
class AlertSettings:
    drawdown_limit_pct: Decimal = Decimal("20")
    #: a forecast above this multiple of its recent level is a regime change
    vol_regime_factor: Decimal = Decimal("1.5")
    vol_regime_lookback_days: int = 20
    #: a condition clears at trigger * (1 - hysteresis)
    hysteresis: float = 0.05


def _dec(x: float, places: str = "0.0001") -> Decimal:
    return Decimal(repr(float(x))).quantize(Decimal(places), rounding=ROUND_HALF_EVEN)


class AlertMonitor:
    def __init__(self, settings: AlertSettings, limits: Limits) -> None:
        self.settings = settings
        self.limits = limits
        self._books: dict[str, WatchedBook] = {}
        self._stale: set[str] = set()

    # ------------------------------------------------------------------ watched books

    async def book(self, session: AsyncSession, tenant_id: str, model: RiskModel) -> WatchedBook:
        book = self._books.get(tenant_id)
        if book is None or tenant_id in self._stale:
            book = await self._load(session, tenant_id, model)
        return book

    def watch(self, session: AsyncSession, tenant_id: str) -> None:
        event.listen(session.sync_session, "after_rollback",
                     lambda _s: self._stale.add(tenant_id), once=True)

    async def _load(self, session: AsyncSession, tenant_id: str, model: RiskModel) -> WatchedBook:
        book = WatchedBook()
        rows = (await session.execute(select(watched_portfolios).where(
            watched_portfolios.c.tenant_id == tenant_id))).all()
        book.load([(r.account_id, {s: float(u) for s, u in r.units.items()}, float(r.cash_usd),
                    {s: float(p) for s, p in r.ref_prices_usd.items()}, r.since_day) for r in rows])
        starts = [r.since_day for r in rows if r.since_day is not None]
        start = min(starts) if len(starts) == len(rows) and starts else None
        for day in model.book.complete_days:  # rebuild the running peaks from the closes
            if start is not None and day < start:
                book.take_closes(model.book.closes_on(day))
            else:
                book.advance(day, model.book.closes_on(day))
        self._books[tenant_id] = book
        self._stale.discard(tenant_id)
        return book

    async def establish(self, uow: UnitOfWork, tenant_id: str, p: RebalanceProposed,
                        model: RiskModel) -> None:
        """Make the proposal's snapshot the account's watched portfolio (unless a newer one is)."""
        book = await self.book(uow.session, tenant_id, model)
        complete = model.book.complete_days
        since = complete[-1] if complete else None
        snap = p.snapshot
        ref = {s.symbol: float(s.price_usd) for s in snap.securities if not is_cash(s.symbol)}
        units = {x.symbol: float(x.shares) for x in snap.positions
                 if x.shares > 0 and not is_cash(x.symbol)}
        cash = float(snap.cash_usd) + sum(float(x.shares) for x in snap.positions if is_cash(x.symbol))
        symbols = set(units) | {s for s in p.pre_weights if not is_cash(s)}
        closes = model.book.latest_closes(symbols, since) if since else {}
        if not units and any(w > 0 and not is_cash(s) for s, w in p.pre_weights.items()):
            # no holdings stated: the pre-trade weights, as units of one unit of value
            units, cash = {}, 1.0
            for s, w in p.pre_weights.items():
                price = closes.get(s, ref.get(s))
                if w > 0 and not is_cash(s) and price:
                    units[s] = float(w) / price
                    cash -= float(w)
        stmt = insert(watched_portfolios).values(
            tenant_id=tenant_id, account_id=p.account_id, proposal_id=p.proposal_id,
            snapshot_as_of=snap.as_of, units={s: repr(u) for s, u in units.items()},
            ref_prices_usd={s: repr(x) for s, x in ref.items()}, cash_usd=Decimal(repr(cash)),
            since_day=since)
        done = (await uow.session.execute(stmt.on_conflict_do_update(
            index_elements=["tenant_id", "account_id"],
            set_={c: stmt.excluded[c] for c in ("proposal_id", "snapshot_as_of", "units",
                                                 "ref_prices_usd", "cash_usd", "since_day")},
            where=stmt.excluded.snapshot_as_of >= watched_portfolios.c.snapshot_as_of,
        ).returning(watched_portfolios.c.account_id))).first()
        if done is not None:
            self.watch(uow.session, tenant_id)
            book.set_portfolio(p.account_id, units, cash, ref, since, closes)

    # ------------------------------------------------------------------ evaluation

    async def on_day_complete(self, env: Envelope, uow: UnitOfWork, model: RiskModel,
                              day: date) -> None:
        tenant_id = env.tenant_id
        book = await self.book(uow.session, tenant_id, model)
        if not len(book):
            return
        self.watch(uow.session, tenant_id)
        values = book.advance(day, model.book.closes_on(day))
        m = await self._metrics(uow.session, tenant_id, book, model, values)
        states = {(r.account_id, r.condition): r for r in await uow.session.execute(
            select(alert_states).where(alert_states.c.tenant_id == tenant_id,
                                       alert_states.c.active.is_(True)))}
        h = self.settings.hysteresis
        for cond in CONDITIONS:
            active = np.array([(a, cond) in states for a in book.accounts], dtype=bool)
            metric, trigger = m[cond]
            t = step(active, metric, trigger, h)
            for i in np.flatnonzero(t.fired | t.cleared):
                account = book.accounts[i]
                fired = bool(t.fired[i])
                numbers = _numbers(cond, m, i, h)
                raised = states.get((account, cond))
                raise_id = uuid.uuid5(WATCH_NAMESPACE, f"{tenant_id}:{account}:{cond}:{day}")
                alert_id = raise_id if fired else uuid.uuid5(
                    WATCH_NAMESPACE, f"{raised.alert_id if raised else raise_id}{CLEARED_SUFFIX}")
                await _save_state(uow.session, tenant_id, account, cond, fired, numbers, alert_id)
                uow.publish(env.caused(RiskAlerted(
                    alert_id=alert_id, account_id=account,
                    kind=cond if fired else cond + CLEARED_SUFFIX,
                    message=_message(cond, fired, account, day, m, i), values=numbers,
                ), producer=PRODUCER), key=account)

    async def _metrics(self, session: AsyncSession, tenant_id: str, book: WatchedBook,
                       model: RiskModel, values: np.ndarray) -> dict:
        A, s = len(book), self.settings
        profiles = {r.account_id: r for r in await session.execute(select(risk_profiles).where(
            risk_profiles.c.tenant_id == tenant_id))}
        prof = [profiles.get(a) for a in book.accounts]
        W = book.weights()
        bad = ~np.isfinite(W).all(axis=1)
        Wz = np.nan_to_num(W)
        col = {sym: k for k, sym in enumerate(book.symbols)}
        sectors = sectors_for()
        conc = concentration(Wz, book.symbols, sectors)
        largest = np.where(bad, np.nan, conc.largest_weight)
        sector = np.where(bad, np.nan, conc.largest_sector_weight)
        view, _ = risk_inputs(model.covariance, book.symbols, self.limits)
        vol = portfolio_vol_annual(Wz[:, [col[x] for x in view.symbols]], view.cov_daily)
        vol = np.where(bad, np.nan, vol)
        scores = np.where(np.isfinite(vol), score(np.nan_to_num(vol)), np.nan)
        tol = np.array([p.tolerance_score if p else np.nan for p in prof], dtype=float)
        lookback = s.vol_regime_lookback_days
        syms, R = model.recent_returns(book.symbols, self.limits.history_days,
                                       min_days=lookback + WARMUP_DAYS)
        if syms:
            with np.errstate(invalid="ignore"):
                port = np.log1p(np.expm1(R) @ W[:, [col[x] for x in syms]].T)
            vr = vol_regime(port, model.decay, lookback, WARMUP_DAYS)
            fc, lvl, ratio = vr.forecast_daily, vr.level_daily, vr.ratio
        else:
            fc = lvl = ratio = np.full(A, np.nan)
        conc_limit = np.array([float(p.concentration_limit) if p and p.concentration_limit
                               is not None else float(self.limits.concentration_limit)
                               for p in prof])
        dd_limit = np.array([float(p.drawdown_limit_pct) if p and p.drawdown_limit_pct
                             is not None else float(s.drawdown_limit_pct) for p in prof])
        ann = math.sqrt(TRADING_DAYS)
        return {
            "concentration": (largest, conc_limit),
            "sector_concentration": (sector, np.full(A, float(self.limits.sector_limit))),
            "above_tolerance": (scores, tol),
            "vol_regime": (ratio, np.full(A, float(s.vol_regime_factor))),
            "drawdown": (drawdown_pct(values, book.peak), dd_limit),
            "_": {"largest_symbol": [book.symbols[k] if book.symbols else None
                                     for k in conc.largest_index],
                  "largest_sector": [conc.sector_names[k] if k >= 0 else None
                                     for k in conc.largest_sector_index],
                  "vol": vol, "forecast": fc * ann, "level": lvl * ann,
                  "value": values, "peak": book.peak.copy()},
        }


def _numbers(cond: str, m: dict, i: int, h: float) -> dict[str, Decimal]:
    metric, trigger = m[cond][0][i], m[cond][1][i]
    x = m["_"]
    clear = {"clear_level": _dec(trigger * (1 - h), "0.000001")}
    if cond == "concentration":
        return {"largest_weight": _dec(metric, "0.000001"),
                "concentration_limit": _dec(trigger, "0.000001"), **clear}
    if cond == "sector_concentration":
        return {"largest_sector_weight": _dec(metric, "0.000001"),
                "sector_limit": _dec(trigger, "0.000001"), **clear}
    if cond == "above_tolerance":
        return {"score": Decimal(int(metric)), "tolerance_score": Decimal(int(trigger)),
                "vol_annual_pct": _dec(100 * x["vol"][i]), **clear}
    if cond == "vol_regime":
        return {"forecast_vol_annual_pct": _dec(100 * x["forecast"][i]),
                "recent_vol_annual_pct": _dec(100 * x["level"][i]),
                "ratio": _dec(metric), "regime_factor": _dec(trigger), **clear}
    return {"drawdown_pct": _dec(metric), "drawdown_limit_pct": _dec(trigger),
            "value_usd": _dec(x["value"][i], "0.01"), "peak_value_usd": _dec(x["peak"][i], "0.01"),
            **clear}


def _message(cond: str, fired: bool, account: str, day: date, m: dict, i: int) -> str:
    metric, trigger, x = m[cond][0][i], m[cond][1][i], m["_"]
    what = {
        "concentration": f"largest position {x['largest_symbol'][i]} is {metric * 100:.2f}% of the "
                         f"account (limit {trigger * 100:.2f}%)",
        "sector_concentration": f"largest sector {x['largest_sector'][i]} is {metric * 100:.2f}% "
                                f"of the account (limit {trigger * 100:.2f}%)",
        "above_tolerance": f"risk score {int(metric)} against the client's tolerance of "
                           f"{int(trigger)}",
        "vol_regime": f"volatility forecast {x['forecast'][i] * 100:.2f}% a year is {metric:.2f}x "
                      f"its recent level of {x['level'][i] * 100:.2f}% (factor {trigger:.2f})",
        "drawdown": f"down {metric:.2f}% from its peak (limit {trigger:.2f}%)",
    }[cond]
    state = "warning" if fired else "cleared"
    return f"account {account}, closes of {day}: {state}: {what}"


async def _save_state(session: AsyncSession, tenant_id: str, account: str, cond: str,
                      active: bool, numbers: dict[str, Decimal], alert_id: uuid.UUID) -> None:
    values = {k: format(v, "f") for k, v in numbers.items()}
    if active:
        stmt = insert(alert_states).values(
            tenant_id=tenant_id, account_id=account, condition=cond, active=True, values=values,
            alert_id=alert_id, raised_at=func.now(), cleared_at=None)
        await session.execute(stmt.on_conflict_do_update(
            index_elements=["tenant_id", "account_id", "condition"],
            set_={"active": True, "values": values, "alert_id": alert_id,
                  "raised_at": stmt.excluded.raised_at, "cleared_at": None}))
    else:
        await session.execute(update(alert_states).where(
            alert_states.c.tenant_id == tenant_id, alert_states.c.account_id == account,
            alert_states.c.condition == cond).values(active=False, values=values,
                                                     cleared_at=func.now()))
