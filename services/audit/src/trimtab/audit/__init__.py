"""Trimtab audit service."""
