"""Trimtab's shared library: the event contract, the bus, the outbox, the database helpers,
settings, telemetry and auth that every service builds on. Services import this package and the
event contract only; they never import one another."""

__version__ = "0.1.0"
