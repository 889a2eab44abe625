"""Trimtab risk service."""
