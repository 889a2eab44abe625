"""Pure drift-monitor logic: drift measurement (exact and vectorized), the per-tenant matrix
engine, the fill ledger and the hysteresis policy. No I/O, no framework imports."""
