"""`trimtab-audit checkpoints`: a checkpoint file is one history. Every line signed by the key, one
root per tree size (two roots for one size are a fork), sizes never down, signing times never back;
the first line that breaks one fails the command with exit 1."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from trimtab.audit import cli
from trimtab.audit.domain.checkpoint import Checkpoint, Signer

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _root(tag: str) -> bytes:
    return hashlib.sha256(tag.encode()).digest()


def _run(tmp_path: Path, signer: Signer, cps: list[Checkpoint]) -> int:
    f = tmp_path / "checkpoints.jsonl"
    f.write_text("".join(cp.line() + "\n" for cp in cps))
    return cli.main(["checkpoints", "--file", str(f), "--public-key", base64.b64encode(signer.public_key).decode()])


def test_a_clean_history_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = Signer.generate()
    cps = [s.sign(10, _root("a"), T0), s.sign(10, _root("a"), T0 + timedelta(seconds=5)),  # re-signed head
           s.sign(12, _root("b"), T0 + timedelta(seconds=9)), s.sign(12, _root("b"), T0 + timedelta(seconds=9))]
    assert _run(tmp_path, s, cps) == 0
    assert "latest size 12" in capsys.readouterr().out


def test_two_roots_for_one_size_are_a_fork(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = Signer.generate()
    cps = [s.sign(10, _root("a"), T0), s.sign(11, _root("b"), T0 + timedelta(seconds=1)),
           s.sign(10, _root("c"), T0 + timedelta(seconds=2))]
    # (line 3 would also fail the size order; a fork of an earlier size is named as a fork)
    assert _run(tmp_path, s, cps) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAILED: line 3: a fork: tree size 10") and "line 1" in out
    assert _run(tmp_path, s, [s.sign(10, _root("a"), T0), s.sign(10, _root("b"), T0 + timedelta(seconds=1))]) == 1
    assert "FAILED: line 2: a fork" in capsys.readouterr().out


@pytest.mark.parametrize("second_size", [10, 11])
def test_a_signing_time_that_goes_back_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             second_size: int) -> None:
    s = Signer.generate()
    root = _root("a") if second_size == 10 else _root("b")
    cps = [s.sign(10, _root("a"), T0), s.sign(second_size, root, T0 - timedelta(days=1))]
    assert _run(tmp_path, s, cps) == 1
    assert "FAILED: line 2: signing time went back" in capsys.readouterr().out


def test_the_reviewers_file_fails_on_its_fork(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Same size, another root a second later, then a third root a day earlier.
    s = Signer.generate()
    cps = [s.sign(10, _root("A"), T0), s.sign(10, _root("B"), T0 + timedelta(seconds=1)),
           s.sign(10, _root("C"), T0 - timedelta(days=1))]
    assert _run(tmp_path, s, cps) == 1
    assert "FAILED: line 2: a fork" in capsys.readouterr().out


def test_sizes_going_down_and_other_keys_still_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = Signer.generate()
    assert _run(tmp_path, s, [s.sign(12, _root("b"), T0), s.sign(10, _root("a"), T0 + timedelta(seconds=1))]) == 1
    assert "tree size went down from 12 to 10" in capsys.readouterr().out
    other = Signer.generate()
    assert _run(tmp_path, s, [s.sign(10, _root("a"), T0), other.sign(11, _root("b"), T0)]) == 1
    assert "FAILED: line 2" in capsys.readouterr().out


def test_a_rotated_history_passes_with_every_key_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """After a key rotation the file holds the retired key's lines, then the new key's: each line is
    checked with the given key its id names; a line naming a key not given fails."""
    old, new = Signer.generate(), Signer.generate()
    f = tmp_path / "checkpoints.jsonl"
    f.write_text("".join(cp.line() + "\n" for cp in [old.sign(10, _root("a"), T0),
                                                      new.sign(12, _root("b"), T0 + timedelta(seconds=1))]))
    keys = [base64.b64encode(s.public_key).decode() for s in (old, new)]
    assert cli.main(["checkpoints", "--file", str(f), "--public-key", keys[0], "--public-key", keys[1]]) == 0
    assert "latest size 12" in capsys.readouterr().out
    assert cli.main(["checkpoints", "--file", str(f), "--public-key", keys[1]]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAILED: line 1") and "not a trusted key" in out
