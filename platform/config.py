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
    # Ray cluster address (e.g. ray://head:10001 or auto); unset = a local Ray started by `up`.
    ray_address: str | None = None
    # Artifact storage root (datasets, checkpoints); unset = file:// under HOME.
    storage_uri: str | None = None
    # Bootstrap admin key; unset = one is generated on first start and printed once.
    admin_key: SecretStr | None = None
    # Address `moeplane up` binds the API to.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
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

    @property
    def embedded(self) -> bool:
        """True when nothing external is configured (SQLite, in-process limits, local Ray)."""
        return self.redis_url is None and self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
