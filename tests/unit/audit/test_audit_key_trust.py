"""The keys verification trusts: the service's own and `AUDIT_TRUSTED_PUBLIC_KEYS` (base64 raw
Ed25519 public keys, separated by commas and/or whitespace). A checkpoint's key id selects one of
them by the id derived from the key; a checkpoint naming any other key is refused, never waved
through unchecked."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import pytest

from trimtab.audit.domain.checkpoint import (
    Checkpoint,
    CheckpointError,
    Signer,
    trusted_key,
    verify_checkpoint_trusted,
)
from trimtab.audit.keys import load_trusted_keys, parse_public_keys
from trimtab.audit.settings import Settings

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ROOT = hashlib.sha256(b"root").digest()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_the_setting_lists_base64_public_keys_by_comma_or_whitespace() -> None:
    a, b, c = (Signer.generate().public_key for _ in range(3))
    assert parse_public_keys("") == [] and parse_public_keys(" , \n") == []
    assert parse_public_keys(f"{_b64(a)},{_b64(b)}\n {_b64(c)} ,") == [a, b, c]


@pytest.mark.parametrize("bad", ["not base64!", base64.b64encode(b"x" * 31).decode(),
                                 base64.b64encode(b"x" * 64).decode()])
def test_an_entry_that_is_not_a_public_key_is_an_error(bad: str) -> None:
    good = _b64(Signer.generate().public_key)
    with pytest.raises(ValueError, match="AUDIT_TRUSTED_PUBLIC_KEYS: entry 2"):
        parse_public_keys(f"{good},{bad}")


def test_the_services_own_key_comes_first_and_duplicates_are_dropped() -> None:
    own, retired = Signer.generate(), Signer.generate()
    settings = Settings.model_validate({"AUDIT_TRUSTED_PUBLIC_KEYS": f"{_b64(retired.public_key)} "
                                                                     f"{_b64(own.public_key)},{_b64(retired.public_key)}"})
    assert load_trusted_keys(settings, own) == (own.public_key, retired.public_key)
    assert load_trusted_keys(Settings.model_validate({}), own) == (own.public_key,)


def test_a_checkpoint_verifies_only_under_the_trusted_key_its_id_names() -> None:
    own, retired, stranger = Signer.generate(), Signer.generate(), Signer.generate()
    trusted = [own.public_key, retired.public_key]
    cp = retired.sign(7, ROOT, T0)
    assert verify_checkpoint_trusted(cp, trusted) == retired.public_key
    assert trusted_key(cp, trusted) == retired.public_key
    # A key id nobody configured: refused, whatever its signature.
    for forged in (stranger.sign(7, ROOT, T0),
                   Checkpoint(7, ROOT, T0, stranger.key_id, cp.signature)):
        assert trusted_key(forged, trusted) is None
        with pytest.raises(CheckpointError, match="not a trusted key"):
            verify_checkpoint_trusted(forged, trusted)
    # A trusted key's id over another key's signature: checked with the named key, and refused.
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_checkpoint_trusted(Checkpoint(7, ROOT, T0, own.key_id, cp.signature), trusted)
    with pytest.raises(CheckpointError, match="not a trusted key"):
        verify_checkpoint_trusted(cp, [])
