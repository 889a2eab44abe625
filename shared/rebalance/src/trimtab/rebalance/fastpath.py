"""A direct Clarabel call for a compiled problem: the per-solve overhead of cvxpy, removed.

DPP guarantees that the solver data (P, q, A, b) of a compiled problem is an *affine* function
of its Parameter values theta. This module recovers that map once per shape by probing cvxpy's
own `get_problem_data` (theta = 0, then two probes per Parameter, see `_probe_block`), stores it
as sparse tensors on a fixed sparsity pattern, and checks it against cvxpy at a random theta. A
solve is then one sparse mat-vec per matrix and a Clarabel call: the same data cvxpy would pass,
without its per-call canonicalization and unpacking (about 2-3 ms saved a solve).

Only public cvxpy API is used (`get_problem_data` and the variable offsets in its inverse data),
so a cvxpy upgrade that changes internals either still works or fails the self-check, in which
case `problem.py` keeps using cvxpy's own solve path.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from .problem import CompiledProblem

log = logging.getLogger(__name__)

#: Shapes from this many securities solve to `LARGE_SHAPE_TOL` instead of 1e-9.
LARGE_SHAPE = 128
LARGE_SHAPE_TOL = 1e-8
LOOSE_TOL = 1e-7
#: Residuals under which a stalled solve ("insufficient progress") is accepted as inaccurate.
STALLED_RESIDUAL = 1e-6

#: Largest relative disagreement with cvxpy's data tolerated by the self-check.
SELF_CHECK_RTOL = 1e-9


class FastPathUnavailable(Exception):
    """The affine map could not be recovered or failed its self-check."""


@dataclass(frozen=True)
class _SparseMap:
    """theta1 -> values of a sparse matrix on a fixed CSC pattern."""

    tensor: sp.csr_array  # (nnz, D + 1)
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple[int, int]

    def at(self, theta1: np.ndarray) -> sp.csc_matrix:
        return sp.csc_matrix((self.tensor @ theta1, self.indices, self.indptr), shape=self.shape)


class _Triplets:
    """Accumulates (row, col, theta index, coefficient) of one data matrix or vector."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, rows: np.ndarray, cols: np.ndarray, ks: np.ndarray, vals: np.ndarray) -> None:
        self.parts.append((rows, cols, ks, vals))

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return tuple(np.concatenate([p[i] for p in self.parts]) for i in range(4))

    def sparse(self, dim: int) -> _SparseMap:
        m, n = self.shape
        r, c, k, v = self._arrays()
        key = c.astype(np.int64) * m + r  # CSC order: by column, then row
        pattern, entry = np.unique(key, return_inverse=True)
        tensor = sp.csr_array((v, (entry, k)), shape=(len(pattern), dim + 1))
        counts = np.bincount(pattern // m, minlength=n)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        return _SparseMap(tensor=tensor, indices=(pattern % m).astype(np.int32), indptr=indptr,
                          shape=(m, n))

    def vector(self, dim: int) -> sp.csr_array:
        """theta1 -> a data vector (q or b), as a sparse (rows x D + 1) map: dense, it would be
        rows x D (6,000 x 21,000 at 500 securities) and its product 60 ms of every solve."""
        r, _, k, v = self._arrays()
        out = sp.csr_array((v, (r, k)), shape=(self.shape[0], dim + 1))
        out.sum_duplicates()
        return out


def _coo(x: object) -> sp.coo_matrix:
    if sp.issparse(x):
        return sp.coo_matrix(x)
    return sp.coo_matrix(np.asarray(x, dtype=float).reshape(-1, 1))


def _diff(a: object, base: object) -> sp.coo_matrix:
    d = sp.coo_matrix(sp.csr_matrix(_coo(a)) - sp.csr_matrix(_coo(base)))
    d.eliminate_zeros()
    return d


class ClarabelFastPath:
    """Solve a `CompiledProblem` by calling Clarabel on data rebuilt from theta."""

    def __init__(self, problem: CompiledProblem) -> None:
        import clarabel

        from .problem import SOLVER_OPTIONS

        t0 = time.perf_counter()
        self._clarabel = clarabel
        self.names = list(problem.p)
        self.sizes = [int(np.prod(problem.p[k].shape)) if problem.p[k].shape else 1 for k in self.names]
        self.dim = int(sum(self.sizes))
        prob = problem.problem

        def data_at(theta: np.ndarray) -> dict:
            problem.set_theta(theta)
            data, _, _ = prob.get_problem_data("CLARABEL")
            return data

        base = data_at(np.zeros(self.dim))
        keys = ("A", "P", "c", "b")
        base_parts = {"A": base["A"], "P": sp.triu(base["P"]), "c": base["c"], "b": base["b"]}
        acc = {k: _Triplets(_coo(v).shape) for k, v in base_parts.items()}
        for key in keys:
            c = _coo(base_parts[key])
            acc[key].add(c.row, c.col, np.full(c.nnz, self.dim), c.data)
        self.probes = 1
        at = 0
        for size in self.sizes:
            self._probe_block(data_at, base_parts, acc, at, size)
            at += size
        self.A = acc["A"].sparse(self.dim)
        self.P = acc["P"].sparse(self.dim)
        self.q = acc["c"].vector(self.dim)
        self.b = acc["b"].vector(self.dim)
        dims = base["dims"]
        if dims.psd:  # cvxpy scales PSD data for Clarabel; not needed here, not reproduced
            raise FastPathUnavailable("PSD cones are not supported")
        # cvxpy's own mapping from its cone dimensions to Clarabel's cones (zero, nonneg, SOC...),
        # in the order its data uses them.
        from cvxpy.reductions.solvers.conic_solvers.clarabel_conif import dims_to_solver_cones
        self.cones = dims_to_solver_cones(dims)
        _, _, inverse = prob.get_problem_data("CLARABEL")
        self.offsets = self._offsets(inverse, len(base["c"]))
        base = clarabel.DefaultSettings()
        base.verbose = False
        for key, value in SOLVER_OPTIONS["CLARABEL"].items():
            setattr(base, key, value)
        if hasattr(base, "max_threads"):
            base.max_threads = 1
        if hasattr(base, "input_sparse_dropzeros"):
            # The probed pattern holds every entry any theta can fill (all factor loadings, every
            # group membership, padded securities): the zeros of this account would otherwise
            # enter the KKT factorization (at 500 securities, half its time).
            base.input_sparse_dropzeros = True
        if problem.shape.n_securities >= LARGE_SHAPE:
            # At hundreds of securities (and power cones) 1e-9 is below what the interior point
            # reaches ("insufficient progress"); 1e-8 relative to a 1e4-scaled objective is still
            # far below a cent on any account.
            for key in ("tol_gap_abs", "tol_gap_rel", "tol_feas"):
                setattr(base, key, LARGE_SHAPE_TOL)
        #: Settings tried in order: the first that ends optimal or infeasible wins (`solve`).
        self.attempts = [self._fast(base, large=problem.shape.n_securities >= LARGE_SHAPE),
                         base, self._copy(base, **dict.fromkeys(
                             ("tol_gap_abs", "tol_gap_rel", "tol_feas"), LOOSE_TOL))]
        self.settings = self.attempts[0]
        self._self_check(data_at)
        self.build_ms = (time.perf_counter() - t0) * 1e3

    def _copy(self, settings: object, **changes: object) -> object:
        out = self._clarabel.DefaultSettings()
        for key in dir(settings):
            if not key.startswith("_") and not callable(getattr(settings, key)):
                try:
                    setattr(out, key, getattr(settings, key))
                except (AttributeError, TypeError):
                    pass
        for key, value in changes.items():
            setattr(out, key, value)
        return out

    def _fast(self, base: object, *, large: bool) -> object:
        """The first attempt: Clarabel without iterative refinement of the KKT solves (a third
        of a small solve's time; measured to move the objective by < 1e-10 of the account on the
        benchmark's accounts), a finer backtracking line search for the power cones' step (0.9
        instead of 0.8: fewer iterations, at 500 securities 34 instead of 41) and, at hundreds of
        securities, without equilibration (the data is in weight units already; 15% faster
        there). A solve that stalls is retried with the defaults (`attempts`). See
        docs/optimizer.md ("Solver settings") for the measurements."""
        changes: dict[str, object] = {"iterative_refinement_enable": False,
                                      "linesearch_backtrack_step": 0.9}
        if large:
            changes["equilibrate_enable"] = False
        return self._copy(base, **changes)

    def _probe_block(self, data_at: object, base_parts: dict, acc: dict, at: int, size: int) -> None:
        """Recover the columns of one Parameter's entries with two probes, or one per entry.

        Probe 1 sets every entry to 1, probe 2 sets entry j to j + 1. Where the entries touch
        disjoint data (true of this problem: entry j of a vector Parameter acts on security or
        lot j only), the ratio of the two differences names the entry at each data position.
        Any ambiguity (a non-integer ratio) falls back to one probe per entry.
        """
        def parts(theta: np.ndarray) -> dict:
            d = data_at(theta)  # type: ignore[operator]
            self.probes += 1
            return {"A": d["A"], "P": sp.triu(d["P"]), "c": d["c"], "b": d["b"]}

        t1, t2 = np.zeros(self.dim), np.zeros(self.dim)
        t1[at:at + size] = 1.0
        t2[at:at + size] = np.arange(1, size + 1, dtype=float)
        d1, d2 = parts(t1), parts(t2)
        found = {}
        for key in acc:
            one, two = _diff(d1[key], base_parts[key]), _diff(d2[key], base_parts[key])
            m = one.shape[0]
            k1 = one.col.astype(np.int64) * m + one.row
            k2 = two.col.astype(np.int64) * m + two.row
            keys = np.union1d(k1, k2)
            v1, v2 = np.zeros(len(keys)), np.zeros(len(keys))
            np.add.at(v1, np.searchsorted(keys, k1), one.data)
            np.add.at(v2, np.searchsorted(keys, k2), two.data)
            r, c = keys % m, keys // m
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = v2 / v1
            j = np.rint(ratio) - 1
            ok = (v1 != 0) & np.isfinite(ratio) & (np.abs(ratio - (j + 1)) <= 1e-9 * np.abs(j + 1)) \
                & (j >= 0) & (j < size)
            if not ok.all():
                break
            found[key] = (r, c, at + j.astype(np.int64), v1)
        else:
            for key, (r, c, k, v) in found.items():
                acc[key].add(r, c, k, v)
            return
        for j in range(size):  # entries overlap: one probe each
            theta = np.zeros(self.dim)
            theta[at + j] = 1.0
            dj = parts(theta)
            for key in acc:
                d = _diff(dj[key], base_parts[key])
                acc[key].add(d.row, d.col, np.full(d.nnz, at + j), d.data)

    @staticmethod
    def _offsets(inverse: list, x_length: int) -> dict[str, tuple[int, int]]:
        for inv in reversed(inverse):
            id2var = getattr(inv, "id2var", None)
            offsets = getattr(inv, "var_offsets", None)
            if id2var and offsets and getattr(inv, "x_length", None) == x_length:
                out = {}
                for vid, var in id2var.items():
                    name = var.name()
                    if name in ("sell", "buy"):
                        out[name] = (offsets[vid], int(np.prod(var.shape)))
                if set(out) == {"sell", "buy"}:
                    return out
        raise FastPathUnavailable("variable offsets not found in cvxpy's inverse data")

    def _self_check(self, data_at: object) -> None:
        rng = np.random.default_rng(12345)
        theta = rng.uniform(0.1, 1.0, self.dim)
        expected = data_at(theta)  # type: ignore[operator]
        theta1 = np.append(theta, 1.0)
        pairs = [
            (self.A.at(theta1).toarray(), expected["A"].toarray()),
            (self.P.at(theta1).toarray(), sp.triu(expected["P"]).toarray()),
            (self.q @ theta1, np.asarray(expected["c"]).ravel()),
            (self.b @ theta1, np.asarray(expected["b"]).ravel()),
        ]
        for got, want in pairs:
            if got.shape != want.shape or not np.allclose(got, want, rtol=SELF_CHECK_RTOL, atol=1e-12):
                raise FastPathUnavailable("the probed affine map disagrees with cvxpy")

    def solve_first(self, theta: np.ndarray) -> tuple[str, np.ndarray | None, np.ndarray | None, float]:
        """`solve` with each of `attempts` in turn until one does not stall."""
        for attempt in range(len(self.attempts)):
            out = self.solve(theta, attempt=attempt)
            if out[0] != "clarabel:InsufficientProgress":
                break
        return out

    def solve(self, theta: np.ndarray, *, attempt: int = 0
              ) -> tuple[str, np.ndarray | None, np.ndarray | None, float]:
        """(status, sell, buy, objective in solver scale); status is a cvxpy status string.

        `theta`: the Parameter values in `names` order, optionally followed by a 1 (the affine
        map's constant column, as `CompiledProblem.theta` gives them).

        `attempt` picks the settings (`attempts`): 0 the fast ones, 1 Clarabel's defaults with
        this problem's tolerances, 2 tolerances of `LOOSE_TOL` (Clarabel stalls near 1e-9 on a
        few large problems with power cones; a certified 1e-7 optimum is better than a fallback
        solver's uncertified one).
        """
        theta1 = theta if len(theta) == self.dim + 1 else np.append(theta, 1.0)
        settings = self.attempts[attempt]
        solver = self._clarabel.DefaultSolver(self.P.at(theta1), self.q @ theta1, self.A.at(theta1),
                                             self.b @ theta1, self.cones, settings)
        sol = solver.solve()
        S = self._clarabel.SolverStatus
        status = {
            S.Solved: "optimal", S.AlmostSolved: "optimal_inaccurate",
            S.PrimalInfeasible: "infeasible", S.AlmostPrimalInfeasible: "infeasible_inaccurate",
        }.get(sol.status, f"clarabel:{sol.status}")
        if sol.status == S.InsufficientProgress and attempt > 0 \
                and max(sol.r_prim, sol.r_dual) <= STALLED_RESIDUAL:
            # Stalled near the optimum (power cones whose optimum sits at the apex, |t| = 0, do
            # this at hundreds of securities): feasible and stationary to STALLED_RESIDUAL is an
            # inaccurate optimum, and rounding re-checks every constraint on the orders anyway.
            status = "optimal_inaccurate"
        if status not in ("optimal", "optimal_inaccurate"):
            return status, None, None, float("nan")
        x = np.asarray(sol.x)
        (s0, sn), (b0, bn) = self.offsets["sell"], self.offsets["buy"]
        return status, x[s0:s0 + sn], x[b0:b0 + bn], float(sol.obj_val)
