"""One Settings object for the whole service.

Read from ``KEEL_*`` environment variables and an optional ``.env`` file.
``KEEL_ENV`` picks a profile: ``dev`` (the default: readable logs, embedded
SQLite allowed, a built-in secret), ``staging`` and ``prod`` (JSON logs; refuse
to start on a default secret or, unless told explicitly, on SQLite).
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from keel.errors import ConfigurationError

DEFAULT_SECRET = "dev-only-secret-change-me"  # noqa: S105 - deliberately refused outside dev
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./keel.db"


class Profile(StrEnum):
    DEV = "dev"
    STAGING = "staging"
    PROD = "prod"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KEEL_", env_file=".env", extra="ignore", frozen=True
    )

    env: Profile = Profile.DEV
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET)
    allow_sqlite_in_prod: bool = False

    storage_dir: Path = Path("./keel-data/blobs")
    # Where file bytes live: None = file://<storage_dir> (embedded); file:///path; or
    # s3://bucket/prefix on any S3 API (AWS, SeaweedFS, MinIO) with the storage_s3_* settings.
    storage_url: str | None = None
    storage_s3_endpoint_url: str | None = None  # None: AWS itself
    storage_s3_region: str = "us-east-1"
    storage_s3_access_key_id: str | None = None  # None (both): the AWS default credential chain
    storage_s3_secret_access_key: SecretStr | None = None
    # Uploads bigger than one part go as multipart uploads; one part per upload is in memory.
    storage_s3_part_size_bytes: int = Field(default=8 * 1024**2, ge=5 * 1024**2, le=5 * 1024**3)
    max_upload_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    allowed_content_types: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "image/png",
            "image/jpeg",
            "image/gif",
            "image/webp",
            "application/pdf",
            "text/plain",
            "text/csv",
            "application/octet-stream",
        ]
    )

    auth_cache_seconds: float = Field(default=5.0, ge=0)
    database_pool_size: int = Field(default=10, gt=0)
    database_timeout_seconds: float = Field(default=5.0, gt=0)

    service_id: str = "keel"
    release_id: str = "dev"
    git_sha: str = "unknown"
    # The operator console (/ops) answers to one token, configured only as its SHA-256
    # (`keel admin ops-token`); unset, the console's data is closed to everyone.
    ops_token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")

    # --- limits, quotas and load shedding ---
    ratelimit_policy: Path | None = None  # None: the documented policy shipped in the package
    # Processes sharing Redis: during an outage each decides locally with 1/instances of a limit.
    limiter_instances: int = Field(default=1, ge=1)
    # A Redis call slower than this is treated as an outage and decided locally.
    limiter_redis_timeout_seconds: float = Field(default=0.25, gt=0)
    concurrency_per_user: int = Field(default=20, ge=1)
    concurrency_per_org: int = Field(default=200, ge=1)
    shed_max_in_flight: int = Field(default=256, ge=1)
    shed_max_loop_lag_seconds: float = Field(default=0.25, gt=0)
    storage_quota_bytes: dict[str, int] = Field(
        default_factory=lambda: {
            "free": 1 * 1024**3,
            "team": 20 * 1024**3,
            "enterprise": 200 * 1024**3,
        }
    )
    # --- safe migrations ---
    migration_backup_dir: Path = Path("./keel-data/backups")
    migration_lock_timeout_seconds: float = Field(default=5.0, gt=0)
    migration_statement_timeout_seconds: float = Field(default=600.0, gt=0)
    migration_lock_wait_seconds: float = Field(default=600.0, gt=0)
    # --- safe deploys ---
    # Approvals a deployment needs before it rolls, per environment ("prod=2,staging=1";
    # an environment not listed needs none).
    deploy_approvals: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=lambda: {"prod": 1}
    )
    # Environments where whoever created a deployment cannot approve it.
    deploy_four_eyes_environments: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["prod"]
    )
    # Where the canary analysis reads both versions' request counters (Prometheus' HTTP API,
    # e.g. "http://127.0.0.1:9090"); unset: from each version's own /metrics.
    deploy_prometheus_url: str | None = None
    # Fault injection (keel.http.faults), for rehearsing a bad release: this share of
    # non-probe requests answers 500, and every non-probe request waits this long first.
    # Off by default; the prod profile refuses either.
    fault_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    fault_latency_ms: int = Field(default=0, ge=0, le=60_000)

    @field_validator("deploy_approvals", mode="before")
    @classmethod
    def _parse_approvals(cls, value: object) -> object:
        """``KEEL_DEPLOY_APPROVALS="prod=2,staging=1"`` (or a JSON object)."""
        if not isinstance(value, str):
            return value
        if value.strip().startswith("{"):
            return json.loads(value)
        pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError("use environment=count pairs: prod=2,staging=1")
        return {name.strip(): count.strip() for name, count in pairs}

    @field_validator("deploy_approvals")
    @classmethod
    def _non_negative_approvals(cls, value: dict[str, int]) -> dict[str, int]:
        if any(count < 0 for count in value.values()):
            raise ValueError("approval counts cannot be negative")
        return value

    @field_validator("deploy_four_eyes_environments", mode="before")
    @classmethod
    def _split_environments(cls, value: object) -> object:
        """``KEEL_DEPLOY_FOUR_EYES_ENVIRONMENTS="prod,staging"``."""
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    # --- idempotency keys ---
    idempotency_enabled: bool = True
    idempotency_required_routes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["POST /v1/recognitions", "POST /v1/exports"]
    )
    # A claim's lease: how long a crashed request's key stays blocked (short, so a
    # retry after a crash runs within seconds). A live request's heartbeat renews it every third.
    idempotency_lease_seconds: float = Field(default=3.0, gt=0)
    idempotency_retention_seconds: float = Field(default=24 * 3600.0, gt=0)

    @field_validator("storage_url")
    @classmethod
    def _storage_scheme(cls, value: str | None) -> str | None:
        valid = value is None or value.startswith("file://")
        if value is not None and value.startswith("s3://"):
            valid = bool(value.removeprefix("s3://").partition("/")[0])
        if not valid:
            raise ValueError("KEEL_STORAGE_URL must be file://PATH or s3://BUCKET[/PREFIX]")
        return value

    @field_validator("idempotency_required_routes", mode="before")
    @classmethod
    def _split_routes(cls, value: object) -> object:
        """``KEEL_IDEMPOTENCY_REQUIRED_ROUTES="POST /v1/recognitions,POST /v1/exports"``."""
        if isinstance(value, str):
            return [" ".join(item.split()) for item in value.split(",") if item.strip()]
        return value

    # --- background jobs ---
    inprocess_worker: Literal["auto", "on", "off"] = "auto"
    """Run a job worker inside ``keel serve``; ``auto`` = on for SQLite, off otherwise."""
    jobs_queues: str = "critical=4,default=4,exports=2"
    """Queues a worker serves, with their concurrency (``name=N``; bare name = 4)."""
    jobs_lease_seconds: float = Field(default=30.0, gt=0)
    jobs_poll_seconds: float = Field(default=0.2, gt=0)
    jobs_listen_poll_seconds: float = Field(default=1.0, gt=0)
    jobs_grace_seconds: float = Field(default=20.0, ge=0)
    jobs_retention_hours: float = Field(default=168.0, gt=0)
    jobs_modules: str = ""
    """Comma-separated modules whose ``JOB_TYPES``/``PERIODIC`` workers also load."""
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    # keel worker's own HTTP port for /live, /ready and /metrics (0: none). 9100 is also
    # node_exporter's default: on a host that runs one, choose another port.
    worker_http_port: int = Field(default=9100, ge=0, le=65535)
    worker_http_host: str = "127.0.0.1"  # 0.0.0.0 in a container, for probes and scrapes
    # keel worker --autoscale MIN..MAX: how often the backlog is read; how many ready
    # jobs one process is meant to hold; the oldest-ready age that asks for one more
    # process; how soon after a scale event the next may go up, or down; how long the
    # backlog must have wanted fewer processes before one stops (down slowly).
    worker_autoscale_interval_seconds: float = Field(default=2.0, gt=0)
    worker_autoscale_jobs_per_process: int = Field(default=20, ge=1)
    worker_autoscale_max_age_seconds: float = Field(default=10.0, gt=0)
    worker_autoscale_up_cooldown_seconds: float = Field(default=5.0, ge=0)
    worker_autoscale_down_cooldown_seconds: float = Field(default=60.0, ge=0)
    worker_autoscale_down_window_seconds: float = Field(default=120.0, ge=0)
    # --- observability: health, shutdown, logs, tracing, metrics ---
    observe_enabled: bool = True  # off only to measure the stack's cost (bench/)
    log_level: str = "info"
    log_format: Literal["json", "console"] | None = None  # default: console in dev, else JSON
    otel_endpoint: str | None = None  # OTLP/HTTP traces endpoint; no exporter when unset
    # Share of new traces recorded; a sampled incoming traceparent is always followed, and
    # unsampled requests still get trace ids in their log lines.
    otel_sampling_ratio: float = Field(default=0.1, ge=0.0, le=1.0)
    slo_latency_seconds: float = Field(default=0.3, gt=0)
    # The SLO file (keel slo rules, /version's slo_rules_hash); None: the one shipped in keel.slo.
    slo_file: Path | None = None
    # How often each process adds its per-minute SLO counts to the database (and at shutdown).
    slo_rollup_flush_seconds: float = Field(default=60.0, gt=0, le=3600)
    # Synthetic checks: the service's own URL the periodic check calls (None: the periodic
    # check is off) and the admin token it calls with.
    synthetic_target_url: str | None = None
    synthetic_token: SecretStr | None = None
    synthetic_timeout_seconds: float = Field(default=10.0, gt=0)
    health_cache_seconds: float = Field(default=2.0, ge=0)
    health_check_timeout_seconds: float = Field(default=1.0, gt=0)
    live_loop_lag_warn_seconds: float = Field(default=1.0, gt=0)
    shutdown_drain_seconds: float = Field(default=5.0, ge=0)
    shutdown_grace_seconds: float = Field(default=20.0, gt=0)
    # After the drain, new SYNs are dropped and the accept queue emptied before the
    # listener closes, so no connection the kernel accepted is reset (keel.serve.listener).
    serve_listener_settle_seconds: float = Field(default=0.5, ge=0, le=30)
    # keel serve --workers N: how long the supervisor waits for a worker's health ping
    # (uvicorn's own 5 s killed workers that were only slow on a busy machine), for a
    # new worker's first answer, and, past drain + grace, for a stopping worker before
    # SIGKILL.
    serve_worker_healthcheck_seconds: float = Field(default=30.0, ge=1)
    serve_worker_start_seconds: float = Field(default=60.0, ge=1)
    serve_worker_kill_grace_seconds: float = Field(default=10.0, gt=0)
    fingerprint_key: SecretStr | None = None  # shared across environments for parity

    # --- resilience ---
    breaker_store_url: str | None = None  # None: KEEL_REDIS_URL when set, else memory://
    breaker_failure_rate_threshold: float = Field(default=50.0, gt=0, le=100)
    breaker_slow_call_rate_threshold: float = Field(default=100.0, gt=0, le=100)
    breaker_window_size: int = Field(default=100, ge=1)  # calls in each breaker's window
    breaker_minimum_calls: int = Field(default=20, ge=1)
    # OPEN before probing: the first wait after a trip; each failed round of probes
    # multiplies it, up to the cap, so a recovered dependency is found within seconds.
    breaker_wait_seconds: float = Field(default=1.0, gt=0)
    breaker_max_wait_seconds: float = Field(default=4.0, gt=0)
    breaker_wait_multiplier: float = Field(default=2.0, ge=1, le=10)
    breaker_half_open_calls: int = Field(default=5, ge=1)
    breaker_sync_seconds: float = Field(default=1.0, gt=0, le=60)  # shared-state refresh
    retry_budget_ratio: float = Field(default=0.2, ge=0, le=1)  # retries per call, at most
    storage_timeout_seconds: float = Field(default=10.0, gt=0)  # per storage operation
    storage_slow_call_seconds: float = Field(default=5.0, gt=0)
    storage_max_concurrent_calls: int = Field(default=64, ge=1)
    storage_retry_attempts: int = Field(default=3, ge=1, le=10)  # reads and deletes only
    redis_breaker_wait_seconds: float = Field(default=5.0, gt=0)  # local limits meanwhile
    # A webhook host's breaker waits longer: only its probes spend job attempts.
    webhooks_breaker_wait_seconds: float = Field(default=30.0, gt=0)
    webhooks_timeout_seconds: float = Field(default=10.0, gt=0)
    webhooks_max_concurrent_calls: int = Field(default=16, ge=1)
    webhooks_retry_attempts: int = Field(default=3, ge=1, le=20)  # in-call, per delivery
    webhooks_max_hosts: int = Field(default=256, ge=1)  # per-host breakers kept in memory
    webhooks_idle_seconds: float = Field(default=3600.0, gt=0)  # a host's breaker forgotten

    @model_validator(mode="before")
    @classmethod
    def _split_lists(cls, data: object) -> object:
        """Accept comma-separated lists from the environment."""
        if isinstance(data, dict):
            value = data.get("allowed_content_types")
            if isinstance(value, str):
                data["allowed_content_types"] = [
                    item.strip() for item in value.split(",") if item.strip()
                ]
        return data

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def check_startable(self) -> None:
        """Refuse settings that must never reach staging or production."""
        if self.env is Profile.DEV:
            return
        if self.secret_key.get_secret_value() == DEFAULT_SECRET:
            raise ConfigurationError(
                f"KEEL_ENV={self.env.value} refuses the built-in secret: set KEEL_SECRET_KEY"
            )
        if len(self.secret_key.get_secret_value()) < 32:
            raise ConfigurationError("KEEL_SECRET_KEY must be at least 32 characters")
        if self.env is Profile.PROD and self.is_sqlite and not self.allow_sqlite_in_prod:
            raise ConfigurationError(
                "KEEL_ENV=prod refuses SQLite: set KEEL_DATABASE_URL to PostgreSQL, "
                "or KEEL_ALLOW_SQLITE_IN_PROD=true to run embedded on purpose"
            )
        if self.env is Profile.PROD and self.faults_enabled:
            raise ConfigurationError(
                "KEEL_ENV=prod refuses fault injection: unset KEEL_FAULT_ERROR_RATE "
                "and KEEL_FAULT_LATENCY_MS"
            )
        self.check_audit_startable()

    @property
    def faults_enabled(self) -> bool:
        return self.fault_error_rate > 0 or self.fault_latency_ms > 0

    # --- audit log ---
    audit_keys: SecretStr | None = None  # "id:secret,id:secret"; dev derives one from secret_key
    audit_key_id: str | None = None  # the key new events use; defaults to the last listed
    audit_signing_key_path: Path | None = None  # Ed25519 PEM; dev: generated beside storage_dir
    audit_digest_every: int = Field(default=100, gt=0)
    # Chains per organisation (keel.audit.stripes): writers of one organisation take a free
    # one instead of all queuing on one head row across their commits. PostgreSQL only.
    audit_chains_per_org: int = Field(default=8, ge=1, le=64)
    audit_auth_failure_flush_seconds: float = Field(default=10.0, gt=0)

    def check_audit_startable(self) -> None:
        """Outside dev the audit log needs its own keys: never the derived or generated ones."""
        from keel.audit.pseudonym import MIN_SECRET_LENGTH, KeyRing  # noqa: PLC0415 - no cycle

        if self.audit_keys is None:
            raise ConfigurationError(
                f"KEEL_ENV={self.env.value} needs KEEL_AUDIT_KEYS (id:secret,…) for pseudonyms"
            )
        if self.audit_signing_key_path is None:
            raise ConfigurationError(
                f"KEEL_ENV={self.env.value} needs KEEL_AUDIT_SIGNING_KEY_PATH (an Ed25519 PEM)"
            )
        ring = KeyRing.parse(self.audit_keys.get_secret_value(), self.audit_key_id)
        if ring.short_secrets():
            raise ConfigurationError(
                f"audit key(s) {', '.join(ring.short_secrets())} must be at least "
                f"{MIN_SECRET_LENGTH} characters"
            )
