"""Loads the reference history that historical scenarios replay: real daily closes 1990-2022.

Source: the datasets shipped inside the `skfolio` wheel (20 S&P 500 stocks and the S&P 500
index from 1990-01-02 to 2022-12-28; the MTUM, QUAL, SIZE, USMV and VLUE factor ETFs from 2014).
The CSV files are read directly, without importing skfolio (whose import costs seconds), from
`RISK_REFERENCE_DIR` or, by default, the installed wheel's data folder. The factor ETFs are also
securities of the history (NaN before their listing). Sectors are the GICS sectors of the 20
stocks. Loaded once per process.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from .domain.history import ReferenceHistory

GICS_SECTORS = {
    "AAPL": "Information Technology", "AMD": "Information Technology",
    "MSFT": "Information Technology", "BAC": "Financials", "JPM": "Financials",
    "BBY": "Consumer Discretionary", "HD": "Consumer Discretionary", "CVX": "Energy",
    "RRC": "Energy", "XOM": "Energy", "GE": "Industrials", "JNJ": "Health Care",
    "LLY": "Health Care", "MRK": "Health Care", "PFE": "Health Care", "UNH": "Health Care",
    "KO": "Consumer Staples", "PEP": "Consumer Staples", "PG": "Consumer Staples",
    "WMT": "Consumer Staples",
}


class ReferenceUnavailable(RuntimeError):
    pass


def default_dir() -> Path | None:
    spec = importlib.util.find_spec("skfolio")  # finds the package without importing it
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "datasets" / "data"


def _csv(path: Path) -> tuple[np.ndarray, list[str], np.ndarray]:
    import pandas as pd  # a dependency of arch; only needed to parse the gzip CSVs once

    df = pd.read_csv(path, index_col=0, parse_dates=True)
    return df.index.values.astype("datetime64[D]"), [str(c) for c in df.columns], df.to_numpy(float)


@functools.lru_cache(maxsize=4)
def load_reference(directory: str | None = None) -> ReferenceHistory:
    base = Path(directory) if directory else default_dir()
    if base is None or not (base / "sp500_dataset.csv.gz").exists():
        raise ReferenceUnavailable(f"no reference price history found (looked in {base})")
    dates, symbols, prices = _csv(base / "sp500_dataset.csv.gz")
    idates, _, index = _csv(base / "sp500_index.csv.gz")
    if not np.array_equal(dates, idates):
        raise ReferenceUnavailable("the stock and index histories have different calendars")
    fnames: list[str] = []
    fprices = np.zeros((len(dates), 0))
    if (base / "factors_dataset.csv.gz").exists():
        fdates, fnames, fp = _csv(base / "factors_dataset.csv.gz")
        pos = np.searchsorted(dates, fdates)
        ok = (pos < len(dates)) & (dates[np.minimum(pos, len(dates) - 1)] == fdates)
        fprices = np.full((len(dates), len(fnames)), np.nan)
        fprices[pos[ok]] = fp[ok]
    return ReferenceHistory(
        dates=dates, symbols=(*symbols, *fnames), prices=np.column_stack([prices, fprices]),
        market=index[:, 0], market_name="SP500", factor_names=tuple(fnames),
        factor_prices=fprices, sectors=dict(GICS_SECTORS), source=str(base),
    )
