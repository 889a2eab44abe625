"""Trimtab explainer service."""
