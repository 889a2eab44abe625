"""The optimizer's version: recorded with every proposal so a decision can be replayed.

Bump `FORMULATION` whenever the problem, a default driver weight or a tuning constant changes:
the same snapshot must give the same orders under the same version, and the audit record relies
on that promise.
"""

from __future__ import annotations

import cvxpy

#: The version of the formulation (objective, constraints, defaults, rounding rules).
FORMULATION = "6"
#: Which solvers answer, in which order (bumped like FORMULATION: two solvers may split a tie,
#: between lots of one security, differently). 1: Clarabel; 2 (tenth session): the structured
#: interior point first (ipm.py), Clarabel for the rest.
SOLVERS = "2"
#: Package version of trimtab-rebalance.
PACKAGE_VERSION = "0.1.0"
#: What proposals and explanations carry as `optimizer_version`.
OPTIMIZER_VERSION = f"trimtab-rebalance/{PACKAGE_VERSION}+f{FORMULATION}.s{SOLVERS}"
CVXPY_VERSION: str = cvxpy.__version__
