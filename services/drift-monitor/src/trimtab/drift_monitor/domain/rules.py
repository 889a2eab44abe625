"""Drift policies and their exact evaluation (Decimal): the authority on which rule fires.

A policy (per model, overridden field by field per account) combines:

- a band per symbol: max(band_rel x target, band_abs), with a missing part counting as 0. Only
  `band_abs` set is the "absolute_band" rule, only `band_rel` the "relative_band" rule, both the
  "hybrid_band" rule (relative with an absolute floor). A symbol fires when |weight - target| is
  strictly greater than its band.
- `portfolio_band`: "portfolio_drift" fires when (sum_i |dev_i| + |cash dev|) / 2 exceeds it, the
  share of the account that would have to change hands to be exactly on target.
- `cash_trigger_usd`: "cash_excess" fires when uninvested cash, cash - max(reserve, cash target
  x value), exceeds it.
- withdrawals: "withdrawal" fires while open withdrawal requests are not covered, i.e. cash is
  below reserve + requested amount.
- `min_interval_days` between rebalances (from the last fills): the band, portfolio and cash
  rules stay quiet inside it; a withdrawal does not (the client needs the money).
- `trade_back_band`, `automation`, `max_turnover`, `max_tax_usd`: what a proposal may do, carried
  to the optimizer, not triggers.

Never-trade symbols (`restricted`) cannot be acted on, so they never breach and do not count in
portfolio drift; their value still counts in the account's value. Never-buy and ESG-excluded
symbols get target 0, their weight spread pro rata over the remaining targets (to cash if none
remain): the optimizer then only sells them.

An account is measurable when every held or targeted symbol has a price and its value is
positive; otherwise no rule fires (a guess could send a wrong snapshot downstream).
When several rules fire the event names the first of RULE_ORDER and lists every one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from decimal import ROUND_DOWN, Decimal
from typing import Any

ZERO = Decimal(0)
ONE = Decimal(1)
WEIGHT_Q = Decimal("0.0000000001")

WITHDRAWAL = "withdrawal"
PORTFOLIO = "portfolio_drift"
CASH_EXCESS = "cash_excess"
BAND_RULES = ("absolute_band", "relative_band", "hybrid_band")
#: Priority when several fire: raising promised cash first, then symbol bands, then the rest.
RULE_ORDER = (WITHDRAWAL, *BAND_RULES, PORTFOLIO, CASH_EXCESS)
#: Rules that respect the minimum interval between rebalances.
INTERVAL_RULES = frozenset((*BAND_RULES, PORTFOLIO, CASH_EXCESS))


@dataclass(frozen=True)
class Policy:
    band_abs: Decimal | None = Decimal("0.05")
    band_rel: Decimal | None = None
    portfolio_band: Decimal | None = None
    trade_back_band: Decimal | None = None
    min_interval_days: int = 0
    cash_trigger_usd: Decimal | None = None
    automation: str = "advisor_approval"
    max_turnover: Decimal | None = None
    max_tax_usd: Decimal | None = None

    @property
    def band_rule(self) -> str | None:
        if self.band_abs is not None and self.band_rel is not None:
            return "hybrid_band"
        if self.band_rel is not None:
            return "relative_band"
        if self.band_abs is not None:
            return "absolute_band"
        return None

    def band_for(self, target: Decimal) -> Decimal | None:
        """The band of a symbol with this target, None when no band rule applies."""
        if self.band_rule is None:
            return None
        return max((self.band_rel or ZERO) * target, self.band_abs or ZERO)

    def snapshot_band(self, targets: Mapping[str, Decimal]) -> Decimal:
        """One absolute band for the optimizer (the contract has only band_abs): the trade-back
        band if set, else the absolute band, else the narrowest relative band over the targets."""
        # At most 1 (the contract's bound): a relative band of 3 on a 40 % target is 1.2, and a
        # snapshot that carried it failed to build (every decision of the account, a 500 on a
        # withdrawal or cash flow that fired it).
        for b in (self.trade_back_band, self.band_abs):
            if b is not None and b > 0:
                return min(b, Decimal(1))
        bands = [b for w in targets.values() if w > 0 and (b := self.band_for(w)) is not None and b > 0]
        return min(min(bands), Decimal(1)) if bands else Decimal("0.05")

    def snapshot_bands(self, targets: Mapping[str, Decimal]) -> dict[str, Decimal] | None:
        """Per targeted symbol, its own band where it differs from `snapshot_band` (relative and
        hybrid bands: wider for larger targets), so the optimizer trades each security back to
        the band that fired, not to the narrowest; None with a trade-back band (one band for all
        by definition) or when every band is the same."""
        if self.trade_back_band is not None and self.trade_back_band > 0:
            return None
        default = self.snapshot_band(targets)
        out = {s: min(b, Decimal(1)) for s, w in sorted(targets.items())
               if w > 0 and (b := self.band_for(w)) is not None and b > 0 and b != default}
        return out or None


POLICY_FIELDS = tuple(f.name for f in fields(Policy))


def resolve_policy(*layers: Mapping[str, Any] | None) -> Policy:
    """Defaults, then each layer's fields (model, then account). A layer may set a band to None
    explicitly to switch it off ({"band_abs": null, "band_rel": "0.2"} is a pure relative band);
    min_interval_days None is 0. `automation` None means nothing (the API refuses it); one stored
    before that was refused is skipped, so the layer below (the model's, the default) holds."""
    p = Policy()
    for layer in layers:
        if not layer:
            continue
        vals: dict[str, Any] = {}
        for k, v in layer.items():
            if k not in POLICY_FIELDS:
                continue
            if k in NOT_NULL_FIELDS:
                if v is not None:
                    vals[k] = v
            elif k == "min_interval_days":
                vals[k] = int(v or 0)
            else:
                vals[k] = None if v is None else Decimal(str(v))
        p = replace(p, **vals)
    return p


#: Policy fields for which None means nothing (it is neither "off" nor a value).
NOT_NULL_FIELDS = ("automation",)


def clean_policy(layer: Mapping[str, Any] | None) -> dict[str, Any]:
    """A stored policy layer as shown and exported: without a None that means nothing (stored
    before the API refused it), so what is shown can be sent back."""
    return {k: v for k, v in (layer or {}).items() if not (v is None and k in NOT_NULL_FIELDS)}


def effective_targets(base: Mapping[str, Decimal], excluded: frozenset[str] | set[str]) -> dict[str, Decimal]:
    """Targets without the excluded symbols, their weight spread pro rata over the others
    (rounded down to 10 places, so the sum never exceeds the original)."""
    kept = {s: w for s, w in base.items() if s not in excluded and w > 0}
    gone = sum((w for s, w in base.items() if s in excluded), ZERO)
    if gone <= 0:
        return dict(kept)
    rest = sum(kept.values(), ZERO)
    if rest <= 0:
        return {}
    scale = (rest + gone) / rest
    return {s: (w * scale).quantize(WEIGHT_Q, rounding=ROUND_DOWN) for s, w in kept.items()}


@dataclass(frozen=True)
class AccountState:
    """What the rules need of one account (exact)."""

    cash_usd: Decimal
    shares: Mapping[str, Decimal]
    targets: Mapping[str, Decimal]  # effective targets
    policy: Policy = Policy()
    cash_reserve_usd: Decimal = ZERO
    never_trade: frozenset[str] = frozenset()
    withdrawal_usd: Decimal = ZERO  # open withdrawal requests


@dataclass(frozen=True)
class Evaluation:
    total_value_usd: Decimal
    weights: dict[str, Decimal]
    targets: dict[str, Decimal]
    deviations: dict[str, Decimal]
    bands: dict[str, Decimal]
    max_abs_deviation: Decimal
    breached: tuple[str, ...]
    portfolio_drift: Decimal | None
    cash_weight: Decimal | None
    cash_target_weight: Decimal
    uninvested_cash_usd: Decimal | None
    withdrawal_shortfall_usd: Decimal
    missing_prices: tuple[str, ...]
    #: Every rule that fires now, in RULE_ORDER (before hysteresis and intervals).
    rules: tuple[str, ...] = field(default=())

    @property
    def measurable(self) -> bool:
        return not self.missing_prices and self.total_value_usd > 0

    @property
    def rule(self) -> str | None:
        return self.rules[0] if self.rules else None


def relevant_symbols(shares: Mapping[str, Decimal], targets: Mapping[str, Decimal]) -> list[str]:
    return sorted({s for s, q in shares.items() if q != 0} | {s for s, w in targets.items() if w > 0})


def evaluate(a: AccountState, prices: Mapping[str, Decimal]) -> Evaluation:
    symbols = relevant_symbols(a.shares, a.targets)
    tgt = {s: a.targets.get(s, ZERO) for s in symbols}
    cash_tw = ONE - sum(tgt.values(), ZERO)
    missing = tuple(s for s in symbols if s not in prices)
    mv = {s: a.shares.get(s, ZERO) * prices[s] for s in symbols if s in prices}
    total = a.cash_usd + sum(mv.values(), ZERO)
    need = a.cash_reserve_usd + a.withdrawal_usd
    shortfall = max(need - a.cash_usd, ZERO) if a.withdrawal_usd > 0 else ZERO
    if missing or total <= 0:
        return Evaluation(total, {}, tgt, {}, {}, ZERO, (), None, None, cash_tw, None, shortfall, missing)
    p = a.policy
    weights = {s: mv[s] / total for s in symbols}
    dev = {s: weights[s] - tgt[s] for s in symbols}
    tradable = [s for s in symbols if s not in a.never_trade]
    bands = {s: b for s in tradable if (b := p.band_for(tgt[s])) is not None}
    breached = tuple(s for s in tradable if s in bands and abs(dev[s]) > bands[s])
    cash_w = a.cash_usd / total
    pdrift = (sum((abs(dev[s]) for s in tradable), ZERO) + abs(cash_w - cash_tw)) / 2
    uninvested = a.cash_usd - max(a.cash_reserve_usd, cash_tw * total)
    rules: list[str] = []
    if shortfall > 0:
        rules.append(WITHDRAWAL)
    if breached:
        assert p.band_rule is not None
        rules.append(p.band_rule)
    if p.portfolio_band is not None and pdrift > p.portfolio_band:
        rules.append(PORTFOLIO)
    if p.cash_trigger_usd is not None and uninvested > p.cash_trigger_usd:
        rules.append(CASH_EXCESS)
    max_abs = max((abs(dev[s]) for s in tradable), default=ZERO)
    return Evaluation(total, weights, tgt, dev, bands, max_abs, breached, pdrift, cash_w, cash_tw,
                      uninvested, shortfall, (), tuple(rules))


def firing_rules(ev: Evaluation, interval_ok: bool) -> tuple[str, ...]:
    """The rules that may fire now, given whether the minimum interval has passed."""
    return tuple(r for r in ev.rules if interval_ok or r not in INTERVAL_RULES)
