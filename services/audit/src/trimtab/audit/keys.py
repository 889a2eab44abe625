"""Where the checkpoint signing key comes from: AUDIT_SIGNING_KEY, else a key file (made if absent);
and which public keys verification trusts: the signing key's and AUDIT_TRUSTED_PUBLIC_KEYS.

The key file is a development convenience: written once with mode 0600 under .trimtab/, so the
same key signs across restarts. A production deployment sets AUDIT_SIGNING_KEY from a secret
store, so the key never sits next to the database it vouches for.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path

from .domain.checkpoint import Signer
from .settings import Settings


def load_signer(settings: Settings) -> Signer:
    if settings.audit_signing_key:
        try:
            return Signer.from_raw(base64.b64decode(settings.audit_signing_key, validate=True))
        except (binascii.Error, ValueError) as e:
            raise ValueError("AUDIT_SIGNING_KEY must be base64 of a 32-byte Ed25519 private key") from e
    path = Path(settings.audit_signing_key_file)
    if path.exists():
        return Signer.from_raw(base64.b64decode(path.read_text().strip(), validate=True))
    signer = Signer.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: two replicas starting at once must not each write (and then use) a different key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return Signer.from_raw(base64.b64decode(path.read_text().strip(), validate=True))
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(signer.raw_private()).decode() + "\n")
    return signer


def parse_public_keys(text: str, *, name: str = "AUDIT_TRUSTED_PUBLIC_KEYS") -> list[bytes]:
    """Base64 raw Ed25519 public keys separated by commas and/or whitespace; any entry that is not
    one is an error (a typo must not silently leave a key untrusted, or trust garbage)."""
    keys: list[bytes] = []
    for i, item in enumerate((x for x in re.split(r"[\s,]+", text) if x), start=1):
        try:
            raw = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ValueError(f"{name}: entry {i} ({item[:12]}...) is not base64 of a raw 32-byte Ed25519 public key")
        keys.append(raw)
    return keys


def load_trusted_keys(settings: Settings, signer: Signer) -> tuple[bytes, ...]:
    """The public keys whose checkpoints verification accepts: the service's own first, then the
    configured retired or peer keys (duplicates dropped)."""
    return tuple(dict.fromkeys([signer.public_key, *parse_public_keys(settings.audit_trusted_public_keys)]))
