"""Request and response models of the market-data API (separate from the tables)."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from trimtab.shared.limits import MAX_PRICE_USD, IsoDate
from trimtab.shared.money import DecimalStr

Symbol = str

#: The earliest tick time accepted. The latest is "now" plus MARKET_DATA_MAX_FUTURE_S, checked when
#: the ticks are recorded (service.future_ticks): it depends on the clock, not on the input alone.
EARLIEST_TICK = datetime(1900, 1, 1, tzinfo=UTC)


def tick_time(v: datetime) -> datetime:
    """A tick's `as_of`: with a time zone, representable in UTC, not before EARLIEST_TICK.

    "9999-12-31T23:59:59-14:00" parses but has no UTC value (year 10000): it is refused here, not
    left to overflow when the database driver converts it."""
    if v.tzinfo is None or v.utcoffset() is None:
        raise ValueError("as_of must carry a time zone (e.g. 2024-01-02T21:00:00Z)")
    try:
        utc = v.astimezone(UTC)
    except OverflowError:
        raise ValueError("as_of is out of range (its UTC time is before year 1 or after year 9999)") from None
    if utc < EARLIEST_TICK:
        raise ValueError(f"as_of must not be before {EARLIEST_TICK.isoformat()}")
    return v


class TickIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    symbol: Symbol = Field(min_length=1, max_length=16, pattern=r"^[A-Z0-9.\-]+$")
    #: latest_prices / price_history.price_usd are Numeric(18, 6); at most MAX_PRICE_USD (what
    #: the drift monitor's account values are sized for)
    price_usd: Decimal = Field(gt=0, le=MAX_PRICE_USD, max_digits=18, decimal_places=6)
    as_of: datetime

    @field_validator("as_of")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        return tick_time(v)


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
    # Bounds within the columns' precision and scale (models.securities), so a value the column
    # cannot hold (or would silently round) is a 422, not a "numeric field overflow" 500.
    #: Numeric(10, 4)
    half_spread_bps: Decimal = Field(default=Decimal("2"), ge=0, le=10_000, max_digits=10, decimal_places=4)
    #: Numeric(10, 6): at most 9999.999999 USD a share
    commission_usd_per_share: Decimal = Field(default=Decimal("0"), ge=0, max_digits=10, decimal_places=6)
    #: Numeric(6, 2)
    esg_score: Decimal | None = Field(default=None, ge=0, le=100, max_digits=6, decimal_places=2)


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
    start: IsoDate
    end: IsoDate
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
