"""Trimtab drift_monitor service."""
