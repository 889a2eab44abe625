"""Request and response models of the drift-monitor API (separate from the tables).

Money, shares and weights are Decimals in, Decimal strings out. Input limits match the columns
(shares and cost bases to 8 places, cash to 6, weights to 10), so nothing is rounded silently.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trimtab.shared.events import AccountType, AutomationLevel
from trimtab.shared.money import DecimalStr

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$")]
LotId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:#\-]*$")]
Symbol = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Z0-9.\-]+$")]
Weight = Annotated[Decimal, Field(ge=0, le=1, decimal_places=10)]
Usd = Annotated[Decimal, Field(ge=0, max_digits=20, decimal_places=6)]
Rate = Annotated[Decimal, Field(ge=0, le=1, decimal_places=4)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- models


class ModelIn(_In):
    model_id: Id
    name: str = Field(min_length=1, max_length=200)
    #: Target weight by symbol; what is left of 1 is the cash target.
    targets: dict[Symbol, Weight] = Field(max_length=500)

    @field_validator("targets")
    @classmethod
    def _sum_at_most_one(cls, v: dict[str, Decimal]) -> dict[str, Decimal]:
        total = sum(v.values(), Decimal(0))
        if total > 1:
            raise ValueError(f"target weights sum to {total}, more than 1")
        return v


class ModelOut(BaseModel):
    model_id: str
    name: str
    targets: dict[str, DecimalStr]
    cash_target_weight: DecimalStr
    updated_at: datetime


# ---------------------------------------------------------------- accounts


class LotIn(_In):
    lot_id: LotId
    symbol: Symbol
    shares: Decimal = Field(gt=0, max_digits=28, decimal_places=8)
    cost_basis_usd_per_share: Decimal = Field(ge=0, max_digits=20, decimal_places=8)
    acquired_on: date

    @field_validator("acquired_on")
    @classmethod
    def _not_future(cls, v: date) -> date:
        # One day of slack: "today" east of UTC is tomorrow in UTC.
        if v > datetime.now(UTC).date() + timedelta(days=1):
            raise ValueError("acquired_on is in the future")
        return v


def _unique_lots(lots: list[LotIn]) -> list[LotIn]:
    seen: set[str] = set()
    for lot in lots:
        if lot.lot_id in seen:
            raise ValueError(f"lot_id {lot.lot_id} appears twice")
        seen.add(lot.lot_id)
    return lots


class PolicyIn(_In):
    #: Absolute band as a weight: 0.05 fires when any weight is more than 5 points off target.
    band_abs: Decimal = Field(default=Decimal("0.05"), gt=0, le=1, decimal_places=10)
    automation: AutomationLevel = "advisor_approval"
    max_turnover: Decimal | None = Field(default=None, gt=0, le=2, decimal_places=10)


class TaxRatesIn(_In):
    short_term: Rate = Decimal("0.37")
    long_term: Rate = Decimal("0.20")


class AccountIn(_In):
    account_id: Id
    household_id: Id | None = None
    account_type: AccountType = "taxable"
    model_id: Id
    cash_usd: Usd
    cash_reserve_usd: Usd = Decimal("0")
    restricted: list[Symbol] = Field(default_factory=list, max_length=500)
    policy: PolicyIn = PolicyIn()
    tax_rates: TaxRatesIn = TaxRatesIn()
    lots: list[LotIn] = Field(default_factory=list, max_length=10_000)

    _lots_unique = field_validator("lots")(_unique_lots)

    @model_validator(mode="after")
    def _dedupe_restricted(self) -> AccountIn:
        self.restricted = sorted(set(self.restricted))
        return self


class LotsIn(_In):
    lots: list[LotIn] = Field(max_length=10_000)
    #: Set cash too when the holdings were replaced by trades the book did not see.
    cash_usd: Usd | None = None

    _lots_unique = field_validator("lots")(_unique_lots)


class LotOut(BaseModel):
    lot_id: str
    symbol: str
    shares: DecimalStr
    cost_basis_usd_per_share: DecimalStr
    acquired_on: date


class PolicyOut(BaseModel):
    band_abs: DecimalStr
    automation: str
    max_turnover: DecimalStr | None


class TaxRatesOut(BaseModel):
    short_term: DecimalStr
    long_term: DecimalStr


class AccountOut(BaseModel):
    account_id: str
    household_id: str | None
    account_type: str
    model_id: str
    cash_usd: DecimalStr
    cash_reserve_usd: DecimalStr
    restricted: list[str]
    policy: PolicyOut
    tax_rates: TaxRatesOut
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


class HouseholdOut(BaseModel):
    household_id: str
    name: str | None
    account_ids: list[str]


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
    band_abs: DecimalStr
    #: The rule that would fire now ("absolute_band"), or null.
    rule: str | None
    breached: list[str]
    #: Held or targeted symbols without a price yet: drift is undefined until they have one.
    missing_prices: list[str]
    drift_state: str
    pending_drift_id: uuid.UUID | None
