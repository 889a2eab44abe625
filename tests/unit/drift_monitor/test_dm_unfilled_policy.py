"""Hysteresis after an OMS report that orders will never fill (`policy.after_unfilled`): only the
proposal the account is executing re-arms it, with the quiet interval of a refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from trimtab.drift_monitor.domain.policy import (
    ARMED,
    EXECUTING,
    PENDING,
    Transition,
    after_unfilled,
    may_fire,
)


def test_the_executing_proposals_report_rearms_with_the_quiet_interval() -> None:
    t = after_unfilled(EXECUTING, True)
    assert t == Transition(ARMED, True)
    now = datetime(2024, 1, 3, tzinfo=UTC)
    # rearmed_at = now: quiet for the interval, then free to fire
    assert not may_fire(t.state, now, now + timedelta(seconds=299), 300)
    assert may_fire(t.state, now, now + timedelta(seconds=300), 300)


@pytest.mark.parametrize(("state", "of_pending"), [
    (EXECUTING, False),  # an older approval's report
    (PENDING, True),  # before its approval: the approval finds the stored report
    (PENDING, False),
    (ARMED, True),
    (ARMED, False),
])
def test_any_other_report_changes_nothing(state: str, of_pending: bool) -> None:
    assert after_unfilled(state, of_pending) == Transition(state, False)  # type: ignore[arg-type]
