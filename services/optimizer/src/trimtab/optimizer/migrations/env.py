"""Alembic environment of the optimizer schema."""

from trimtab.optimizer.models import metadata
from trimtab.shared.migrate import run_env

run_env(metadata)
