"""Reference data in the event flow (pure parts): what `merge_reference` adds to a solve's
context (the event's own data wins, the factor model is cut to the snapshot's symbols, an empty
reference changes nothing), and that the cut model solves exactly as the whole one."""

from __future__ import annotations

import uuid
from decimal import Decimal
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from tests.integration.optimizer.snapshots import drifted
from trimtab.optimizer.engine import _solve
from trimtab.optimizer.reference import (
    IndexedModel,
    Reference,
    merge_reference,
    restrict_model,
    securities_from_rows,
    snapshot_symbols,
)
from trimtab.optimizer.schemas import SecuritiesReferenceIn, SecurityReferenceIn
from trimtab.rebalance import RebalanceContext
from trimtab.rebalance.inputs import from_snapshot
from trimtab.rebalance.solve import shape_of
from trimtab.shared.events import FactorModelContext, OptimizerContext, SecurityContext

SNAP = drifted("a1")  # VTI, VXUS, BND held or priced; VNQ priced and targeted
SYMBOLS = snapshot_symbols([SNAP])

VTI = SecurityContext(sigma_daily=Decimal("0.012"), adv_usd=Decimal("5000000000"))
BND = SecurityContext(sigma_daily=Decimal("0.003"), adv_usd=Decimal("300000000"), wash_group="us-bonds")
QQQ = SecurityContext(sigma_daily=Decimal("0.015"), adv_usd=Decimal("9000000000"))
#: A model of six symbols, two of them not in the snapshot (QQQ first, IEF last), two factors.
MODEL = FactorModelContext(
    name="stat-60d", symbols=["QQQ", "VTI", "BND", "VXUS", "VNQ", "IEF"],
    loadings=[[0.013, 0.001], [0.011, 0.002], [0.001, 0.004], [0.010, -0.003], [0.012, 0.005], [0.0, 0.004]],
    specific_var=[2e-5, 1e-5, 2e-6, 3e-5, 4e-5, 1e-6])
REFERENCE = Reference(securities={"VTI": VTI, "BND": BND, "QQQ": QQQ}, factor_model=MODEL)


def test_the_snapshots_symbols_are_its_securities_positions_and_targets() -> None:
    assert SYMBOLS == {"VTI", "VXUS", "BND", "VNQ"}
    extra = SNAP.model_copy(update={"targets": {**SNAP.targets, "QQQ": Decimal("0")}})
    assert snapshot_symbols([SNAP, extra]) == SYMBOLS | {"QQQ"}


def test_an_empty_reference_leaves_the_context_as_it_was() -> None:
    assert merge_reference(None, SYMBOLS, Reference()) is None
    given = OptimizerContext(tax_budget_usd=Decimal("500"))
    assert merge_reference(given, SYMBOLS, Reference()) is given
    # reference data of other symbols only, or rows without any field set: nothing to add
    other = Reference(securities={"QQQ": QQQ, "VTI": SecurityContext()},
                      factor_model=FactorModelContext(symbols=["QQQ"], loadings=[[0.01]], specific_var=[1e-5]))
    assert merge_reference(None, SYMBOLS, other) is None
    assert merge_reference(given, SYMBOLS, other) is given


def test_the_reference_fills_in_the_snapshots_symbols_and_the_model_is_cut_to_them() -> None:
    given = OptimizerContext(tax_budget_usd=Decimal("500"))
    out = merge_reference(given, SYMBOLS, REFERENCE)
    assert out is not None and out.tax_budget_usd == Decimal("500")  # the rest of the context kept
    assert out.securities == {"BND": BND, "VTI": VTI}  # QQQ is not the snapshot's
    assert list(out.securities) == ["BND", "VTI"]  # sorted: a stable context
    fm = out.factor_model
    assert fm is not None and fm.name == "stat-60d"
    assert fm.symbols == ["VTI", "BND", "VXUS", "VNQ"]  # the model's order, its rows of the snapshot
    assert fm.loadings == [[0.011, 0.002], [0.001, 0.004], [0.010, -0.003], [0.012, 0.005]]
    assert fm.specific_var == [1e-5, 2e-6, 3e-5, 4e-5]
    # no context given: one is made for the reference data
    alone = merge_reference(None, SYMBOLS, REFERENCE)
    assert alone is not None and alone == out.model_copy(update={"tax_budget_usd": None})


def test_the_events_own_data_wins() -> None:
    mine = SecurityContext(wash_group="total-us")  # no sigma/ADV: the event's entry wins whole
    own_model = FactorModelContext(name="drift's", symbols=["VTI"], loadings=[[0.02]], specific_var=[1e-4])
    given = OptimizerContext(securities={"VTI": mine}, factor_model=own_model)
    out = merge_reference(given, SYMBOLS, REFERENCE)
    assert out is not None
    assert out.securities == {"BND": BND, "VTI": mine}
    assert out.factor_model == own_model


def test_restrict_model_keeps_a_model_wholly_inside_and_drops_one_wholly_outside() -> None:
    inside = restrict_model(MODEL, set(MODEL.symbols) | {"XYZ"})
    assert inside is MODEL
    assert restrict_model(MODEL, {"XYZ"}) is None


def test_the_cut_model_solves_exactly_as_the_whole_one() -> None:
    """The library normalizes by the rows of the solve's own symbols and gives a symbol without
    a row zero loadings: the model's other rows never matter, so cutting them changes nothing."""
    whole = OptimizerContext(securities={"VTI": VTI, "BND": BND}, factor_model=MODEL)
    cut = merge_reference(None, SYMBOLS, REFERENCE)
    assert cut is not None and cut.factor_model != MODEL
    pid = str(uuid.uuid4())
    a = _solve(SNAP.model_dump(mode="json"), pid, None, whole.model_dump(mode="json")).proposal
    b = _solve(SNAP.model_dump(mode="json"), pid, None, cut.model_dump(mode="json")).proposal
    plain = _solve(SNAP.model_dump(mode="json"), pid, None).proposal
    assert a is not None and b is not None and plain is not None
    assert b.orders == a.orders and b.objective == a.objective and b.post_weights == a.post_weights
    assert b.orders != plain.orders  # the model and the impact data do change the solve
    assert Decimal(b.objective["risk"]) > 0 and Decimal(plain.objective["risk"]) == 0
    assert b.cost_breakdown is not None and b.cost_breakdown["impact_usd"] > 0
    # the recorded context is the cut one, and re-solving it gives a shape with factors and impact
    assert b.context is not None and b.context.factor_model is not None
    assert b.context.factor_model.symbols == ["VTI", "BND", "VXUS", "VNQ"]
    shape = shape_of(from_snapshot(SNAP, RebalanceContext.from_json(b.context.model_dump(mode="json"))))
    assert shape.n_factors >= 2 and shape.impact


def test_a_model_without_a_row_for_a_snapshot_symbol_is_not_an_error() -> None:
    """VNQ has no row: the library gives it zero loadings and the average variance."""
    partial = FactorModelContext(name="m", symbols=["VTI", "BND"], loadings=[[0.011], [0.001]],
                                 specific_var=[1e-5, 2e-6])
    ctx = merge_reference(None, SYMBOLS, Reference(factor_model=partial))
    assert ctx is not None and ctx.factor_model == partial
    out = _solve(SNAP.model_dump(mode="json"), str(uuid.uuid4()), None, ctx.model_dump(mode="json"))
    assert out.failure is None and out.proposal is not None and out.proposal.orders


def test_the_query_rows_and_the_parsed_model_give_the_symbols_reference() -> None:
    rows = [SimpleNamespace(symbol="VTI", sigma_daily=Decimal("0.012"), adv_usd=Decimal("5e9"),
                            wash_group=None, substitute_group="us-eq", tax_drag=None)]
    assert securities_from_rows(rows) == {"VTI": SecurityContext(
        sigma_daily=Decimal("0.012"), adv_usd=Decimal("5e9"), substitute_group="us-eq")}
    indexed = IndexedModel(MODEL)
    cut = indexed.rows_of(["VNQ", "BND", "XYZ", "BND"])
    assert cut == FactorModelContext(name="stat-60d", symbols=["BND", "VNQ"],
                                     loadings=[[0.001, 0.004], [0.012, 0.005]], specific_var=[2e-6, 4e-5])
    assert cut == restrict_model(MODEL, ["VNQ", "BND"])  # the same cut as the pure merge's
    assert indexed.rows_of(["XYZ"]) is None and indexed.rows_of(MODEL.symbols) is MODEL


@pytest.mark.parametrize("bad", [
    {"symbol": "VTI", "sigma_daily": "-0.01"},       # volatility is nonnegative
    {"symbol": "VTI", "adv_usd": "0"},               # a traded value is positive
    {"symbol": "VTI", "wash_group": ""},             # a group has a name
    {"symbol": "vti"},                               # symbols as the securities master spells them
    {"symbol": "VTI", "beta": "1.1"},                # unknown fields are refused
    {"sigma_daily": "0.01"},                         # the symbol is required
])
def test_a_reference_row_is_validated_as_a_security_context(bad: dict) -> None:
    with pytest.raises(ValidationError):
        SecurityReferenceIn.model_validate(bad)


def test_a_bulk_body_is_one_to_ten_thousand_rows() -> None:
    ok = SecuritiesReferenceIn.model_validate([{"symbol": "VTI", "sigma_daily": "0.012"}])
    assert ok.root[0].sigma_daily == Decimal("0.012") and ok.root[0].adv_usd is None
    with pytest.raises(ValidationError):
        SecuritiesReferenceIn.model_validate([])
