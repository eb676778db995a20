"""Settings: sources and precedence, production secret rules, the development secret file."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr
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


@pytest.mark.parametrize("secret", [None, "short"])
def test_a_shared_database_needs_an_explicit_secret(tmp_path: Path, secret: str | None) -> None:
    settings = load_settings(
        None, data_dir=tmp_path / "d", jwt_secret=secret,
        database={"url": "postgresql+asyncpg://ragd:pw@db:5432/ragd"},
    )
    with pytest.raises(ConfigurationError, match="RAGD_JWT_SECRET is required with a shared"):
        with_runtime_secret(settings)
    assert not (tmp_path / "d" / DEV_SECRET_FILE).exists()
    explicit = settings.model_copy(update={"jwt_secret": SecretStr(TEST_SECRET)})
    assert with_runtime_secret(explicit).jwt_secret == SecretStr(TEST_SECRET)


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


# -- nothing is ignored quietly: unknown keys, unknown variables, complex values -------------


def _problems(message: str) -> list[str]:
    """The problem lines of a ConfigurationError message ("invalid settings:" + lines)."""
    head, *lines = message.splitlines()
    assert head == "invalid settings:"
    return [line.strip() for line in lines]


@pytest.mark.parametrize(
    ("content", "line"),
    [
        ("[auth]\nacess_token_ttl_seconds = 600\n",
         "unknown setting auth.acess_token_ttl_seconds (did you mean access_token_ttl_seconds?)"),
        ("[models]\nrerankr = 'onnx'\n", "unknown setting models.rerankr (did you mean reranker?)"),
        ("[database]\nbusy_timeout = 10\n",
         "unknown setting database.busy_timeout (did you mean busy_timeout_ms?)"),
        ("[memory]\nsoft_limit = 10\n",
         "unknown setting memory.soft_limit (did you mean soft_limit_mb?)"),
        ("[ingestion]\nworker = 1\n", "unknown setting ingestion.worker (did you mean workers?)"),
        ("[llm]\ntopk = 3\n", "unknown setting llm.topk (did you mean top_k?)"),
        ("[[llm.providers]]\nname = 'a'\ntype = 'extractive'\nmodle = 'x'\n",
         "unknown setting llm.providers[0].modle (did you mean model?)"),
        ("prot = 9000\n", "unknown setting prot (did you mean port?)"),
        ("[auths]\nissuer = 'x'\n", "unknown setting auths (did you mean auth?)"),
        # A group's key at the top: the [auth] header is missing.
        ("access_token_ttl_seconds = 600\n",
         "unknown setting access_token_ttl_seconds (did you mean auth.access_token_ttl_seconds?)"),
        ("[auth]\ncolour = 'blue'\n", "unknown setting auth.colour"),
    ],
)
def test_unknown_keys_in_the_file_name_the_key_and_the_likely_one(
    tmp_path: Path, content: str, line: str
) -> None:
    config = tmp_path / "ragd.toml"
    config.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        load_settings(config)
    assert _problems(info.value.message) == [line]


def test_every_table_refuses_unknown_keys(tmp_path: Path) -> None:
    """Each group of settings, present or future, forbids unknown keys."""
    from ragd.settings import Settings

    groups = [name for name, field in Settings.model_fields.items()
              if isinstance(field.default, BaseModel)]
    assert {"database", "auth", "models", "memory", "ingestion", "llm"} <= set(groups)
    config = tmp_path / "ragd.toml"
    config.write_text(
        "".join(f"[{group}]\nno_such_key = 1\n" for group in groups)
        + "[[llm.providers]]\nname = 'a'\ntype = 'extractive'\nno_such_key = 1\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError) as info:
        load_settings(config)
    assert sorted(_problems(info.value.message)) == sorted(
        [f"unknown setting {group}.no_such_key" for group in groups]
        + ["unknown setting llm.providers[0].no_such_key"]
    )


def test_misspelled_variables_stop_the_process_with_the_likely_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAGD_ENV", "production")
    monkeypatch.setenv("RAGD_JWT_SECRET", STRONG)
    monkeypatch.setenv("RAGD_JWT_SECRT", "a-secret-value-never-shown-0123456789")
    monkeypatch.setenv("RAGD_AUTH__ACESS_TOKEN_TTL_SECONDS", "600")
    monkeypatch.setenv("RAGD_AUTH_ISSUER", "single-underscore")  # the group needs "__"
    monkeypatch.setenv("ragd_porrt", "9000")  # read case-insensitively, checked the same way
    monkeypatch.setenv("RAGD_LLM__PROVIDERS__0__NAME", "a")  # providers are one JSON list
    monkeypatch.setenv("RAGD_WHATEVER", "1")
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert _problems(info.value.message) == [
        "unknown environment variable RAGD_AUTH_ISSUER (did you mean RAGD_AUTH__ISSUER?)",
        "unknown environment variable RAGD_AUTH__ACESS_TOKEN_TTL_SECONDS "
        "(did you mean RAGD_AUTH__ACCESS_TOKEN_TTL_SECONDS?)",
        "unknown environment variable RAGD_JWT_SECRT (did you mean RAGD_JWT_SECRET?)",
        "unknown environment variable RAGD_LLM__PROVIDERS__0__NAME "
        "(did you mean RAGD_LLM__PROVIDERS?)",
        "unknown environment variable RAGD_WHATEVER",
        "unknown environment variable ragd_porrt (did you mean RAGD_PORT?)",
    ]
    assert "a-secret-value" not in info.value.message


def test_a_typo_next_to_other_problems_lists_them_all(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "ragd.toml"
    config.write_text("[auth]\nleeway = 5\n", encoding="utf-8")
    monkeypatch.setenv("RAGD_CONFIG", str(config))
    monkeypatch.setenv("RAGD_PORT", "99999")
    monkeypatch.setenv("RAGD_LOG_LEVL", "DEBUG")
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    problems = _problems(info.value.message)
    assert problems[0] == (
        "unknown environment variable RAGD_LOG_LEVL (did you mean RAGD_LOG_LEVEL?)"
    )
    assert sorted(problems[1:]) == [
        "port: Input should be less than or equal to 65535",
        "unknown setting auth.leeway (did you mean leeway_seconds?)",
    ]


def test_the_cli_refuses_a_misspelled_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RAGD_JWT_SECRT", STRONG)
    result = CliRunner().invoke(cli, ["config", "show", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown environment variable RAGD_JWT_SECRT (did you mean RAGD_JWT_SECRET?)" in (
        result.output
    )
    assert STRONG not in result.output


def test_variables_that_are_not_settings_but_are_ours_are_accepted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ragd.settings import OTHER_VARIABLES

    config = tmp_path / "ragd.toml"
    config.write_text("port = 9100\n", encoding="utf-8")
    for name in OTHER_VARIABLES:
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("RAGD_CONFIG", str(config))
    # A whole group as one JSON object is a setting too.
    monkeypatch.setenv("RAGD_AUTH", '{"issuer": "from-json"}')
    settings = load_settings()
    assert settings.port == 9100 and settings.auth.issuer == "from-json"


def test_kubernetes_service_links_are_not_mistaken_for_typos(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Service named ``ragd-api`` puts these into every pod of its namespace."""
    links = {
        "RAGD_API_SERVICE_HOST": "10.96.0.12",
        "RAGD_API_SERVICE_PORT": "8000",
        "RAGD_API_SERVICE_PORT_HTTP": "8000",
        "RAGD_API_PORT": "tcp://10.96.0.12:8000",
        "RAGD_API_PORT_8000_TCP": "tcp://10.96.0.12:8000",
        "RAGD_API_PORT_8000_TCP_PROTO": "tcp",
        "RAGD_API_PORT_8000_TCP_PORT": "8000",
        "RAGD_API_PORT_8000_TCP_ADDR": "10.96.0.12",
    }
    for name, value in links.items():
        monkeypatch.setenv(name, value)
    assert load_settings().port == 8000
    # The same shape of name without a service-link value is still a typo.
    monkeypatch.setenv("RAGD_API_PORT", "8000")
    with pytest.raises(ConfigurationError, match="unknown environment variable RAGD_API_PORT"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value", "line"),
    [
        ("RAGD_LLM__PROVIDERS", '[{name: "a", "api_key": "sk-never-shown"}]',
         "RAGD_LLM__PROVIDERS must be a JSON list of provider objects: Expecting property name "
         "enclosed in double quotes at line 1, column 3 (character 2)"),
        ("RAGD_LLM__PROVIDERS", 'openai:gpt-4o,sk-never-shown',
         "RAGD_LLM__PROVIDERS must be a JSON list of provider objects: Expecting value at "
         "line 1, column 1 (character 0)"),
        ("RAGD_LLM__PROVIDERS", '[{"name": "a", "type": "extractive"},\n {"name": "b",}]',
         "RAGD_LLM__PROVIDERS must be a JSON list of provider objects: Expecting property name "
         "enclosed in double quotes at line 2, column 15 (character 52)"),
        ("RAGD_LLM__PROVIDERS", '{"name": "a", "type": "extractive"}',
         "RAGD_LLM__PROVIDERS must be a JSON list of provider objects: the value is an object"),
        ("RAGD_LLM__PROVIDERS", '[{"name": "a", "type": "extractive"}, "b"]',
         "RAGD_LLM__PROVIDERS must be a JSON list of provider objects: item 1 is a string"),
        ("RAGD_LLM__PROVIDERS", "  ",
         "RAGD_LLM__PROVIDERS must be a JSON list of provider objects: the value is empty"),
        ("RAGD_AUTH", "issuer=x",
         "RAGD_AUTH must be a JSON object of auth settings: Expecting value at line 1, "
         "column 1 (character 0)"),
        ("RAGD_LLM", "[]", "RAGD_LLM must be a JSON object of llm settings: the value is a list"),
        # Valid JSON of the right shape: pydantic checks the contents, same line format.
        ("RAGD_LLM__PROVIDERS", '[{"name": "a", "type": "extractive", "nme": "b"}]',
         "unknown setting llm.providers[0].nme (did you mean name?)"),
        ("RAGD_LLM__PROVIDERS", '[{"name": "a", "type": "gpt"}]',
         "llm.providers[0].type: unknown provider type 'gpt': use type \"openai\" (valid types: "
         "'openai', 'anthropic', 'extractive')"),
    ],
)
def test_complex_variables_must_be_json_and_say_where_it_breaks(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, line: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert _problems(info.value.message) == [line]
    assert "never-shown" not in info.value.message


def test_a_valid_provider_list_in_the_environment_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAGD_LLM__PROVIDERS", json.dumps(
        [{"name": "local", "type": "openai", "model": "m", "base_url": "http://127.0.0.1:1/v1"}]
    ))
    providers = load_settings().llm.providers
    assert [(p.name, p.type) for p in providers] == [("local", "openai")]


#: A string literal that names a ``RAGD_`` variable (read, set for a child process...).
_VARIABLE = re.compile(r"""["'](RAGD_[A-Z0-9_]*[A-Z0-9])["']""")


def test_every_ragd_variable_the_code_uses_or_documents_is_known() -> None:
    """Guards the unknown-variable check: a new RAGD_ variable read directly (a client
    option, a test or benchmark knob) must be added to OTHER_VARIABLES, or every process
    started with it set would refuse to run. The README's names must be real too."""
    from ragd.settings import OTHER_VARIABLES, setting_variables

    root = Path(__file__).resolve().parents[1]
    known = set(setting_variables()) | set(OTHER_VARIABLES)
    used: dict[str, set[str]] = {}
    for path in [p for d in ("src", "tests", "bench") for p in (root / d).rglob("*.py")]:
        if path.name == "test_settings.py":  # holds deliberate typos
            continue
        for name in _VARIABLE.findall(path.read_text(encoding="utf-8")):
            used.setdefault(name, set()).add(str(path.relative_to(root)))
    readme = (root / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"RAGD_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_*])", readme))  # not X_*
    assert {"RAGD_URL", "RAGD_API_KEY", "RAGD_TOKEN", "RAGD_CRASH_KILLS"} <= set(used)
    assert {name: where for name, where in used.items() if name not in known} == {}
    assert documented - known == set()
