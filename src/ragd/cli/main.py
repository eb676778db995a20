"""The ``ragd`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

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
models_app = typer.Typer(help="Prepare and inspect the models.", no_args_is_help=True)
index_app = typer.Typer(help="Check and rebuild the derived search indexes.",
                        no_args_is_help=True)
app.add_typer(admin_app, name="admin")
app.add_typer(index_app, name="index")
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")

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
            if not services.schema.ready:
                raise RagdError("the database schema is behind this version of ragd: run "
                                "`ragd db upgrade` first")
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


#: Exit status of ``ragd serve`` when it cannot start (uvicorn's own code for this).
STARTUP_FAILED = 3
LISTEN_BACKLOG = 2048
MAX_SERVER_PROCESSES = 64


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: 8000]")] = None,
    workers: Annotated[int, typer.Option(
        min=1, max=MAX_SERVER_PROCESSES,
        help="Server processes sharing the address and the data dir (Linux; see the README "
        "for what they share and what each holds on its own).")] = 1,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Start the HTTP server on the configured data dir (migrating it first).

    The address is taken before anything else, so a busy port fails at once, with nothing
    started or written. Exit status: 2 for invalid settings, 3 when the address cannot be
    taken or the start fails; with --workers above 1, 0 after SIGTERM/SIGINT stopped every
    process cleanly and 1 when server processes kept dying (or had to be killed).
    """
    # With several processes, this one only supervises: it imports nothing heavy (each
    # child measures its own start-up).
    startup = _startup_metrics() if workers == 1 else None
    settings = _settings(config, host=host, port=port, data_dir=data_dir)
    _limit_malloc_arenas(settings)
    sockets = _listen(settings.host, settings.port)

    from ragd.ops.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format, production=settings.is_production)
    try:
        if workers == 1:
            status = _serve_one(settings, sockets, startup)
        else:
            status = _serve_many(settings, sockets, workers)
    finally:
        for sock in sockets:
            sock.close()
    if status:
        raise typer.Exit(status)


def _limit_malloc_arenas(settings: Any) -> None:
    """Before any thread starts (see :func:`ragd.ops.memory.limit_malloc_arenas`)."""
    from ragd.ops.memory import limit_malloc_arenas

    limit_malloc_arenas(settings.memory.malloc_arenas)


def _startup_metrics() -> Any:
    from ragd.container import StartupMetrics

    return StartupMetrics()


def _base_url(settings: Any) -> str:
    return f"http://{settings.host}:{settings.port}"


def _serve_one(settings: Any, sockets: list[socket.socket], startup: Any) -> int:
    """The whole server in this process."""

    async def announce(services: Any) -> None:
        created = await _bootstrap_admin(services)
        lines = [f"ragd {__version__} ({settings.env}) serving {_base_url(settings)}  data dir: "
                 f"{settings.data_dir.resolve()}"]
        lines += _credential_lines(created) + _login_lines(settings)
        print("\n".join(lines), file=sys.stderr, flush=True)

    return _run_server(settings, sockets, startup, announce)


def _serve_many(settings: Any, sockets: list[socket.socket], workers: int) -> int:
    """``workers`` forked server processes on the sockets bound here (see ragd.ops.supervisor).

    What must happen once is done here or under the start-up lock (the data dir's, or an
    advisory lock on PostgreSQL): the data dir and the development JWT secret are created
    before forking (N processes generating their own secret would refuse each other's
    tokens); migrations and the first admin run under the lock in whichever child comes
    first. Only slot 0 runs the ingestion workers, so their number (and the memory parsing
    and embedding take) does not grow with N.
    """
    from ragd.ops.supervisor import Supervisor
    from ragd.settings import with_runtime_secret

    try:
        settings = with_runtime_secret(settings)
    except RagdError as exc:
        _fail(exc.message, STARTUP_FAILED)
    except OSError as exc:
        _fail(f"cannot prepare the data dir {settings.data_dir}: {exc.strerror or exc}",
              STARTUP_FAILED)
    ingestion_workers = settings.ingestion.workers
    quiet = settings.model_copy(
        update={"ingestion": settings.ingestion.model_copy(update={"workers": 0})}
    )

    def child(slot: int, ready: Callable[[], None]) -> int:
        async def announce(services: Any) -> None:
            created = await _bootstrap_admin(services)
            if created is not None:
                print("\n".join(_credential_lines(created)), file=sys.stderr, flush=True)
            ready()

        return _run_server(settings if slot == 0 else quiet, sockets, _startup_metrics(),
                           announce)

    def on_ready(pids: list[int]) -> None:
        memory = settings.memory
        lines = [
            f"ragd {__version__} ({settings.env}) serving {_base_url(settings)} with {workers} "
            f"processes (pids {', '.join(map(str, pids))})  data dir: "
            f"{settings.data_dir.resolve()}",
            f"  each process: memory soft limit {memory.soft_limit_mb:.0f} MB, emergency "
            f"{memory.emergency_limit_mb:.0f} MB (RAGD_MEMORY__*); ingestion workers: "
            f"{ingestion_workers} in the first process only",
        ]
        total_mb = _physical_memory_mb()
        if total_mb and workers * memory.emergency_limit_mb > total_mb:
            lines.append(
                f"  warning: {workers} x {memory.emergency_limit_mb:.0f} MB exceeds this "
                f"machine's {total_mb:.0f} MB; lower RAGD_MEMORY__SOFT_LIMIT_MB and "
                "RAGD_MEMORY__EMERGENCY_LIMIT_MB or --workers")
        print("\n".join(lines + _login_lines(settings)), file=sys.stderr, flush=True)

    return Supervisor(child, workers, on_ready=on_ready).run()


def _physical_memory_mb() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
    return pages * size / 2**20


async def _bootstrap_admin(services: Any) -> Any:
    """The first platform admin on an empty database: once, whichever process comes first,
    on whichever host (the "any user yet?" check and the creation run under the start-up
    lock, an advisory lock on PostgreSQL; the unique email backs it up)."""
    from ragd.container import startup_lock

    if not services.settings.should_bootstrap_admin:
        return None
    async with startup_lock(services.settings, services.db):
        return await services.accounts.bootstrap_admin(services.settings.data_dir)


def _credential_lines(created: Any) -> list[str]:
    if created is None:
        return []
    return [
        f"First start: created a platform admin (saved in {created.path}, mode 0600):",
        f"  email:    {created.email}",
        f"  password: {created.password}",
    ]


def _login_lines(settings: Any) -> list[str]:
    base = _base_url(settings)
    lines = [
        "Log in:",
        f"  curl -s -X POST {base}/api/v1/auth/login -H 'content-type: application/json' \\",
        "       -d '{\"email\": \"<email>\", \"password\": \"<password>\"}'",
    ]
    if settings.registration_open:
        lines.append(f"  or create your own tenant: POST {base}/api/v1/auth/register")
    if settings.serves_api_docs:
        lines.append(f"API docs: {base}/docs")
    return lines


def _run_server(
    settings: Any, sockets: list[socket.socket], startup: Any,
    on_startup: Callable[[Any], Awaitable[None]],
) -> int:
    """Serve the app on ``sockets`` until a stop signal; 0, or STARTUP_FAILED when the
    application's start-up failed (uvicorn logged why)."""
    import uvicorn

    from ragd.app import create_app

    application = create_app(settings, startup=startup, on_startup=on_startup)
    server = uvicorn.Server(uvicorn.Config(
        application,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
    ))
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=sockets)
    return 0 if server.started else STARTUP_FAILED


def _listen(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address ``host`` resolves to, bound as asyncio's
    ``create_server`` (what uvicorn calls) would bind them, or exit with a clear message.

    Binding first is the point: uvicorn binds only after the application's startup, so a
    busy port used to show up after migrations, the admin bootstrap, "ragd ready" and the
    ingestion workers. Listening at once also holds the port (on Linux, two sockets with
    SO_REUSEADDR may share a port until one listens); connections made during startup wait
    in the backlog and are served once the app is ready.
    """
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror}", STARTUP_FAILED)
    sockets: list[socket.socket] = []
    for family, kind, proto, _, address in dict.fromkeys(infos):
        sock = socket.socket(family, kind, proto)
        sockets.append(sock)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
        except OSError as exc:
            for opened in sockets:
                opened.close()
            reason = exc.strerror or str(exc)
            if exc.errno == errno.EADDRINUSE:
                reason += " (another process listens there; choose another --port or RAGD_PORT)"
            elif exc.errno == errno.EACCES:
                reason += " (ports below 1024 need privileges)"
            _fail(f"cannot listen on {_address(address)}: {reason}", STARTUP_FAILED)
    return sockets


def _address(address: Any) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
    """Apply pending migrations (the server also does this at start, unless
    database.migrate_on_start is off). Safe to run from several places at once: the
    migrations run once, under a lock."""
    settings = _settings(config, data_dir=data_dir)
    # This command migrates whatever the replicas' setting says.
    settings = settings.model_copy(update={
        "database": settings.database.model_copy(update={"migrate_on_start": True})
    })
    started = time.perf_counter()

    async def action(services: Any) -> bool:
        return bool(services.migrations_applied)

    applied = _run(settings, action)
    state = "migrated" if applied else "already up to date"
    typer.echo(f"database {state} ({time.perf_counter() - started:.2f}s)")


@models_app.command("prepare")
def models_prepare(
    force: Annotated[
        bool, typer.Option("--force", help="Prepare again even if a valid preparation exists.")
    ] = False,
    no_quantize: Annotated[
        bool,
        typer.Option("--no-quantize", help="Prepare the fp32 graph [default: models.quantize]."),
    ] = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Prepare the default embedder (all-MiniLM-L6-v2) in the data dir ahead of first use."""
    from ragd.models import minilm
    from ragd.ops.logs import configure_logging

    settings = _settings(config, data_dir=data_dir)
    configure_logging("WARNING", settings.log_format, production=settings.is_production)
    quantize = settings.models.quantize and not no_quantize
    started = time.perf_counter()
    try:
        prepared = minilm.prepare(
            _model_dir(settings),
            quantize=quantize,
            force=force,
            threads=settings.models.inference_threads,
        )
    except RagdError as exc:
        _fail(exc.message)
        raise  # unreachable: _fail exits
    elapsed = time.perf_counter() - started
    manifest = prepared.manifest
    how = (
        f"reused the preparation of {manifest['prepared_at']}"
        if prepared.reused
        else f"prepared in {manifest['timings']['total_seconds']:.1f}s"
    )
    lines = [
        f"{minilm.NAME} in {prepared.path}",
        f"  variant:    {prepared.variant} ({how})",
        f"  why:        {manifest['reason']}",
        f"  cosine:     mean {manifest['cosine_mean']:.4f}, min {manifest['cosine_min']:.4f} "
        f"vs the original model on {manifest['sample_size']} sentences",
        f"  throughput: {manifest['sentences_per_second']:.0f} sentences/s, "
        f"{manifest['tokens_per_second']:.0f} tokens/s on that sample",
        f"  took:       {elapsed:.2f}s",
    ]
    if settings.models.embedder != "minilm":
        lines.append(f"note: the configured embedder is {settings.models.embedder}, not minilm")
    typer.echo("\n".join(lines))


@models_app.command("list")
def models_list(data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Show the configured embedder and reranker, and the models prepared on disk."""
    from ragd.models import minilm
    from ragd.models.factory import embedder_name

    settings = _settings(config, data_dir=data_dir)
    models = settings.models
    try:
        name = embedder_name(settings)
    except RagdError as exc:
        _fail(exc.message)
    where = {
        "minilm": f"quantize={str(models.quantize).lower()}",
        "onnx": f"path={models.embedder_path}",
        "openai": f"base_url={models.openai_base_url}",
    }[models.embedder]
    reranker = "none" if models.reranker == "none" else f"onnx, path={models.reranker_path}"
    lines = [
        f"embedder: {models.embedder} ({name}; {where}; max_tokens={models.max_tokens})",
        f"reranker: {reranker}",
    ]
    root = settings.model_cache_dir / "models"
    prepared = minilm.prepared_models(settings.model_cache_dir)
    if not prepared:
        lines.append(f"prepared: none in {root}")
    else:
        lines.append(f"prepared in {root}:")
        for item in prepared:
            manifest = item.manifest
            size = sum(p.stat().st_size for p in item.path.rglob("*") if p.is_file())
            model = item.model_path.stat().st_size if item.model_path.is_file() else 0
            lines.append(
                f"  {item.path.name:<22} {item.variant:<22} "
                f"cosine {float(manifest.get('cosine_mean', 0)):.4f}  "
                f"model {model / 1e6:.1f} MB, "
                f"dir {size / 1e6:.1f} MB  {manifest.get('prepared_at', '?')}"
            )
    typer.echo("\n".join(lines))


@app.command()
def worker(
    concurrency: Annotated[
        int, typer.Option(min=1, max=64, help="Jobs processed at once by this process.")
    ] = 2,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Run ingestion workers against the data dir's database until SIGTERM/SIGINT.

    Several `ragd worker` processes and `ragd serve` may run on the same data dir; jobs are
    claimed under a lease, and a job whose worker dies is picked up again.
    """
    import signal

    from ragd.container import (
        build_workers,
        open_services,
        recover_indexes,
        run_index_checkpoints,
    )
    from ragd.ops.logs import configure_logging

    settings = _settings(config, data_dir=data_dir)
    _limit_malloc_arenas(settings)
    configure_logging(settings.log_level, settings.log_format, production=settings.is_production)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        async with open_services(settings) as services:
            if not services.schema.ready:
                print("ragd worker: waiting for the database schema (ragd db upgrade)",
                      file=sys.stderr, flush=True)
                waiting = asyncio.create_task(services.schema.wait())
                stopped = asyncio.create_task(stop.wait())
                await asyncio.wait((waiting, stopped), return_when=asyncio.FIRST_COMPLETED)
                for task in (waiting, stopped):
                    task.cancel()
                await asyncio.gather(waiting, stopped, return_exceptions=True)
                if not services.schema.ready:
                    print("ragd worker: stopped", file=sys.stderr, flush=True)
                    return
            await recover_indexes(services)
            pool = build_workers(services, concurrency)
            monitor = asyncio.create_task(services.memory.run(), name="ragd-memory-monitor")
            checkpoints = asyncio.create_task(
                run_index_checkpoints(services), name="ragd-index-checkpoints"
            )
            print(f"ragd worker: {concurrency} worker(s) on {settings.data_dir.resolve()}",
                  file=sys.stderr, flush=True)
            try:
                await pool.run_until_stopped(stop)
            finally:
                monitor.cancel()
                checkpoints.cancel()
        print("ragd worker: stopped", file=sys.stderr, flush=True)

    try:
        asyncio.run(main())
    except RagdError as exc:
        _fail(exc.message)


TenantOpt = Annotated[
    str | None,
    typer.Option("--tenant", help="Only this tenant (its name or id) [default: every tenant].",
                 show_default=False),
]


async def _tenants(services: Any, tenant: str | None) -> list[tuple[str, str]]:
    """(id, name) of the tenant named or numbered ``tenant``, or of every tenant."""
    if tenant is not None:
        found = (await services.store.get_tenant(tenant)
                 or await services.store.get_tenant_by_name(tenant))
        if found is None:
            raise RagdError(f"no tenant with the name or id {tenant}")
        return [(found.id, found.name)]
    tenants: list[tuple[str, str]] = []
    while batch := await services.store.list_tenants(limit=500, offset=len(tenants)):
        tenants.extend((t.id, t.name) for t in batch)
        if len(batch) < 500:
            break
    return tenants


@index_app.command("verify")
def index_verify(
    tenant: TenantOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Compare each tenant's BM25 and vector partitions with the chunk rows; nothing is
    changed. Each tenant is ``ok`` (in step), ``pending`` (behind, but every difference is
    in the change log after the partition's saved mark: the vector partition is saved every
    30 s, and the log is replayed by the next sync or start) or ``broken`` (a difference the
    log does not account for; on PostgreSQL, chunk rows without their full-text or vector
    column). Exit status 1 when a tenant is broken, else 0."""
    settings = _settings(config, data_dir=data_dir)

    async def action(services: Any) -> list[dict[str, Any]]:
        reports = []
        for tenant_id, name in await _tenants(services, tenant):
            report = (await services.indexes.verify(tenant_id)).as_dict()
            reports.append({"tenant_name": name, **report})
        return reports

    reports = _run(settings, action)
    if as_json:
        typer.echo(json.dumps(reports, indent=2))
    else:
        for r in reports:
            typer.echo(
                f"{r['tenant_name']} ({r['tenant_id']})  {r['state']}  chunks={r['chunks']} "
                f"changes={r['last_change']} applied(lexical={r['lexical_applied']}, "
                f"vectors={r['vector_applied']}) missing(lexical={r['lexical_missing']}, "
                f"vectors={r['vector_missing']}) orphans(lexical={r['lexical_orphans']}, "
                f"vectors={r['vector_orphans']}) pending(lexical={r['lexical_pending']}, "
                f"vectors={r['vector_pending']})"
            )
    broken = [r for r in reports if r["state"] == "broken"]
    if any(r["state"] == "pending" for r in reports):
        typer.echo(
            "pending: committed changes not yet in the saved partitions (a running process "
            "saves its vectors every 30 s); the change log holds them and the next sync or "
            "start replays them: nothing to repair", err=True,
        )
    if broken:
        names = ", ".join(f"{r['tenant_name']} ({r['tenant_id']})" for r in broken)
        typer.echo(f"NEEDS REPAIR: {names}: differences the change log does not account "
                   "for; repair with: ragd index rebuild [--tenant NAME]", err=True)
        raise typer.Exit(1)


@index_app.command("rebuild")
def index_rebuild(
    tenant: TenantOpt = None, data_dir: DataDirOpt = None, config: ConfigOpt = None
) -> None:
    """Refill each tenant's partitions from the chunk rows in the database (on PostgreSQL:
    rewrite the rows' full-text and vector columns, and build missing vector indexes)."""
    settings = _settings(config, data_dir=data_dir)

    async def action(services: Any) -> list[tuple[str, str, int]]:
        done = []
        for tenant_id, name in await _tenants(services, tenant):
            done.append((tenant_id, name, await services.indexes.rebuild(tenant_id)))
        return done

    for tenant_id, name, count in _run(settings, action):
        typer.echo(f"{name} ({tenant_id})  rebuilt with {count} entries")


@app.command()
def ingest(
    paths: Annotated[
        list[Path], typer.Argument(help="Files and directories to ingest.", show_default=False)
    ],
    collection: Annotated[
        str,
        typer.Option("--collection", help="Collection name (created when missing).",
                     show_default=False),
    ],
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Descend into subdirectories.")
    ] = False,
    glob: Annotated[
        list[str] | None,
        typer.Option("--glob", help="Only directory entries matching this pattern (repeatable), "
                     "e.g. '*.pdf'. Files named on the command line are always taken.",
                     show_default=False),
    ] = None,
    metadata: Annotated[
        list[str] | None,
        typer.Option("--metadata", "-m", help="KEY=VALUE added to every document (repeatable; "
                     "values are strings).", show_default=False),
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="Work on the data dir directly and run this "
                           "run's jobs in this process (no server needed; other jobs in the "
                           "queue are left to `ragd serve`/`ragd worker`).")
    ] = False,
    tenant: Annotated[
        str | None,
        typer.Option("--tenant", help="With --local: the tenant's name or id.",
                     show_default=False),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option("--url", help="Server URL (default: $RAGD_URL or http://127.0.0.1:8000); "
                     "credential: $RAGD_API_KEY or $RAGD_TOKEN.", show_default=False),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until every document is ingested.")
    ] = True,
    timeout: Annotated[
        float, typer.Option(min=0, help="Stop waiting this many seconds after the last upload "
                            "(0: no limit); files not finished by then are reported as still "
                            "queued or processing, with their job ids (exit status 3).")
    ] = 0,
    concurrency: Annotated[
        int, typer.Option(min=1, max=64, help="With --local: jobs processed at once.")
    ] = 2,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Ingest files into a collection, through a running server or (--local) the data dir.

    While waiting, shows each file's queue position (the tenant's queued jobs ahead of it)
    and stage; on a pipe or in CI, one line per change. Then a summary: ingested,
    duplicates, queued, processing, failed and skipped files, the time waited in the queue
    and the rates over the processing time (from the first job leaving the queue).

    Skipped (not uploaded): hidden, empty, or over ingestion.max_upload_mb.

    Exit status: 0 when every file is ingested, a duplicate or skipped (or, with --no-wait,
    queued); 1 when some file failed; 2 for bad input, an unreachable server, a refused
    credential or an unknown tenant; 3 when --timeout passed with files still queued or
    processing (and none failed): their jobs carry on.
    """
    from rich.console import Console

    from ragd.cli.ingest import (
        ConsoleReporter,
        HttpBackend,
        IngestError,
        IngestSummary,
        LocalBackend,
        check_collection_name,
        discover,
        ingest_files,
        parse_metadata,
        render_summary,
    )

    if local and url is not None:
        _fail("--url and --local exclude each other")
    if local and not tenant:
        _fail("--local needs --tenant NAME_OR_ID")
    if not local and tenant is not None:
        _fail("--tenant only applies with --local (over HTTP the credential decides)")
    settings = _settings(config, data_dir=data_dir)
    try:
        name = check_collection_name(collection)
        fields = parse_metadata(metadata or [])
        candidates = discover(
            paths, recursive=recursive, globs=glob or [],
            max_bytes=settings.ingestion.max_upload_bytes,
        )
    except IngestError as exc:
        _fail(exc.message)
        raise  # unreachable: _fail exits
    if not candidates:
        _fail("no files to ingest" + (" (add --recursive?)" if not recursive else ""))
    err = Console(stderr=True)
    out = Console()

    async def main() -> IngestSummary:
        reporter = ConsoleReporter(err)
        if local:
            from ragd.ops.logs import configure_logging

            configure_logging("WARNING", settings.log_format, production=settings.is_production)
            assert tenant is not None  # noqa: S101 - checked above
            async with LocalBackend(settings, tenant, concurrency=concurrency,
                                    run_workers=wait) as backend:
                return await ingest_files(backend, name, candidates, fields, wait=wait,
                                          wait_seconds=timeout or None, reporter=reporter)
        async with HttpBackend(url) as remote:
            return await ingest_files(remote, name, candidates, fields, wait=wait,
                                      wait_seconds=timeout or None, reporter=reporter)

    try:
        summary = asyncio.run(main())
    except IngestError as exc:
        _fail(exc.message)
        raise  # unreachable: _fail exits
    except RagdError as exc:
        _fail(exc.message)
        raise  # unreachable: _fail exits
    except KeyboardInterrupt:
        _fail("interrupted", 130)
        raise  # unreachable: _fail exits
    render_summary(summary, out)
    if local and summary.count("queued") + summary.count("processing"):
        typer.echo("the unfinished jobs run when `ragd serve` or `ragd worker` opens this data "
                   "dir", err=True)
    elif summary.pending:
        typer.echo("follow them with GET /api/v1/jobs/<job id>", err=True)
    if summary.exit_status:
        raise typer.Exit(summary.exit_status)


@app.command("eval")
def eval_command(
    dataset_dir: Annotated[Path, typer.Argument(help="A BEIR folder: corpus.jsonl, "
                                                "queries.jsonl, qrels/test.tsv.")],
    mode: Annotated[str, typer.Option(help="hybrid, dense, lexical or all.")] = "all",
    k: Annotated[int, typer.Option(min=1, max=100, help="Cut-off of nDCG/Recall/MRR.")] = 10,
    rerank: Annotated[bool, typer.Option("--rerank", help="Rerank (needs a reranker).")] = False,
    from_source: Annotated[bool, typer.Option(
        "--from-source", help="Ingest the files in source/ and score chunks by the gold "
        "answers (hit@1/5/10).")] = False,
    keywords: Annotated[bool, typer.Option(help="Extract keywords while ingesting.")] = False,
    concurrency: Annotated[int, typer.Option(min=1, max=16, help="Ingestion workers.")] = 2,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report "
                                                  "here as JSON.", show_default=False)] = None,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="Run on PostgreSQL: a postgresql+asyncpg:// URL of a server "
        "(a database the role may connect to; it must be allowed to create databases). A "
        "throwaway database is created there for the run (search then runs in PostgreSQL) "
        "and dropped afterwards. Default: SQLite in the throwaway data dir.",
        show_default=False)] = None,
    keep_database: Annotated[bool, typer.Option(
        "--keep-database", help="With --database-url: keep the throwaway database (its name "
        "is printed) instead of dropping it.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Ingest a dataset into a throwaway data dir through the real pipeline, run every query
    through the real search path, and print nDCG, Recall, MRR and latency per mode."""
    import tempfile

    from ragd.cli import evaluate as ev
    from ragd.retrieval.beir import DatasetError, load_dataset

    modes = ["hybrid", "dense", "lexical"] if mode == "all" else [mode]
    if any(m not in ("hybrid", "dense", "lexical") for m in modes):
        _fail("--mode must be hybrid, dense, lexical or all")
    base = _settings(config)
    if rerank and base.models.reranker == "none":
        # Said now rather than by the first query, after the whole ingestion.
        _fail("--rerank needs a reranker: set RAGD_MODELS__RERANKER=onnx and "
              "RAGD_MODELS__RERANKER_PATH to a cross-encoder directory")
    try:
        dataset = load_dataset(dataset_dir)
    except DatasetError as exc:
        _fail(str(exc))
    if from_source and not (dataset_dir / "source").is_dir():
        _fail(f"{dataset_dir / 'source'} does not exist")
    database: ev.ScratchDatabase | None = None
    if database_url is not None:
        try:
            database = asyncio.run(ev.create_database(database_url))
        except ValueError as exc:
            _fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - any failure to reach the server is reported
            _fail(f"cannot create the eval database on --database-url ({type(exc).__name__})")
        assert database is not None  # noqa: S101 - _fail exits
        print(f"[eval] database {database.name}", file=sys.stderr, flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="ragd-eval-") as scratch:
            settings = _settings(
                config, data_dir=Path(scratch), bootstrap_admin=False,
                models={**base.models.model_dump(), "cache_dir": base.model_cache_dir},
                ingestion={**base.ingestion.model_dump(), "workers": 0,
                           "keywords_enabled": keywords},
                **({} if database is None else {"database": {
                    **base.database.model_dump(), "url": database.url}}),
                **_throwaway_secret(base, database is not None),
            )
            report = _run(settings, lambda services: _evaluate(
                services, dataset, dataset_dir, modes, k=k, rerank=rerank or None,
                from_source=from_source, concurrency=concurrency,
            ))
    finally:
        if database is not None and not keep_database:
            asyncio.run(ev.drop_database(database))
    _print_eval(report)
    if json_out is not None:
        json_out.write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")


def _throwaway_secret(base: Any, shared: bool) -> dict[str, str]:
    """A random JWT secret for a run on its own throwaway PostgreSQL database when none is
    configured: no other process signs or verifies its tokens (a shared database otherwise
    needs the deployment's RAGD_JWT_SECRET)."""
    import secrets

    from ragd.settings import secret_problem

    if not shared or secret_problem(base.jwt_secret) is None:
        return {}
    return {"jwt_secret": secrets.token_urlsafe(48)}


async def _evaluate(
    services: Any, dataset: Any, dataset_dir: Path, modes: list[str], *, k: int,
    rerank: bool | None, from_source: bool, concurrency: int,
) -> Any:
    from ragd.cli import evaluate as ev
    from ragd.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

    def progress(line: str) -> None:
        print(f"[eval] {line}", file=sys.stderr, flush=True)

    tenant = await services.store.create_tenant(f"eval-{dataset.name}")
    collection = await services.catalog.create_collection(
        tenant.id, dataset.name, description=None, metadata={}
    )
    skipped: list[str] = []
    if from_source:
        uploads = []
        for path in ev.source_files(dataset_dir / "source"):
            try:
                upload = await services.ingestion.prepare(
                    path.read_bytes(), filename=path.name, declared_type=None, title=None,
                    metadata={"path": str(path.relative_to(dataset_dir))},
                )
            except (InvalidInput, PayloadTooLarge, UnsupportedMediaType) as exc:
                skipped.append(f"{path.name}: {exc.message}")
                continue
            uploads.append((str(path), upload))
    else:
        uploads = ev.corpus_uploads(dataset)
    progress(f"ingesting {len(uploads)} documents")
    started = time.perf_counter()
    labels, failed = await ev.ingest_all(
        services, tenant.id, collection.id, uploads, concurrency=concurrency, progress=progress
    )
    ingest_seconds = time.perf_counter() - started
    chunks = len(await services.catalog.chunk_keys(tenant.id, after=0, limit=10**7))
    report = ev.EvalReport(
        dataset=dataset.name, documents=len(labels), chunks=chunks,
        ingest_seconds=ingest_seconds, failed=failed + skipped, from_source=from_source,
    )
    for mode in modes:
        progress(f"querying ({mode})")
        hits, latencies = await ev.run_queries(
            services, tenant.id, dict(dataset.queries), cast(Any, mode), rerank=rerank
        )
        metrics = (ev.source_metrics(dataset, hits) if from_source
                   else ev.mode_metrics(dataset, ev.document_run(hits, labels), k))
        report.modes.append(ev.ModeReport(
            mode=mode, metrics=metrics, latency_ms=ev.latency(latencies), queries=len(hits)
        ))
    return report


def _print_eval(report: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=(
        f"{report.dataset}{' (from source)' if report.from_source else ''}: "
        f"{report.documents} documents, {report.chunks} chunks, "
        f"ingested in {report.ingest_seconds:.1f} s"
    ))
    names = list(report.modes[0].metrics) if report.modes else []
    table.add_column("mode")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p95 ms", justify="right")
    for m in report.modes:
        table.add_row(m.mode, *(f"{m.metrics[n]:.4f}" for n in names),
                      f"{m.latency_ms['p50']:.1f}", f"{m.latency_ms['p95']:.1f}")
    console.print(table)
    if report.failed:
        console.print(f"{len(report.failed)} document(s) not ingested, e.g. "
                      f"{report.failed[:3]}")
    typer.echo(json.dumps(report.as_dict()))


def _model_dir(settings: Any) -> Path:
    from ragd.settings import ensure_data_dir

    ensure_data_dir(settings)
    path: Path = settings.model_cache_dir
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def main() -> None:
    app()
