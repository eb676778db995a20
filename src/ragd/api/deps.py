"""``Annotated`` dependencies, each building on the previous one.

Routes declare the one thing they need, never the whole container: ``get_services`` (the
container in the app state) is read here only, by the narrow dependencies below. It answers
503 ``schema_pending`` while the process waits for its schema (``SchemaGate``), so no route
runs a query against tables that are not there yet; only the readiness probe
(``SchemaGateDep``) looks past it.

* services: ``SettingsDep``, ``DatabaseDep``, ``CatalogDep``, ``QueueDep``,
  ``QueueMonitorDep`` (depth and stuck jobs, for the operations routes), ``IngestionDep``,
  ``SearchDep``, ``AnswersDep``, ``ConversationsDep``, ``RuntimeDep``, ``LlmRouterDep``,
  ``MemoryDep``, ``MetricsDep``, ``StartupDep``;
* identity: ``AuthServiceDep``/``AccountServiceDep`` -> ``CurrentPrincipal`` ->
  ``TenantAdmin`` / ``PlatformAdmin``.

Tests swap pieces with ``app.dependency_overrides``: one narrow dependency, or the whole
container through ``get_services``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ragd.auth.accounts import AccountService
from ragd.auth.principal import Principal
from ragd.auth.service import AuthService
from ragd.container import Services, StartupMetrics
from ragd.db.engine import Database
from ragd.db.migrate import SchemaGate
from ragd.errors import AuthenticationFailed, PermissionDenied, Unavailable
from ragd.generation.answer import AnswerService
from ragd.generation.router import Router
from ragd.ingestion.service import IngestionService
from ragd.jobs.factory import ManagedJobQueue
from ragd.jobs.queue import JobQueue
from ragd.models.runtime import ModelRuntime
from ragd.ops.memory import MemoryManager
from ragd.ops.metrics import Metrics
from ragd.retrieval.search import SearchService
from ragd.settings import Settings
from ragd.stores.catalog import Catalog
from ragd.stores.conversations import Conversations

MAX_CREDENTIAL_CHARS = 4096

# Declared as HTTP bearer (what the API reads: an access token or an API key after
# "Bearer"), so clients and schema-driven tools know which header carries the credential.
# Form-based OAuth2 clients get tokens from POST /api/v1/auth/token.
_bearer = HTTPBearer(auto_error=False, description="An access token or an API key.")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


async def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    return credentials.credentials if credentials is not None else None


#: Seconds a client is told to wait while the schema is being brought to head.
SCHEMA_RETRY_AFTER = 5


class SchemaPending(Unavailable):
    """The database schema is behind this server's version (a migration is pending)."""

    code = "schema_pending"

    def __init__(self) -> None:
        super().__init__("the database is being upgraded to this server's version; retry shortly")
        self.retry_after = SCHEMA_RETRY_AFTER


async def get_schema_gate(request: Request) -> SchemaGate:
    services: Services = request.app.state.services
    return services.schema


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    if not services.schema.ready:
        raise SchemaPending()
    return services


_ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings(services: _ServicesDep) -> Settings:
    return services.settings


async def get_database(services: _ServicesDep) -> Database:
    return services.db


async def get_catalog(services: _ServicesDep) -> Catalog:
    return services.catalog


async def get_queue(services: _ServicesDep) -> JobQueue:
    return services.queue


async def get_queue_monitor(services: _ServicesDep) -> ManagedJobQueue:
    return services.queue


async def get_ingestion(services: _ServicesDep) -> IngestionService:
    return services.ingestion


async def get_search(services: _ServicesDep) -> SearchService:
    return services.search


async def get_answers(services: _ServicesDep) -> AnswerService:
    return services.answers


async def get_conversations(services: _ServicesDep) -> Conversations:
    return services.conversations


async def get_runtime(services: _ServicesDep) -> ModelRuntime:
    return services.runtime


async def get_llm_router(services: _ServicesDep) -> Router:
    return services.router


async def get_memory(services: _ServicesDep) -> MemoryManager:
    return services.memory


async def get_metrics(services: _ServicesDep) -> Metrics:
    return services.metrics


async def get_startup(services: _ServicesDep) -> StartupMetrics:
    return services.startup


async def get_auth_service(services: _ServicesDep) -> AuthService:
    return services.auth


async def get_account_service(services: _ServicesDep) -> AccountService:
    return services.accounts


SchemaGateDep = Annotated[SchemaGate, Depends(get_schema_gate)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
QueueMonitorDep = Annotated[ManagedJobQueue, Depends(get_queue_monitor)]
IngestionDep = Annotated[IngestionService, Depends(get_ingestion)]
SearchDep = Annotated[SearchService, Depends(get_search)]
AnswersDep = Annotated[AnswerService, Depends(get_answers)]
ConversationsDep = Annotated[Conversations, Depends(get_conversations)]
RuntimeDep = Annotated[ModelRuntime, Depends(get_runtime)]
LlmRouterDep = Annotated[Router, Depends(get_llm_router)]
MemoryDep = Annotated[MemoryManager, Depends(get_memory)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
StartupDep = Annotated[StartupMetrics, Depends(get_startup)]
AuthServiceDep = Annotated[AuthService, Depends(get_auth_service)]
AccountServiceDep = Annotated[AccountService, Depends(get_account_service)]


BearerCredential = Annotated[str | None, Depends(bearer_token)]
ApiKeyCredential = Annotated[str | None, Depends(_api_key_header)]


async def get_principal(
    auth: AuthServiceDep, metrics: MetricsDep, bearer: BearerCredential,
    api_key: ApiKeyCredential,
) -> Principal:
    """Authenticate ``Authorization: Bearer <JWT or API key>`` or ``X-API-Key: <key>``."""
    credential = bearer or api_key
    if not credential:
        raise AuthenticationFailed(reason="missing")
    if len(credential) > MAX_CREDENTIAL_CHARS:
        raise AuthenticationFailed(reason="oversized")
    principal = await auth.authenticate(credential)
    metrics.auth_success(principal.method)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


async def require_tenant_admin(principal: CurrentPrincipal) -> Principal:
    if not principal.is_tenant_admin:
        raise PermissionDenied("tenant admin role required")
    return principal


async def require_platform_admin(principal: CurrentPrincipal) -> Principal:
    if not principal.is_superuser:
        raise PermissionDenied("platform administrator required")
    return principal


TenantAdmin = Annotated[Principal, Depends(require_tenant_admin)]
PlatformAdmin = Annotated[Principal, Depends(require_platform_admin)]


async def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


ClientIP = Annotated[str, Depends(client_ip)]
