"""Where the checkpoint signing key comes from: AUDIT_SIGNING_KEY, else a key file (made if absent).

The key file is a development convenience: written once with mode 0600 under .trimtab/, so the
same key signs across restarts. A production deployment sets AUDIT_SIGNING_KEY from a secret
store, so the key never sits next to the database it vouches for.
"""

from __future__ import annotations

import base64
import binascii
import os
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
