"""Tables of the market-data schema: the securities master, latest prices and price history.

Every row carries its tenant: each firm keeps its own securities master and price feed.
"""

from __future__ import annotations

from sqlalchemy import Column, Date, DateTime, Numeric, PrimaryKeyConstraint, String, Table, func

from trimtab.shared.db import service_metadata
from trimtab.shared.outbox import infra_tables

SCHEMA = "market_data"
metadata = service_metadata(SCHEMA)
infra = infra_tables(metadata)

securities = Table(
    "securities",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("symbol", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    Column("asset_class", String(32), nullable=False),
    Column("sector", String(64), nullable=True),
    Column("substitute_group", String(32), nullable=True),
    Column("half_spread_bps", Numeric(10, 4), nullable=False),
    Column("commission_usd_per_share", Numeric(10, 6), nullable=False),
    Column("esg_score", Numeric(6, 2), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "symbol"),
)

latest_prices = Table(
    "latest_prices",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("symbol", String(16), nullable=False),
    Column("price_usd", Numeric(18, 6), nullable=False),
    Column("as_of", DateTime(timezone=True), nullable=False),
    Column("source", String(32), nullable=False),
    PrimaryKeyConstraint("tenant_id", "symbol"),
)

price_history = Table(
    "price_history",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("symbol", String(16), nullable=False),
    Column("as_of", Date, nullable=False),
    Column("price_usd", Numeric(18, 6), nullable=False),
    #: The time of the tick that set the day's price (NULL on rows older than this column): an
    #: older tick of the same day, delivered late, does not replace it.
    Column("tick_as_of", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("tenant_id", "symbol", "as_of"),
)
