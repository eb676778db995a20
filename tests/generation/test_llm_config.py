"""Configuring real language models: the README's example configurations load, the official
APIs are the default base URLs, a ``type`` naming a server gets the right type suggested, and
a provider that cannot be reached says which address it tried."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import pytest

from ragd.errors import ConfigurationError
from ragd.generation.base import ChatRequest, Message, ProviderError
from ragd.generation.providers.factory import PROVIDERS
from ragd.settings import ProviderSettings, load_settings
from tests.generation.fakes import FakeLLMServer

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "### Connecting a language model"
KEYS = {"OPENAI_API_KEY": "sk-openai-example-key", "ANTHROPIC_API_KEY": "sk-ant-example-key"}


def _examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.index("\n### ", start + len(SECTION))
    blocks = re.findall(r"```toml\n(.*?)```", text[start:end], flags=re.DOTALL)
    assert len(blocks) >= 4, "the README lost its example configurations"  # noqa: PLR2004
    return blocks


@pytest.mark.parametrize("index", range(4))
async def test_every_readme_example_configuration_loads_and_builds_its_providers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index: int
) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    config = tmp_path / "ragd.toml"
    config.write_text(_examples()[index], encoding="utf-8")
    settings = load_settings(config, data_dir=tmp_path / "data")
    assert settings.llm.providers
    for provider in settings.llm.providers:
        assert provider.base_url and provider.base_url.startswith(("http://", "https://"))
        if provider.base_url.startswith("https://api."):
            assert provider.api_key is not None
            assert provider.api_key.get_secret_value() in KEYS.values()
        built = PROVIDERS[provider.type](provider)
        await built.aclose()


def test_the_official_apis_are_the_default_base_urls_and_need_a_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    openai = ProviderSettings(name="o", type="openai", model="m", api_key="sk-x")
    anthropic = ProviderSettings(name="a", type="anthropic", model="m", api_key="sk-y")
    assert openai.base_url == "https://api.openai.com/v1"
    assert anthropic.base_url == "https://api.anthropic.com"
    for kind in ("openai", "anthropic"):
        with pytest.raises(ValueError, match="api_key is required for https://api"):
            ProviderSettings(name="x", type=kind, model="m")
    # A local server needs no key.
    local = ProviderSettings(name="l", type="openai", model="m", base_url="http://127.0.0.1:1/v1")
    assert local.api_key is None
    # The key can come from a named variable, which must then be set.
    monkeypatch.setenv("MY_LLM_KEY", "sk-from-env")
    from_env = ProviderSettings(name="e", type="openai", model="m", api_key_env="MY_LLM_KEY")
    assert from_env.api_key is not None and from_env.api_key.get_secret_value() == "sk-from-env"
    monkeypatch.delenv("MY_LLM_KEY")
    with pytest.raises(ValueError, match="api_key_env names MY_LLM_KEY, which is not set"):
        ProviderSettings(name="e", type="openai", model="m", api_key_env="MY_LLM_KEY")


@pytest.mark.parametrize(
    ("written", "suggestion"),
    [
        ("ollama", 'use type "openai" with base_url "http://127.0.0.1:11434/v1"'),
        ("vLLM", 'use type "openai" with base_url "http://HOST:8000/v1"'),
        ("llama.cpp", 'use type "openai" with base_url "http://HOST:8080/v1"'),
        ("lm-studio", 'use type "openai" with base_url "http://127.0.0.1:1234/v1"'),
        ("claude", 'use type "anthropic"'),
        ("gpt", 'use type "openai"'),
        ("OpenAI", 'use type "openai"'),
        ("anthorpic", 'use type "anthropic"'),
        ("groq", 'use type "openai" with base_url set to its OpenAI-compatible endpoint'),
        ("openai-compatible", 'use type "openai" with the server\'s base_url'),
    ],
)
def test_an_unknown_type_suggests_the_right_one(
    tmp_path: Path, written: str, suggestion: str
) -> None:
    config = tmp_path / "ragd.toml"
    config.write_text(
        f'[[llm.providers]]\nname = "p"\ntype = "{written}"\nmodel = "m"\n', encoding="utf-8"
    )
    with pytest.raises(ConfigurationError) as caught:
        load_settings(config, data_dir=tmp_path / "data")
    message = str(caught.value)
    assert f"llm.providers[0].type: unknown provider type {written!r}: {suggestion}" in message
    assert "valid types: 'openai', 'anthropic', 'extractive'" in message


def test_a_type_like_nothing_lists_the_valid_types(tmp_path: Path) -> None:
    config = tmp_path / "ragd.toml"
    config.write_text('[[llm.providers]]\nname = "p"\ntype = "zzz"\n', encoding="utf-8")
    with pytest.raises(ConfigurationError) as caught:
        load_settings(config, data_dir=tmp_path / "data")
    assert ("unknown provider type 'zzz' (valid types: 'openai', 'anthropic', 'extractive')"
            in str(caught.value))


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_an_unreachable_provider_names_the_address_it_tried(
    kind: Literal["openai", "anthropic"],
) -> None:
    with FakeLLMServer(kind) as gone:  # started, then stopped: nothing listens there
        base_url = gone.base_url
    port = int(base_url.split(":")[2].split("/")[0])
    settings = ProviderSettings(name="local", type=kind, model="m", base_url=base_url,
                                api_key="sk-secret-never-shown")
    provider = PROVIDERS[kind](settings)
    request = ChatRequest(messages=(Message("user", "hi"),), question="hi")
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.complete(request, attempt_timeout=5.0)
    finally:
        await provider.aclose()
    assert caught.value.kind == "connection"
    assert f"provider local: cannot connect to http://127.0.0.1:{port}" in caught.value.message
    assert "sk-secret" not in caught.value.message and "/chat" not in caught.value.message
