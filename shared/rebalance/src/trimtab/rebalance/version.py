"""The optimizer's version: recorded with every proposal so a decision can be replayed.

Bump `FORMULATION` whenever the problem, a default driver weight or a tuning constant changes:
the same snapshot must give the same orders under the same version, and the audit record relies
on that promise.
"""

from __future__ import annotations

import cvxpy

#: The version of the formulation (objective, constraints, defaults, rounding rules).
FORMULATION = "6"
#: Package version of trimtab-rebalance.
PACKAGE_VERSION = "0.1.0"
#: What proposals and explanations carry as `optimizer_version`.
OPTIMIZER_VERSION = f"trimtab-rebalance/{PACKAGE_VERSION}+f{FORMULATION}"
CVXPY_VERSION: str = cvxpy.__version__
