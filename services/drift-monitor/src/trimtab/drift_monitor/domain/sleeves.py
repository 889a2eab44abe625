"""Models of models (sleeves): expanding a model's sleeve weights into security targets.

A model holds security weights and sleeve weights (other models), which together sum to at most 1
(the rest is cash). Its expanded targets are its own security weights plus, for each sleeve, the
sleeve's weight times the sleeve's expanded targets; a sleeve's cash becomes the parent's cash.
Nesting is bounded (MAX_DEPTH levels of sleeves below a model) and a model may not contain itself
at any depth. Pure: the caller loads the graph.

Expansion is exact (products are computed with enough precision not to round); `quantized`
rounds down to the book's 10 places so the expanded sum can never exceed the model's sum.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import ROUND_DOWN, Decimal, localcontext

#: Levels of sleeves below a model: a model -> sleeve -> sleeve -> sleeve -> sleeve.
MAX_DEPTH = 4
WEIGHT_Q = Decimal("0.0000000001")

Weights = Mapping[str, Decimal]


class SleeveError(ValueError):
    """The sleeve graph cannot be expanded (cycle, too deep, unknown model)."""


def expand(model_id: str, targets: Mapping[str, Weights], sleeves: Mapping[str, Weights],
           max_depth: int = MAX_DEPTH) -> dict[str, Decimal]:
    """The exact security targets of `model_id`.

    `targets[m]` are model m's own security weights, `sleeves[m]` its sleeve weights by model id
    (models missing from `sleeves` have none). Raises SleeveError on a cycle, on more than
    `max_depth` levels of nesting, or on a sleeve that is not a known model.
    """
    # Weights have 10 places; MAX_DEPTH + 1 factors need at most ~60 digits, so nothing rounds.
    with localcontext() as ctx:
        ctx.prec = 120
        return _expand(model_id, targets, sleeves, (), max_depth)


def _expand(model_id: str, targets: Mapping[str, Weights], sleeves: Mapping[str, Weights],
            path: tuple[str, ...], max_depth: int) -> dict[str, Decimal]:
    if model_id in path:
        raise SleeveError("sleeve cycle: " + " -> ".join((*path[path.index(model_id):], model_id)))
    if model_id not in targets and model_id not in sleeves:
        raise SleeveError(f"unknown model {model_id}" + (f" (a sleeve of {path[-1]})" if path else ""))
    if len(path) > max_depth:
        raise SleeveError(f"sleeves nested deeper than {max_depth} levels: " + " -> ".join((*path, model_id)))
    out = {s: Decimal(w) for s, w in targets.get(model_id, {}).items() if w > 0}
    for child, w in sorted(sleeves.get(model_id, {}).items()):
        for s, cw in _expand(child, targets, sleeves, (*path, model_id), max_depth).items():
            out[s] = out.get(s, Decimal(0)) + w * cw
    return out


def quantized(weights: Weights) -> dict[str, Decimal]:
    """Weights rounded down to 10 places, zeros dropped."""
    out = {s: w.quantize(WEIGHT_Q, rounding=ROUND_DOWN) for s, w in weights.items()}
    return {s: w for s, w in out.items() if w > 0}


def ancestors(model_ids: Iterable[str], sleeves: Mapping[str, Weights]) -> set[str]:
    """Every model that contains one of `model_ids` as a sleeve, at any depth (excluding them)."""
    parents: dict[str, set[str]] = {}
    for parent, children in sleeves.items():
        for child in children:
            parents.setdefault(child, set()).add(parent)
    start = set(model_ids)
    seen: set[str] = set()
    todo = list(start)
    while todo:
        for p in parents.get(todo.pop(), ()):
            if p not in seen:
                seen.add(p)
                todo.append(p)
    return seen - start


def descendants(model_ids: Iterable[str], sleeves: Mapping[str, Weights]) -> set[str]:
    """`model_ids` and every model they contain as sleeves, at any depth (cycle-safe)."""
    seen = set(model_ids)
    todo = list(seen)
    while todo:
        for c in sleeves.get(todo.pop(), {}):
            if c not in seen:
                seen.add(c)
                todo.append(c)
    return seen
