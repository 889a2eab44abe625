"""Signed checkpoints: an Ed25519 signature over (tree size, root hash, time), and its check.

The signed bytes are a small text note, so a person or another tool can recompute them:

    trimtab-audit checkpoint v1
    <tree size, decimal>
    <root hash, lowercase hex>
    <signing time, RFC 3339 UTC with microseconds>

The first line fixes what the signature is about (no signature over these bytes can be replayed as
anything else). A checkpoint commits the log to its first `tree size` leaves: any later change to
those records changes the root, and a verifier holding the checkpoint notices (consistency proof).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

HEADER = "trimtab-audit checkpoint v1"
ALGORITHM = "Ed25519"


class CheckpointError(ValueError):
    """A checkpoint whose signature, key or content does not hold."""


def _time_text(t: datetime) -> str:
    if t.tzinfo is None:
        raise ValueError("checkpoint times are timezone-aware")
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def signed_message(tree_size: int, root_hash: bytes, signed_at: datetime) -> bytes:
    if tree_size < 0 or len(root_hash) != 32:
        raise ValueError("a checkpoint is a non-negative size and a 32-byte root")
    return f"{HEADER}\n{tree_size}\n{root_hash.hex()}\n{_time_text(signed_at)}\n".encode()


def public_key_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(public_key: bytes) -> str:
    """Which key signed: SHA-256 of the raw public key, hex."""
    return hashlib.sha256(public_key).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    tree_size: int
    root_hash: bytes
    signed_at: datetime
    key_id: str
    signature: bytes

    def message(self) -> bytes:
        return signed_message(self.tree_size, self.root_hash, self.signed_at)

    def to_json(self) -> dict[str, Any]:
        return {"tree_size": self.tree_size, "root_hash": self.root_hash.hex(),
                "signed_at": _time_text(self.signed_at), "key_id": self.key_id,
                "signature": base64.b64encode(self.signature).decode(), "algorithm": ALGORITHM}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Checkpoint:
        try:
            if d.get("algorithm", ALGORITHM) != ALGORITHM:
                raise CheckpointError(f"unsupported signature algorithm {d.get('algorithm')!r}")
            signed_at = datetime.fromisoformat(str(d["signed_at"]).replace("Z", "+00:00"))
            return cls(tree_size=int(d["tree_size"]), root_hash=bytes.fromhex(d["root_hash"]),
                       signed_at=signed_at, key_id=str(d["key_id"]),
                       signature=base64.b64decode(d["signature"], validate=True))
        except (KeyError, ValueError, TypeError) as e:
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(f"malformed checkpoint: {e}") from e

    @classmethod
    def from_line(cls, line: str | bytes) -> Checkpoint:
        """One line of a checkpoint file (`line()`); CheckpointError when it is not a checkpoint."""
        try:
            d = json.loads(line)
        except ValueError as e:  # not JSON, or not UTF-8
            raise CheckpointError(f"malformed checkpoint line: {e}") from e
        if not isinstance(d, dict):
            raise CheckpointError("malformed checkpoint line: not a JSON object")
        return cls.from_json(d)

    def line(self) -> str:
        """One JSON line, as appended to the checkpoint file."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))


class Signer:
    """Holds the private key; signs tree heads."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = public_key_bytes(private_key.public_key())
        self.key_id = key_id(self.public_key)

    @classmethod
    def generate(cls) -> Signer:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_raw(cls, raw: bytes) -> Signer:
        if len(raw) != 32:
            raise ValueError("an Ed25519 private key is 32 raw bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def raw_private(self) -> bytes:
        return self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def sign(self, tree_size: int, root_hash: bytes, signed_at: datetime) -> Checkpoint:
        sig = self._key.sign(signed_message(tree_size, root_hash, signed_at))
        return Checkpoint(tree_size, root_hash, signed_at, self.key_id, sig)


def verify_checkpoint(cp: Checkpoint, public_key: bytes) -> None:
    """Raise CheckpointError unless `cp` is signed by `public_key`."""
    if len(public_key) != 32:
        raise CheckpointError("an Ed25519 public key is 32 raw bytes")
    if cp.key_id != key_id(public_key):
        raise CheckpointError(f"checkpoint is signed by key {cp.key_id[:16]}…, not by the pinned key "
                              f"{key_id(public_key)[:16]}…")
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(cp.signature, cp.message())
    except InvalidSignature:
        raise CheckpointError("checkpoint signature does not verify") from None
    except ValueError as e:
        raise CheckpointError(f"checkpoint does not verify: {e}") from e


def trusted_key(cp: Checkpoint, public_keys: Iterable[bytes]) -> bytes | None:
    """The one of `public_keys` whose key id the checkpoint names, else None. The ids are derived
    from the keys themselves: a checkpoint's `key_id` selects a trusted key, it never brings one."""
    return next((k for k in public_keys if key_id(k) == cp.key_id), None)


def verify_checkpoint_trusted(cp: Checkpoint, public_keys: Iterable[bytes]) -> bytes:
    """Raise CheckpointError unless `cp` is signed by one of `public_keys` (a checkpoint naming
    any other key fails: it is never waved through for lack of a key); return that key."""
    key = trusted_key(cp, public_keys)
    if key is None:
        raise CheckpointError(f"checkpoint names signing key {cp.key_id[:16]}…, which is not a trusted key")
    verify_checkpoint(cp, key)
    return key
