from pathlib import Path

import pytest
from pydantic import ValidationError

from moeplane.config import Settings


def test_defaults_live_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in ("DATABASE_URL", "REDIS_URL", "RAY_ADDRESS", "STORAGE_URI", "ADMIN_KEY"):
        monkeypatch.delenv(f"MOEPLANE_{name}", raising=False)
    monkeypatch.setenv("MOEPLANE_HOME", str(tmp_path))
    settings = Settings()
    assert settings.home == tmp_path
    assert settings.database_url == f"sqlite:///{tmp_path / 'moeplane.db'}"
    assert settings.storage_uri == (tmp_path / "storage").as_uri()
    assert settings.redis_url is None and settings.ray_address is None
    assert settings.embedded


def test_env_prefix_and_empty_means_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("MOEPLANE_HOME", str(tmp_path))
    monkeypatch.setenv("MOEPLANE_DATABASE_URL", "postgresql+psycopg://u@db/x")
    monkeypatch.setenv("MOEPLANE_REDIS_URL", "")
    monkeypatch.setenv("MOEPLANE_RAY_ADDRESS", "ray://head:10001")
    settings = Settings()
    assert settings.database_url == "postgresql+psycopg://u@db/x"
    assert settings.redis_url is None
    assert settings.ray_address == "ray://head:10001"
    assert not settings.embedded


def test_admin_key_is_validated_loudly():
    with pytest.raises(ValidationError, match="mp-"):
        Settings(admin_key="secret-but-wrong-format-xxxxxxxx")
    with pytest.raises(ValidationError, match="too short"):
        Settings(admin_key="mp-short")
    assert Settings(admin_key="mp-" + "x" * 30).admin_key.get_secret_value().startswith("mp-")
