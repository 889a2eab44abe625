"""The audit API's time filters (`since`, `until`): UTC when they carry no offset, and a time
with no UTC value (year 0 or 10000 once the offset is applied) is refused, not left to overflow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from trimtab.audit.api import _instant


@pytest.mark.parametrize("value", [datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14))),
                                   datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))])
def test_a_time_without_a_utc_value_is_refused(value):
    with pytest.raises(ValueError, match="out of range"):
        _instant(value)


def test_times_that_exist_are_kept_and_naive_ones_are_utc():
    plus14 = datetime(1, 1, 1, 14, tzinfo=timezone(timedelta(hours=14)))
    assert _instant(plus14) is plus14
    assert _instant(datetime(9999, 12, 31, 23, 59, 59)) == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert _instant(None) is None
