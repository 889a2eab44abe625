"""Request and response models of the market-data API (separate from the tables)."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from trimtab.shared.money import DecimalStr

Symbol = str


class TickIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    symbol: Symbol = Field(min_length=1, max_length=16, pattern=r"^[A-Z0-9.\-]+$")
    price_usd: Decimal = Field(gt=0, max_digits=18, decimal_places=6)
    as_of: datetime

    @field_validator("as_of")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("as_of must carry a time zone (e.g. 2024-01-02T21:00:00Z)")
        return v


class TickBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ticks: list[TickIn] = Field(min_length=1, max_length=10_000)
    source: str = Field(default="api", max_length=32)


class TickBatchOut(BaseModel):
    accepted: int
    stale_ignored: int
    correlation_id: uuid.UUID
    event_ids: list[uuid.UUID]


class SecurityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    symbol: Symbol = Field(min_length=1, max_length=16, pattern=r"^[A-Z0-9.\-]+$")
    name: str = Field(min_length=1, max_length=200)
    asset_class: str = Field(min_length=1, max_length=32)
    sector: str | None = Field(default=None, max_length=64)
    substitute_group: str | None = Field(default=None, max_length=32)
    half_spread_bps: Decimal = Field(default=Decimal("2"), ge=0, le=10_000)
    commission_usd_per_share: Decimal = Field(default=Decimal("0"), ge=0)
    esg_score: Decimal | None = Field(default=None, ge=0, le=100)


#: securities per `POST /v1/securities` (one INSERT: 9 bind parameters a row, 32,767 at most)
MAX_SECURITIES = 1000


def _unique_symbols(v: list[SecurityIn]) -> list[SecurityIn]:
    dup = sorted(sym for sym, n in Counter(b.symbol for b in v).items() if n > 1)
    if dup:
        raise ValueError(f"each symbol at most once per request; repeated: {', '.join(dup)}")
    return v


#: the body of `POST /v1/securities`: up to MAX_SECURITIES securities, each symbol once
SecurityList = Annotated[list[SecurityIn], Field(max_length=MAX_SECURITIES),
                         AfterValidator(_unique_symbols)]


class SecurityOut(BaseModel):
    symbol: str
    name: str
    asset_class: str
    sector: str | None
    substitute_group: str | None
    half_spread_bps: DecimalStr
    commission_usd_per_share: DecimalStr
    esg_score: DecimalStr | None
    price_usd: DecimalStr | None = None
    price_as_of: datetime | None = None


class PriceOut(BaseModel):
    symbol: str
    price_usd: DecimalStr
    as_of: datetime
    source: str


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: Literal["sp500", "factors"] = "sp500"
    start: date
    end: date
    symbols: list[str] | None = None
    #: Trading days replayed per second of wall time (0 = as fast as possible).
    speed_days_per_s: float = Field(default=10.0, ge=0, le=10_000)

    @field_validator("end")
    @classmethod
    def _order(cls, v: date, info) -> date:  # type: ignore[no-untyped-def]
        start = info.data.get("start")
        if start and v < start:
            raise ValueError("end must not be before start")
        return v


class ReplayOut(BaseModel):
    replay_id: uuid.UUID
    dataset: str
    start: date
    end: date
    status: Literal["running", "done", "failed", "cancelled"]
    days_total: int
    days_done: int
    ticks_published: int
    error: str | None = None
