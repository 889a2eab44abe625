"""Trimtab market_data service."""
