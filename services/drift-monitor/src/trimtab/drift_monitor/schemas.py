"""Request and response models of the drift-monitor API (separate from the tables).

Money, shares and weights are Decimals in, Decimal strings out. Input limits match the columns
(shares and cost bases to 8 places, cash to 6, weights to 10), so nothing is rounded silently,
and bound magnitudes so that what is derived from them fits its column too (MAX_USD, MAX_SHARES,
MAX_PRICE below).
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trimtab.shared.events import AccountType, AutomationLevel
from trimtab.shared.limits import MAX_PRICE_USD, IsoDate
from trimtab.shared.money import DecimalStr

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$")]
LotId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:#\-]*$")]
Symbol = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Z0-9.\-]+$")]

#: Magnitude bounds of what the API accepts. Cash, cash flows, withdrawals and the policy's dollar
#: amounts: at most $1 trillion (accounts.cash_usd is NUMERIC(20,6), below 10^14; a cash flow is
#: refused if the cash it leaves would exceed MAX_USD). Shares: at most 10^10 per lot and per
#: account in all (lots.shares NUMERIC(28,8)); cost bases at most $10 million a share. An account's
#: value, at most 10^10 shares x a price of that order + cash, then stays below 10^18, what
#: drifts.total_value_usd NUMERIC(20,2) holds.
MAX_USD = Decimal("1000000000000")
MAX_SHARES = Decimal("10000000000")
MAX_PRICE = MAX_PRICE_USD

Weight = Annotated[Decimal, Field(ge=0, le=1, decimal_places=10)]
Usd = Annotated[Decimal, Field(ge=0, le=MAX_USD, max_digits=20, decimal_places=6)]
Rate = Annotated[Decimal, Field(ge=0, le=1, decimal_places=4)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- models


Band = Annotated[Decimal, Field(gt=0, le=1, decimal_places=10)]


class PolicyIn(_In):
    """Drift policy fields; a field left out inherits (account <- model <- defaults). A band set
    to null switches that part off: {"band_abs": null, "band_rel": "0.25"} is a pure relative band.
    The other optional limits set to null are off too (min_interval_days: null is 0); automation
    cannot be null (there is no "no automation level"): 422."""

    #: Absolute band as a weight: 0.05 fires when a weight is more than 5 points off target.
    band_abs: Band | None = None
    #: Relative band as a fraction of the target: 0.25 on a 20 % target fires beyond +-5 points.
    band_rel: Annotated[Decimal, Field(gt=0, le=10, decimal_places=10)] | None = None
    #: Portfolio-level drift, (sum |deviations| incl. cash) / 2, above which the account fires.
    portfolio_band: Band | None = None
    #: The band a rebalance trades back to (carried to the optimizer).
    trade_back_band: Band | None = None
    min_interval_days: int | None = Field(default=None, ge=0, le=3660)
    #: Uninvested cash (cash - max(reserve, cash target)) above this fires "cash_excess".
    cash_trigger_usd: Usd | None = None
    #: Not nullable: null has no meaning here (leave the field out to inherit); 422.
    automation: AutomationLevel | None = None
    max_turnover: Decimal | None = Field(default=None, gt=0, le=2, decimal_places=10)
    max_tax_usd: Usd | None = None

    @field_validator("automation")
    @classmethod
    def _automation_not_null(cls, v: str | None) -> str | None:
        # Runs only on a value the caller sent (defaults are not validated): an explicit null.
        if v is None:
            raise ValueError("automation cannot be null; leave it out to inherit the model's (or the default)")
        return v

    def stored(self) -> dict[str, Any]:
        """Only the fields the caller set (JSON-ready), so the rest keep inheriting."""
        return self.model_dump(mode="json", exclude_unset=True)


SleeveWeight = Annotated[Decimal, Field(gt=0, le=1, decimal_places=10)]


class ModelIn(_In):
    model_id: Id
    name: str = Field(min_length=1, max_length=200)
    #: Target weight by symbol; what is left of 1 (after the sleeves) is the cash target.
    targets: dict[Symbol, Weight] = Field(default_factory=dict, max_length=500)
    #: Sleeves: weight by model id, e.g. {"us_core": 0.6, "income": 0.4}. Each sleeve's targets
    #: are multiplied by its weight and added to the security targets (nested at most 4 levels).
    models: dict[Id, SleeveWeight] = Field(default_factory=dict, max_length=50)
    #: The model's drift policy (accounts override it field by field); omitted = keep / defaults.
    policy: PolicyIn | None = None

    @model_validator(mode="after")
    def _sum_at_most_one(self) -> ModelIn:
        total = sum(self.targets.values(), Decimal(0)) + sum(self.models.values(), Decimal(0))
        if total > 1:
            raise ValueError(f"target and sleeve weights sum to {total}, more than 1")
        if self.model_id in self.models:
            raise ValueError(f"model {self.model_id} cannot be a sleeve of itself")
        return self


class ModelOut(BaseModel):
    model_id: str
    name: str
    #: The model's own security weights.
    targets: dict[str, DecimalStr]
    #: Sleeve weights by model id.
    models: dict[str, DecimalStr]
    #: Security targets with every sleeve expanded: what accounts on this model drift against.
    expanded_targets: dict[str, DecimalStr]
    cash_target_weight: DecimalStr
    #: The policy fields the model sets (accounts inherit them).
    policy: dict[str, Any]
    updated_at: datetime


# ---------------------------------------------------------------- accounts


class LotIn(_In):
    lot_id: LotId
    symbol: Symbol
    shares: Decimal = Field(gt=0, le=MAX_SHARES, max_digits=28, decimal_places=8)
    cost_basis_usd_per_share: Decimal = Field(ge=0, le=MAX_PRICE, max_digits=20, decimal_places=8)
    acquired_on: IsoDate

    @field_validator("acquired_on")
    @classmethod
    def _not_future(cls, v: date) -> date:
        # One day of slack: "today" east of UTC is tomorrow in UTC.
        if v > datetime.now(UTC).date() + timedelta(days=1):
            raise ValueError("acquired_on is in the future")
        return v


def _check_lots(lots: list[LotIn]) -> list[LotIn]:
    """Unique lot ids, and at most MAX_SHARES shares in all (an account's value must fit)."""
    seen: set[str] = set()
    for lot in lots:
        if lot.lot_id in seen:
            raise ValueError(f"lot_id {lot.lot_id} appears twice")
        seen.add(lot.lot_id)
    total = sum((lot.shares for lot in lots), Decimal(0))
    if total > MAX_SHARES:
        raise ValueError(f"the lots hold {total} shares in all, more than {MAX_SHARES} per account")
    return lots


class TaxRatesIn(_In):
    short_term: Rate = Decimal("0.37")
    long_term: Rate = Decimal("0.20")


class AccountIn(_In):
    account_id: Id
    household_id: Id | None = None
    #: The advisor responsible (must exist: POST /v1/advisors).
    advisor_id: Id | None = None
    account_type: AccountType = "taxable"
    model_id: Id
    cash_usd: Usd
    cash_reserve_usd: Usd = Decimal("0")
    #: Never trade these (neither buy nor sell).
    restricted: list[Symbol] = Field(default_factory=list, max_length=500)
    #: Never buy these (selling is fine): their target weight goes to the other targets.
    never_buy: list[Symbol] = Field(default_factory=list, max_length=500)
    #: ESG exclusions: treated like never-buy.
    esg_excluded: list[Symbol] = Field(default_factory=list, max_length=500)
    #: Targets of this account instead of the model's.
    custom_targets: dict[Symbol, Weight] | None = Field(default=None, max_length=500)
    policy: PolicyIn = PolicyIn()
    tax_rates: TaxRatesIn = TaxRatesIn()
    lots: list[LotIn] = Field(default_factory=list, max_length=10_000)

    _lots_unique = field_validator("lots")(_check_lots)

    @field_validator("custom_targets")
    @classmethod
    def _custom_sum(cls, v: dict[str, Decimal] | None) -> dict[str, Decimal] | None:
        if v is not None and sum(v.values(), Decimal(0)) > 1:
            raise ValueError("custom target weights sum to more than 1")
        return v

    @model_validator(mode="after")
    def _dedupe_lists(self) -> AccountIn:
        self.restricted = sorted(set(self.restricted))
        self.never_buy = sorted(set(self.never_buy))
        self.esg_excluded = sorted(set(self.esg_excluded))
        return self


class LotsIn(_In):
    lots: list[LotIn] = Field(max_length=10_000)
    #: Set cash too when the holdings were replaced by trades the book did not see.
    cash_usd: Usd | None = None

    _lots_unique = field_validator("lots")(_check_lots)


class LotOut(BaseModel):
    lot_id: str
    symbol: str
    shares: DecimalStr
    cost_basis_usd_per_share: DecimalStr
    acquired_on: date


class PolicyOut(BaseModel):
    """The effective policy (defaults <- model <- account)."""

    band_abs: DecimalStr | None
    band_rel: DecimalStr | None
    band_rule: str | None
    portfolio_band: DecimalStr | None
    trade_back_band: DecimalStr | None
    min_interval_days: int
    cash_trigger_usd: DecimalStr | None
    automation: str
    max_turnover: DecimalStr | None
    max_tax_usd: DecimalStr | None


class TaxRatesOut(BaseModel):
    short_term: DecimalStr
    long_term: DecimalStr


class AccountOut(BaseModel):
    account_id: str
    household_id: str | None
    advisor_id: str | None
    account_type: str
    model_id: str
    cash_usd: DecimalStr
    cash_reserve_usd: DecimalStr
    restricted: list[str]
    never_buy: list[str]
    esg_excluded: list[str]
    custom_targets: dict[str, DecimalStr] | None
    #: Effective targets (custom or model, exclusions spread over the rest).
    targets: dict[str, DecimalStr]
    policy: PolicyOut
    #: The policy fields this account overrides.
    policy_overrides: dict[str, Any]
    tax_rates: TaxRatesOut
    open_withdrawals_usd: DecimalStr
    last_rebalanced_at: datetime | None
    lots: list[LotOut]
    #: Shares by symbol (the sum of the lots).
    positions: dict[str, DecimalStr]
    drift_state: str
    pending_drift_id: uuid.UUID | None
    revision: int
    updated_at: datetime


class BulkIn(_In):
    #: Raw rows: each is validated on its own so one bad row cannot sink the others.
    accounts: list[dict[str, Any]] = Field(min_length=1, max_length=5_000)


class BulkRejected(BaseModel):
    index: int
    account_id: str | None
    errors: list[str]


class BulkOut(BaseModel):
    created: int
    created_ids: list[str]
    rejected: list[BulkRejected]


class HouseholdIn(_In):
    household_id: Id
    name: str | None = Field(default=None, max_length=200)
    #: The household's advisor (must exist); omitted keeps the current one.
    advisor_id: Id | None = None


class HouseholdOut(BaseModel):
    household_id: str
    name: str | None
    advisor_id: str | None
    account_ids: list[str]


# ---------------------------------------------------------------- advisors


class AdvisorIn(_In):
    advisor_id: Id
    name: str = Field(min_length=1, max_length=200)
    #: A plain syntactic check (local@domain.tld); deliverability is not this service's business.
    email: str = Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class AdvisorOut(BaseModel):
    advisor_id: str
    name: str
    email: str
    created_at: datetime
    updated_at: datetime


# ---------------------------------------------------------------- drift


class DriftOut(BaseModel):
    account_id: str
    #: The newest price time among the symbols the account holds or targets.
    as_of: datetime | None
    total_value_usd: DecimalStr | None
    cash_usd: DecimalStr
    weights: dict[str, DecimalStr]
    targets: dict[str, DecimalStr]
    deviations: dict[str, DecimalStr]
    max_abs_deviation: DecimalStr | None
    band_abs: DecimalStr | None
    #: The band of each symbol (max(band_rel x target, band_abs)); never-trade symbols have none.
    bands: dict[str, DecimalStr]
    #: The rule that would fire now (first of withdrawal, *_band, portfolio_drift, cash_excess), or null.
    rule: str | None
    #: Every rule that is breached now, before hysteresis and the minimum interval.
    rules: list[str]
    #: Whether an event would be emitted now (armed, quiet interval and minimum interval passed).
    would_fire: bool
    #: Why not, when a rule is breached but nothing would be emitted.
    held_back_by: str | None
    breached: list[str]
    portfolio_drift: DecimalStr | None
    cash_weight: DecimalStr | None
    cash_target_weight: DecimalStr
    uninvested_cash_usd: DecimalStr | None
    withdrawal_shortfall_usd: DecimalStr
    policy: PolicyOut
    #: Held or targeted symbols without a price yet: drift is undefined until they have one.
    missing_prices: list[str]
    drift_state: str
    pending_drift_id: uuid.UUID | None


class HouseholdDriftOut(BaseModel):
    """A household's accounts side by side, and the household as one portfolio (value-weighted)."""

    household_id: str
    total_value_usd: DecimalStr | None
    weights: dict[str, DecimalStr]
    targets: dict[str, DecimalStr]
    deviations: dict[str, DecimalStr]
    #: Accounts for which some rule would fire now.
    firing: list[str]
    accounts: list[DriftOut]


# ---------------------------------------------------------------- cash flows and withdrawals


class CashFlowIn(_In):
    #: Positive: a deposit; negative: cash leaving the account. Cash may not go below zero.
    amount_usd: Decimal = Field(ge=-MAX_USD, le=MAX_USD, max_digits=20, decimal_places=6)
    note: str | None = Field(default=None, max_length=200)

    @field_validator("amount_usd")
    @classmethod
    def _nonzero(cls, v: Decimal) -> Decimal:
        if v == 0:
            raise ValueError("amount_usd must not be zero")
        return v


class WithdrawalIn(_In):
    amount_usd: Decimal = Field(gt=0, le=MAX_USD, max_digits=20, decimal_places=6)
    due_on: IsoDate


class WithdrawalOut(BaseModel):
    withdrawal_id: uuid.UUID
    account_id: str
    amount_usd: DecimalStr
    due_on: date
    status: str
    created_at: datetime
    closed_at: datetime | None


# ---------------------------------------------------------------- bulk import


class ImportRejected(BaseModel):
    #: 1-based line of the file (CSV: counting the header line), or the index in a JSON batch.
    line: int
    key: str | None
    errors: list[str]


class ImportOut(BaseModel):
    kind: str
    accepted: int
    accepted_keys: list[str]
    rejected: list[ImportRejected]
