"""GARCH(1,1) volatility forecasts (the `arch` library) per security and per portfolio.

Model, on daily log returns in percent (arch's numerically comfortable scale), zero mean:

    sigma2_t = omega + alpha * r_{t-1}^2 + beta * sigma2_{t-1}

fitted by maximum likelihood (normal, or Student t with `dist="t"`). The h-day forecast is the
sum of the next h daily variance forecasts, which revert towards `omega / (1 - alpha - beta)`
at the rate `alpha + beta` (EWMA is the special case omega = 0, alpha + beta = 1, which never
reverts). Every fit records the window it saw and the model version of its inputs.

`filter_variance` runs the recursion with fixed parameters (no re-fit): the backtest re-fits
periodically and filters daily in between, as a production model would.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from datetime import date

import numpy as np

MIN_OBSERVATIONS = 250
SCALE = 100.0  # returns in percent inside arch


@dataclass(frozen=True)
class GarchFit:
    omega: float  # daily variance units of the *fraction* returns (not percent)
    alpha: float
    beta: float
    nu: float | None  # Student t degrees of freedom, None for normal
    next_var_daily: float  # variance forecast for the next day
    observations: int
    window_start: date | None = None
    window_end: date | None = None
    model_version: str = ""

    @property
    def persistence(self) -> float:
        return self.alpha + self.beta

    @property
    def long_run_var_daily(self) -> float:
        p = self.persistence
        return self.omega / (1.0 - p) if p < 1 else math.nan

    def forecast_var(self, horizon_days: int) -> float:
        """Sum of the next `horizon_days` daily variance forecasts."""
        p, lr = self.persistence, self.long_run_var_daily
        if not p < 1:
            return self.next_var_daily * horizon_days
        k = np.arange(horizon_days)
        return float(np.sum(lr + p ** k * (self.next_var_daily - lr)))

    def vol_annual(self, horizon_days: int = 1) -> float:
        """The h-day forecast expressed as an annualized volatility."""
        return math.sqrt(self.forecast_var(horizon_days) / horizon_days * 252)


def fit_garch(returns: np.ndarray, dist: str = "normal", window_start: date | None = None,
              window_end: date | None = None, model_version: str = "") -> GarchFit:
    from arch import arch_model  # imported late: arch pulls in pandas and statsmodels-like deps

    r = np.asarray(returns, dtype=float)
    r = r[np.isfinite(r)]
    if len(r) < MIN_OBSERVATIONS:
        raise ValueError(f"GARCH needs at least {MIN_OBSERVATIONS} returns, got {len(r)}")
    am = arch_model(r * SCALE, mean="Zero", vol="GARCH", p=1, q=1, dist=dist, rescale=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; a bad fit shows in the params
        res = am.fit(disp="off", show_warning=False)
    params = res.params
    omega, alpha, beta = (float(params[k]) for k in ("omega", "alpha[1]", "beta[1]"))
    nu = float(params["nu"]) if "nu" in params else None
    last_var = float(res.conditional_volatility[-1]) ** 2
    next_var = omega + alpha * (r[-1] * SCALE) ** 2 + beta * last_var
    s2 = SCALE ** 2
    return GarchFit(omega / s2, alpha, beta, nu, next_var / s2, len(r), window_start, window_end,
                    model_version)


def filter_variance(returns: np.ndarray, omega: float, alpha: float, beta: float,
                    start_var: float) -> np.ndarray:
    """One-step-ahead variance forecasts: out[t] is the forecast for day t made after day t-1."""
    r2 = np.asarray(returns, dtype=float) ** 2
    out = np.empty(len(r2))
    v = start_var
    for t in range(len(r2)):  # a scalar recursion: a plain loop is the fast way
        out[t] = v
        v = omega + alpha * r2[t] + beta * v
    return out
