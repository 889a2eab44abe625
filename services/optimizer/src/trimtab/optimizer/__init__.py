"""Trimtab optimizer service."""
