"""The search backend family's factory, keyed on the database backend (``db/backends.py``).

With SQLite the search backend is embedded: tantivy and usearch partitions per tenant in the
data dir, replayed from the catalog's change log (:class:`~ragd.index.manager.IndexManager`;
the index libraries load when a tenant's partitions first open, not here). With PostgreSQL
it will be full-text search and pgvector in the same database as the catalog.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ragd.db.backends import POSTGRESQL, SQLITE, choose
from ragd.index.base import SearchBackend
from ragd.index.manager import IndexManager
from ragd.ops.files import ChangeSignal
from ragd.settings import Settings
from ragd.stores.catalog import Catalog

__all__ = ["SEARCH_BACKENDS", "build_search_backend"]

#: Where the embedded backend keeps its partitions, under the data dir.
INDEX_DIR = "indexes"

BackendBuilder = Callable[[Settings, Catalog, ChangeSignal], SearchBackend]


def _embedded(settings: Settings, catalog: Catalog, signal: ChangeSignal) -> SearchBackend:
    return IndexManager(catalog, settings.data_dir / INDEX_DIR, signal=signal)


SEARCH_BACKENDS: Mapping[str, BackendBuilder] = {SQLITE: _embedded, POSTGRESQL: _embedded}


def build_search_backend(
    settings: Settings, catalog: Catalog, signal: ChangeSignal
) -> SearchBackend:
    """The lexical and dense legs of search over ``catalog``'s chunks; ``signal`` carries
    the index change log's moves between processes."""
    return choose(settings.database_url, SEARCH_BACKENDS, "search backend")(
        settings, catalog, signal
    )
