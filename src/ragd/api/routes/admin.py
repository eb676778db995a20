"""``/api/v1/admin``: platform administrators manage tenants."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from ragd.api.deps import AccountServiceDep, PlatformAdmin
from ragd.api.errors import ERROR_RESPONSES
from ragd.api.routing import ApiRoute
from ragd.api.schemas import TenantCreateIn, TenantOut, TenantPatchIn
from ragd.errors import InvalidInput

router = APIRouter(prefix="/admin", tags=["admin"], responses=ERROR_RESPONSES, route_class=ApiRoute)

TenantId = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("/tenants")
async def list_tenants(
    admin: PlatformAdmin,
    accounts: AccountServiceDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[TenantOut]:
    return [TenantOut.of(t) for t in await accounts.list_tenants(limit=limit, offset=offset)]


@router.post("/tenants", status_code=status.HTTP_201_CREATED)
async def create_tenant(
    body: TenantCreateIn, admin: PlatformAdmin, accounts: AccountServiceDep
) -> TenantOut:
    return TenantOut.of(await accounts.create_tenant(body.name))


@router.patch("/tenants/{tenant_id}")
async def update_tenant(
    tenant_id: TenantId, body: TenantPatchIn, admin: PlatformAdmin, accounts: AccountServiceDep
) -> TenantOut:
    """Rename, suspend or reactivate. While suspended, every user of the tenant is
    rejected on their next request."""
    if body.name is None and body.status is None:
        raise InvalidInput("nothing to change: give name and/or status", code="empty_patch")
    tenant = await accounts.update_tenant(admin, tenant_id, name=body.name, status=body.status)
    return TenantOut.of(tenant)
