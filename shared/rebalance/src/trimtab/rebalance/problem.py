"""The convex rebalancing problem, DPP-parameterized and compiled once per padded shape.

Decision variables are in *weight* space (fractions of the pre-trade value V0), which keeps the
problem well scaled whatever the account's size:

- ``sell[j] >= 0``: weight sold from lot slot j; ``buy[i] >= 0``: weight bought of security i.
- ``trade = buy - S @ sell`` where S sums the K lot slots of each security (a constant matrix:
  lots sit in fixed slots ``i*K + k``, so lot membership never becomes a dense Parameter).
  ``trade`` is a variable of its own, tied by that equality: every term and row below touches
  one entry per security instead of K + 1, which halves the solver's constraint matrix (2,262
  to 1,082 nonzeros at 20 x 3) and makes a Clarabel solve about 20% faster (formulation 6).

Objective (every coefficient a Parameter; driver weights are folded into them, which keeps the
problem DPP: a Parameter may multiply a Parameter-free expression, not another Parameter)::

    quad_diag . trade^2 + quad_lin . trade              drift g ||sqrt(d) a||^2 (d = 1 without a
                                                         risk model) plus the regularizer
                                                         eps ||t / sqrt(tau)||^2, expanded (up to
                                                         a constant): a diagonal of the solver's
                                                         P, with no auxiliary variables
  + || factor_scale^T trade + factor_offset ||^2         risk r ||F_model^T a||^2 + drift g ||F_groups^T
                                                         a||^2 in factor form: F is an n x k
                                                         Parameter (k small), never n x n
  + band_weight * (sum(excess) + sum(group_excess))      drift: |a| beyond the band, per security
                                                         and per substitute group
  + lin_sell . sell + lin_buy . buy                      linear cost, tax and the tie-break
  + impact . |trade|^(3/2)                               market impact (cvxportfolio's 3/2 law):
                                                         power cones, in shapes with
                                                         ``Shape.impact`` only
  + cash_weight * idle                                   cash: drag above the cash target

Constraints: ``sell <= sell_cap`` (lot weight, 0 if not allowed), ``buy <= buy_cap`` (0 if not
buyable: restrictions, wash-sale bans, buy-only / sell-only modes), cash spent (trades plus linear
costs) ``<= cash_floor_rhs`` (reserve and withdrawal), the hinge and idle definitions, gross
turnover ``<= turnover_cap``, tax ``tax_row . sell <= tax_cap`` (annual tax budget) and net gain
``gain_row . sell <= gain_cap`` (hard gain cap). All bounds are Parameters, so restrictions,
bans, modes, budgets and relaxed drivers never change the problem's shape.

Shapes are padded into buckets (securities 4/8/12/.../32/40/48..., lot slots per security 1/2/3/4/6/8...),
so a handful of compiled problems serve every account; padded entries have zero bounds.
The cache is process-wide and safe to share across threads: the fast path (`fastpath.py`)
never touches the cvxpy Parameters, and cvxpy's own path (fallback) holds a lock per problem
while it writes them. Solve in processes to solve in parallel.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from .errors import SolverFailed

if TYPE_CHECKING:
    from .fastpath import ClarabelFastPath

log = logging.getLogger(__name__)
K = TypeVar("K")
V = TypeVar("V")

#: Padding is not free: a padded security still carries its variables, rows and (with impact) a
#: power cone, and a 20-security account solved 1.5x faster in a 20- than in a 24-slot shape. So
#: the buckets are fine (at most 1/8 to 1/5 padding); each shape compiles once per process on
#: first use (0.2-0.5 s below 100 securities).
SECURITY_BUCKETS: tuple[int, ...] = (4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128,
                                     160, 192, 224, 256, 320, 384, 448, 512)
LOTS_PER_SECURITY_BUCKETS: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 16, 32, 64)
FACTOR_BUCKETS: tuple[int, ...] = (0, 4, 8, 16, 24, 32)
GROUP_BUCKETS: tuple[int, ...] = (0, 2, 4, 8, 16)
#: Stands in for "no bound" in a cap Parameter: a tax or gain row times the sells is at most the
#: gross weight sold (<= a few), so 10 never binds, and a larger number would hurt the scaling.
NO_BOUND = 10.0

#: The objective is multiplied by this inside the solver only: terms are ~1e-4 in weight units,
#: which would sit at the solver's absolute tolerance.
OBJECTIVE_SCALE = 1e4

#: The structured interior point (ipm.py), the first solver of single-account problems.
IPM_SOLVER = "TRIMTAB-IPM"
#: `TRIMTAB_SOLVER`: "auto" (the structured solver where it applies, Clarabel for the rest and
#: whatever it does not certify) or "clarabel" (Clarabel for everything, as before the tenth
#: session; a replay of an older record may want it).
SOLVER_MODES = ("auto", "clarabel")


def solver_mode() -> str:
    mode = os.environ.get("TRIMTAB_SOLVER", "auto").strip().lower() or "auto"
    if mode not in SOLVER_MODES:
        raise ValueError(f"TRIMTAB_SOLVER={mode!r}: one of {', '.join(SOLVER_MODES)}")
    return mode


_ipm_module = None


def _ipm():  # type: ignore[no-untyped-def]
    global _ipm_module
    if _ipm_module is None:
        from . import ipm  # imports this module: bound late

        _ipm_module = ipm
    return _ipm_module


#: Solvers tried in order. Clarabel is an interior-point method that is deterministic and
#: accurate; OSQP and SCS are fallbacks (their first use compiles the problem again).
SOLVERS: tuple[str, ...] = ("CLARABEL", "OSQP", "SCS")
#: Wall-clock limit of one solve, seconds: far above any solve measured (500 securities with
#: impact: about 0.1 s), so it never decides an answer; it bounds the worst case (a solve that
#: would not return blocks the optimizer's consumer) to a typed `SolverFailed` after the
#: fallbacks, each limited too.
SOLVE_TIME_LIMIT_S = 10.0

SOLVER_OPTIONS: dict[str, dict[str, object]] = {
    "CLARABEL": {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9, "max_iter": 200,
                 "time_limit": SOLVE_TIME_LIMIT_S},
    "OSQP": {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iter": 100_000, "polishing": True,
             "warm_starting": False, "time_limit": SOLVE_TIME_LIMIT_S},
    "SCS": {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 100_000, "time_limit_secs": SOLVE_TIME_LIMIT_S},
}
_OK = {cp.OPTIMAL, cp.OPTIMAL_INACCURATE}
_INFEASIBLE = {cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE}


def bucket(size: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket holding `size`; past the last, the next multiple of the last."""
    for b in buckets:
        if size <= b:
            return b
    last = buckets[-1]
    return -(-size // last) * last


@dataclass(frozen=True, order=True)
class Shape:
    """A compiled problem's padded size."""

    n_securities: int
    lots_per_security: int
    n_factors: int = 0
    #: Substitute groups whose band applies to their total weight.
    n_groups: int = 0
    #: With the market impact term (power cones): only for accounts with sigma and ADV data,
    #: since the cones make a solve several times slower.
    impact: bool = False

    @property
    def n_slots(self) -> int:
        return self.n_securities * self.lots_per_security

    @classmethod
    def for_sizes(cls, n_securities: int, max_lots_per_security: int, n_factors: int = 0,
                  n_groups: int = 0, impact: bool = False) -> Shape:
        return cls(bucket(max(n_securities, 1), SECURITY_BUCKETS),
                   bucket(max(max_lots_per_security, 1), LOTS_PER_SECURITY_BUCKETS),
                   bucket(n_factors, FACTOR_BUCKETS), bucket(n_groups, GROUP_BUCKETS), impact)


@dataclass(frozen=True)
class ProblemData:
    """Values of every Parameter, at the padded shape (see the module docstring for meanings)."""

    quad_diag: np.ndarray
    quad_lin: np.ndarray
    band_lo: np.ndarray
    band_hi: np.ndarray
    band_weight: float
    lin_sell: np.ndarray
    lin_buy: np.ndarray
    cash_weight: float
    cost_buy: np.ndarray
    cost_sell: np.ndarray
    cash_drag_rhs: float
    cash_floor_rhs: float
    sell_cap: np.ndarray
    buy_cap: np.ndarray
    turnover_cap: float
    impact: np.ndarray | None = None
    tax_row: np.ndarray | None = None
    tax_cap: float = NO_BOUND
    gain_row: np.ndarray | None = None
    gain_cap: float = NO_BOUND
    factor_scale: np.ndarray | None = None
    factor_offset: np.ndarray | None = None
    group_member: np.ndarray | None = None
    group_lo: np.ndarray | None = None
    group_hi: np.ndarray | None = None

    def with_caps(self, sell_cap: np.ndarray, buy_cap: np.ndarray) -> ProblemData:
        """This problem with other caps (`dataclasses.replace`, without its per-field
        introspection: bans re-solve one problem several times per account)."""
        out = object.__new__(type(self))  # copy.copy without its reduce protocol
        fields = out.__dict__
        fields.update(self.__dict__)
        fields["sell_cap"], fields["buy_cap"] = sell_cap, buy_cap
        return out


@dataclass(frozen=True)
class RawSolution:
    """The solver's answer at the padded shape.

    `objective` is the solver's (unscaled) value, up to a constant on the fast path: compare
    candidate solutions with `objective.evaluate`, which is exact and solver-independent.
    """

    sell: np.ndarray
    buy: np.ndarray
    objective: float
    status: str
    solver: str
    solve_ms: float


class ProblemInfeasible(Exception):
    """Raised by `CompiledProblem.solve`; the caller names the constraint (it knows the data)."""


class CompiledProblem:
    """One DPP problem for one `Shape`; `solve` sets the Parameters and re-solves."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self._lock = threading.Lock()
        n, k, f, m = shape.n_securities, shape.lots_per_security, shape.n_factors, shape.n_slots
        g = shape.n_groups
        P = cp.Parameter
        self.p = {
            "quad_diag": P(n, nonneg=True), "quad_lin": P(n),
            "band_lo": P(n), "band_hi": P(n), "band_weight": P(nonneg=True),
            "lin_sell": P(m), "lin_buy": P(n), "cash_weight": P(nonneg=True),
            "cost_buy": P(n, nonneg=True),
            "cost_sell": P(m, nonneg=True), "cash_drag_rhs": P(), "cash_floor_rhs": P(),
            "sell_cap": P(m, nonneg=True), "buy_cap": P(n, nonneg=True),
            "turnover_cap": P(nonneg=True),
            "tax_row": P(m), "tax_cap": P(), "gain_row": P(m),
            "gain_cap": P(),
        }
        if f:
            self.p["factor_scale"] = P((n, f))
            self.p["factor_offset"] = P(f)
        if shape.impact:
            self.p["impact"] = P(n, nonneg=True)
        if g:
            self.p["group_member"] = P((n, g), nonneg=True)
            self.p["group_lo"] = P(g)
            self.p["group_hi"] = P(g)
        p = self.p
        self.sell = cp.Variable(m, nonneg=True, name="sell")
        self.buy = cp.Variable(n, nonneg=True, name="buy")
        excess = cp.Variable(n, nonneg=True, name="excess")
        idle = cp.Variable(nonneg=True, name="idle")
        slots_to_security = sp.kron(sp.eye(n), np.ones((1, k))).tocsr()
        trade = cp.Variable(n, name="trade")
        impact_cons = []
        if shape.impact:
            # |t|^(3/2) <= impact as one 3-d power cone per security: impact^(2/3) 1^(1/3) >= |t|
            # (cp.power(cp.abs(t), 1.5) would need two second-order cones and more per security).
            # A polyhedral envelope of tangents was tried: fewer iterations, but the extra rows
            # made each one slower than the cones.
            impact = cp.Variable(n, nonneg=True, name="impact")
            impact_cons = [cp.PowCone3D(impact, np.ones(n), trade, 2.0 / 3.0)]
        spent = cp.sum(trade) + p["cost_buy"] @ self.buy + p["cost_sell"] @ self.sell
        objective = (
            cp.sum(cp.multiply(p["quad_diag"], cp.square(trade))) + p["quad_lin"] @ trade
            + p["band_weight"] * cp.sum(excess)
            + p["lin_sell"] @ self.sell + p["lin_buy"] @ self.buy
            + p["cash_weight"] * idle
        )
        if shape.impact:
            objective = objective + p["impact"] @ impact
        if f:
            objective = objective + cp.sum_squares(p["factor_scale"].T @ trade + p["factor_offset"])
        constraints = [
            trade == self.buy - slots_to_security @ self.sell,
            *impact_cons,
            p["tax_row"] @ self.sell <= p["tax_cap"],
            p["gain_row"] @ self.sell <= p["gain_cap"],
            excess - trade >= p["band_lo"],
            excess + trade >= p["band_hi"],
            # Idle cash is measured before costs: otherwise burning cash on round trips would
            # "reduce" the drag whenever the cost driver is off.
            idle + cp.sum(trade) >= p["cash_drag_rhs"],
            spent <= p["cash_floor_rhs"],
            self.sell <= p["sell_cap"],
            self.buy <= p["buy_cap"],
            cp.sum(self.sell) + cp.sum(self.buy) <= p["turnover_cap"],
        ]
        if g:
            group_excess = cp.Variable(g, nonneg=True, name="group_excess")
            group_trade = p["group_member"].T @ trade
            objective = objective + p["band_weight"] * cp.sum(group_excess)
            constraints += [group_excess - group_trade >= p["group_lo"],
                            group_excess + group_trade >= p["group_hi"]]
        self.problem = cp.Problem(cp.Minimize(OBJECTIVE_SCALE * objective), constraints)
        assert self.problem.is_dpp(), "the rebalancing problem must stay DPP"
        self.compile_ms = 0.0
        self.fast: ClarabelFastPath | None = None
        at, self._theta_slices = 0, []
        for name, param in self.p.items():
            size = int(np.prod(param.shape)) if param.shape else 1
            self._theta_slices.append((name, at, at + size, not param.shape))
            at += size
        self._theta_dim = at

    def compile(self, *, fast_path: bool = True) -> None:
        """Canonicalize for the primary solver now (DPP caches it), then build the fast path."""
        from .fastpath import ClarabelFastPath, FastPathUnavailable

        t0 = time.perf_counter()
        with self._lock:
            self._set(_neutral_data(self.shape))
            self.problem.get_problem_data(SOLVERS[0])
            if fast_path:
                try:
                    self.fast = ClarabelFastPath(self)
                except FastPathUnavailable as e:
                    log.warning("no fast path for %s (%s): solving through cvxpy", self.shape, e)
                    self.fast = None
            self._set(_neutral_data(self.shape))
        self.compile_ms = (time.perf_counter() - t0) * 1e3

    # ------------------------------------------------------------------ parameter values

    def theta(self, data: ProblemData) -> np.ndarray:
        """All Parameter values flattened in a fixed order, then a 1 (the fast path's input:
        the affine map's constant column)."""
        out = np.empty(self._theta_dim + 1)
        for name, start, stop, scalar in self._theta_slices:
            value = getattr(data, name)
            if scalar:
                out[start] = value
            else:
                out[start:stop] = np.ravel(value)
        out[-1] = 1.0
        return out

    def set_theta(self, theta: np.ndarray) -> None:
        at = 0
        for param in self.p.values():
            size = int(np.prod(param.shape)) if param.shape else 1
            chunk = theta[at:at + size]
            param.value = chunk.reshape(param.shape) if param.shape else float(chunk[0])
            at += size

    def _set(self, data: ProblemData) -> None:
        for name, param in self.p.items():
            value = getattr(data, name)
            param.value = np.asarray(value, dtype=float) if np.ndim(value) else float(value)

    # ------------------------------------------------------------------ solving

    def structured(self) -> bool:
        """Whether `solve` tries the structured solver first (read at each call: the mode is an
        environment variable tests change)."""
        return solver_mode() == "auto" and self.shape.lots_per_security <= _ipm().MAX_LOTS_PER_SECURITY \
            and _ipm().available()

    def prepare(self, data: ProblemData):  # type: ignore[no-untyped-def]
        """`data` packed for the structured solver (`ipm.Packed`), for `solve(..., packed=)`."""
        sh = self.shape
        return _ipm().prepare(data, sh.n_securities, sh.lots_per_security, sh.n_factors, sh.n_groups)

    def solve(self, data: ProblemData, *, packed=None) -> RawSolution:  # type: ignore[no-untyped-def]
        """Solve with the first solver that succeeds; `ProblemInfeasible` or `SolverFailed` else.

        The structured solver (ipm.py) goes first where it applies (`solver_mode()` "auto", at
        most `ipm.MAX_LOTS_PER_SECURITY` lot slots, the compiler there); a problem it refuses
        (a round trip that pays, data not finite) or does not solve to tolerance (infeasible,
        numerical trouble) goes to Clarabel, which also certifies infeasibility. Then the fast
        path (Clarabel on the probed affine data), which needs no lock; if it ends in anything but
        optimal or infeasible, cvxpy's own path with its fallbacks retries.

        `packed`: `data` already prepared for the structured solver (`prepare`; the caller has
        checked `structured()`), which a caller solving many variants of one problem derives
        cheaply (`ipm.Packed.with_caps_zeroed`).
        """
        if packed is not None or self.structured():
            t0 = time.perf_counter()
            res = _ipm().solve_packed(packed if packed is not None else self.prepare(data))
            elapsed = (time.perf_counter() - t0) * 1e3
            if res.usable:
                return RawSolution(sell=np.maximum(res.sell, 0.0), buy=np.maximum(res.buy, 0.0),
                                   objective=res.objective, status="optimal", solver=IPM_SOLVER, solve_ms=elapsed)
            log.info("structured solver: %s on %s; Clarabel solves it", res.refused or res.status, self.shape)
        if self.fast is not None:
            t0 = time.perf_counter()
            theta = self.theta(data)
            status, sell, buy, obj = self.fast.solve_first(theta)
            elapsed = (time.perf_counter() - t0) * 1e3
            if status in _INFEASIBLE:
                raise ProblemInfeasible(status)
            if sell is not None and buy is not None:
                return RawSolution(sell=np.maximum(sell, 0.0), buy=np.maximum(buy, 0.0),
                                   objective=obj / OBJECTIVE_SCALE, status=status,
                                   solver="CLARABEL", solve_ms=elapsed)
            log.warning("fast path ended %s on %s; retrying through cvxpy", status, self.shape)
        return self._solve_cvxpy(data)

    def _solve_cvxpy(self, data: ProblemData) -> RawSolution:
        last = ("none", "not run")
        with self._lock:
            self._set(data)
            for solver in SOLVERS:
                t0 = time.perf_counter()
                try:
                    self.problem.solve(solver=solver, **SOLVER_OPTIONS.get(solver, {}))
                except cp.error.SolverError as e:
                    log.warning("solver %s failed on shape %s: %s", solver, self.shape, e)
                    last = (solver, f"error: {e}")
                    continue
                elapsed = (time.perf_counter() - t0) * 1e3
                status = self.problem.status
                if status in _INFEASIBLE:
                    raise ProblemInfeasible(status)
                # A first-order fallback's "inaccurate" is an uncertified iterate (SCS returns
                # one when its time runs out): only Clarabel's reduced-tolerance optimum counts.
                accepted = _OK if solver == "CLARABEL" else {cp.OPTIMAL}
                if status in accepted and self.sell.value is not None:
                    return RawSolution(
                        sell=np.maximum(np.array(self.sell.value), 0.0),
                        buy=np.maximum(np.array(self.buy.value), 0.0),
                        objective=float(self.problem.value) / OBJECTIVE_SCALE,
                        status=status, solver=solver, solve_ms=elapsed,
                    )
                log.warning("solver %s ended %s on shape %s", solver, status, self.shape)
                last = (solver, str(status))
        raise SolverFailed(f"no solver solved the problem (last: {last[0]}: {last[1]})",
                           solver=last[0], status_text=last[1])


def _neutral_data(shape: Shape) -> ProblemData:
    """Parameter values of an empty account: used to compile."""
    n, m, f, g = shape.n_securities, shape.n_slots, shape.n_factors, shape.n_groups
    z_n, z_m = np.zeros(n), np.zeros(m)
    return ProblemData(
        quad_diag=np.ones(n), quad_lin=z_n, band_lo=z_n - 0.05, band_hi=z_n - 0.05,
        band_weight=1.0, lin_sell=z_m, lin_buy=z_n, cash_weight=0.0,
        cost_buy=z_n, cost_sell=z_m, cash_drag_rhs=0.0, cash_floor_rhs=0.0, sell_cap=z_m,
        buy_cap=z_n, turnover_cap=4.0, impact=z_n if shape.impact else None, tax_row=z_m, tax_cap=NO_BOUND, gain_row=z_m,
        gain_cap=NO_BOUND,
        factor_scale=np.zeros((n, f)) if f else None, factor_offset=np.zeros(f) if f else None,
        group_member=np.zeros((n, g)) if g else None, group_lo=np.zeros(g) - 0.05 if g else None,
        group_hi=np.zeros(g) - 0.05 if g else None,
    )


class ShapeCache(Generic[K, V]):
    """Compiled problems by shape, built on first use and kept for the process's life; safe to
    share across threads (the build of one shape happens once)."""

    def __init__(self, build: Callable[[K], V], label: str) -> None:
        self._build, self._label = build, label
        self._items: dict[K, V] = {}
        self._lock = threading.Lock()

    def get(self, shape: K) -> V:
        with self._lock:
            prob = self._items.get(shape)
            if prob is None:
                t0 = time.perf_counter()
                prob = self._items[shape] = self._build(shape)
                log.info("compiled %s %s in %.0f ms", self._label, shape, (time.perf_counter() - t0) * 1e3)
            return prob

    def shapes(self) -> list[K]:
        with self._lock:
            return sorted(self._items)  # type: ignore[type-var]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def _build(shape: Shape) -> CompiledProblem:
    prob = CompiledProblem(shape)
    prob.compile()
    return prob


_CACHE: ShapeCache[Shape, CompiledProblem] = ShapeCache(_build, "rebalance problem")


def compiled(shape: Shape) -> CompiledProblem:
    """The compiled problem of `shape`, built on first use and kept for the process's life."""
    return _CACHE.get(shape)


def warm_up(shapes: list[Shape] | None = None) -> dict[Shape, float]:
    """Compile the common shapes (at service start, about 1 s); compile time per shape in ms."""
    shapes = shapes or [Shape(n, k) for n in (8, 16, 32) for k in (1, 2, 4)]
    return {s: compiled(s).compile_ms for s in shapes}


def cached_shapes() -> list[Shape]:
    return _CACHE.shapes()
