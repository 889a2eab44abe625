"""Reference data for the securities in the real price history shipped with `skfolio`.

Sectors are the GICS sectors of each company; substitute groups pair securities an advisor could
swap for tax-loss harvesting (same sector, not substantially identical). Half spreads are typical
large-cap figures; they are estimates, labelled as such in the securities master.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class ReferenceSecurity:
    symbol: str
    name: str
    asset_class: str
    sector: str
    substitute_group: str
    half_spread_bps: Decimal = Decimal("2")
    commission_usd_per_share: Decimal = Decimal("0")


_SP500 = [
    ("AAPL", "Apple Inc.", "Information Technology", "tech-hw"),
    ("AMD", "Advanced Micro Devices", "Information Technology", "semis"),
    ("BAC", "Bank of America", "Financials", "banks"),
    ("BBY", "Best Buy", "Consumer Discretionary", "retail"),
    ("CVX", "Chevron", "Energy", "oil"),
    ("GE", "General Electric", "Industrials", "industrials"),
    ("HD", "Home Depot", "Consumer Discretionary", "retail"),
    ("JNJ", "Johnson & Johnson", "Health Care", "pharma"),
    ("JPM", "JPMorgan Chase", "Financials", "banks"),
    ("KO", "Coca-Cola", "Consumer Staples", "beverages"),
    ("LLY", "Eli Lilly", "Health Care", "pharma"),
    ("MRK", "Merck & Co.", "Health Care", "pharma"),
    ("MSFT", "Microsoft", "Information Technology", "software"),
    ("PEP", "PepsiCo", "Consumer Staples", "beverages"),
    ("PFE", "Pfizer", "Health Care", "pharma"),
    ("PG", "Procter & Gamble", "Consumer Staples", "household"),
    ("RRC", "Range Resources", "Energy", "gas"),
    ("UNH", "UnitedHealth Group", "Health Care", "managed-care"),
    ("WMT", "Walmart", "Consumer Staples", "household"),
    ("XOM", "Exxon Mobil", "Energy", "oil"),
]
_FACTORS = [
    ("MTUM", "iShares MSCI USA Momentum Factor ETF", "factor-momentum"),
    ("QUAL", "iShares MSCI USA Quality Factor ETF", "factor-quality"),
    ("SIZE", "iShares MSCI USA Size Factor ETF", "factor-size"),
    ("USMV", "iShares MSCI USA Min Vol Factor ETF", "factor-minvol"),
    ("VLUE", "iShares MSCI USA Value Factor ETF", "factor-value"),
]

REFERENCE: dict[str, ReferenceSecurity] = {
    **{s: ReferenceSecurity(s, n, "us_equity", sec, g) for s, n, sec, g in _SP500},
    **{s: ReferenceSecurity(s, n, "us_equity_etf", "Multi-sector", g, Decimal("1")) for s, n, g in _FACTORS},
}
