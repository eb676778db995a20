"""Cold start: launch ``ragd serve`` and time it until ``GET /health/ready`` answers 200.

Each run launches the server twice on one new temporary data dir:

* **fresh data dir**: the directory does not exist yet, so the server creates it, writes the
  SQLite database, runs the migrations and (ragd's development default) bootstraps the first
  platform admin, which costs one argon2 hash;
* **existing data dir**: a second start on the directory the first start initialised.

For each start it records the wall time from just before the process launch until the
readiness probe (a raw loopback socket, polled every ~5 ms) answers 200, the idle RSS of the
server process tree 1 s after ready, and the SIGTERM-to-exit shutdown time and exit code.
A separate ``python -c "import ..."`` run shows how much of the start is interpreter + imports.
After the RSS sample it reads ``GET /performance/models`` (the bench server runs with
``RAGD_PUBLIC_PERFORMANCE=true``, so no token is needed) and records each model's state:
``models_loaded_at_start`` lists any model that is not ``not_loaded`` (expected: none, since
the registry loads models on first use only).

Targets (reported, never enforced): ready <= 1.0 s, idle RSS <= 150 MB, judged on the median.

    .venv/bin/python bench/cold_start.py [--runs 5] [--quick] [--no-bootstrap-admin]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

try:  # imported as part of the ``bench`` directory (e.g. from the repo root) ...
    from bench import _common as common
except ImportError:  # ... or run as a script, with bench/ on sys.path
    import _common as common  # type: ignore[no-redef,unused-ignore]

NAME = "cold_start"
DEFAULT_RUNS = 5
QUICK_RUNS = 2
READY_TARGET_S = 1.0
RSS_TARGET_MB = 150.0
SETTLE_S = 1.0
POLL_INTERVAL_S = 0.005
IMPORTS = "import ragd.cli, ragd.app, ragd.container, uvicorn"

_STARTUP_RE = re.compile(r"startup_seconds=([0-9.]+)")
_MIGRATED_RE = re.compile(r"ragd ready .*migrated=(True|False)")
_GRACEFUL = "ragd stopped"  # logged when the lifespan has closed the services
#: Lets the bench read /performance/models without a platform admin token.
_SERVER_EXTRA = {"RAGD_PUBLIC_PERFORMANCE": "true"}


def model_states(port: int, *, timeout: float = 5.0) -> dict[str, str] | None:
    """``{name: state}`` from ``GET /performance/models`` on 127.0.0.1, or None if unreadable."""
    url = f"http://{common.LOOPBACK}:{port}/performance/models"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            data = json.loads(response.read())
        return {str(model["name"]): str(model["state"]) for model in data["models"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _server_reported(log_text: str) -> tuple[float | None, bool | None]:
    """``startup_seconds`` and ``migrated`` from the server's last "ragd ready" log line.

    ragd's StartupMetrics clock starts on entry to ``serve()`` (after ``ragd.cli`` is
    imported), so this covers the uvicorn/FastAPI imports too, not the lifespan alone.
    """
    startup = _STARTUP_RE.findall(log_text)
    migrated = _MIGRATED_RE.findall(log_text)
    return (
        float(startup[-1]) if startup else None,
        (migrated[-1] == "True") if migrated else None,
    )


def measure_start(
    data_dir: Path, log_path: Path, env: dict[str, str], *, settle: float = SETTLE_S
) -> dict[str, Any]:
    """Start, wait for ready, sample idle memory, stop. One dict of raw numbers."""
    log_path.write_bytes(b"")
    server = common.ServerProcess(data_dir=data_dir, log_path=log_path, env=env)
    sample: dict[str, Any] = {"data_dir_existed": data_dir.exists()}
    try:
        server.start()
        ready = server.wait_ready(interval=POLL_INTERVAL_S)
        sample.update(
            ready=ready.ready,
            ready_s=round(ready.seconds, 4),
            first_connect_s=(
                None if ready.first_connect_seconds is None
                else round(ready.first_connect_seconds, 4)
            ),
            polls=ready.polls,
        )
        if ready.ready:
            time.sleep(settle)
            sample["rss_mb"] = common.bytes_to_mb(server.rss_bytes())
            sample["uss_mb"] = common.bytes_to_mb(server.uss_bytes())
            states = model_states(server.port)  # after the RSS sample: it cannot skew it
            sample["model_states"] = states
            sample["models_loaded_at_start"] = (
                None if states is None
                else sorted(name for name, state in states.items() if state != "not_loaded")
            )
        else:
            sample["error"] = f"not ready (exit code {ready.exit_code})"
            sample["log_tail"] = server.log_tail()
        stop = server.stop()
        sample.update(
            shutdown_s=round(stop.seconds, 4), exit_code=stop.exit_code, killed=stop.killed
        )
    finally:
        server.stop()
    log_text = log_path.read_text(encoding="utf-8", errors="replace")
    startup, migrated = _server_reported(log_text)
    sample.update(
        server_startup_s=startup,
        migrated=migrated,
        # uvicorn >= 0.29 re-raises the captured SIGTERM after a graceful shutdown, so the
        # exit code is -15 (143 in a shell) even when everything closed cleanly.
        graceful=_GRACEFUL in log_text,
    )
    return sample


def measure_imports() -> float | None:
    """Launch-to-imported wall time of a bare interpreter importing what ``ragd serve`` does.

    The child prints a line once the imports are done; interpreter teardown (which can take
    a tenth of a second with this many modules) is not counted.
    """
    program = f"{IMPORTS}; print('imported', flush=True)"
    started = time.perf_counter()
    with subprocess.Popen(
        [common.ragd_python(), "-c", program], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        elapsed = time.perf_counter() - started
        proc.stdout.read()
        exit_code = proc.wait(timeout=30)
    return elapsed if line.startswith(b"imported") and exit_code == 0 else None


def _aggregate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [sample for sample in samples if sample.get("ready")]

    def values(key: str) -> list[float]:
        return [sample[key] for sample in ok if sample.get(key) is not None]

    return {
        "runs": len(samples),
        "failures": len(samples) - len(ok),
        "ready_s": common.summarize(values("ready_s")),
        "first_connect_s": common.summarize(values("first_connect_s")),
        "server_startup_s": common.summarize(values("server_startup_s")),
        "rss_mb": common.summarize(values("rss_mb"), digits=1),
        "uss_mb": common.summarize(values("uss_mb"), digits=1),
        "shutdown_s": common.summarize(values("shutdown_s")),
        "exit_codes": sorted({sample.get("exit_code") for sample in samples}, key=str),
        "killed": sum(1 for sample in samples if sample.get("killed")),
        "graceful": sum(1 for sample in samples if sample.get("graceful")),
        "migrated": sorted({sample.get("migrated") for sample in ok}, key=str),
        "models_checked": sum(1 for s in ok if s.get("models_loaded_at_start") is not None),
        "models_loaded_at_start": sorted(
            {name for s in ok for name in s.get("models_loaded_at_start") or []}
        ),
        "models_registered": sorted({name for s in ok for name in s.get("model_states") or {}}),
    }


def run(
    quick: bool = False,
    *,
    runs: int | None = None,
    warmup: bool = True,
    bootstrap_admin: bool | None = None,
    settle: float = SETTLE_S,
) -> dict[str, Any]:
    runs = runs if runs is not None else (QUICK_RUNS if quick else DEFAULT_RUNS)
    runs = max(1, min(runs, 100))  # bounded, whatever is asked
    extra = dict(_SERVER_EXTRA)
    if bootstrap_admin is not None:
        extra["RAGD_BOOTSTRAP_ADMIN"] = str(bootstrap_admin)
    env = common.server_env(extra)
    samples: dict[str, list[dict[str, Any]]] = {"fresh": [], "existing": []}
    imports: list[float] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ragd-bench-cold-") as tmp:
        root = Path(tmp)
        for index in range(-1 if warmup else 0, runs):
            data_dir = root / f"run{index + 1}" / "data"  # does not exist yet
            data_dir.parent.mkdir(parents=True)
            fresh = measure_start(data_dir, data_dir.parent / "fresh.log", env, settle=settle)
            existing = measure_start(
                data_dir, data_dir.parent / "existing.log", env, settle=settle
            )
            seconds = measure_imports()
            if index < 0:
                continue  # warm-up: page cache, .pyc files; discarded
            fresh["run"] = existing["run"] = index + 1
            samples["fresh"].append(fresh)
            samples["existing"].append(existing)
            if seconds is not None:
                imports.append(seconds)

    result: dict[str, Any] = {
        "bench": NAME,
        "config": {
            "runs": runs,
            "warmup_runs": 1 if warmup else 0,
            "poll_interval_s": POLL_INTERVAL_S,
            "settle_s": settle,
            "command": " ".join([*common.ragd_command(), "serve", "--host", common.LOOPBACK,
                                 "--port", "<free>", "--data-dir", "<tmp>/data"]),
            "server_env": {"RAGD_JWT_SECRET": "<random, 64 chars>", **extra},
            "bootstrap_admin": "ragd default (on in development)"
            if bootstrap_admin is None else bootstrap_admin,
            "imports_measured": IMPORTS,
        },
        "environment": common.environment(),
        "targets": {"ready_s_max": READY_TARGET_S, "idle_rss_mb_max": RSS_TARGET_MB,
                    "judged_on": "median"},
        "fresh": _aggregate(samples["fresh"]),
        "existing": _aggregate(samples["existing"]),
        "imports_s": common.summarize(imports),
        "samples": samples,
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    # Every model found loaded right after any start; expected [] (models load on first use).
    result["models_loaded_at_start"] = sorted(
        set(result["fresh"]["models_loaded_at_start"])
        | set(result["existing"]["models_loaded_at_start"])
    )
    result["summary"] = summary_rows(result)
    return result


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for key, label in (("fresh", "fresh data dir"), ("existing", "existing data dir")):
        part = result[key]
        ready = part["ready_s"]
        failed = part["failures"]
        note = f"min {ready.get('min')} / max {ready.get('max')} s, n={ready.get('n', 0)}"
        if failed:
            note += f", {failed} run(s) never ready"
        rows.append(common.row(
            f"ready ({label}), median", ready.get("median"), "s",
            target=f"<= {READY_TARGET_S}",
            status="FAIL" if failed else common.verdict(ready.get("median"), READY_TARGET_S),
            note=note,
        ))
    for key, label in (("fresh", "fresh data dir"), ("existing", "existing data dir")):
        rss = result[key]["rss_mb"]
        rows.append(common.row(
            f"idle RSS ({label}), median", rss.get("median"), "MB",
            target=f"<= {RSS_TARGET_MB:.0f}",
            status=common.verdict(rss.get("median"), RSS_TARGET_MB),
            note=f"min {rss.get('min')} / max {rss.get('max')} MB, 1 s after ready",
        ))
    for key, label in (("fresh", "fresh data dir"), ("existing", "existing data dir")):
        part = result[key]
        down = part["shutdown_s"]
        note = (f"exit codes {part['exit_codes']} (-15: uvicorn re-raises SIGTERM), "
                f"{part['graceful']}/{part['runs']} graceful, max {down.get('max')} s")
        if part["killed"]:
            note += f", {part['killed']} needed SIGKILL"
        rows.append(common.row(
            f"shutdown after SIGTERM ({label}), median", down.get("median"), "s", note=note
        ))
    for key, label in (("fresh", "fresh"), ("existing", "existing")):
        reported = result[key]["server_startup_s"]
        rows.append(common.row(
            f"server-reported startup_seconds ({label}), median", reported.get("median"), "s",
            note="serve() entry -> app ready: imports, settings, DB, migrations, bootstrap",
        ))
    checked = result["fresh"]["models_checked"] + result["existing"]["models_checked"]
    starts = result["fresh"]["runs"] + result["existing"]["runs"]
    loaded = result["models_loaded_at_start"]
    rows.append(common.row(
        "models loaded at start", len(loaded) if checked else None, "models",
        target="0", status="pass" if checked and not loaded else ("FAIL" if loaded else "n/a"),
        note=f"GET /performance/models after {checked}/{starts} starts: "
             f"{', '.join(loaded) if loaded else 'all not_loaded'} "
             f"({', '.join(result['fresh']['models_registered']) or 'none'} registered)",
    ))
    imports = result["imports_s"]
    rows.append(common.row(
        "python start + imports only (no server), median", imports.get("median"), "s",
        note=f"min {imports.get('min')} / max {imports.get('max')} s",
    ))
    return rows


def _loaded_cell(sample: dict[str, Any]) -> str:
    loaded = sample.get("models_loaded_at_start")
    if loaded is None:
        return "?"
    return ", ".join(loaded) if loaded else "none"


def render(result: dict[str, Any]) -> str:
    runs = [
        [kind, sample.get("run"), sample.get("ready_s"), sample.get("first_connect_s"),
         sample.get("server_startup_s"), sample.get("rss_mb"), sample.get("shutdown_s"),
         sample.get("exit_code"), _loaded_cell(sample)]
        for kind in ("fresh", "existing") for sample in result["samples"][kind]
    ]
    per_run = common.format_table(
        ["data dir", "run", "ready s", "1st connect s", "server startup_s", "RSS MB", "shutdown s",
         "exit", "models loaded"],
        runs,
    )
    return (
        f"cold start: {result['config']['runs']} run(s) per mode, "
        f"{result['environment']['cpu_count']} CPU(s), {result['elapsed_s']} s\n\n"
        f"{per_run}\n\n{common.summary_table(result['summary'])}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=None,
                        help=f"starts per mode (default {DEFAULT_RUNS}, --quick {QUICK_RUNS})")
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="do not discard a first warm-up run")
    parser.add_argument("--no-bootstrap-admin", dest="bootstrap_admin", action="store_const",
                        const=False, default=None,
                        help="RAGD_BOOTSTRAP_ADMIN=false (skip the first-admin argon2 hash)")
    parser.add_argument("--settle", type=float, default=SETTLE_S,
                        help="seconds between ready and the RSS sample")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    result = run(args.quick, runs=args.runs, warmup=args.warmup,
                 bootstrap_admin=args.bootstrap_admin, settle=args.settle)
    common.emit(result, render(result), json_only=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
