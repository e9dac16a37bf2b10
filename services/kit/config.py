"""Configuration from environment variables, validated once at start.

Unset infrastructure URLs select the embedded defaults of the run command:
no DATABASE_URL -> embedded Postgres, no KAFKA_BOOTSTRAP_SERVERS -> in-process bus, no
REDIS_URL -> in-process cache, no OPENAI_API_KEY -> offline agent engines.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.kit.catalogue import SERVICES

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_DIR = REPO_ROOT / ".run"


class ConfigError(Exception):
    """Raised at start when an environment variable is missing or malformed."""


class Settings(BaseSettings):
    """Every setting a LearnFlow server reads; the field name upper-cased is its variable."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # Infrastructure (unset -> embedded default).
    database_url: str | None = None
    redis_url: str | None = None
    kafka_bootstrap_servers: str | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    # The model client: per-request timeout and the client's own retries (429, 5xx,
    # timeouts, with backoff); the circuit breaker opens after this many consecutive
    # failed calls and lets one probe through after the reset interval.
    openai_timeout_seconds: float = Field(default=20.0, gt=0, le=600)
    openai_max_retries: int = Field(default=2, ge=0, le=10)
    llm_breaker_failures: int = Field(default=5, ge=1, le=1000)
    llm_breaker_reset_seconds: float = Field(default=30.0, gt=0, le=3600)
    # Model calls one user may have in flight at once, across the mesh; over it the
    # agent answers from its offline engine (services/kit/llm.py says why).
    llm_calls_per_user: int = Field(default=2, ge=1, le=1000)

    # Identity: the keys the services (and Envoy) verify tokens against. JWKS_URL, the
    # identity provider's JWKS, wins when set: cached JWKS_CACHE_SECONDS (less when its
    # Cache-Control max-age says so), fetched again at once for a token whose key is not
    # known yet, but at most once per JWKS_REFRESH_MIN_SECONDS. Unset: the JWKS file at
    # JWKS_PATH (development: `make token` writes it).
    jwks_path: Path = RUN_DIR / "jwks.json"
    jwks_url: str | None = None
    jwks_cache_seconds: float = Field(default=300.0, gt=0, le=86_400)
    jwks_refresh_min_seconds: float = Field(default=30.0, ge=1, le=3600)
    jwt_issuer: str = "https://auth.learnflow.dev"
    jwt_audience: str = "learnflow"

    # Server.
    grpc_host: str = "0.0.0.0"
    grpc_port: int | None = Field(default=None, ge=1, le=65535)
    grpc_max_workers: int = Field(default=32, ge=1, le=1024)
    grpc_max_concurrent_rpcs: int = Field(default=256, ge=1, le=100_000)
    # The stream lane (docs/adr/0002): open streams per server, per user (across
    # replicas when REDIS_URL is set), and for callers without a token (health Watch).
    grpc_max_streams: int = Field(default=256, ge=1, le=10_000)
    grpc_streams_per_user: int = Field(default=4, ge=1, le=1000)
    grpc_anonymous_streams: int = Field(default=8, ge=1, le=1000)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0, le=300)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    # Prometheus metrics (model calls, tokens, latency) over HTTP on this port; unset: off.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # Tracing: OTLP endpoint; unset -> spans are created but not exported.
    otel_exporter_otlp_endpoint: str | None = None

    # The mastery engine's Kafka consumer group: replicas share it; a second, independent
    # engine on the same broker (a benchmark beside a test run) needs its own.
    mastery_consumer_group: str = "mastery-engine"
    # History is kept by the day each event happened; events older than this many days
    # go to the dead-letter queue instead of correcting days that old.
    mastery_history_horizon_days: int = Field(default=90, ge=1, le=3650)
    # Activity older than this many days is purged (services/retention.py), keeping
    # what history and recalculation need. Not shorter than the history horizon: a late
    # event must never land on a day whose evidence is gone.
    retention_days: int = Field(default=90, ge=1, le=3650)
    # How often the run command (and `learnflow purge --every`) runs the retention job.
    retention_interval_hours: float = Field(default=24.0, gt=0, le=24 * 30)
    # Progress events applied per transaction: larger batches amortise each batch's
    # statements over more events when there is a backlog.
    mastery_batch_size: int = Field(default=8_000, ge=1, le=50_000)
    # Consumers of progress.events in one mastery process, each a thread with its own
    # share of the partitions: while one waits on Postgres, another computes (ADR 0005).
    mastery_consumer_lanes: int = Field(default=2, ge=1, le=6)
    # The notify service's consumer group (struggle.detected, mastery.updated -> alerts).
    notify_consumer_group: str = "notify-alerts"
    # The live stream (StreamUpdates): the consumer group that writes students' answers
    # and mastery changes into the update log, how long updates are kept for resuming
    # with a cursor, the heartbeat of an idle stream, and how many updates one stream
    # may fall behind before it is closed (to resume from its cursor). Notify runs the
    # asyncio server (docs/adr/0003): an idle stream costs a coroutine, so one replica
    # holds NOTIFY_MAX_STREAMS of them (GRPC_MAX_STREAMS is for the thread-pool servers).
    notify_max_streams: int = Field(default=10_000, ge=1, le=100_000)
    notify_updates_consumer_group: str = "notify-updates"
    notify_update_retention_hours: float = Field(default=24.0, gt=0, le=24 * 30)
    notify_heartbeat_seconds: float = Field(default=15.0, gt=0, le=300)
    notify_stream_queue: int = Field(default=1000, ge=1, le=100_000)
    # A consumer behind and without a commit for this long reports NOT_SERVING under
    # its own health name (learnflow.<service>.consumer); readiness is not affected.
    consumer_stall_seconds: float = Field(default=60.0, gt=0, le=3600)

    # Sandbox: programs run at once, programs waiting beyond that (then
    # RESOURCE_EXHAUSTED), and the dev-only escape hatch when no isolation is available.
    sandbox_workers: int = Field(default=4, ge=1, le=64)
    sandbox_queue_size: int = Field(default=32, ge=0, le=10_000)
    sandbox_allow_unsafe: bool = False
    # Sandbox fair share: programs one caller may have running at once (students;
    # teachers and admins get the staff allowance), how long a program waits for its
    # owner's running one to end before RATE_LIMITED, how long any program waits for a
    # free slot when its call has no (or a longer) deadline,
    # and the niceness added to every sandbox process (the services keep priority).
    sandbox_runs_per_user: int = Field(default=1, ge=1, le=64)
    sandbox_runs_per_staff: int = Field(default=2, ge=1, le=64)
    sandbox_user_wait_seconds: float = Field(default=2.0, ge=0, le=60)
    sandbox_max_wait_seconds: float = Field(default=10.0, gt=0, le=300)
    sandbox_nice: int = Field(default=10, ge=0, le=19)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _postgres_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("jwks_url", mode="before")
    @classmethod
    def _jwks_url(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip() or None  # JWKS_URL= (empty): the file
        if isinstance(value, str) and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis:// URL")
        return value

    @model_validator(mode="after")
    def _retention_covers_the_horizon(self) -> Settings:
        if self.retention_days < self.mastery_history_horizon_days:
            raise ValueError(
                f"RETENTION_DAYS ({self.retention_days}) must not be shorter than "
                f"MASTERY_HISTORY_HORIZON_DAYS ({self.mastery_history_horizon_days}): a late "
                "event could land on a day whose evidence was purged"
            )
        return self

    def address_of(self, service: str) -> str:
        """Where to reach another LearnFlow service: <SERVICE>_ADDR or localhost:<port>."""
        for spec in SERVICES:
            if spec.name == service:
                return os.environ.get(spec.address_env, f"localhost:{spec.port}")
        raise KeyError(service)


def load_settings() -> Settings:
    """Read and validate the environment; a bad variable is named in the error."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            variable = "_".join(str(part) for part in err["loc"]).upper()
            problems.append(f"{variable}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
