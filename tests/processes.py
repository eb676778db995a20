"""Real server processes in tests: a free port, waiting until one is ready, stopping it."""

from __future__ import annotations

import signal
import socket
import subprocess
from typing import Any

import httpx

from tests.waiting import HANG_TIMEOUT, eventually_sync


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(base: str, proc: subprocess.Popen[Any], what: str = "ragd serve") -> None:
    """Until ``/health/ready`` answers 200; fails at once if the process exits first."""

    def ready() -> bool:
        assert proc.poll() is None, f"{what} exited early with {proc.returncode}"
        try:
            return httpx.get(f"{base}/health/ready", timeout=HANG_TIMEOUT).status_code == 200
        except httpx.TransportError:
            return False

    eventually_sync(ready, what=f"{what} is ready")


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within the hang guard."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=HANG_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
