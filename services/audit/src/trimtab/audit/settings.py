"""Settings of the audit service: the base service settings plus signing and checkpoints."""

from __future__ import annotations

from pydantic import Field

from trimtab.shared.config import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = Field(default="audit", validation_alias="SERVICE_NAME")
    #: Events per transaction in the consumer (shared default 100). An append's fixed cost (lock,
    #: head, right edge, markers, two COPYs, commit and its WAL flush) is paid once per run, so
    #: longer runs mean a higher sustained rate. One poll brings up to this many records, but a
    #: partition's fetch (1 MiB) holds about 1,500 envelopes, so runs of a backlog are ~1,000-1,250
    #: events and more than 2,000 changes nothing (docs/audit.md, performance).
    consumer_batch_size: int = Field(default=2000, validation_alias="CONSUMER_BATCH_SIZE", ge=1)
    #: The Ed25519 signing key, base64 of the 32 raw private bytes. In production it comes from a
    #: secret store and the database role never sees it. When unset, the key file below is used.
    audit_signing_key: str | None = Field(default=None, validation_alias="AUDIT_SIGNING_KEY")
    #: Where the key is kept when AUDIT_SIGNING_KEY is unset; generated (mode 0600) if missing.
    audit_signing_key_file: str = Field(default=".trimtab/audit-signing.key",
                                        validation_alias="AUDIT_SIGNING_KEY_FILE")
    #: Public keys, besides the service's own, whose checkpoints `POST /v1/audit/verify` accepts:
    #: base64 of the raw 32-byte Ed25519 public key (as `GET /v1/audit/public-key` gives it),
    #: separated by commas and/or whitespace. After a key rotation: the retired keys; with several
    #: instances on one database: each other's keys. A checkpoint naming any other key fails
    #: verification (its key id selects one of these keys; it never supplies a key).
    audit_trusted_public_keys: str = Field(default="", validation_alias="AUDIT_TRUSTED_PUBLIC_KEYS")
    #: Directory of `checkpoints.jsonl`, every signed checkpoint appended as one line: a copy
    #: outside the database that a verifier or an archive can keep, and the witness the service
    #: checks itself against (verify and signing compare with its last line: the database's owner
    #: cannot delete it). Empty: no file, and the database alone says what was signed.
    audit_checkpoint_dir: str = Field(default=".trimtab/audit-checkpoints",
                                      validation_alias="AUDIT_CHECKPOINT_DIR")
    #: Seconds between checkpoints (signed only when the tree grew); 0 turns the timer off.
    audit_checkpoint_interval_s: float = Field(default=60.0, validation_alias="AUDIT_CHECKPOINT_INTERVAL_S", ge=0)
