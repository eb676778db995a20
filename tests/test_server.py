"""The real server process: `ragd serve` on a free port, ready, login, clean shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_SECRET
from tests.processes import free_port, wait_ready

pytestmark = pytest.mark.slow


def test_serve_bootstraps_admin_logs_in_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGD_")}
    env["RAGD_JWT_SECRET"] = TEST_SECRET
    proc = subprocess.Popen(
        [sys.executable, "-m", "ragd", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        creds = dict(
            line.split(": ", 1)
            for line in (data_dir / "initial-admin.txt").read_text().splitlines()
        )
        assert oct((data_dir / "initial-admin.txt").stat().st_mode & 0o777) == "0o600"
        response = httpx.post(
            f"{base}/api/v1/auth/login",
            json={"email": creds["email"], "password": creds["password"]},
        )
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        me = httpx.get(f"{base}/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200
        assert me.json()["is_superuser"] is True
        assert me.headers["x-request-id"]
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    # uvicorn re-raises the signal after a graceful shutdown, so the process ends "by SIGTERM".
    assert proc.returncode in (0, -signal.SIGTERM)
    text = output.decode()
    assert "Finished server process" in text
    assert "Log in:" in text and creds["email"] in text
    assert TEST_SECRET not in text
    assert token not in text  # tokens are never logged
    assert "Application shutdown complete" in text


def _serve(port: int, data_dir: Path, *extra: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGD_")}
    env["RAGD_JWT_SECRET"] = TEST_SECRET
    return subprocess.run(
        [sys.executable, "-m", "ragd", "serve", "--port", str(port), "--data-dir",
         str(data_dir), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        timeout=120,  # a safety net: the process is expected to exit by itself at once
        check=False,
    )


def test_a_busy_port_fails_at_once_before_anything_starts(tmp_path: Path) -> None:
    """The address is taken first: a busy port stops `ragd serve` before migrations, the
    admin bootstrap, "ragd ready" or the ingestion workers, and leaves no data dir behind."""
    data_dir = tmp_path / "data"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = int(busy.getsockname()[1])
        result = _serve(port, data_dir)
    output = result.stdout.decode()
    assert result.returncode == 3, output
    assert (f"error: cannot listen on 127.0.0.1:{port}: Address already in use "
            "(another process listens there; choose another --port or RAGD_PORT)") in output
    assert "ragd ready" not in output and "serving" not in output
    assert "Traceback" not in output
    assert not data_dir.exists()


def test_an_unresolvable_host_fails_at_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = _serve(free_port(), data_dir, "--host", "no-such-host.invalid")
    output = result.stdout.decode()
    assert result.returncode == 3, output
    assert "error: cannot listen on no-such-host.invalid:" in output
    assert "Traceback" not in output and not data_dir.exists()
