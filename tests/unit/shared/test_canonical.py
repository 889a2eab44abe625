"""Canonical JSON: orjson's fast path writes exactly the standard encoder's bytes, or hands over.

The standard encoder (`canonical._standard`, `json.dumps`) defines the bytes every audit record
and snapshot hash was written with; these tests compare the fast path against it on what could
differ: float spellings, NaN, big integers, keys, strings, types orjson handles natively.
"""

from __future__ import annotations

import dataclasses
import math
import typing
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum, IntEnum, StrEnum
from typing import Annotated, Any, Literal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, PlainSerializer, SerializeAsAny

from trimtab.shared import canonical
from trimtab.shared.canonical import _float_free, _standard, canonical_json
from trimtab.shared.events import AccountSnapshot, RebalanceProposed, SecurityContext
from trimtab.shared.money import DecimalStr


def _same(obj: Any) -> bytes:
    """canonical_json(obj), asserting it equals the standard encoder's bytes (or error)."""
    try:
        want: bytes | BaseException = _standard(obj.model_dump(mode="json") if isinstance(obj, BaseModel) else obj)
    except (TypeError, ValueError) as e:
        want = e
    if isinstance(want, BaseException):
        with pytest.raises(type(want)):
            canonical_json(obj)
        return b""
    got = canonical_json(obj)
    assert got == want
    return got


def test_every_float_spelling_that_differs_goes_to_the_standard_encoder() -> None:
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**63, 40_000, dtype=np.uint64)
    floats = bits.view(np.float64)
    floats = floats[np.isfinite(floats)]
    decimal_like = np.round(rng.uniform(-1, 1, 20_000), 6) * 10.0 ** rng.integers(-12, 20, 20_000)
    powers = np.concatenate([10.0 ** np.arange(-320, 308), -(3.0 * 10.0 ** np.arange(-20, 20))])
    values = np.concatenate([floats, decimal_like, powers, [1e-05, 3e-07, 7.05e-05, 1e-4, 1e16, 5e-324]])
    for chunk in np.array_split(values, 40):
        _same({"x": chunk.tolist(), "y": [[v] for v in chunk.tolist()[:50]]})
    for v in (1e-05, 3e-07, 7.054113918723693e-05, -1.48706429838113e-06):
        assert repr(v).encode() in _same([v])  # `repr`'s spelling, never orjson's


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused_as_before(bad: float) -> None:
    with pytest.raises(ValueError):
        canonical_json({"a": None, "b": [1.0, bad]})
    with pytest.raises(ValueError):
        canonical_json({"b": bad})  # no null in the output either


class _Color(Enum):
    RED = "red"
    AMOUNT = Decimal("1.50")


@dataclasses.dataclass
class _Point:
    x: int


class _Nested(BaseModel):
    price_usd: DecimalStr
    ratio: float | None = None


def test_types_orjson_would_write_its_own_way_keep_the_standard_bytes() -> None:
    _same({"big": 2**64, "small": -(2**63) - 1, "ok": [2**63 - 1, -(2**63)]})
    _same({1: "int key", "a": 1})  # the standard encoder turns the key into a string
    _same({"naive": datetime(2025, 1, 2, 3, 4, 5), "aware": datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5))),
           "day": date(2025, 1, 2), "id": uuid.UUID(int=12345), "enum": _Color.RED, "dec_enum": _Color.AMOUNT,
           "decimals": [Decimal("1E+2"), Decimal("0.0000001"), Decimal("-0")], "model": _Nested(price_usd=Decimal("1.5"))})
    _same({"nan_in_model": _Nested(price_usd=Decimal(1), ratio=math.nan)})  # refused
    _same({"dataclass": _Point(1)})  # refused by both
    _same({"array": np.arange(3)})  # refused by both
    _same({"tuple": (1, "a"), "bools": [True, False, None]})

    class MyStr(str):
        pass

    _same({"sub": MyStr("x"), MyStr("k"): 1})


@settings(max_examples=300, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.decimals(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=30))
def test_any_json_value_gives_the_standard_bytes(value: Any) -> None:
    _same(value)


def _snapshot(basis: str = "81.20", target: str = "0.45", **extra: Any) -> AccountSnapshot:
    return AccountSnapshot.model_validate({
        "account_id": "a-1", "cash_usd": "1000.00", "as_of": "2025-03-14T20:00:00Z",
        "positions": [{"symbol": "VTI", "shares": "10", "lots": [
            {"lot_id": "l1", "shares": "10", "cost_basis_usd_per_share": basis, "acquired_on": "2024-01-02"}]}],
        "targets": {"VTI": target, "BND": "0.5"},
        "securities": [{"symbol": "VTI", "price_usd": "1E+2"}, {"symbol": "BND", "price_usd": "72.10"}],
        **extra,
    })


def test_snapshots_hash_on_the_fast_path_with_the_standard_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    snap = _snapshot(restricted=["X"], household_id=None)
    want = _standard(snap.model_dump(mode="json"))
    assert b"null" in want  # a float-free model may hold None: still the fast path
    monkeypatch.setattr(canonical, "_standard", lambda obj: pytest.fail("fell back to the standard encoder"))
    assert canonical_json(snap) == want


def test_a_fraction_spelt_like_a_small_float_only_costs_the_fallback() -> None:
    snap = _snapshot(basis="0.000001", target="0.00001")
    assert b'"0.00001"' in _same(snap)  # a string, not a float; the guard cannot tell: same bytes


class _WithFloat(BaseModel):
    x: float


class _WithAny(BaseModel):
    x: Any = None


class _FloatOut(BaseModel):
    x: Annotated[Decimal, PlainSerializer(float, return_type=float)]


class _Tree(BaseModel):
    name: str
    children: list[_Tree] = []
    kind: Literal["a", "b"] = "a"
    when: datetime | None = None
    amounts: dict[str, DecimalStr] = {}


class _FloatLiteral(BaseModel):
    x: Literal[0.5, 1] = 1


def test_float_free_models_are_recognized_and_nothing_else() -> None:
    assert _float_free(AccountSnapshot) and _float_free(SecurityContext) and _float_free(_Tree)
    for model in (_WithFloat, _WithAny, _FloatOut, _FloatLiteral, RebalanceProposed, _Nested):
        assert not _float_free(model), model
    with pytest.raises(ValueError):
        canonical_json(_WithFloat(x=math.nan))  # not float-free: the null check applies
    assert canonical_json(_Tree(name="r", children=[_Tree(name="c", when=datetime(2025, 1, 1, tzinfo=UTC))])) == \
        _standard(_Tree(name="r", children=[_Tree(name="c", when=datetime(2025, 1, 1, tzinfo=UTC))]).model_dump(mode="json"))


def test_a_bare_small_float_and_one_beside_strings_alike_keep_repr_spelling() -> None:
    assert _same(1e-05) == b"1e-05" and _same(-3e-07) == b"-3e-07"
    assert _same({"note": "0.00001 e-5", "x": 2.5e-06, "y": None}) == b'{"note":"0.00001 e-5","x":2.5e-06,"y":null}'


def test_envelopes_with_nulls_and_decimal_strings_stay_on_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """An event's envelope (a dict) holds nulls and Decimal strings such as "0.0000123": neither
    may send it to the standard encoder, which takes about twice as long."""
    doc = {"causation_id": None, "payload": {"objective": {"drift": "0.0000123456", "tax": "-0.0000010000"},
                                             "loadings": [[0.15, -0.25], [1e-4, 12.5]], "note": "wash-sale rule"}}
    want = _standard(doc)
    monkeypatch.setattr(canonical, "_standard", lambda obj: pytest.fail("fell back to the standard encoder"))
    assert canonical_json(doc) == want


def test_the_benchmark_runs_and_finds_the_same_bytes() -> None:
    """bench/canonical.py checks each document's bytes against the standard encoder first."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[3] / "bench" / "canonical.py"
    out = subprocess.run([sys.executable, str(script), "--repeats", "1", "--json"], check=True,
                         capture_output=True, text=True, timeout=300).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    assert {"snapshot_ratio", "context_ratio", "tick_envelope_ratio", "proposal_envelope_ratio"} <= set(figures)


class _Raises(Enum):
    A = "a"

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparison")

    __hash__ = Enum.__hash__


class _Size(IntEnum):
    ONE = 1


class _Side(StrEnum):
    BUY = "buy"


def test_enums_and_comparisons_that_fail_keep_the_standard_bytes() -> None:
    """IntEnum and StrEnum members are written as their content, as json.dumps does (also as
    keys); an `__eq__` that raises makes the NaN check unsure, not the call fail."""
    assert _same({"size": _Size.ONE, "side": [_Side.BUY], _Side.BUY: 1}) == b'{"buy":1,"side":["buy"],"size":1}'
    assert _same({"x": _Raises.A, "y": None}) == b'{"x":"a","y":null}'


class _Base(BaseModel):
    a: str = "x"


class _Sub(_Base):
    f: float


class _AsAny(BaseModel):
    b: SerializeAsAny[_Base]


class _AsFloat:
    """A marker with its own core schema: dumps a Decimal as a float."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(
            lambda v: v, handler(source),
            serialization=core_schema.plain_serializer_function_ser_schema(float))


class _Marked(BaseModel):
    x: Annotated[Decimal, _AsFloat()]


class _Bare(BaseModel):
    xs: typing.List  # noqa: UP006 - the bare generic is the point


def test_models_that_may_dump_a_float_through_metadata_are_not_float_free() -> None:
    for model in (_AsAny, _Marked, _Bare):
        assert not _float_free(model), model
    with pytest.raises(ValueError):
        canonical_json(_AsAny(b=_Sub(f=math.nan)))
    _same(_Marked(x=Decimal("1E+400")))  # pydantic's JSON mode dumps the infinity as None
