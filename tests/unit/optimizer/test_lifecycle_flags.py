"""Which risk flags stop an automatic approval."""

from trimtab.optimizer.domain.lifecycle import blocking_flags


def test_informational_flags_do_not_block_but_breaches_and_unknown_flags_do() -> None:
    assert blocking_flags(["prior_used:AAA", "prior_used:BBB", "still_above_tolerance"]) == []
    assert blocking_flags(["prior_used:AAA", "concentration"]) == ["concentration"]
    assert blocking_flags(["no_auto_approve"]) == ["no_auto_approve"]
    assert blocking_flags(["something_new"]) == ["something_new"]


def test_a_breach_listed_only_in_breaches_still_blocks() -> None:
    from types import SimpleNamespace

    from trimtab.optimizer.proposals import risk_flags_of

    row = SimpleNamespace(risk={"flags": ["prior_used:AAA"], "breaches": ["concentration"]})
    assert risk_flags_of(row) == ["prior_used:AAA", "concentration"]  # type: ignore[arg-type]
    assert blocking_flags(risk_flags_of(row)) == ["concentration"]  # type: ignore[arg-type]
    assert risk_flags_of(SimpleNamespace(risk=None)) == []  # type: ignore[arg-type]
