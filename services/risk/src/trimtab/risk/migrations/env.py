"""Alembic environment of the risk schema."""

from trimtab.risk.models import metadata
from trimtab.shared.migrate import run_env

run_env(metadata)
