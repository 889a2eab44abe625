"""Trimtab audit service: the append-only, hash-chained record of every event on the bus."""
