"""Composition root of the risk service: settings, runtime, handlers, routes. Nothing runs at
import time.

Run with `uvicorn --factory trimtab.risk.app:create`.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from fastapi import FastAPI
from pydantic import Field

from trimtab.shared.config import ServiceSettings
from trimtab.shared.http import create_app
from trimtab.shared.runtime import ServiceRuntime

from . import api, api_alerts, api_scenarios
from .alerting import AlertMonitor, AlertSettings
from .domain.ewma import DEFAULT_DECAY
from .handlers import RiskHandlers
from .models import SCHEMA, infra, metadata
from .service import RiskModels, limits_from


class Settings(ServiceSettings):
    service_name: str = Field(default="risk", validation_alias="SERVICE_NAME")
    #: RiskMetrics decay of the EWMA covariance (0.94: half-life ~11 trading days)
    ewma_decay: float = Field(default=DEFAULT_DECAY, validation_alias="RISK_EWMA_DECAY", gt=0, lt=1)
    #: daily returns before a symbol's own estimate replaces the prior
    min_observations: int = Field(default=10, validation_alias="RISK_MIN_OBSERVATIONS", ge=1)
    prior_vol_annual_pct: Decimal = Field(default=Decimal("20"), validation_alias="RISK_PRIOR_VOL_ANNUAL_PCT", gt=0)
    prior_correlation: float = Field(default=0.3, validation_alias="RISK_PRIOR_CORRELATION", gt=-1, lt=1)
    #: flag `vol_increase` when post-trade vol exceeds pre-trade by more than this (pct points)
    vol_increase_alert_pct: Decimal = Field(default=Decimal("2"), validation_alias="RISK_VOL_INCREASE_ALERT_PCT", ge=0)
    #: flag `concentration` when any post-trade weight exceeds this fraction
    concentration_limit: Decimal = Field(default=Decimal("0.35"), validation_alias="RISK_CONCENTRATION_LIMIT", gt=0, le=1)
    #: flag `sector_concentration` when a post-trade sector weight exceeds this fraction
    sector_limit: Decimal = Field(default=Decimal("0.5"), validation_alias="RISK_SECTOR_LIMIT", gt=0, le=1)
    #: correlation shrinkage towards the average correlation (0: the raw EWMA correlations)
    shrinkage: float = Field(default=0.1, validation_alias="RISK_SHRINKAGE", ge=0, le=1)
    #: return days replayed by historical VaR/CVaR and drawdown
    history_days: int = Field(default=500, validation_alias="RISK_HISTORY_DAYS", ge=60)
    #: flag `stale_model` (blocks automatic approval) when the model's last return day is more
    #: than this many trading days before the proposal snapshot's date
    stale_model_days: int = Field(default=10, validation_alias="RISK_STALE_MODEL_DAYS", ge=1)
    #: also flag `stale_model` when the model has no returns yet (every symbol on the prior)
    stale_model_if_empty: bool = Field(default=False, validation_alias="RISK_STALE_MODEL_IF_EMPTY")
    #: early warning: a watched portfolio down more than this from its running peak (percent)
    drawdown_limit_pct: Decimal = Field(default=Decimal("20"), validation_alias="RISK_DRAWDOWN_LIMIT_PCT", gt=0, lt=100)
    #: early warning: the EWMA vol forecast above this multiple of its recent level
    vol_regime_factor: Decimal = Field(default=Decimal("1.5"), validation_alias="RISK_VOL_REGIME_FACTOR", gt=1)
    #: days of forecasts whose mean is the "recent level"
    vol_regime_lookback_days: int = Field(default=20, validation_alias="RISK_VOL_REGIME_LOOKBACK_DAYS", ge=1)
    #: a raised condition clears when its metric falls to trigger * (1 - this)
    alert_hysteresis: float = Field(default=0.05, validation_alias="RISK_ALERT_HYSTERESIS", ge=0, lt=1)


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = ServiceRuntime(settings, schema=SCHEMA, metadata=metadata,
                             migrations_dir=Path(__file__).parent / "migrations", infra=infra)
    models = RiskModels(settings.ewma_decay, limits_from(
        settings.prior_vol_annual_pct, settings.prior_correlation, settings.min_observations,
        settings.vol_increase_alert_pct, settings.concentration_limit, settings.shrinkage,
        settings.sector_limit, settings.history_days, settings.stale_model_days,
        settings.stale_model_if_empty))
    alerts = AlertMonitor(AlertSettings(
        settings.drawdown_limit_pct, settings.vol_regime_factor,
        settings.vol_regime_lookback_days, settings.alert_hysteresis), models.limits)
    handlers = RiskHandlers(models, alerts)
    # One consumer for ticks and proposals: the in-memory models are touched by one task only,
    # and a proposal is assessed after the ticks delivered before it.
    runtime.handle("PriceTicked")(handlers.on_price_ticked)
    runtime.handle("RebalanceProposed")(handlers.on_rebalance_proposed)

    @runtime.on_start
    async def _rebuild_models() -> None:
        assert runtime.sessionmaker is not None
        async with runtime.sessionmaker() as s:
            await models.load_all(s)

    app = create_app(runtime, [api.router, api_scenarios.router, api_alerts.router], title="Trimtab risk",
                     description="EWMA risk model (with statistical factors and GARCH forecasts) from "
                                 "market.ticks.v1; every risk measure, risk scores against client "
                                 "tolerance, historical and hypothetical stress tests; pre/post-trade "
                                 "assessment of proposals on risk.assessed.v1 and risk.alerts.v1.")
    app.state.risk_models = models
    return app
