"""Schema-driven fuzzing: schemathesis against the OpenAPI schema of a real ``ragd serve``.

Every operation, authenticated as a tenant admin, with every check schemathesis has (no 5xx,
responses match their schemas, status codes and content types documented, schema-valid
input accepted and schema-invalid input refused, authentication enforced, stateful links);
0 failures. The run is bounded (``RAGD_FUZZ_EXAMPLES`` cases per operation and phase, a
fixed seed so CI is reproducible: ``RAGD_FUZZ_SEED=random`` explores new inputs).

Where the schema cannot say a rule (a password's strength, an opaque cursor's contents) the
operation's expected statuses are widened in ``schemathesis.toml``, each with its reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.api.live import REPO, LiveServer

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
SEED = "20261205"


def test_schemathesis_finds_nothing(live: LiveServer, tmp_path: Path) -> None:
    seed = os.environ.get("RAGD_FUZZ_SEED", SEED)
    command = [
        sys.executable, "-m", "schemathesis.cli",
        "--config-file", str(HERE / "schemathesis.toml"),
        "run", f"{live.base}/openapi.json",
        "--checks", "all",
        "--max-examples", os.environ.get("RAGD_FUZZ_EXAMPLES", "50"),
        "--workers", "1",
        "--request-timeout", "120",
        "--generation-database", "none",
        "--report", "junit", "--report-dir", str(tmp_path),
        "--no-color",
    ]
    if seed != "random":
        command += ["--seed", seed]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGD_")}
    env.update({
        "SCHEMATHESIS_HOOKS": "tests.api.fuzz_hooks",
        "PYTHONPATH": str(REPO),
        "FUZZ_BASE_URL": live.base,
        "FUZZ_EMAIL": live.email,
        "FUZZ_PASSWORD": live.password,
    })
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                            check=False)
    output = result.stdout + result.stderr
    (tmp_path / "schemathesis.txt").write_text(output, encoding="utf-8")
    assert result.returncode == 0, output[-20000:]
    assert "unhandled error" not in live.log_text()
