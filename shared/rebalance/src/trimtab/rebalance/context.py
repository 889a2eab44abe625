"""What a rebalance needs beyond the `AccountSnapshot`: market, risk, household and mandate data.

The event contract's snapshot does not (yet) carry these, so they travel next to it as a
`RebalanceContext`; every field is optional and an empty context reproduces the snapshot-only
behaviour exactly (identity risk, no impact, no budgets, no household wash-sale history).

- per security: daily volatility and average daily dollar volume (market impact), the wash-sale
  group (substantially identical securities: a loss in one and a buy of any other within 30 days
  is a wash sale) and the substitute group (securities that can stand in for each other's
  exposure: a harvested loss is replaced from the same substitute group, another wash group);
- a factor risk model (loadings F and specific variances d, never a dense covariance);
- the household's trades of the last 30 days, every account and IRAs included;
- mandate: tax budget and hard gain cap for the rest of the year, buy-only / sell-only mode,
  a withdrawal to raise, harvest thresholds.

`RebalanceContext.from_json` / `to_json` give it a plain JSON form (decimal strings accepted),
so a service can pass it through a process pool or an API unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import numpy as np

from trimtab.shared.limits import MAX_ADV_USD, MAX_SIGMA_DAILY

Mode = Literal["both", "buy_only", "sell_only"]
MODES: tuple[str, ...] = ("both", "buy_only", "sell_only")

#: The US wash-sale window: 30 days before and after a loss sale.
WASH_WINDOW_DAYS = 30


#: Largest dollar amount a context may carry (withdrawal, tax budget, gain cap, thresholds).
MAX_CONTEXT_USD = 1e13


@dataclass(frozen=True)
class SecurityInfo:
    sigma_daily: float | None = None
    adv_usd: float | None = None
    wash_group: str | None = None
    substitute_group: str | None = None
    #: Household mode (asset location): the yearly tax cost of holding one dollar of this security
    #: in a taxable account (e.g. 0.045 * 0.37 for a bond fund yielding 4.5 % taxed as ordinary
    #: income). None: derived from the security's asset class (`household.tax_drag_rate`).
    tax_drag: float | None = None


#: What `RebalanceContext.info` answers for a symbol the context does not know (one shared
#: instance: it is frozen, and building a dataclass per look-up was a hot spot of `from_snapshot`).
_NO_INFO = SecurityInfo()


@dataclass(frozen=True, eq=False)
class FactorModel:
    """Loadings (one row per symbol, k columns) and specific variances, in the same units."""

    symbols: tuple[str, ...]
    loadings: np.ndarray
    specific_var: np.ndarray
    name: str = "factor-model"

    def __post_init__(self) -> None:
        f = np.asarray(self.loadings, dtype=float)
        d = np.asarray(self.specific_var, dtype=float)
        if f.ndim != 2 or f.shape[0] != len(self.symbols) or d.shape != (len(self.symbols),):
            raise ValueError("factor model: loadings must be (n, k) and specific variances (n,)")
        if (d < 0).any() or not np.isfinite(f).all() or not np.isfinite(d).all():
            raise ValueError("factor model: specific variances must be finite and nonnegative")
        object.__setattr__(self, "loadings", f)
        object.__setattr__(self, "specific_var", d)

    @property
    def n_factors(self) -> int:
        return int(self.loadings.shape[1])


@dataclass(frozen=True)
class HouseholdTrade:
    """A trade of the last 30 days in any account of the household (dividend reinvestment too)."""

    account_id: str
    symbol: str
    side: Literal["buy", "sell"]
    trade_date: date
    #: For sells: the sale realized a loss (only loss sales start a wash-sale window).
    realized_loss: bool = False


@dataclass(frozen=True)
class RebalanceContext:
    securities: Mapping[str, SecurityInfo] = field(default_factory=dict)
    factor_model: FactorModel | None = None
    recent_trades: tuple[HouseholdTrade, ...] = ()
    #: Net tax (gains minus the benefit of losses) the rest of the year may still realize.
    tax_budget_usd: float | None = None
    #: Hard cap on net realized gains (gains minus losses), dollars.
    gain_cap_usd: float | None = None
    mode: Mode = "both"
    #: Cash to raise on top of the reserve.
    withdrawal_usd: float = 0.0
    #: A loss lot is harvestable when its loss is at least this many dollars and this fraction of
    #: its basis; a smaller loss may still be sold (to rebalance) but earns no tax benefit.
    harvest_min_loss_usd: float = 0.0
    harvest_min_loss_pct: float = 0.0
    #: cvxportfolio's impact coefficient b in b sigma sqrt(V0 / ADV) |t|^(3/2).
    impact_b: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} is not one of {MODES}")
        if self.withdrawal_usd < 0:
            raise ValueError("withdrawal must be nonnegative")
        if self.gain_cap_usd is not None and self.gain_cap_usd < 0:
            raise ValueError("gain cap must be nonnegative")
        # Magnitudes far beyond any real account, well inside what a solver handles.
        for name, value, low, high in (
            ("withdrawal_usd", self.withdrawal_usd, 0.0, MAX_CONTEXT_USD),
            ("tax_budget_usd", self.tax_budget_usd, -MAX_CONTEXT_USD, MAX_CONTEXT_USD),
            ("gain_cap_usd", self.gain_cap_usd, 0.0, MAX_CONTEXT_USD),
            ("harvest_min_loss_usd", self.harvest_min_loss_usd, 0.0, MAX_CONTEXT_USD),
            ("harvest_min_loss_pct", self.harvest_min_loss_pct, 0.0, 1.0),
            ("impact_b", self.impact_b, 0.0, 1e3),
        ):
            if value is not None and not (math.isfinite(value) and low <= value <= high):
                raise ValueError(f"{name} must be between {low:g} and {high:g}, not {value:g}")
        for symbol, info in self.securities.items():
            if info.sigma_daily is not None and not (math.isfinite(info.sigma_daily)
                                                     and 0 <= info.sigma_daily <= MAX_SIGMA_DAILY):
                raise ValueError(f"{symbol}: sigma_daily must be between 0 and {MAX_SIGMA_DAILY:g}, "
                                 f"not {info.sigma_daily:g}")
            if info.adv_usd is not None and not (math.isfinite(info.adv_usd) and 0 <= info.adv_usd <= MAX_ADV_USD):
                raise ValueError(f"{symbol}: adv_usd must be between 0 and {MAX_ADV_USD:g}, not {info.adv_usd:g}")

    def info(self, symbol: str) -> SecurityInfo:
        return self.securities.get(symbol) or _NO_INFO

    # ------------------------------------------------------------------ JSON form

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "securities": {s: {k: v for k, v in vars(i).items() if v is not None}
                           for s, i in sorted(self.securities.items())},
            "recent_trades": [{"account_id": t.account_id, "symbol": t.symbol, "side": t.side,
                               "trade_date": t.trade_date.isoformat(),
                               "realized_loss": t.realized_loss} for t in self.recent_trades],
            "mode": self.mode, "withdrawal_usd": self.withdrawal_usd,
            "harvest_min_loss_usd": self.harvest_min_loss_usd,
            "harvest_min_loss_pct": self.harvest_min_loss_pct, "impact_b": self.impact_b,
        }
        if self.tax_budget_usd is not None:
            out["tax_budget_usd"] = self.tax_budget_usd
        if self.gain_cap_usd is not None:
            out["gain_cap_usd"] = self.gain_cap_usd
        if self.factor_model is not None:
            fm = self.factor_model
            out["factor_model"] = {"name": fm.name, "symbols": list(fm.symbols),
                                   "loadings": fm.loadings.tolist(),
                                   "specific_var": fm.specific_var.tolist()}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> RebalanceContext:
        if not data:
            return cls()

        def num(x: Any) -> float | None:
            return None if x is None else float(x)

        def info(v: Mapping[str, Any]) -> SecurityInfo:
            sigma, adv, drag = v.get("sigma_daily"), v.get("adv_usd"), v.get("tax_drag")
            # Positional, in the fields' order: keywords made this a quarter slower (per security).
            return SecurityInfo(None if sigma is None else float(sigma), None if adv is None else float(adv),
                                v.get("wash_group"), v.get("substitute_group"),
                                None if drag is None else float(drag))

        secs = {s: info(v) for s, v in (data.get("securities") or {}).items()}
        fm = data.get("factor_model")
        trades = tuple(HouseholdTrade(account_id=t["account_id"], symbol=t["symbol"], side=t["side"],
                                      trade_date=date.fromisoformat(str(t["trade_date"])),
                                      realized_loss=bool(t.get("realized_loss", False)))
                       for t in data.get("recent_trades") or ())
        return cls(
            securities=secs,
            factor_model=None if not fm else FactorModel(
                symbols=tuple(fm["symbols"]), loadings=np.array(fm["loadings"], dtype=float),
                specific_var=np.array(fm["specific_var"], dtype=float), name=fm.get("name", "factor-model")),
            recent_trades=trades, tax_budget_usd=num(data.get("tax_budget_usd")),
            gain_cap_usd=num(data.get("gain_cap_usd")), mode=data.get("mode", "both"),
            withdrawal_usd=float(data.get("withdrawal_usd", 0.0)),
            harvest_min_loss_usd=float(data.get("harvest_min_loss_usd", 0.0)),
            harvest_min_loss_pct=float(data.get("harvest_min_loss_pct", 0.0)),
            impact_b=float(data.get("impact_b", 1.0)),
        )


EMPTY_CONTEXT = RebalanceContext()
