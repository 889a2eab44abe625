"""Concentration and liquidity of many portfolios at once. Pure numpy.

Concentration, per row of W (portfolios x symbols, cash excluded from the columns):
- largest position (weight and column), top-five weight (sum of the five largest),
- Herfindahl index `sum(w_i**2)` of the weights as fractions of account value (1 = everything in
  one name; a 1/n equal-weight book gives 1/n),
- sector weights: W @ M with M the (symbols x sectors) membership matrix; the largest sector
  ignores the `unclassified` bucket (symbols without a sector), which is no sector.
Liquidity: days to trade out of a position at `participation` of its average daily volume (ADV):
`shares / (participation * ADV)`; the portfolio's figure is its slowest position. A held symbol
without an ADV makes the figure NaN (unknown), never zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

UNCLASSIFIED = "unclassified"
DEFAULT_PARTICIPATION = 0.20


@dataclass(frozen=True)
class Concentration:
    largest_weight: np.ndarray
    largest_index: np.ndarray
    top5_weight: np.ndarray
    herfindahl: np.ndarray
    sector_names: tuple[str, ...]
    sector_weights: np.ndarray  # (portfolios x sectors)
    largest_sector_weight: np.ndarray
    largest_sector_index: np.ndarray  # -1 when no classified holding


def sector_matrix(symbols: Sequence[str], sectors: Mapping[str, str]) -> tuple[tuple[str, ...], np.ndarray]:
    names = tuple(sorted({sectors.get(s, UNCLASSIFIED) for s in symbols}))
    col = {n: k for k, n in enumerate(names)}
    m = np.zeros((len(symbols), len(names)))
    for i, s in enumerate(symbols):
        m[i, col[sectors.get(s, UNCLASSIFIED)]] = 1.0
    return names, m


def concentration(W: np.ndarray, symbols: Sequence[str], sectors: Mapping[str, str]) -> Concentration:
    W = np.atleast_2d(np.asarray(W, dtype=float))
    k, n = W.shape
    if n == 0:
        z = np.zeros(k)
        return Concentration(z, np.full(k, -1), z, z, (), np.zeros((k, 0)), z, np.full(k, -1))
    largest_index = W.argmax(axis=1)
    largest = W[np.arange(k), largest_index]
    top = min(5, n)
    top5 = -np.partition(-W, top - 1, axis=1)[:, :top]
    names, m = sector_matrix(symbols, sectors)
    sw = W @ m
    classified = np.array([nm != UNCLASSIFIED for nm in names])
    masked = np.where(classified[None, :], sw, -np.inf)
    si = masked.argmax(axis=1) if classified.any() else np.full(k, -1)
    sl = np.where(si >= 0, sw[np.arange(k), np.maximum(si, 0)], 0.0) if classified.any() else np.zeros(k)
    si = np.where(sl > 0, si, -1)
    return Concentration(largest, largest_index, top5.sum(axis=1), (W * W).sum(axis=1),
                         names, sw, sl, si)


def days_to_trade(
    shares: np.ndarray, adv_shares: np.ndarray, participation: float = DEFAULT_PARTICIPATION,
) -> np.ndarray:
    """(portfolios x symbols) days per position; NaN where the ADV is unknown or zero."""
    if not 0 < participation <= 1:
        raise ValueError("participation must lie in (0, 1]")
    adv = np.asarray(adv_shares, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        days = np.abs(np.asarray(shares, dtype=float)) / (participation * adv)
    return np.where(adv > 0, days, np.nan)


def liquidity_days(
    shares: np.ndarray, adv_shares: np.ndarray, participation: float = DEFAULT_PARTICIPATION,
) -> np.ndarray:
    """Days to trade out of the whole portfolio (its slowest position), per row; NaN when a held
    position has no known ADV (the figure would understate) or nothing is held."""
    days = np.atleast_2d(days_to_trade(shares, adv_shares, participation))
    held = np.atleast_2d(np.asarray(shares)) != 0
    out = np.where(held, days, 0.0).max(axis=1)  # NaN propagates from a held unknown
    return np.where(held.any(axis=1), out, np.nan)
