"""Build the provider chain from settings: the configured providers in order, then the
extractive provider as the last resort of every chain.

Only configuration is checked here (types, URLs, credentials present where required): no
warm-up call reaches any provider at startup, and no model is loaded (the extractive
provider embeds through the model runtime, which loads the embedder on first use).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ragd.errors import ConfigurationError
from ragd.generation.base import Provider
from ragd.generation.providers.anthropic import AnthropicProvider
from ragd.generation.providers.extractive import ExtractiveProvider
from ragd.generation.providers.openai import OpenAIProvider
from ragd.generation.router import Route
from ragd.models.runtime import ModelRuntime
from ragd.settings import LLMSettings, ProviderSettings

__all__ = ["EXTRACTIVE", "PROVIDERS", "PROVIDER_TYPES", "build_routes"]

#: The name of the always-appended extractive provider (unless configured under another).
EXTRACTIVE = "extractive"

#: The remote providers by configured ``type``. ``extractive`` is not here: it needs the model
#: runtime and is always built, last.
PROVIDERS: Mapping[str, Callable[[ProviderSettings], Provider]] = {
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
}
#: Every valid ``type`` of ``[[llm.providers]]``.
PROVIDER_TYPES = (*sorted(PROVIDERS), "extractive")


def chain_names(settings: LLMSettings) -> list[str]:
    """The provider names of the chain :func:`build_routes` builds, in order."""
    extractive = [p.name for p in settings.providers if p.type == "extractive"]
    remote = [p.name for p in settings.providers if p.type != "extractive"]
    return [*remote, extractive[-1] if extractive else EXTRACTIVE]


def build_routes(settings: LLMSettings, runtime: ModelRuntime) -> list[Route]:
    """One :class:`Route` per configured provider, in order, and the extractive provider
    last. A configured ``extractive`` entry sets the last route's name and limits; wherever
    it is listed, it runs last (it always answers, so nothing after it would ever run).

    Raises :class:`ConfigurationError` listing the valid types when a provider's ``type`` is
    none of :data:`PROVIDER_TYPES`, before any provider is built.
    """
    unknown = [p for p in settings.providers if p.type not in PROVIDER_TYPES]
    if unknown:
        raise ConfigurationError("; ".join(
            f"provider {p.name}: unknown type {p.type!r} (valid types: "
            f"{', '.join(PROVIDER_TYPES)})" for p in unknown
        ))
    routes: list[Route] = []
    extractive: ProviderSettings | None = None
    for provider in settings.providers:
        if provider.type == "extractive":
            extractive = provider
            continue
        routes.append(Route(PROVIDERS[provider.type](provider), provider.timeout_seconds,
                            provider.max_attempts))
    name = extractive.name if extractive is not None else EXTRACTIVE
    timeout = extractive.timeout_seconds if extractive is not None else 30.0
    routes.append(Route(
        ExtractiveProvider(runtime.embed_sentences, embed_query=runtime.embed_query, name=name),
        timeout, 1,
    ))
    return routes
