"""Metadata of the probe services built by test_delivery, shared with their env.py."""

PROBES: dict[str, object] = {}
