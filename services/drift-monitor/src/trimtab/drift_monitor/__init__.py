"""Trimtab drift-monitor: the book (households, accounts, tax lots, cash, model portfolios) and
drift detection on every price tick, publishing `portfolio.drift.v1` with the full snapshot."""
