"""Shared model fixtures: one real preparation of all-MiniLM-L6-v2 for the whole session.

Preparing takes a few seconds (reference pass, folding, quantisation, verification), so the
session prepares once, offline, and the embedder tests reuse the directory.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ragd.models import minilm
from ragd.models.onnx_embedder import OnnxEmbedder
from ragd.settings import ModelsSettings


class NetworkBlocked(OSError):
    """Raised by a socket that tried to leave the machine while the network was blocked."""


@contextmanager
def no_network() -> Iterator[list[Any]]:
    """Refuse every socket connection except loopback and Unix sockets; yield the attempts.

    Hub clients are told to stay offline too, in case anything tried to reach one.
    """
    attempts: list[Any] = []
    original = socket.socket.connect
    original_ex = socket.socket.connect_ex

    def allowed(address: Any) -> bool:
        if isinstance(address, (str, bytes)):  # AF_UNIX
            return True
        host = address[0]
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return host == "localhost"

    def connect(self: socket.socket, address: Any) -> None:
        if not allowed(address):
            attempts.append(address)
            raise NetworkBlocked(f"network access blocked in this test: {address!r}")
        original(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not allowed(address):
            attempts.append(address)
            raise NetworkBlocked(f"network access blocked in this test: {address!r}")
        return original_ex(self, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", connect)
        patch.setattr(socket.socket, "connect_ex", connect_ex)
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
            patch.setenv(name, "1")
        yield attempts


@dataclass(frozen=True)
class PreparedSession:
    data_dir: Path
    prepared: minilm.PreparedModel


@pytest.fixture(scope="session")
def prepared_minilm(tmp_path_factory: pytest.TempPathFactory) -> PreparedSession:
    """all-MiniLM-L6-v2 prepared (quantised) once, offline, in a session data dir."""
    data_dir = tmp_path_factory.mktemp("minilm-data")
    with no_network() as attempts:
        prepared = minilm.prepare(data_dir)
    assert attempts == []
    return PreparedSession(data_dir, prepared)


@pytest.fixture(scope="session")
def minilm_embedder(prepared_minilm: PreparedSession) -> Iterator[OnnxEmbedder]:
    """The default embedder loaded from the session's prepared directory."""
    embedder = minilm.load(ModelsSettings(), prepared_minilm.data_dir)
    yield embedder
    embedder.close()
