"""Every account under every scenario in one matrix pass. Pure numpy.

`W` is (accounts x symbols), weights as fractions of account value (cash is what a row leaves
out; it does not move). Results are fractions of account value:
- `pnl` (accounts x scenarios) = W @ shocks: the scenario's end-to-end gain (negative: loss);
- `worst` (accounts x scenarios): for historical scenarios, the deepest fall from the account's
  running peak inside the window (`max_t 1 - V_t / max_{u<=t} V_u` with `V_t = 1 + W @ path_t`,
  buy-and-hold from the start); for instantaneous shocks, the loss itself (`max(-pnl, 0)`).
All historical paths are stacked into one (symbols x days) matrix so that a single matrix product
values every account on every day of every scenario.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scenarios import ShockSet


@dataclass(frozen=True)
class StressResult:
    pnl: np.ndarray
    worst: np.ndarray

    @property
    def worst_scenario(self) -> np.ndarray:
        """Per account, the column of its deepest loss."""
        return self.worst.argmax(axis=1)


def stress(W: np.ndarray, shocks: ShockSet) -> StressResult:
    W = np.atleast_2d(np.asarray(W, dtype=float))
    if W.shape[1] != len(shocks.symbols):
        raise ValueError("W must have one column per shocked symbol")
    pnl = W @ shocks.shocks
    worst = np.maximum(-pnl, 0.0)
    cols = [j for j, p in enumerate(shocks.paths) if p is not None]
    if cols:
        stacked = np.concatenate([shocks.paths[j] for j in cols], axis=0)  # type: ignore[misc]
        values = 1.0 + W @ stacked.T  # (accounts x all path days): one product
        at = 0
        for j in cols:
            t = len(shocks.paths[j])  # type: ignore[arg-type]
            seg = values[:, at:at + t]
            at += t
            peak = np.maximum(np.maximum.accumulate(seg, axis=1), 1.0)  # the start is a peak
            worst[:, j] = (1.0 - seg / peak).max(axis=1)
    return StressResult(pnl, worst)
