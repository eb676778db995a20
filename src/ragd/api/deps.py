"""``Annotated`` dependencies, each building on the previous one.

``ServicesDep`` -> ``AuthServiceDep``/``AccountServiceDep`` -> ``CurrentPrincipal`` ->
``TenantAdmin`` / ``PlatformAdmin``. Routes declare what they need; tests swap pieces with
``app.dependency_overrides``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ragd.auth.accounts import AccountService
from ragd.auth.principal import Principal
from ragd.auth.service import AuthService
from ragd.container import Services
from ragd.errors import AuthenticationFailed, PermissionDenied
from ragd.ingestion.service import IngestionService
from ragd.settings import Settings
from ragd.stores.catalog import Catalog

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


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings(services: ServicesDep) -> Settings:
    return services.settings


async def get_auth_service(services: ServicesDep) -> AuthService:
    return services.auth


async def get_account_service(services: ServicesDep) -> AccountService:
    return services.accounts


async def get_ingestion(services: ServicesDep) -> IngestionService:
    return services.ingestion


async def get_catalog(services: ServicesDep) -> Catalog:
    return services.catalog


SettingsDep = Annotated[Settings, Depends(get_settings)]
IngestionDep = Annotated[IngestionService, Depends(get_ingestion)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
AuthServiceDep = Annotated[AuthService, Depends(get_auth_service)]
AccountServiceDep = Annotated[AccountService, Depends(get_account_service)]


BearerCredential = Annotated[str | None, Depends(bearer_token)]
ApiKeyCredential = Annotated[str | None, Depends(_api_key_header)]


async def get_principal(
    services: ServicesDep, bearer: BearerCredential, api_key: ApiKeyCredential
) -> Principal:
    """Authenticate ``Authorization: Bearer <JWT or API key>`` or ``X-API-Key: <key>``."""
    credential = bearer or api_key
    if not credential:
        raise AuthenticationFailed(reason="missing")
    if len(credential) > MAX_CREDENTIAL_CHARS:
        raise AuthenticationFailed(reason="oversized")
    principal = await services.auth.authenticate(credential)
    services.metrics.auth_success(principal.method)
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
