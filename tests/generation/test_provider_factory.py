"""The provider factory: each configured ``type`` builds its own provider, the extractive
provider comes last, and an unknown type is a configuration error that lists the valid
types (never a silently built Anthropic provider)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, get_args

import pytest

from ragd.container import build_runtime
from ragd.errors import ConfigurationError
from ragd.generation.providers.anthropic import AnthropicProvider
from ragd.generation.providers.extractive import ExtractiveProvider
from ragd.generation.providers.factory import PROVIDER_TYPES, build_routes
from ragd.generation.providers.openai import OpenAIProvider
from ragd.generation.router import Route
from ragd.models.runtime import ModelRuntime
from ragd.ops.metrics import Metrics
from ragd.settings import LLMSettings, ProviderSettings
from tests.conftest import make_settings

OPENAI = {"name": "local", "type": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
ANTHROPIC = {"name": "claude", "type": "anthropic", "model": "claude-x", "api_key": "k" * 40}


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[ModelRuntime]:
    built = build_runtime(make_settings(tmp_path / "data"), Metrics())  # loads nothing
    yield built
    await built.close()


async def _close(routes: list[Route]) -> None:
    for route in routes:
        await route.provider.aclose()


def _llm(*providers: dict[str, Any]) -> LLMSettings:
    return LLMSettings(providers=[ProviderSettings(**p) for p in providers])


async def test_each_type_builds_its_provider_and_extractive_is_last(
    runtime: ModelRuntime,
) -> None:
    routes = build_routes(
        _llm({"name": "fallback", "type": "extractive"}, ANTHROPIC, OPENAI), runtime
    )
    try:
        assert [type(route.provider) for route in routes] == [
            AnthropicProvider, OpenAIProvider, ExtractiveProvider
        ]
        assert [route.provider.name for route in routes] == ["claude", "local", "fallback"]
    finally:
        await _close(routes)


async def test_an_unknown_type_is_refused_listing_the_valid_types(
    runtime: ModelRuntime,
) -> None:
    # The settings' Literal refuses it on load (next test); a settings object built without
    # validation must still not reach a provider that happens to be the default branch.
    gemini = ProviderSettings.model_construct(
        **{**ANTHROPIC, "name": "gemini", "type": "gemini"}
    )
    settings = LLMSettings.model_construct(providers=[ProviderSettings(**OPENAI), gemini])
    with pytest.raises(ConfigurationError) as caught:
        build_routes(settings, runtime)
    message = str(caught.value)
    assert "provider gemini: unknown type 'gemini'" in message
    assert "valid types: anthropic, openai, extractive" in message


def test_an_unknown_type_in_the_configuration_stops_startup(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        make_settings(tmp_path / "data", llm={"providers": [
            {"name": "gemini", "type": "gemini", "model": "m"}
        ]})
    message = str(caught.value)
    assert "llm.providers[0].type" in message
    for valid in PROVIDER_TYPES:
        assert repr(valid) in message


def test_the_factory_knows_exactly_the_configurable_types() -> None:
    configurable = get_args(ProviderSettings.model_fields["type"].annotation)
    assert sorted(configurable) == sorted(PROVIDER_TYPES)
