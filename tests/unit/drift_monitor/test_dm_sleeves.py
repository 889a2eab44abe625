"""Models of models (sleeves): expansion sums, nesting, cycles and depth, the ancestors that a
child's change re-targets, the API model's validation, and a hypothesis property that expanded
weights equal the weighted sum of the children's expanded weights."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from trimtab.drift_monitor.domain.sleeves import (
    MAX_DEPTH,
    SleeveError,
    ancestors,
    descendants,
    expand,
    quantized,
)
from trimtab.drift_monitor.schemas import ModelIn

D = Decimal


def test_weights_multiply_through_and_overlaps_add() -> None:
    targets = {"us_core": {"VTI": D("0.7"), "VXUS": D("0.3")},
               "income": {"BND": D("0.8"), "VTI": D("0.1")},  # 0.1 cash inside the sleeve
               "balanced": {"GLD": D("0.05")}}
    sleeves = {"balanced": {"us_core": D("0.6"), "income": D("0.3")}}
    out = expand("balanced", targets, sleeves)
    assert out == {"GLD": D("0.05"), "VTI": D("0.45"), "VXUS": D("0.18"), "BND": D("0.24")}
    # The sleeve's own cash (0.1 x 0.3) and the parent's (1 - 0.05 - 0.6 - 0.3) stay cash.
    assert D(1) - sum(out.values()) == D("0.08")


def test_nested_sleeves_and_depth_limit() -> None:
    targets = {f"m{i}": {} for i in range(MAX_DEPTH + 2)}
    targets[f"m{MAX_DEPTH + 1}"] = {"AAA": D("1")}
    sleeves = {f"m{i}": {f"m{i + 1}": D("0.5")} for i in range(MAX_DEPTH + 1)}
    # m1 has MAX_DEPTH levels below it: fine, 0.5 ** MAX_DEPTH of AAA.
    assert expand("m1", targets, sleeves) == {"AAA": D("0.5") ** MAX_DEPTH}
    with pytest.raises(SleeveError, match="deeper"):
        expand("m0", targets, sleeves)


def test_cycles_and_unknown_sleeves_are_refused() -> None:
    targets = {"a": {"X": D("0.1")}, "b": {}, "c": {}}
    with pytest.raises(SleeveError, match="cycle: a -> b -> c -> a"):
        expand("a", targets, {"a": {"b": D("0.5")}, "b": {"c": D("0.5")}, "c": {"a": D("0.5")}})
    with pytest.raises(SleeveError, match="cycle"):
        expand("a", targets, {"a": {"a": D("0.5")}})
    with pytest.raises(SleeveError, match="unknown model zz"):
        expand("a", targets, {"a": {"zz": D("0.5")}})


def test_a_diamond_is_not_a_cycle() -> None:
    targets = {"top": {}, "l": {}, "r": {}, "leaf": {"AAA": D("1")}}
    sleeves = {"top": {"l": D("0.5"), "r": D("0.5")}, "l": {"leaf": D("1")}, "r": {"leaf": D("1")}}
    assert expand("top", targets, sleeves) == {"AAA": D(1)}


def test_ancestors_and_descendants() -> None:
    sleeves = {"p1": {"c": D("0.5")}, "p2": {"p1": D("0.5")}, "p3": {"x": D("1")}, "c": {"g": D("1")}}
    assert ancestors(["c"], sleeves) == {"p1", "p2"}
    assert ancestors(["p3"], sleeves) == set()
    assert descendants(["p2"], sleeves) == {"p2", "p1", "c", "g"}


def test_quantized_rounds_down_and_never_exceeds_the_exact_sum() -> None:
    exact = {"A": D(1) / D(3), "B": D(2) / D(3), "Z": D("0.00000000001")}
    q = quantized(exact)
    assert q == {"A": D("0.3333333333"), "B": D("0.6666666666")}
    assert sum(q.values()) <= sum(exact.values())


def test_model_in_counts_sleeves_in_the_sum_and_refuses_itself() -> None:
    ok = ModelIn.model_validate({"model_id": "bal", "name": "B", "models": {"us_core": "0.6", "income": "0.4"}})
    assert ok.targets == {} and ok.models == {"us_core": D("0.6"), "income": D("0.4")}
    with pytest.raises(ValidationError, match="more than 1"):
        ModelIn.model_validate({"model_id": "bal", "name": "B", "targets": {"AAA": "0.5"},
                                "models": {"us_core": "0.6"}})
    with pytest.raises(ValidationError, match="sleeve of itself"):
        ModelIn.model_validate({"model_id": "bal", "name": "B", "models": {"bal": "0.5"}})
    with pytest.raises(ValidationError):
        ModelIn.model_validate({"model_id": "bal", "name": "B", "models": {"us_core": "0"}})


# ---------------------------------------------------------------- property

SYMS = ["AAA", "BBB", "CCC", "DDD", "EEE"]
weight = st.integers(min_value=1, max_value=10**10).map(lambda n: D(n) / D(10**10))


@st.composite
def graphs(draw):  # type: ignore[no-untyped-def]
    """A random acyclic sleeve graph: model i may only contain models j > i (at most MAX_DEPTH
    levels), each model's own and sleeve weights summing to at most 1."""
    n = draw(st.integers(min_value=1, max_value=MAX_DEPTH + 1))
    targets, sleeves = {}, {}
    for i in range(n):
        syms = draw(st.lists(st.sampled_from(SYMS), unique=True, max_size=4))
        kids = draw(st.lists(st.integers(min_value=i + 1, max_value=n - 1), unique=True, max_size=3)) if i < n - 1 else []
        raw = [draw(weight) for _ in syms + kids]
        total = sum(raw, D(0))
        scale = D(1) if total <= 1 else draw(st.sampled_from([D("0.5"), D("0.25")])) / total
        ws = [(w * scale).quantize(D("1e-10"), rounding="ROUND_DOWN") for w in raw]
        targets[f"m{i}"] = {s: w for s, w in zip(syms, ws, strict=False) if w > 0}
        sleeves[f"m{i}"] = {f"m{k}": w for k, w in zip(kids, ws[len(syms):], strict=True) if w > 0}
    return targets, sleeves


def reference(model: str, targets, sleeves) -> dict[str, Fraction]:  # type: ignore[no-untyped-def]
    """Independent exact computation with Fractions."""
    out = {s: Fraction(w) for s, w in targets[model].items()}
    for child, w in sleeves.get(model, {}).items():
        for s, cw in reference(child, targets, sleeves).items():
            out[s] = out.get(s, Fraction(0)) + Fraction(w) * cw
    return out


@settings(max_examples=200, deadline=None)
@given(graphs())
def test_expanded_weights_equal_the_weighted_sum(g) -> None:  # type: ignore[no-untyped-def]
    targets, sleeves = g
    for m in targets:
        out = expand(m, targets, sleeves)
        ref = reference(m, targets, sleeves)
        assert {s: Fraction(w) for s, w in out.items() if w} == {s: w for s, w in ref.items() if w}
        # One level of the definition: own weights plus each child's expansion times its weight.
        direct = {s: Fraction(w) for s, w in targets[m].items()}
        for c, w in sleeves.get(m, {}).items():
            for s, cw in expand(c, targets, sleeves).items():
                direct[s] = direct.get(s, Fraction(0)) + Fraction(w) * Fraction(cw)
        assert {s: Fraction(w) for s, w in out.items()} == direct
        total = sum(out.values(), D(0))
        assert total <= sum(targets[m].values(), D(0)) + sum(sleeves.get(m, {}).values(), D(0)) <= 1
        q = quantized(out)
        assert all(0 <= out[s] - q.get(s, D(0)) < D("1e-10") for s in out)
