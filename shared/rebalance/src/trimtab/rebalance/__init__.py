"""Trimtab rebalancing domain: the convex problem shared by the optimizer and the explainer.

Pure computation (numpy, cvxpy, Clarabel; shap lazily for explanations): no web, database or
broker imports. The public API:

- `propose(snapshot, *, drivers=None, proposal_id=None, context=None) -> Proposal`
- `from_snapshot(snapshot, context=None) -> RebalanceInput` (`RebalanceContext`: risk model,
  impact, wash/substitute groups, household trades, tax budget, gain cap, modes, withdrawal)
- `solve_trades(inp, driver_weights) -> np.ndarray` (continuous trade in shares per security)
- `explain(proposal, *, driver_weights=None, risk=None) -> Explanation`
- `explanation_payload(explanation) -> ExplanationCreated`
- `warm_up()` / `warm_up_explainer()` to pay compile and JIT costs at service start.
- `propose_household(snapshots, household_targets=None, *, context=None) -> HouseholdProposal`:
  one problem over every account of a household, with asset location (`household.py`).

Module map: context (data beyond the snapshot), inputs (snapshot -> arrays), drivers (names,
weights, tuning), problem (the compiled DPP problem and its cache), fastpath (direct Clarabel calls), solve (one solve, wash sales),
objective (terms in numpy), rounding (whole shares, re-checks), proposal, household (household
mode, asset location), explain, narrative, errors, version.
"""

from .context import FactorModel, HouseholdTrade, RebalanceContext, SecurityInfo
from .drivers import (
    DEFAULT_DRIVER_WEIGHTS,
    DEFAULT_TUNING,
    DRIVERS,
    Tuning,
)
from .errors import (
    ExplanationFailed,
    InfeasibleProblem,
    InvalidSnapshot,
    RebalanceError,
    SolverFailed,
)
from .explain import (
    Explanation,
    TradeExplanation,
    explain,
    explanation_payload,
    shapley_values,
    warm_up_explainer,
)
from .household import (
    AccountOrders,
    HouseholdProposal,
    propose_household,
    warm_up_household,
)
from .inputs import RebalanceInput, from_snapshot
from .problem import Shape, warm_up
from .proposal import Proposal, propose
from .solve import ContinuousSolution, solve_continuous, solve_trades
from .version import OPTIMIZER_VERSION

__all__ = [
    "DEFAULT_DRIVER_WEIGHTS", "DEFAULT_TUNING", "DRIVERS", "OPTIMIZER_VERSION", "ContinuousSolution",
    "FactorModel", "HouseholdTrade", "RebalanceContext", "SecurityInfo",
    "Explanation", "ExplanationFailed", "InfeasibleProblem", "InvalidSnapshot", "Proposal",
    "RebalanceError", "RebalanceInput", "Shape", "SolverFailed", "TradeExplanation", "Tuning",
    "explain", "explanation_payload", "from_snapshot", "propose", "shapley_values",
    "solve_continuous", "solve_trades", "warm_up", "warm_up_explainer",
    "AccountOrders", "HouseholdProposal", "propose_household", "warm_up_household",
]
