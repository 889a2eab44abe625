"""Alembic environment of the explainer schema."""

from trimtab.explainer.models import metadata
from trimtab.shared.migrate import run_env

run_env(metadata)
