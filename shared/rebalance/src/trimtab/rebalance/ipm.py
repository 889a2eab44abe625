"""A structure-exploiting interior-point solver for the single-account problem (`ipm.c`).

Clarabel solves the compiled problem (problem.py) as a general conic program: a sparse LDL of a
~500-dimensional KKT system and 20 power cones, about 1 ms a solve at 20 securities x 3 lots.
This solver knows the problem's shape instead (tenth session; docs/optimizer.md, "A solver for
this problem"):

- `trade = buy - S sell` is eliminated, and so are variables with a zero cap, band excesses that
  can never bind, rows that can never bind and groups without live members;
- the 3/2-power impact `|t|^1.5` is written as `buy^1.5 + (S sell)^1.5`, a smooth convex term.
  The two agree wherever a security is not bought and sold at once, and the smooth one is never
  below: where no round trip pays (`round_trip_pays`: both legs pay spread and commission, a
  wash-sale ban is a cap) the two problems share their optimum. A problem where one could pay
  is refused (Clarabel solves it), and so is data that is not finite;
- the Newton system is block-diagonal per security (its sells, its buy, its excess) plus a
  low-rank part (factor columns, the cash and group rows, the tax, gain, cash-floor and turnover
  rows), solved by Woodbury with a small dense capacitance matrix: O(n) work per iteration;
- Mehrotra predictor-corrector, one step length, fraction to the boundary 0.99.

The C source is compiled on first use with the machine's C compiler into a cache directory
(`TRIMTAB_CACHE_DIR`, else `$XDG_CACHE_HOME/trimtab`, else `~/.cache/trimtab`), keyed by the
source's hash, without `-march=native` and without floating-point contraction, so one source
gives the same answers on every x86-64 machine. Without a compiler `available()` is False and
callers keep Clarabel.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .problem import NO_BOUND, ProblemData

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("ipm.c")
CFLAGS = ("-O3", "-fno-math-errno", "-fno-trapping-math", "-funroll-loops", "-ffp-contract=off", "-fPIC",
          "-shared")
#: Lot slots per security the solver takes (a block is a security's sells, buy and excess: at
#: most 10 variables in its fixed-size kernels).
MAX_LOTS_PER_SECURITY = 8
#: The C side's return codes ("almost_solved": within 100x the tolerances, not taken; -11: more
#: groups than its kernels hold).
STATUS = {0: "optimal", 1: "almost_solved", -1: "nan", -2: "max_iter", -3: "block_chol", -4: "K_chol",
          -5: "step_tiny", -10: "out_of_memory", -11: "too_many_groups"}
#: Options: iterations, tolerance (relative gap and primal), dual tolerance, fraction to the
#: boundary, starting point, refinement steps, dual correction of the impact gradient.
OPTIONS = (60, 1e-9, 1e-8, 0.99, 3e-2, 4, 1)

_VECTORS = ("quad_diag", "quad_lin", "band_lo", "band_hi", "lin_sell", "lin_buy", "cost_buy", "cost_sell",
            "sell_cap", "buy_cap", "impact", "tax_row", "gain_row", "factor_scale", "factor_offset", "group_member",
            "group_lo", "group_hi")
_SCALARS = ("band_weight", "cash_weight", "cash_drag_rhs", "cash_floor_rhs", "turnover_cap", "tax_cap", "gain_cap")

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_failed: str | None = None


def cache_dir() -> Path:
    explicit = os.environ.get("TRIMTAB_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trimtab"


def _build() -> ctypes.CDLL:
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join(CFLAGS).encode()).hexdigest()[:16]
    target = cache_dir() / f"trimtab_ipm_{key}.so"
    if not target.exists():
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise RuntimeError("no C compiler (cc, gcc or $CC) to build the structured solver")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            subprocess.run([cc, *CFLAGS, "-o", tmp, str(SOURCE), "-lm"], check=True, capture_output=True, text=True,
                           timeout=120)
            # mkstemp made it 0600 and the linker kept that: a library built by root (an image's
            # build step) would be unreadable to the service's own user.
            os.chmod(tmp, 0o755)
            os.replace(tmp, target)  # atomic: processes building at once each install a whole file
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"building the structured solver failed: {e.stderr.strip()[-2000:]}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(target))
    f = lib.ipm_solve
    f.restype = ctypes.c_int
    f.argtypes = [ctypes.c_int] * 4 + [ctypes.c_void_p] * 4 + [
        ctypes.c_int, ctypes.c_double, ctypes.c_double, ctypes.c_double, ctypes.c_double, ctypes.c_int, ctypes.c_int]
    return lib


def library() -> ctypes.CDLL | None:
    """The compiled solver, built on first use; None (logged once) if it cannot be built."""
    global _lib, _failed
    if _lib is not None or _failed is not None:
        return _lib
    with _lock:
        if _lib is None and _failed is None:
            try:
                _lib = _build()
            except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                _failed = str(e)
                log.warning("structured solver unavailable, Clarabel solves every problem: %s", e)
    return _lib


def available() -> bool:
    return library() is not None


def unavailable_reason() -> str | None:
    library()
    return _failed


@dataclass(frozen=True)
class IpmResult:
    status: str
    buy: np.ndarray
    sell: np.ndarray
    #: The objective (unscaled weight units, up to the constant terms the elimination drops).
    objective: float
    iterations: int
    primal_residual: float
    dual_residual: float
    gap: float
    #: max over securities of min(buy, amount sold) (information: where `round_trip_pays` is
    #: False a positive value is a tie, the answer still optimal).
    both_sides: float
    #: Why the problem was not given to the solver (None: it was).
    refused: str | None = None

    @property
    def usable(self) -> bool:
        return self.refused is None and self.status == "optimal"


def round_trip_pays(data: ProblemData, n: int, k: int) -> bool:
    """Whether buying a security and selling one of its lots at once could lower the problem's
    objective: the pair's linear coefficients sum below 0, or the lot's sale loosens a tax or gain
    budget that binds (a negative entry in its row). Otherwise some optimum of the problem trades
    no security both ways, and there the smooth impact term `buy^1.5 + sold^1.5` equals the
    problem's `|buy - sold|^1.5`; since it is never below it, the two problems share their optimal
    value and the solver's optimum is the problem's. With a round trip that pays (never in the
    pipeline: both legs cost spread and commission, and a loss lot sold beside a buy is a wash
    sale the bans forbid) the problem goes to Clarabel."""
    return _round_trip(data, n, k)[0]


def _round_trip(data: ProblemData, n: int, k: int,
                pays: np.ndarray | None = None) -> tuple[bool, np.ndarray | None]:
    """(`round_trip_pays`, the per (security, lot slot) test of the linear coefficients and
    budgets it computed, if it got that far). `pays`: that test for a problem that differs from
    `data` only in its caps (it depends on none of them; given, the problem has the smooth term)."""
    if pays is None and (data.impact is None or not np.any(data.impact)):
        return False, None  # no smooth term: the reformulation is exact
    both = (data.buy_cap > 0)[:, None] & (data.sell_cap.reshape(n, k) > 0)
    if not both.any():
        return False, pays
    if pays is None:
        pays = data.lin_sell.reshape(n, k) + data.lin_buy[:, None] < 0
        if data.tax_row is not None and data.tax_cap < NO_BOUND:
            pays |= data.tax_row.reshape(n, k) < 0
        if data.gain_row is not None and data.gain_cap < NO_BOUND:
            pays |= data.gain_row.reshape(n, k) < 0
    return bool((both & pays).any()), pays


_SIZES = {"quad_diag": "n", "quad_lin": "n", "band_lo": "n", "band_hi": "n", "lin_sell": "m", "lin_buy": "n",
          "cost_buy": "n", "cost_sell": "m", "sell_cap": "m", "buy_cap": "n", "impact": "n", "tax_row": "m",
          "gain_row": "m", "factor_scale": "nf", "factor_offset": "f", "group_member": "ng", "group_lo": "g",
          "group_hi": "g"}


_Layout = tuple[tuple[tuple[str, int, int], ...], int, tuple[int, int]]


def _layout(n: int, k: int, f: int, g: int) -> _Layout:
    """((vector, start, stop) in `_VECTORS` order, where the scalars start, (where sell_cap and
    buy_cap start)) of the C buffer."""
    size = {"n": n, "m": n * k, "f": f, "g": g, "nf": n * f, "ng": n * g}
    out, at = [], 0
    for name in _VECTORS:
        out.append((name, at, at + size[_SIZES[name]]))
        at += size[_SIZES[name]]
    starts = {name: start for name, start, _ in out}
    return tuple(out), at, (starts["sell_cap"], starts["buy_cap"])


_LAYOUTS: dict[tuple[int, int, int, int], _Layout] = {}
_ROUND_TRIP = "a round trip (a buy and a lot sale of one security) that pays"


def pack(data: ProblemData, n: int, k: int, f: int, g: int) -> np.ndarray:
    """The C side's one float64 buffer: the vectors in `_VECTORS` order (absent ones as zeros of
    their size), then the scalars."""
    key = (n, k, f, g)
    layout = _LAYOUTS.get(key)
    if layout is None:
        layout = _LAYOUTS[key] = _layout(n, k, f, g)
    vectors, scalars_at, _ = layout
    buf = np.zeros(scalars_at + len(_SCALARS))
    for name, start, stop in vectors:
        v = getattr(data, name)
        if v is None:
            continue
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        if v.size != stop - start:
            raise ValueError(f"{name} has {v.size} values, the shape needs {stop - start}")
        buf[start:stop] = v
    buf[scalars_at:] = [float(getattr(data, name)) for name in _SCALARS]
    return buf


@dataclass(frozen=True)
class Packed:
    """One problem ready for the C side: its buffer, and why it is refused (None: it is not)."""

    data: ProblemData
    buf: np.ndarray
    refused: str | None
    n: int
    k: int
    f: int
    g: int
    #: `_round_trip`'s per-pair test where it was computed (None: it was not).
    pays: np.ndarray | None = field(default=None, repr=False, compare=False)

    def with_caps_zeroed(self, data: ProblemData, sell_slots: np.ndarray, buys: np.ndarray) -> Packed:
        """The same problem with the caps of `sell_slots` and `buys` set to 0 (`data`: that
        problem's values, which the caller has built). Zeroing finite caps keeps the data finite,
        and a problem where no round trip pays stays so when caps only shrink (a round trip needs
        both caps positive): only the buffer is copied, and the round trip checked again where
        it paid (the usual case before the wash-sale bans: a loss lot and its security's buy),
        from the pairs' test computed then (only the caps changed)."""
        if self.refused not in (None, _ROUND_TRIP):
            return prepare(data, self.n, self.k, self.f, self.g)
        sell_at, buy_at = _LAYOUTS[(self.n, self.k, self.f, self.g)][2]
        buf = self.buf.copy()
        buf[sell_at + np.asarray(sell_slots, dtype=np.int64)] = 0.0
        buf[buy_at + np.asarray(buys, dtype=np.int64)] = 0.0
        refused = None
        if self.refused is not None:
            pays_now, _ = _round_trip(data, self.n, self.k, self.pays)
            refused = _ROUND_TRIP if pays_now else None
        return Packed(data, buf, refused, self.n, self.k, self.f, self.g, self.pays)


def prepare(data: ProblemData, n: int, k: int, f: int, g: int) -> Packed:
    """`pack` plus the checks that decide whether the solver takes the problem."""
    buf = pack(data, n, k, f, g)
    refused, pays = None, None
    if not np.isfinite(buf).all():
        # The C code drops variables and rows by comparisons, which NaN fails silently.
        refused = "data that is not finite"
    else:
        pays_now, pays = _round_trip(data, n, k)
        if pays_now:
            refused = _ROUND_TRIP
    return Packed(data, buf, refused, n, k, f, g, pays)


def solve(data: ProblemData, n: int, k: int, f: int, g: int) -> IpmResult:
    """Solve one padded problem (`problem.Shape` sizes: n securities, k lot slots each, f factor
    columns, g groups). Raises RuntimeError when the solver is not available, ValueError for a
    shape it does not take."""
    _usable_library(k)
    return solve_packed(prepare(data, n, k, f, g))


def _usable_library(k: int) -> ctypes.CDLL:
    """The library, for problems of `k` lot slots per security: RuntimeError when it is not
    available, ValueError when it does not take `k`."""
    lib = library()
    if lib is None:
        raise RuntimeError(f"structured solver unavailable: {_failed}")
    if k > MAX_LOTS_PER_SECURITY:
        raise ValueError(f"{k} lot slots per security: the structured solver takes at most {MAX_LOTS_PER_SECURITY}")
    return lib


def solve_packed(p: Packed) -> IpmResult:
    """Solve a `prepare`d problem (see `solve`)."""
    lib = _usable_library(p.k)
    n, k = p.n, p.k
    buy, sell = np.empty(n), np.empty(n * k)
    if p.refused is not None:
        return IpmResult(status="refused", buy=buy, sell=sell, objective=float("nan"), iterations=0,
                         primal_residual=float("nan"), dual_residual=float("nan"), gap=float("nan"),
                         both_sides=float("nan"), refused=p.refused)
    info = np.zeros(8)
    code = lib.ipm_solve(n, k, p.f, p.g, p.buf.ctypes.data, buy.ctypes.data, sell.ctypes.data, info.ctypes.data,
                         *OPTIONS)
    status = STATUS.get(code, f"error {code}")
    sold = sell.reshape(n, k).sum(axis=1)
    both = float(np.minimum(buy, sold).max()) if n else 0.0
    return IpmResult(status=status, buy=buy, sell=sell, objective=float(info[1]), iterations=int(info[0]),
                     primal_residual=float(info[2]), dual_residual=float(info[3]), gap=float(info[4]),
                     both_sides=both)
