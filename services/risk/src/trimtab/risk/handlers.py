"""Event handlers of the risk service: one unit of work per consumed event.

- `PriceTicked` -> the day's close is stored and the tenant's EWMA model updated; when the tick
  completes a day, every watched account is re-evaluated for early warnings (`alerting.py`:
  `RiskAlerted` for each condition raised or cleared, nothing otherwise).
- `RebalanceProposed` -> every measure before and after (volatility, score, VaR/CVaR, drawdown,
  beta and tracking error to the snapshot's targets, concentration), checked against the
  account's risk profile (tolerance score, concentration limit) and against the model's age
  (`stale_model`: a model too old for the snapshot's date), is stored as an assessment and
  published as `RiskAssessed` (volatilities, model, flags, and what was measured: scores against
  the tolerance, VaR/CVaR in % and USD, tracking error, concentration, breaches and the limits
  applied; `assessed.py`); a proposal with a breach also raises
  one `RiskAlerted` carrying the numbers. The proposal's snapshot becomes the account's watched
  portfolio for the early warnings.

Idempotency: the shared consumer drops a redelivered event by its id; an assessment is also
unique per (tenant, proposal_id), so a proposal re-published under a new event id is assessed
once and its events are emitted once.
"""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from trimtab.shared.envelope import Envelope
from trimtab.shared.errors import PermanentEventError
from trimtab.shared.events import PriceTicked, RebalanceProposed, RiskAlerted
from trimtab.shared.outbox import UnitOfWork

from .alerting import AlertMonitor
from .analytics import measures_out, sectors_for
from .assessed import assessed_event
from .domain.assessment import Assessment, assess, model_is_stale
from .domain.prices import TickEffect
from .models import assessments, risk_profiles
from .service import (
    MAX_PRICE_USD,
    RiskModels,
    model_info,
    save_close,
    save_model_info,
    stored_price,
)

PRODUCER = "risk"
#: alert ids derive from the proposal, so even a replayed proposal cannot alert twice downstream
ALERT_NAMESPACE = uuid.UUID("5b1f3a52-8d0e-4c44-9a51-6b7f0e1c2d33")


class RiskHandlers:
    def __init__(self, models: RiskModels, alerts: AlertMonitor) -> None:
        self.models = models
        self.alerts = alerts

    async def on_price_ticked(self, env: Envelope, uow: UnitOfWork) -> None:
        tick = env.parse(PriceTicked)
        price = stored_price(tick.price_usd)
        if not 0 < price < MAX_PRICE_USD:
            raise PermanentEventError(f"price {tick.price_usd} of {tick.symbol} cannot be stored")
        model = await self.models.get(uow.session, env.tenant_id)
        self.models.watch(uow.session, env.tenant_id)
        before = model.version
        day = tick.as_of.date()
        opened = model.book.open_day
        effect = model.on_tick(tick.symbol, day, float(price), tick.as_of)
        if effect is TickEffect.IGNORED:
            return
        await save_close(uow.session, env.tenant_id, tick.symbol, day, price, tick.as_of)
        if model.version != before:
            await save_model_info(uow.session, env.tenant_id, model)
        if effect is TickEffect.NEW_DAY and opened is not None:
            # the only per-tick cost of the warnings: they run once per completed day
            await self.alerts.on_day_complete(env, uow, model, opened)

    async def on_rebalance_proposed(self, env: Envelope, uow: UnitOfWork) -> None:
        p = env.parse(RebalanceProposed)
        limits = self.models.limits
        model = await self.models.get(uow.session, env.tenant_id)
        profile = (await uow.session.execute(select(risk_profiles).where(
            risk_profiles.c.tenant_id == env.tenant_id,
            risk_profiles.c.account_id == p.account_id))).first()
        tolerance = None
        if profile is not None:
            tolerance = profile.tolerance_score
            if profile.concentration_limit is not None:
                limits = dataclasses.replace(limits, concentration_limit=profile.concentration_limit)
        symbols = [s for s, w in (*p.pre_weights.items(), *p.post_weights.items(),
                                  *p.snapshot.targets.items()) if w != 0]
        result = assess(model.covariance, p.pre_weights, p.post_weights, limits,
                        history=model.recent_returns(symbols, limits.history_days),
                        target=p.snapshot.targets or None, sectors=sectors_for(), tolerance=tolerance,
                        stale_model=model_is_stale(model.window_end, p.snapshot.as_of.date(), limits))
        assert result.pre is not None and result.post is not None
        info = model_info(model)
        pre_m, post_m = measures_out(result.pre), measures_out(result.post)
        assessed = env.caused(assessed_event(p, result, info, limits, pre_m, post_m), producer=PRODUCER)
        alert, alert_id = None, uuid.uuid5(ALERT_NAMESPACE, f"{env.tenant_id}:{p.proposal_id}")
        if result.breaches:
            alert = env.caused(RiskAlerted(
                alert_id=alert_id,
                account_id=p.account_id, kind="proposal_risk",
                message=_alert_message(p, result.breaches, result),
                values={"pre_vol_annual_pct": result.pre_vol_annual_pct,
                        "post_vol_annual_pct": result.post_vol_annual_pct,
                        "vol_increase_limit_pct": limits.vol_increase_pct,
                        "max_post_weight": result.max_post_weight,
                        "concentration_limit": limits.concentration_limit,
                        "max_post_sector_weight": Decimal(repr(result.post.largest_sector_weight)
                                                          ).quantize(Decimal("0.000001")),
                        "sector_limit": limits.sector_limit,
                        "pre_score": Decimal(result.pre.score),
                        "post_score": Decimal(result.post.score),
                        **({"tolerance_score": Decimal(tolerance)} if tolerance else {})},
            ), producer=PRODUCER)
        row = await uow.session.execute(insert(assessments).values(
            tenant_id=env.tenant_id, proposal_id=p.proposal_id, account_id=p.account_id,
            pre_vol_annual_pct=result.pre_vol_annual_pct,
            post_vol_annual_pct=result.post_vol_annual_pct, model_name=info.name,
            model_version=info.version, window_start=info.window_start,
            window_end=info.window_end, observations=info.observations,
            halflife_days=info.halflife_days, flags=list(result.flags),
            pre_weights={s: format(w, "f") for s, w in p.pre_weights.items()},
            post_weights={s: format(w, "f") for s, w in p.post_weights.items()},
            correlation_id=env.correlation_id, causation_id=env.event_id,
            event_id=assessed.event_id, alert_id=alert_id if alert else None,
            pre_score=result.pre.score, post_score=result.post.score, tolerance_score=tolerance,
            target_weights={s: format(w, "f") for s, w in p.snapshot.targets.items()},
            measures={"pre": pre_m.model_dump(mode="json"), "post": post_m.model_dump(mode="json")},
        ).on_conflict_do_nothing().returning(assessments.c.proposal_id))
        if row.first() is None:
            return  # assessed before, under another event id: its events are already out
        await self.alerts.establish(uow, env.tenant_id, p, model)
        uow.publish(assessed, key=p.account_id)
        if alert is not None:
            uow.publish(alert, key=p.account_id)


def _alert_message(p: RebalanceProposed, breaches: tuple[str, ...], result: Assessment) -> str:
    parts = []
    if "vol_increase" in breaches:
        parts.append(f"volatility rises from {result.pre_vol_annual_pct}% to "
                     f"{result.post_vol_annual_pct}% a year")
    if "concentration" in breaches:
        parts.append(f"{result.max_post_symbol} would be {result.max_post_weight * 100:.2f}% "
                     "of the account")
    if "sector_concentration" in breaches and result.post is not None:
        parts.append(f"{result.post.largest_sector} would be "
                     f"{result.post.largest_sector_weight * 100:.2f}% of the account")
    if "above_tolerance" in breaches and result.post is not None and result.pre is not None:
        parts.append(f"risk score rises from {result.pre.score} to {result.post.score}, above the "
                     f"client's tolerance of {result.tolerance_score}")
    return f"proposal {p.proposal_id} for account {p.account_id}: " + "; ".join(parts)
