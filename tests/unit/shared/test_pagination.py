"""Keyset cursors: round trip, a "|" inside the last part, and a clear 422 for anything else."""

from __future__ import annotations

import pytest

from trimtab.shared.errors import Invalid
from trimtab.shared.pagination import decode_cursor, encode_cursor


def test_cursor_round_trip_keeps_a_bar_in_the_last_part() -> None:
    assert decode_cursor(encode_cursor("acct|7"), 1) == ["acct|7"]
    c = encode_cursor("2026-11-24T17:00:00+00:00", "0b7c")
    assert "=" not in c and decode_cursor(c, 2) == ["2026-11-24T17:00:00+00:00", "0b7c"]


@pytest.mark.parametrize("cursor, parts", [("not base64!", 1), ("", 1), (encode_cursor("only-one"), 2),
                                           (encode_cursor("a", ""), 2), ("_w", 1)])
def test_a_bad_cursor_is_a_422(cursor: str, parts: int) -> None:
    with pytest.raises(Invalid) as e:
        decode_cursor(cursor, parts)
    assert e.value.status == 422
