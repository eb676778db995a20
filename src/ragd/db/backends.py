"""The key of every store family's factory: the backend that the database URL names.

The catalog, the identity store, conversations, the job queue, the change signals and the
search backend each have a small factory (``stores/factory.py``, ``jobs/factory.py``,
``ops/signals.py``, ``index/factory.py``) holding one implementation per backend name. They
all read the name here, from ``settings.database_url`` (``sqlite+aiosqlite:///...`` is
``sqlite``), so one setting moves every family together: the embedded defaults live with
SQLite, and a PostgreSQL family plugs in under ``postgresql`` in each table.

A backend no table knows fails at startup, before any connection is made, with a message
that lists the supported ones. Messages name the backend only, never the URL: it may carry a
password.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ragd.errors import ConfigurationError

__all__ = ["BACKENDS", "POSTGRESQL", "SQLITE", "backend_name", "choose", "supported_backend"]

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
#: The backends the database layer and every store family support.
BACKENDS: tuple[str, ...] = (SQLITE, POSTGRESQL)

T = TypeVar("T")


def backend_name(url: str) -> str:
    """The backend of a SQLAlchemy URL, without its driver (``postgresql+asyncpg`` ->
    ``postgresql``)."""
    try:
        return make_url(url).get_backend_name()
    except ArgumentError:
        raise ConfigurationError(
            "database.url is not a database URL (expected e.g. sqlite+aiosqlite:///path)"
        ) from None


def supported_backend(url: str) -> str:
    """The backend of ``url``, or :class:`ConfigurationError` when it is none of
    :data:`BACKENDS` (checked before the database is opened)."""
    name = backend_name(url)
    if name not in BACKENDS:
        raise _unsupported(name, BACKENDS, "database.url")
    return name


def choose(url: str, implementations: Mapping[str, T], family: str) -> T:
    """The entry of ``implementations`` for the backend of ``url``; an unknown backend is a
    :class:`ConfigurationError` naming ``family`` and the backends it supports."""
    name = backend_name(url)
    if name not in implementations:
        raise _unsupported(name, implementations, family)
    return implementations[name]


def _unsupported(name: str, supported: Iterable[str], what: str) -> ConfigurationError:
    return ConfigurationError(
        f"{what}: database backend {name!r} is not supported "
        f"(supported: {', '.join(sorted(supported))})"
    )
