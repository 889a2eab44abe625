"""Which risk flags stop an automatic approval."""

from trimtab.optimizer.domain.lifecycle import blocking_flags


def test_informational_flags_do_not_block_but_breaches_and_unknown_flags_do() -> None:
    assert blocking_flags(["prior_used:AAA", "prior_used:BBB", "still_above_tolerance"]) == []
    assert blocking_flags(["prior_used:AAA", "concentration"]) == ["concentration"]
    assert blocking_flags(["no_auto_approve"]) == ["no_auto_approve"]
    assert blocking_flags(["something_new"]) == ["something_new"]
