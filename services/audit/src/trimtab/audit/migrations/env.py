"""Alembic environment of the audit schema."""

from trimtab.audit.models import metadata
from trimtab.shared.migrate import run_env

run_env(metadata)
