"""Charts of an explanation: a waterfall per trade and a summary per proposal, PNG or SVG.

Rendered from plain numbers (`ChartTrade`: dollars per driver), so the explainer service draws
them from what it stored and the library from an `Explanation` alike. Deterministic: the Agg
canvas on a `Figure` (no pyplot state), fixed size, dpi and font (DejaVu Sans, shipped with
matplotlib), glyphs drawn as paths, SVG ids salted with a constant and no date in either
format's metadata. The same numbers give the same bytes, so a replayed explanation has the same
charts (a test checks it).

Waterfall: starts at the trade with every driver off (zero by construction), then one bar per
driver (its Shapley value in dollars, buy positive), ends at the trade. Summary: per trade, the
drivers' contributions stacked left (toward selling) and right (toward buying), the net trade
marked.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .explain import Explanation

Format = Literal["png", "svg"]
MEDIA_TYPES: dict[str, str] = {"png": "image/png", "svg": "image/svg+xml"}
#: One color per driver (colorblind-safe palette), in the explanation's driver order.
COLORS: dict[str, str] = {
    "drift": "#0072B2", "cost": "#999999", "tax": "#D55E00", "tax_losses": "#009E73",
    "tax_gains": "#D55E00", "cash": "#E69F00", "restrictions": "#CC79A7", "risk": "#56B4E9",
    "esg": "#000000",
}
LABELS: dict[str, str] = {
    "drift": "drift to target", "cost": "trading cost", "tax": "tax", "tax_losses": "harvesting losses",
    "tax_gains": "avoiding gains", "cash": "cash reserve/drag", "restrictions": "restrictions",
    "risk": "factor risk", "esg": "ESG screen",
}
_RC = {
    "font.family": "DejaVu Sans", "font.size": 9.0, "svg.fonttype": "path",
    "svg.hashsalt": "trimtab-explainer", "path.simplify": False, "axes.unicode_minus": False,
}
DPI = 100
#: matplotlib's rcParams and font cache are process-global: one render at a time.
_LOCK = threading.Lock()
_NAME = re.compile(r"^(summary|trade-(?P<symbol>.+))\.(?P<fmt>png|svg)$")


@dataclass(frozen=True)
class ChartTrade:
    symbol: str
    trade_usd: float
    contributions_usd: Mapping[str, float]
    base_usd: float = 0.0


def chart_trades(explanation: Explanation) -> list[ChartTrade]:
    return [ChartTrade(t.symbol, t.trade_usd, dict(t.contributions_usd), t.base_shares * t.price_usd)
            for t in explanation.trades]


def chart_names(trades: Sequence[ChartTrade]) -> list[str]:
    """Every chart an explanation has, both formats."""
    stems = ["summary"] + [f"trade-{t.symbol}" for t in trades]
    return [f"{s}.{fmt}" for s in stems for fmt in ("svg", "png")]


def _usd(x: float) -> str:
    return ("-" if x < 0 else "") + f"${abs(x):,.0f}"


def _save(fig: object, fmt: Format) -> bytes:
    buf = io.BytesIO()
    # No dates, no version strings: bytes depend on the numbers only.
    meta = {"Date": None, "Creator": "trimtab explainer"} if fmt == "svg" else {"Software": "trimtab explainer"}
    fig.savefig(buf, format=fmt, dpi=DPI, metadata=meta)  # type: ignore[attr-defined]
    return buf.getvalue()


def _figure(width: float, height: float):  # type: ignore[no-untyped-def]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def waterfall(trade: ChartTrade, drivers: Sequence[str], fmt: Format = "svg") -> bytes:
    """Base -> each driver's contribution -> the trade, in dollars (buy positive)."""
    import matplotlib

    with _LOCK, matplotlib.rc_context(_RC):
        fig = _figure(6.4, 3.6)
        ax = fig.add_subplot(1, 1, 1)
        labels = ["all off"] + [LABELS.get(d, d) for d in drivers] + ["trade"]
        level = trade.base_usd
        ax.bar(0, level, color="#444444", width=0.6)
        for k, d in enumerate(drivers, start=1):
            v = float(trade.contributions_usd.get(d, 0.0))
            ax.bar(k, v, bottom=level, color=COLORS.get(d, "#777777"), width=0.6)
            ax.text(k, level + v, _usd(v), ha="center",
                    va="bottom" if v >= 0 else "top", fontsize=7)
            ax.plot([k - 0.3, k + 1.3], [level + v] * 2, color="#888888", linewidth=0.6)
            level += v
        n = len(drivers) + 1
        ax.bar(n, trade.trade_usd, color="#222222", width=0.6)
        ax.text(n, trade.trade_usd, _usd(trade.trade_usd), ha="center",
                va="bottom" if trade.trade_usd >= 0 else "top", fontsize=7, fontweight="bold")
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.margins(y=0.15)
        ax.set_xticks(range(n + 1))
        ax.set_xticklabels(labels, rotation=30, ha="right")
        side = "buy" if trade.trade_usd > 0 else "sell" if trade.trade_usd < 0 else "no trade"
        ax.set_title(f"{trade.symbol}: {side} {_usd(abs(trade.trade_usd))} - why, driver by driver")
        ax.set_ylabel("dollars (buy +, sell -)")
        fig.tight_layout()
        return _save(fig, fmt)


def summary(trades: Sequence[ChartTrade], drivers: Sequence[str], title: str, fmt: Format = "svg") -> bytes:
    """Every trade's contributions stacked by driver, the net trade marked."""
    import matplotlib
    from matplotlib.patches import Patch

    with _LOCK, matplotlib.rc_context(_RC):
        rows = sorted(trades, key=lambda t: t.symbol)
        fig = _figure(8.4, max(2.4, 0.9 + 0.32 * len(rows)))
        ax = fig.add_subplot(1, 1, 1)
        for y, t in enumerate(rows):
            pos = neg = 0.0
            for d in drivers:
                v = float(t.contributions_usd.get(d, 0.0))
                left = pos if v >= 0 else neg + v
                ax.barh(y, abs(v), left=left, color=COLORS.get(d, "#777777"), height=0.6)
                if v >= 0:
                    pos += v
                else:
                    neg += v
            ax.plot([t.trade_usd], [y], marker="D", color="black", markersize=4)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([t.symbol for t in rows])
        ax.invert_yaxis()
        ax.set_xlabel("dollars toward selling (-) and buying (+); diamond = the trade")
        ax.set_title(title)
        ax.legend(handles=[Patch(color=COLORS.get(d, "#777777"), label=LABELS.get(d, d)) for d in drivers],
                  fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        fig.tight_layout(rect=(0.0, 0.0, 0.8, 1.0))  # room for the legend on the right
        return _save(fig, fmt)


def render(name: str, trades: Sequence[ChartTrade], drivers: Sequence[str], title: str
           ) -> tuple[bytes, str]:
    """The chart called `name` (see `chart_names`) and its media type; KeyError if there is none."""
    m = _NAME.match(name)
    if m is None:
        raise KeyError(name)
    fmt: Format = m.group("fmt")  # type: ignore[assignment]
    symbol = m.group("symbol")
    if symbol is None:
        return summary(trades, drivers, title, fmt), MEDIA_TYPES[fmt]
    for t in trades:
        if t.symbol == symbol:
            return waterfall(t, drivers, fmt), MEDIA_TYPES[fmt]
    raise KeyError(name)
