"""Settings: sources and precedence, production secret rules, the development secret file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from ragd.cli import app as cli
from ragd.errors import ConfigurationError
from ragd.settings import DEV_SECRET_FILE, load_settings, masked, with_runtime_secret
from tests.conftest import TEST_SECRET

STRONG = "k9Qx2-vT7mW4pL8zR1nB6cY3hJ5dF0sGaE"


def test_defaults_are_development_on_localhost() -> None:
    settings = load_settings()
    assert settings.env == "development"
    assert settings.host == "127.0.0.1" and settings.port == 8000
    assert settings.database_url.startswith("sqlite+aiosqlite:///")


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        (None, "is not set"),
        ("", "is not set"),
        ("short-but-random-9f8e", "at least 32 bytes"),
        ("changethis", "placeholder"),
        ("CHANGEME", "placeholder"),
        ("a" * 64, "placeholder"),
    ],
)
def test_production_refuses_to_start_without_a_strong_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, secret: str | None, problem: str
) -> None:
    monkeypatch.setenv("RAGD_ENV", "production")
    monkeypatch.setenv("RAGD_DATA_DIR", str(tmp_path))
    if secret is not None:
        monkeypatch.setenv("RAGD_JWT_SECRET", secret)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert "RAGD_JWT_SECRET" in info.value.message
    assert problem in info.value.message
    if secret:
        assert secret not in info.value.message


def test_production_accepts_a_strong_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGD_ENV", "production")
    monkeypatch.setenv("RAGD_JWT_SECRET", STRONG)
    settings = load_settings()
    assert settings.is_production
    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == STRONG
    assert settings.should_bootstrap_admin is False


def test_production_serve_exits_with_a_readable_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RAGD_ENV", "production")
    result = CliRunner().invoke(cli, ["serve", "--data-dir", str(tmp_path), "--port", "1"])
    assert result.exit_code == 2
    assert "RAGD_JWT_SECRET is not set" in result.output
    assert not (tmp_path / "ragd.db").exists()


def test_development_secret_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path / "d")
    first = with_runtime_secret(settings)
    path = tmp_path / "d" / DEV_SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = with_runtime_secret(load_settings(None, data_dir=tmp_path / "d"))
    assert first.jwt_secret is not None and second.jwt_secret is not None
    assert first.jwt_secret.get_secret_value() == second.jwt_secret.get_secret_value()
    assert len(first.jwt_secret.get_secret_value()) >= 32


def test_explicit_secret_is_not_replaced(tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path, jwt_secret=TEST_SECRET)
    assert with_runtime_secret(settings).jwt_secret == SecretStr(TEST_SECRET)
    assert not (tmp_path / DEV_SECRET_FILE).exists()


def test_toml_file_then_env_then_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "ragd.toml"
    config.write_text(
        'port = 9100\nlog_level = "DEBUG"\n[auth]\naccess_token_ttl_seconds = 600\n'
        'issuer = "from-toml"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("RAGD_CONFIG", str(config))
    monkeypatch.setenv("RAGD_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("RAGD_AUTH__ISSUER", "from-env")
    settings = load_settings(None, port=9200)
    assert settings.port == 9200  # override beats the file
    assert settings.log_level == "WARNING"  # env beats the file
    assert settings.auth.issuer == "from-env"
    assert settings.auth.access_token_ttl_seconds == 600  # from the file


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("port = 70000\n", "port"),
        ("[auth]\nleeway_seconds = 120\n", "auth.leeway_seconds"),
        ("[auth]\nargon2_memory_kib = 1024\n", "auth.argon2_memory_kib"),
        ('env = "staging"\n', "env"),
        ("unknown_setting = 1\n", "unknown_setting"),
        ("port = [\n", "invalid settings"),
    ],
)
def test_invalid_settings_give_readable_errors(tmp_path: Path, content: str, fragment: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        load_settings(config)
    assert fragment in info.value.message


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


def test_config_show_masks_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAGD_JWT_SECRET", STRONG)
    monkeypatch.setenv("RAGD_AUTH__PREVIOUS_JWT_SECRET", STRONG[::-1])
    monkeypatch.setenv("RAGD_DATABASE__URL", "postgresql+asyncpg://ragd:pa55word@db:5432/ragd")
    result = CliRunner().invoke(cli, ["config", "show", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert STRONG not in result.output and STRONG[::-1] not in result.output
    assert "pa55word" not in result.output
    shown = json.loads(result.output)
    assert shown["jwt_secret"] == "**********"
    assert shown["auth"]["previous_jwt_secret"] == "**********"
    assert shown["database"]["url"] == "postgresql+asyncpg://**********@db:5432/ragd"
    assert shown["data_dir"] == str(tmp_path)


def test_masked_settings_never_contain_the_secret(tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path, jwt_secret=STRONG)
    assert STRONG not in json.dumps(masked(settings))


def test_access_tokens_must_not_outlive_sessions(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="access_token_ttl_seconds"):
        load_settings(
            None,
            data_dir=tmp_path,
            auth={"access_token_ttl_seconds": 3600, "refresh_token_ttl_seconds": 600},
        )


def test_production_checks_the_previous_secret_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGD_ENV", "production")
    monkeypatch.setenv("RAGD_JWT_SECRET", STRONG)
    monkeypatch.setenv("RAGD_AUTH__PREVIOUS_JWT_SECRET", "changeme")
    with pytest.raises(ConfigurationError, match="PREVIOUS_JWT_SECRET is a placeholder"):
        load_settings()


def test_weak_secret_in_development_is_replaced_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(None, data_dir=tmp_path, jwt_secret="dev")
    with caplog.at_level("WARNING", logger="ragd.settings"):
        effective = with_runtime_secret(settings)
    assert effective.jwt_secret is not None
    assert effective.jwt_secret.get_secret_value() != "dev"
    assert any("generated development secret" in r.getMessage() for r in caplog.records)
