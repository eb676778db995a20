"""A real uvicorn server for the app under test, on 127.0.0.1, in a background thread.

Used where the ASGI transport is not enough: the official ``openai`` client, and client
disconnects in the middle of an SSE stream.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI

from ragd.app import create_app
from ragd.settings import Settings
from tests.processes import free_port
from tests.waiting import HANG_TIMEOUT, eventually_sync


@contextmanager
def serving(
    settings: Settings, *, prepare: Callable[[FastAPI], None] | None = None
) -> Iterator[str]:
    """Run ``create_app(settings)`` with uvicorn; yield its base URL; stop it on exit.

    ``prepare`` may add routes to the app first (a route that fails on purpose, say).
    """
    port = free_port()
    app = create_app(settings)
    if prepare is not None:
        prepare(app)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="ragd-test-server", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert thread.is_alive(), "the test server stopped before it was ready"
        try:
            return httpx.get(f"{base}/health/ready", timeout=HANG_TIMEOUT).status_code == 200
        except httpx.TransportError:
            return False

    try:
        eventually_sync(ready, what="the test server is ready")
    except AssertionError:
        server.should_exit = True
        raise
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)
