"""Canonical JSON: the one byte representation that hashes, signatures and replay rely on.

Sorted keys, no insignificant whitespace, UTF-8, Decimals as their exact decimal strings,
datetimes as RFC 3339 UTC. The same object always gives the same bytes.

The bytes are defined by the standard library's encoder (`json.dumps` with sorted keys, compact
separators, `ensure_ascii=False`, `allow_nan=False`, floats as `repr`): that is what every audit
record and snapshot hash written so far used. orjson writes the same bytes ten to twenty times
faster except in three places, so it is used first and its answer kept only when none of them
can be at stake (docs/optimizer.md, "Canonical JSON at orjson's speed"):

- floats of magnitude below 1e-4: orjson writes `0.00001` and `3e-7` where `repr` writes `1e-05`
  and `3e-07`. Those are the only float spellings that differ (12 million random doubles and
  decimals checked), and each starts `0.0000` or has a one-digit negative exponent, which
  `canonical_json` finds in the output (a match inside a string is a harmless false alarm);
- NaN and infinities: orjson writes `null`, the standard encoder refuses them. Where the output
  holds a `null`, it is read back and compared with the object (None is not NaN), unless the
  object cannot hold a float at all: a pydantic model whose fields are statically float-free
  (`_float_free`), such as a snapshot;
- anything orjson does not serialize natively the way the standard encoder does (non-string keys,
  integers beyond 64 bits, subclasses of builtins, dataclasses, times): orjson raises, or hands
  the object to `_default`, which refuses what the standard path would have refused.

In every one of these cases the standard encoder writes the answer, so the bytes never change.
What this cannot see (a review found them; none is reachable from the platform's data, whose
documents are pydantic JSON-mode dumps and plain dicts of JSON values): an enum mixed with `int`
or `str` whose value is not its content (a custom `__new__`: orjson writes the value, the
standard encoder the content; for `IntEnum` and `StrEnum` they are the same), an `__eq__` that
lies (an object equal to what orjson read back although a NaN is in it), `orjson.Fragment`, and
a float-free model built with `model_construct` from values of other types (a float put in a
`str` field: its output is not checked at all, as a validated instance cannot hold one).
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from functools import cache
from typing import Any
from uuid import UUID

import annotated_types
import orjson
from pydantic import BaseModel, PlainSerializer, WrapSerializer
from pydantic.fields import FieldInfo

_ORJSON_OPTIONS = (orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
                   | orjson.OPT_PASSTHROUGH_SUBCLASS)
_NUMBER_BEFORE = frozenset(b":,[")  # what precedes a number (or its minus sign) in the output
_NONZERO_DIGITS = frozenset(b"123456789")
_DIGITS = frozenset(b"0123456789")


def _float_spelling_may_differ(out: bytes) -> bool:
    """Does `out` (orjson's) hold a number written `0.0000...` or with a one-digit negative
    exponent: the only float spellings in which orjson and `repr` differ (module docstring)?
    A number starts the output or follows `:`, `,` or `[`, after its `-` if negative; the same
    bytes inside a string (a Decimal's "-0.00001234") are a false alarm only. Occurrences are found with
    `bytes.find`: a regular expression with a character class before the literal took as long
    as the standard encoder."""
    at = out.find(b"0.0000")
    while at >= 0:
        start = at - 1 if at and out[at - 1] == 45 else at  # 45: "-"
        if start == 0 or out[start - 1] in _NUMBER_BEFORE:
            return True
        at = out.find(b"0.0000", at + 6)
    at = out.find(b"e-")
    while at >= 0:
        if (at + 2 < len(out) and out[at + 2] in _NONZERO_DIGITS
                and not (at + 3 < len(out) and out[at + 3] in _DIGITS)):
            return True
        at = out.find(b"e-", at + 2)
    return False


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return format(obj, "f")
    if isinstance(obj, datetime):
        if obj.tzinfo is None:
            obj = obj.replace(tzinfo=UTC)
        return obj.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(obj, date):
        return obj.isoformat()
    if isinstance(obj, UUID):
        return str(obj)
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    raise TypeError(f"not canonically serializable: {type(obj).__name__}")


def _standard(obj: Any) -> bytes:
    return json.dumps(
        obj, default=_default, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
        allow_nan=False,
    ).encode()


def canonical_json(obj: Any) -> bytes:
    nan_free = False  # statically free of floats, so of NaN too
    if isinstance(obj, BaseModel):
        nan_free = _float_free(type(obj))
        obj = obj.model_dump(mode="json")
    try:
        out = orjson.dumps(obj, default=_default, option=_ORJSON_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError included: the standard encoder decides
        return _standard(obj)
    if nan_free:
        return out  # a float-free model's dump holds no float: no spelling or NaN to check
    if _float_spelling_may_differ(out) or (b"null" in out and _may_hide_nan(out, obj)):
        return _standard(obj)
    return out


def _may_hide_nan(out: bytes, obj: Any) -> bool:
    """Could a `null` of orjson's `out` be a NaN or infinity of `obj`? Reading `out` back gives
    None where `obj` holds one, so the two differ (so they do where `_default` turned an object
    into a string: a false alarm, answered alike). An `__eq__` that raises: unsure."""
    try:
        return bool(orjson.loads(out) != obj)
    except Exception:  # noqa: BLE001 - any failure of a comparison means: let the standard path decide
        return True


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_hash(obj: Any) -> str:
    return sha256_hex(canonical_json(obj))


# ------------------------------------------------------------------ which models hold no float

#: Leaf types whose JSON form (`model_dump(mode="json")`) is never a float.
_NO_FLOAT_LEAVES: frozenset[Any] = frozenset({str, int, bool, type(None), Decimal, date, datetime, uuid.UUID})
_CONTAINERS: frozenset[Any] = frozenset({list, tuple, set, frozenset, dict, typing.Union, types.UnionType})


@cache
def _float_free(model: type[BaseModel]) -> bool:
    """True when no instance of `model` can dump (JSON mode) a float: every field's type is built
    from strings, integers, booleans, None, Decimals, dates, UUIDs, float-free literals and
    enums, and float-free models, with no custom serializer but one declared to return `str`.
    False whenever unsure (Any, float, a serializer of another type, computed fields)."""
    return _model_float_free(model, frozenset())


def _model_float_free(model: type[BaseModel], seen: frozenset[type]) -> bool:
    if model in seen:
        return True  # a recursive model: its fields are being checked further up
    decorators = model.__pydantic_decorators__
    if decorators.model_serializers or decorators.field_serializers or decorators.computed_fields:
        return False
    seen = seen | {model}
    return all(_type_float_free(f.annotation, seen) and _metadata_float_free(f.metadata)
               for f in model.model_fields.values())


def _metadata_float_free(metadata: list[Any]) -> bool:
    """Only metadata known not to change what a field dumps: annotated-types constraints (`gt`,
    `max_length`...), a nested `Field`, and serializers declared to return `str`. Anything else
    (`SerializeAsAny`, a marker with its own core schema) may dump a float."""
    for m in metadata:
        if isinstance(m, PlainSerializer | WrapSerializer):
            if m.return_type is not str:
                return False
        elif isinstance(m, FieldInfo):
            if not _metadata_float_free(m.metadata):
                return False
        elif not isinstance(m, annotated_types.BaseMetadata):
            return False
    return True


def _type_float_free(tp: Any, seen: frozenset[type]) -> bool:
    if tp in _NO_FLOAT_LEAVES:
        return True
    if isinstance(tp, type):
        if issubclass(tp, BaseModel):
            return _model_float_free(tp, seen)
        if issubclass(tp, Enum):  # (JSON mode dumps an enum's value)
            return not any(isinstance(m.value, float) for m in tp)
        return False  # float, subclasses of builtins, anything else: unsure
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _type_float_free(args[0], seen) and _metadata_float_free(list(args[1:]))
    if origin is typing.Literal:
        return not any(isinstance(a, float) for a in args)
    if origin in _CONTAINERS:
        # A bare `typing.List` (no arguments) may hold anything.
        return bool(args) and all(a is Ellipsis or _type_float_free(a, seen) for a in args)
    return False
