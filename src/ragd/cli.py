"""The ``ragd`` command line."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ragd import __version__
from ragd.errors import RagdError

T = TypeVar("T")

app = typer.Typer(
    help="ragd: a multi-tenant retrieval-augmented generation backend.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
admin_app = typer.Typer(help="Administer users and tenants on the local data dir.",
                        no_args_is_help=True)
config_app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file (also RAGD_CONFIG).", show_default=False),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (also RAGD_DATA_DIR).", show_default=False),
]


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _settings(config: Path | None, **overrides: Any) -> Any:
    from ragd.settings import load_settings

    try:
        return load_settings(config, **overrides)
    except RagdError as exc:
        _fail(exc.message)


def _run(settings: Any, action: Callable[[Any], Awaitable[T]]) -> T:
    """Open the services on the data dir, run ``action(services)``, close them."""
    from ragd.container import open_services
    from ragd.ops.logs import configure_logging

    configure_logging("WARNING", settings.log_format, production=settings.is_production)

    async def main() -> T:
        async with open_services(settings) as services:
            return await action(services)

    try:
        return asyncio.run(main())
    except RagdError as exc:
        _fail(exc.message)
        raise  # unreachable: _fail exits


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"ragd {__version__}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: 8000]")] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Start the HTTP server on the configured data dir (migrating it first)."""
    from ragd.container import StartupMetrics

    startup = StartupMetrics()
    settings = _settings(config, host=host, port=port, data_dir=data_dir)

    import uvicorn

    from ragd.app import create_app
    from ragd.ops.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format, production=settings.is_production)
    base = f"http://{settings.host}:{settings.port}"

    async def announce(services: Any) -> None:
        created = None
        if settings.should_bootstrap_admin:
            created = await services.accounts.bootstrap_admin(services.settings.data_dir)
        lines = [f"ragd {__version__} ({settings.env}) serving {base}  data dir: "
                 f"{settings.data_dir.resolve()}"]
        if created is not None:
            lines += [
                "First start: created a platform admin (saved in "
                f"{created.path}, mode 0600):",
                f"  email:    {created.email}",
                f"  password: {created.password}",
            ]
        lines += [
            "Log in:",
            f"  curl -s -X POST {base}/api/v1/auth/login -H 'content-type: application/json' \\",
            "       -d '{\"email\": \"<email>\", \"password\": \"<password>\"}'",
        ]
        if settings.allow_registration:
            lines.append(f"  or create your own tenant: POST {base}/api/v1/auth/register")
        if not settings.is_production:
            lines.append(f"API docs: {base}/docs")
        print("\n".join(lines), file=sys.stderr, flush=True)

    application = create_app(settings, startup=startup, on_startup=announce)
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
    )


@admin_app.command("create-superuser")
def create_superuser(
    email: Annotated[str, typer.Option(help="The administrator's email.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    tenant: Annotated[str, typer.Option(help="Tenant to place the admin in.")] = "default",
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Create a platform administrator."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    settings = _settings(config, data_dir=data_dir)

    async def action(services: Any) -> Any:
        return await services.accounts.create_superuser(
            email=email, password=password, tenant_name=tenant
        )

    user = _run(settings, action)
    typer.echo(json.dumps({"id": user.id, "email": user.email, "tenant_id": user.tenant_id}))


@admin_app.command("create-tenant")
def create_tenant(
    name: Annotated[str, typer.Argument(help="Tenant name (unique, case-insensitive).")],
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Create a tenant."""
    settings = _settings(config, data_dir=data_dir)

    async def action(services: Any) -> Any:
        return await services.accounts.create_tenant(name)

    tenant = _run(settings, action)
    typer.echo(json.dumps({"id": tenant.id, "name": tenant.name}))


@config_app.command("show")
def config_show(data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Print the effective settings as JSON, secrets masked."""
    from ragd.settings import masked

    settings = _settings(config, data_dir=data_dir)
    typer.echo(json.dumps(masked(settings), indent=2, sort_keys=True))


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Apply pending migrations (the server also does this at start)."""
    settings = _settings(config, data_dir=data_dir)
    started = time.perf_counter()

    async def action(services: Any) -> bool:
        return bool(services.migrations_applied)

    applied = _run(settings, action)
    state = "migrated" if applied else "already up to date"
    typer.echo(f"database {state} ({time.perf_counter() - started:.2f}s)")


def main() -> None:
    app()
