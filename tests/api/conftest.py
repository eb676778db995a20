"""Fixtures of the API tests: one real ``ragd serve`` for the whole-API suites."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.live import LiveServer, live_server
from tests.conftest import _MODEL_CACHE


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("live"), _MODEL_CACHE[0]) as server:
        yield server
