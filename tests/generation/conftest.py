"""Fixtures for the generation tests: the real MiniLM embedder of ``tests/models``."""

from __future__ import annotations

from tests.models.conftest import minilm_embedder, prepared_minilm  # noqa: F401
