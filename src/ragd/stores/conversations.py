"""Chat conversations: records and the :class:`Conversations` store Protocol.

A conversation belongs to one user in one tenant; every method takes both, so one user can
never read, extend or delete another user's conversation (an unknown id and somebody else's
id look the same: ``None`` / ``False``). Implementation: :mod:`ragd.stores.sql_conversations`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from ragd.stores.catalog import Page

__all__ = ["Conversation", "ConversationMessage", "Conversations", "NewMessage", "Turn"]

Turn = Literal["user", "assistant"]


@dataclass(frozen=True, slots=True)
class ConversationMessage:
    id: str
    seq: int
    role: Turn
    content: str
    details: Mapping[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewMessage:
    role: Turn
    content: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    tenant_id: str
    user_id: str
    title: str
    message_count: int
    created_at: datetime
    updated_at: datetime
    messages: tuple[ConversationMessage, ...] = ()  # filled by ``get`` only


class Conversations(Protocol):
    async def create(self, tenant_id: str, user_id: str, title: str) -> Conversation: ...

    async def get(
        self, tenant_id: str, user_id: str, conversation_id: str
    ) -> Conversation | None:
        """The conversation with all its messages, oldest first."""
        ...

    async def page(
        self, tenant_id: str, user_id: str, *, limit: int = 50, cursor: str | None = None
    ) -> Page[Conversation]:
        """Newest first, without messages."""
        ...

    async def recent(
        self, tenant_id: str, user_id: str, conversation_id: str, limit: int
    ) -> list[ConversationMessage] | None:
        """The last ``limit`` messages, oldest first (None: no such conversation)."""
        ...

    async def append(
        self, tenant_id: str, user_id: str, conversation_id: str,
        messages: Sequence[NewMessage],
    ) -> bool:
        """Add messages at the end in one transaction; False when there is no such
        conversation (e.g. deleted meanwhile)."""
        ...

    async def delete(self, tenant_id: str, user_id: str, conversation_id: str) -> bool: ...
