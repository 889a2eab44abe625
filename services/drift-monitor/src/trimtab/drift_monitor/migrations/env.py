"""Alembic environment of the drift-monitor schema."""

from trimtab.drift_monitor.models import metadata
from trimtab.shared.migrate import run_env

run_env(metadata)
