"""One settings object for the whole platform, read from ``MOEPLANE_*`` environment variables.

Nothing here touches the environment at import time: call :func:`get_settings` (cached) or build
``Settings()`` explicitly (tests do, with overrides).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MOEPLANE_", extra="ignore")

    # Where the embedded default keeps its SQLite files, artifacts and local Ray state.
    home: Path = Field(default=Path("~/.moeplane"))
    # SQLAlchemy URL; unset = SQLite file under HOME (the embedded default).
    database_url: str | None = None
    # Redis for rate limits, usage counters and the Celery broker; unset = embedded.
    redis_url: str | None = None
    # Ray cluster address for ray.init (e.g. ray://head:10001); unset = a local Ray started by
    # `up` (GCS on 127.0.0.1:6380, since Redis owns 6379).
    ray_address: str | None = None
    # The Ray dashboard / Jobs API, where fine-tuning runs are submitted.
    ray_dashboard_url: str = "http://127.0.0.1:8265"
    # Ray's token (its token authentication); unset = Ray's own file ~/.ray/auth_token if any.
    ray_auth_token: SecretStr | None = None
    # CPUs and GPUs the scheduler may hand to fine-tuning runs; unset = what the Ray cluster's
    # live nodes have now (asked on every scheduler tick). Set them to cap training below the
    # cluster, or, on an autoscaling cluster, to what it can grow to.
    training_cpus: float | None = Field(default=None, gt=0)
    training_gpus: float | None = Field(default=None, ge=0)
    # A running job with no Ray job after this long is submitted again (its submit task was
    # lost, e.g. the Celery worker died before sending it; the submission id keeps it single).
    submit_grace_s: float = Field(default=60.0, gt=0)
    # Each data-parallel training worker gets this many CPUs (fractions share cores).
    training_cpus_per_worker: float = Field(default=0.5, gt=0)
    # How often Celery beat runs the scheduler and the job reconciler.
    schedule_interval_s: float = Field(default=2.0, gt=0)
    reconcile_interval_s: float = Field(default=5.0, gt=0)
    # How often Celery beat sweeps for catalog index builds that were lost (enqueued while the
    # broker was down, or their worker died), and how long a catalog may sit queued, or building
    # without reporting progress, before its build is enqueued again. Builds report progress at
    # least every few seconds while embedding; the age leaves room for the silent final steps.
    catalog_sweep_interval_s: float = Field(default=60.0, gt=0)
    catalog_build_stale_s: float = Field(default=300.0, ge=10)
    # Artifact storage root (datasets, checkpoints); unset = file:// under HOME.
    storage_uri: str | None = None
    # Bootstrap admin key; unset = one is generated on first start and printed once.
    admin_key: SecretStr | None = None
    # Address `moeplane up` binds the API to.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    # For the client commands (`moeplane files ...`, `moeplane jobs ...`): which API, which key.
    api_url: str = "http://127.0.0.1:8000"
    api_key: SecretStr | None = None
    # Idempotency records older than this are ignored (and pruned): 24 h like the major APIs.
    idempotency_ttl_s: int = Field(default=86_400, ge=60)
    log_level: str = "info"

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("admin_key", mode="after")
    @classmethod
    def _check_admin_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("mp-"):
            raise ValueError("MOEPLANE_ADMIN_KEY must look like an API key: 'mp-' + random text")
        if value is not None and len(value.get_secret_value()) < 24:
            raise ValueError("MOEPLANE_ADMIN_KEY is too short: use at least 24 characters")
        return value

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'moeplane.db'}"
        if not self.storage_uri:
            self.storage_uri = (self.home / "storage").as_uri()
        if self.redis_url == "":
            self.redis_url = None
        if self.ray_address == "":
            self.ray_address = None
        return self

    def _ray_token(self) -> str | None:
        token = self.ray_auth_token.get_secret_value() if self.ray_auth_token else None
        default = Path.home() / ".ray" / "auth_token"
        if token is None and default.is_file():
            token = default.read_text().strip()
        return token or None

    def ray_auth_headers(self) -> dict[str, str]:
        """HTTP headers for Ray's dashboard and Jobs API (empty when Ray runs without tokens)."""
        token = self._ray_token()
        return {"Authorization": f"Bearer {token}"} if token else {}

    def ray_driver_env(self) -> dict[str, str]:
        """Environment a Ray driver (``ray.init``) needs to join a token-authenticated cluster:
        Ray's client only sends its token with ``RAY_AUTH_MODE=token``."""
        token = self._ray_token()
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token} if token else {}

    @property
    def ray_gcs_address(self) -> str:
        """Where Ray drivers (the API's inference gateway) connect: ``MOEPLANE_RAY_ADDRESS``, or
        the local head `moeplane up` starts (GCS on 127.0.0.1:6380)."""
        return self.ray_address or "127.0.0.1:6380"

    @property
    def broker_url(self) -> str:
        """Redis when configured; else kombu's SQLAlchemy transport on a SQLite file."""
        return self.redis_url or f"sqla+sqlite:///{self.home / 'broker.db'}"

    @property
    def result_backend(self) -> str:
        return self.redis_url or f"db+sqlite:///{self.home / 'celery-results.db'}"

    @property
    def embedded(self) -> bool:
        """True when nothing external is configured (SQLite, in-process limits, local Ray)."""
        return self.redis_url is None and self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
