"""Run every ragd benchmark, save the JSON to bench/results/latest.json, print one table.

    .venv/bin/python bench/run.py [--quick] [--only NAME ...] [--output PATH] [--json]

To add a bench, write ``bench/<name>.py`` exposing ``run(quick=False) -> dict`` (JSON-able,
with a ``"summary"`` list of rows from ``_common.row``), ``render(result) -> str`` and
``main(argv=None)``, then add its name to :data:`BENCHES`. Targets are reported (``pass`` /
``FAIL``) but never change the exit code; only a bench that crashes does.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

try:  # imported as part of the ``bench`` directory (e.g. from the repo root) ...
    from bench import _common as common
except ImportError:  # ... or run as a script, with bench/ on sys.path
    import _common as common  # type: ignore[no-redef,unused-ignore]

#: Bench modules (in bench/), run in this order.
# bench/soak.py is not run by default: it takes about 40 minutes (see its docstring); nor is
# bench/contention.py: 2 minutes of load, then the drain of its ingestion backlog (~30 minutes);
# nor bench/ingest_corpus.py: every passage of both eval corpora, about an hour a repetition.
BENCHES: list[str] = [
    "cold_start", "auth_overhead", "models", "ingest", "crash", "fusion", "search_latency",
    "chat_latency", "loop_lag", "revocation_delay",
]
DEFAULT_OUTPUT = common.BENCH_DIR / "results" / "latest.json"


def _load(name: str) -> Any:
    package = __package__ or ""
    if package:
        return importlib.import_module(f"{package}.{name}")
    if str(common.BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(common.BENCH_DIR))
    return importlib.import_module(name)


def _git() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=common.REPO_ROOT, capture_output=True, text=True, timeout=10,
            check=True,
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {}


def run(quick: bool = False, only: list[str] | None = None) -> dict[str, Any]:
    names = only or BENCHES
    started = time.perf_counter()
    combined: dict[str, Any] = {
        "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "git": _git(),
        "environment": common.environment(),
        "benches": {},
        "errors": {},
    }
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        bench_started = time.perf_counter()
        try:
            combined["benches"][name] = _load(name).run(quick=quick)
        except Exception:  # noqa: BLE001 - one broken bench must not hide the others
            combined["errors"][name] = traceback.format_exc()
            print(combined["errors"][name], file=sys.stderr, flush=True)
        print(f"[bench] {name} done in {time.perf_counter() - bench_started:.1f} s",
              file=sys.stderr, flush=True)
    combined["elapsed_s"] = round(time.perf_counter() - started, 1)
    # Other work on the machine skews every number here: keep the load next to them.
    combined["environment"]["load_avg_1m_end"] = common.environment().get("load_avg_1m")
    return combined


def render(combined: dict[str, Any]) -> str:
    headers = ["bench", "metric", "value", "unit", "target", "status", "note"]
    lines = []
    for name, result in combined["benches"].items():
        for line in result.get("summary", []):
            lines.append([name, *(line.get(key, "") for key in headers[1:])])
    for name in combined["errors"]:
        lines.append([name, "ERROR", None, "", "", "ERROR", "see errors in the JSON"])
    env = combined["environment"]
    git = combined.get("git", {})
    title = (f"ragd benchmarks{' (quick)' if combined['quick'] else ''}: "
             f"{combined['elapsed_s']} s, Python {env['python']}, {env['cpu_count']} CPU(s), "
             f"commit {git.get('commit', '?')[:10]}{' +dirty' if git.get('dirty') else ''}")
    return f"{title}\n\n{common.format_table(headers, lines)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run all ragd benchmarks.")
    parser.add_argument("--quick", action="store_true", help="fewer runs and requests")
    parser.add_argument("--only", action="append", choices=BENCHES, metavar="NAME",
                        help=f"run only this bench (repeatable): {', '.join(BENCHES)}")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"where to write the JSON (default {DEFAULT_OUTPUT})")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    combined = run(args.quick, args.only)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(combined, indent=2, default=str) + "\n", encoding="utf-8")
    print(json.dumps(combined, indent=2, default=str))
    if not args.json:
        for name, result in combined["benches"].items():
            print(f"\n== {name} ==\n{_load(name).render(result)}")
        print(f"\n== all ==\n{render(combined)}\n\nJSON written to {args.output}")
    return 1 if combined["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
