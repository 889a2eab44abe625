"""Settings read from the environment (pydantic-settings), one class per concern.

Every service reads the same base settings; a service adds its own by subclassing. The names of
the environment variables are the contract with docker-compose.yml and deploy/ (a test checks it).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_JWT_SECRET = "trimtab-dev-secret-change-me-in-production-0123456789"


class ServiceSettings(BaseSettings):
    """Settings every service reads. Unprefixed names, as twelve-factor apps expect."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    service_name: str = Field(default="trimtab", validation_alias="SERVICE_NAME")
    database_url: str = Field(
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/trimtab", validation_alias="DATABASE_URL"
    )
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    #: A prefix for consumer group ids, so two stacks can share one broker.
    kafka_group_prefix: str = Field(default="trimtab", validation_alias="KAFKA_GROUP_PREFIX")
    #: Partitions for topics this service creates when they are missing.
    kafka_partitions: int = Field(default=4, validation_alias="KAFKA_PARTITIONS", ge=1)
    #: Consumer-group session timeout. Tansu holds a join for half of it, so keep it short; the
    #: heartbeat runs in the background, so slow handlers do not need a long session.
    kafka_session_timeout_ms: int = Field(default=6000, validation_alias="KAFKA_SESSION_TIMEOUT_MS", ge=1000)
    #: Handler attempts before an event is dead-lettered.
    consumer_max_attempts: int = Field(default=3, validation_alias="CONSUMER_MAX_ATTEMPTS", ge=1)
    #: Events of one partition handled in one transaction at most (1 = one transaction each).
    consumer_batch_size: int = Field(default=100, validation_alias="CONSUMER_BATCH_SIZE", ge=1)
    jwt_secret: str = Field(default=DEV_JWT_SECRET, validation_alias="JWT_SECRET")
    jwt_public_key: str | None = Field(default=None, validation_alias="JWT_PUBLIC_KEY")
    jwt_algorithm: str = Field(default="HS256", validation_alias="JWT_ALGORITHM")
    jwt_issuer: str = Field(default="trimtab", validation_alias="JWT_ISSUER")
    jwt_audience: str = Field(default="trimtab-api", validation_alias="JWT_AUDIENCE")
    http_host: str = Field(default="127.0.0.1", validation_alias="HTTP_HOST")
    http_port: int = Field(default=8000, validation_alias="HTTP_PORT")
    #: Largest request body accepted (bytes); a larger one is a 413 problem, refused before it is
    #: read whole. Bulk imports larger than this go in several requests.
    http_max_body_bytes: int = Field(default=64 * 1024 * 1024, validation_alias="HTTP_MAX_BODY_BYTES", ge=1024)
    #: Largest request body of a route that takes no bulk data (every route not marked
    #: `http.BULK_BODY`: a decision, a risk profile, a scenario...).
    http_max_request_bytes: int = Field(default=1024 * 1024, validation_alias="HTTP_MAX_REQUEST_BYTES", ge=1024)
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    log_level: str = Field(default="INFO", validation_alias="LOG_LEVEL")
    #: Seconds between outbox relay polls when nothing wakes it sooner.
    outbox_poll_s: float = Field(default=0.2, validation_alias="OUTBOX_POLL_S", gt=0)
