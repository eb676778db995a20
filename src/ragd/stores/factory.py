"""The store families' factories, keyed on the database backend (``db/backends.py``).

One table per family maps a backend name to the implementation that serves it; today every
family has its SQLAlchemy implementation under ``sqlite``, and PostgreSQL plugs in as a second
key. Building a store opens nothing: the implementations keep the :class:`Database` they are
given and use it per call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ragd.db.backends import POSTGRESQL, SQLITE, choose
from ragd.db.engine import Database
from ragd.jobs.queue import Finaliser
from ragd.settings import Settings
from ragd.stores.base import IdentityStore
from ragd.stores.catalog import INGEST_JOB, Catalog
from ragd.stores.conversations import Conversations
from ragd.stores.identity import SqlIdentityStore
from ragd.stores.rate_limits import RateLimits
from ragd.stores.sql_catalog import SqlCatalog, finalise_ingest_job
from ragd.stores.sql_conversations import SqlConversations
from ragd.stores.sql_rate_limits import SqlRateLimits

__all__ = [
    "CATALOGS",
    "CONVERSATIONS",
    "FINALISERS",
    "IDENTITY_STORES",
    "RATE_LIMITS",
    "build_catalog",
    "build_conversations",
    "build_identity_store",
    "build_rate_limits",
    "catalog_finalisers",
]

IDENTITY_STORES: Mapping[str, Callable[[Database], IdentityStore]] = {
    SQLITE: SqlIdentityStore, POSTGRESQL: SqlIdentityStore,
}
#: Each takes the database and ``commit_batch`` (chunks per staged batch of a large version).
CATALOGS: Mapping[str, Callable[..., Catalog]] = {SQLITE: SqlCatalog, POSTGRESQL: SqlCatalog}
CONVERSATIONS: Mapping[str, Callable[[Database], Conversations]] = {
    SQLITE: SqlConversations, POSTGRESQL: SqlConversations,
}
#: Login throttling's buckets, shared by every process through the database.
RATE_LIMITS: Mapping[str, Callable[[Database], RateLimits]] = {
    SQLITE: SqlRateLimits, POSTGRESQL: SqlRateLimits,
}
#: The job finalisers each catalog needs from the queue (run in the transaction that ends an
#: ingestion job as failed or cancelled, so its document never looks "in progress").
FINALISERS: Mapping[str, Mapping[str, Finaliser]] = {
    SQLITE: {INGEST_JOB: finalise_ingest_job}, POSTGRESQL: {INGEST_JOB: finalise_ingest_job},
}


def build_identity_store(settings: Settings, db: Database) -> IdentityStore:
    """Tenants, users, sessions, API keys and the auth event log."""
    return choose(settings.database_url, IDENTITY_STORES, "identity store")(db)


def build_catalog(settings: Settings, db: Database) -> Catalog:
    """Collections, documents, versions, chunks and the index change log."""
    return choose(settings.database_url, CATALOGS, "catalog")(
        db, commit_batch=settings.ingestion.commit_batch_chunks
    )


def build_conversations(settings: Settings, db: Database) -> Conversations:
    return choose(settings.database_url, CONVERSATIONS, "conversations")(db)


def build_rate_limits(settings: Settings, db: Database) -> RateLimits:
    """GCRA buckets (login throttling) shared by every process of the deployment."""
    return choose(settings.database_url, RATE_LIMITS, "rate limits")(db)


def catalog_finalisers(settings: Settings) -> Mapping[str, Finaliser]:
    """The job finalisers of the configured catalog, by job kind (for the job queue)."""
    return choose(settings.database_url, FINALISERS, "catalog")
