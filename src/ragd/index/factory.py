"""The search backend family's factory, keyed on the database backend (``db/backends.py``).

With SQLite the search backend is embedded: tantivy and usearch partitions per tenant in the
data dir, replayed from the catalog's change log (:class:`~ragd.index.manager.IndexManager`;
the index libraries load when a tenant's partitions first open, not here). With PostgreSQL
it is full-text search and pgvector in the catalog's own database
(:class:`~ragd.index.postgres.PostgresSearch`): nothing is opened in the data dir, and the
change signal is not needed (a commit is searchable in every process at once).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ragd.db.backends import POSTGRESQL, SQLITE, choose
from ragd.db.engine import Database
from ragd.index.base import SearchBackend
from ragd.index.manager import IndexManager
from ragd.index.postgres import PostgresSearch
from ragd.ops.files import ChangeSignal
from ragd.settings import Settings
from ragd.stores.catalog import Catalog

__all__ = ["SEARCH_BACKENDS", "build_search_backend"]

#: Where the embedded backend keeps its partitions, under the data dir.
INDEX_DIR = "indexes"

BackendBuilder = Callable[[Settings, Database, Catalog, ChangeSignal], SearchBackend]


def _embedded(
    settings: Settings, db: Database, catalog: Catalog, signal: ChangeSignal
) -> SearchBackend:
    return IndexManager(catalog, settings.data_dir / INDEX_DIR, signal=signal)


def _postgresql(
    settings: Settings, db: Database, catalog: Catalog, signal: ChangeSignal
) -> SearchBackend:
    return PostgresSearch(db, catalog)


SEARCH_BACKENDS: Mapping[str, BackendBuilder] = {SQLITE: _embedded, POSTGRESQL: _postgresql}


def build_search_backend(
    settings: Settings, db: Database, catalog: Catalog, signal: ChangeSignal
) -> SearchBackend:
    """The lexical and dense legs of search over ``catalog``'s chunks in ``db`` (the
    catalog's database); ``signal`` carries the index change log's moves between processes
    (the embedded backend's)."""
    return choose(settings.database_url, SEARCH_BACKENDS, "search backend")(
        settings, db, catalog, signal
    )
