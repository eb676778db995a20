"""``/api/v1/tenant``: a tenant admin manages the users of their own tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from ragd.api.deps import AccountServiceDep, TenantAdmin
from ragd.api.errors import ERROR_RESPONSES
from ragd.api.routing import ApiRoute
from ragd.api.schemas import UserCreateIn, UserOut, UserPatchIn
from ragd.errors import InvalidInput

router = APIRouter(
    prefix="/tenant", tags=["tenant"], responses=ERROR_RESPONSES, route_class=ApiRoute
)

UserId = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("/users")
async def list_users(
    admin: TenantAdmin,
    accounts: AccountServiceDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[UserOut]:
    users = await accounts.list_users(admin, limit=limit, offset=offset)
    return [UserOut.of(user) for user in users]


@router.post("/users", status_code=status.HTTP_201_CREATED)
async def create_user(
    body: UserCreateIn, admin: TenantAdmin, accounts: AccountServiceDep
) -> UserOut:
    user = await accounts.create_user(
        admin, email=body.email, password=body.password, role=body.role
    )
    return UserOut.of(user)


@router.patch("/users/{user_id}")
async def update_user(
    user_id: UserId, body: UserPatchIn, admin: TenantAdmin, accounts: AccountServiceDep
) -> UserOut:
    """Change role or activity. Either change ends the user's sessions at once;
    deactivation also revokes their API keys."""
    if body.role is None and body.is_active is None:
        raise InvalidInput("nothing to change: give role and/or is_active", code="empty_patch")
    user = await accounts.update_user(admin, user_id, role=body.role, is_active=body.is_active)
    return UserOut.of(user)


@router.delete("/users/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_user(
    user_id: UserId, admin: TenantAdmin, accounts: AccountServiceDep
) -> Response:
    await accounts.delete_user(admin, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
