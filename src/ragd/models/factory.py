"""The embedder family's factory, keyed on ``settings.models.embedder``.

:func:`embedder_loader` returns a zero-argument callable that builds the embedder; the model
registry calls it in a worker thread on first use. Nothing is loaded or imported here before
that call, so building the loader at startup costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from ragd.errors import ConfigurationError
from ragd.models.base import Embedder
from ragd.settings import Settings

__all__ = ["EMBEDDERS", "embedder_loader", "embedder_name"]

#: Valid values of ``models.embedder``.
EMBEDDERS = ("minilm", "onnx", "openai")


def embedder_loader(settings: Settings) -> Callable[[], Embedder]:
    """The loader of the configured embedder. An unknown name fails here, at startup."""
    models = settings.models
    kind = _kind(settings)
    if kind == "minilm":
        data_dir = settings.model_cache_dir

        def load_minilm() -> Embedder:
            from ragd.models import minilm

            return minilm.load(models, data_dir)

        return load_minilm
    if kind == "onnx":
        path = models.embedder_path
        if path is None:
            raise ConfigurationError("models.embedder=onnx needs models.embedder_path")

        def load_onnx() -> Embedder:
            from ragd.models.onnx_embedder import OnnxEmbedder

            return OnnxEmbedder.from_directory(path, models)

        return load_onnx

    def load_openai() -> Embedder:
        from ragd.models.http_embedder import OpenAIEmbedder

        return OpenAIEmbedder(models)

    return load_openai


def embedder_name(settings: Settings) -> str:
    """The name the configured embedder will report in ``info.name``, known without loading
    it (indexes record it to refuse vectors of another model)."""
    models = settings.models
    kind = _kind(settings)
    if kind == "minilm":
        from ragd.models.minilm import NAME

        return NAME
    if kind == "onnx":
        if models.embedder_path is None:
            raise ConfigurationError("models.embedder=onnx needs models.embedder_path")
        from ragd.models.onnx_embedder import directory_name

        return directory_name(models.embedder_path)
    return str(models.openai_model)


def _kind(settings: Settings) -> str:
    kind = str(settings.models.embedder)
    if kind not in EMBEDDERS:
        raise ConfigurationError(f"unknown embedder {kind!r}; valid: {', '.join(EMBEDDERS)}")
    return kind
