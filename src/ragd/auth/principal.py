"""Who is calling: the result of authenticating a request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ragd.stores.base import Privilege, Role

AuthMethod = Literal["access_token", "api_key"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. Every tenant-scoped operation takes its ``tenant_id``."""

    user_id: str
    tenant_id: str
    role: Role
    is_superuser: bool
    method: AuthMethod
    session_id: str | None = None
    api_key_id: str | None = None

    @property
    def is_tenant_admin(self) -> bool:
        return self.role == "admin"

    @property
    def privilege(self) -> Privilege:
        return Privilege.of(self.role, self.is_superuser)
