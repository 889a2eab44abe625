"""Alembic environment of the market-data schema."""

from trimtab.market_data.models import metadata
from trimtab.shared.migrate import run_env

run_env(metadata)
