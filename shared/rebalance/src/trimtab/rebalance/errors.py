"""Typed errors of the rebalancing domain.

Every failure mode the optimizer can meet has its own type, so a caller never mistakes a refusal
for an empty proposal: an infeasible or failed solve raises; it never returns trades.
The errors subclass the platform's `TrimtabError` so the services map them to problem+json
without a translation table.
"""

from __future__ import annotations

from trimtab.shared.errors import Invalid, TrimtabError


def _rebuild(cls: type[RebalanceError], state: dict[str, object]) -> RebalanceError:
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("detail", ""))
    err.__dict__.update(state)
    return err


class RebalanceError(TrimtabError):
    """Base of every error raised on purpose by `trimtab.rebalance`.

    Picklable whatever the subclass's constructor (solves run in worker processes, whose
    exceptions cross back by pickle).
    """

    status = 422
    title = "Rebalance failed"

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), dict(self.__dict__)))


class InvalidSnapshot(Invalid, RebalanceError):
    """The snapshot cannot describe an account (a price missing, lots exceeding the position...)."""

    title = "Invalid account snapshot"


class InfeasibleProblem(RebalanceError):
    """No trade list satisfies the hard constraints.

    `constraint` names the one that cannot be met: ``cash_reserve`` (the reserve cannot be raised
    from what may be sold), ``max_turnover`` (raising the reserve needs more turnover than the
    policy allows) or ``rounding`` (no whole-share trade list passes the re-check).
    """

    title = "Infeasible rebalance"

    def __init__(self, constraint: str, detail: str, **extra: object) -> None:
        super().__init__(detail, constraint=constraint, **extra)
        self.constraint = constraint


class SolverFailed(RebalanceError):
    """Every solver tried ended without a usable solution (numerical trouble, not infeasibility)."""

    status = 500
    title = "Solver failed"

    def __init__(self, detail: str, *, solver: str, status_text: str) -> None:
        super().__init__(detail, solver=solver, solver_status=status_text)
        self.solver = solver
        self.status_text = status_text


class ExplanationFailed(RebalanceError):
    """An attribution broke one of its own guarantees (efficiency); it is refused, not published."""

    status = 500
    title = "Explanation failed"
