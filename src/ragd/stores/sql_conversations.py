"""SQL implementation of :class:`ragd.stores.conversations.Conversations`.

A turn's messages are numbered after the conversation's last one (``max(seq) + 1``), a read
then a write: two turns of one conversation at once (two tabs, two replicas) would draw the
same numbers (a unique violation) or interleave. So appending locks the conversation's row
first (``FOR UPDATE``; SQLite's one writer needs none): turns of one conversation take turns,
those of different conversations do not wait for each other.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import cast

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ragd.db.cursor import encode_cursor, newest_first
from ragd.db.engine import Database
from ragd.db.tables import ConversationMessageRow, ConversationRow, utcnow
from ragd.errors import InvalidInput
from ragd.stores.catalog import Page
from ragd.stores.conversations import Conversation, ConversationMessage, NewMessage, Turn

__all__ = ["SqlConversations"]

MAX_TITLE_CHARS = 200


class SqlConversations:
    """Conversations in the ragd database; every query carries tenant and user."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, tenant_id: str, user_id: str, title: str) -> Conversation:
        row = ConversationRow(
            tenant_id=tenant_id, user_id=user_id, title=_title(title), message_count=0
        )
        async with self._db.transaction() as s:
            s.add(row)
            await s.flush()
            return _conversation(row)

    async def get(
        self, tenant_id: str, user_id: str, conversation_id: str
    ) -> Conversation | None:
        async with self._db.read() as s:
            row = await _owned(s, tenant_id, user_id, conversation_id)
            if row is None:
                return None
            messages = (
                await s.scalars(
                    select(ConversationMessageRow)
                    .where(ConversationMessageRow.conversation_id == row.id)
                    .order_by(ConversationMessageRow.seq)
                )
            ).all()
            return _conversation(row, tuple(_message(m) for m in messages))

    async def page(
        self, tenant_id: str, user_id: str, *, limit: int = 50, cursor: str | None = None
    ) -> Page[Conversation]:
        if not 1 <= limit <= 500:
            raise InvalidInput("limit must be between 1 and 500", code="invalid_limit")
        query = select(ConversationRow).where(
            ConversationRow.tenant_id == tenant_id, ConversationRow.user_id == user_id
        )
        query = newest_first(query, ConversationRow.created_at, ConversationRow.id, cursor)
        async with self._db.read() as s:
            rows = (await s.scalars(query.limit(limit + 1))).all()
        items = tuple(_conversation(row) for row in rows[:limit])
        more = len(rows) > limit and items
        return Page(items, encode_cursor(items[-1].created_at, items[-1].id) if more else None)

    async def recent(
        self, tenant_id: str, user_id: str, conversation_id: str, limit: int
    ) -> list[ConversationMessage] | None:
        async with self._db.read() as s:
            row = await _owned(s, tenant_id, user_id, conversation_id)
            if row is None:
                return None
            if limit <= 0:
                return []
            messages = (
                await s.scalars(
                    select(ConversationMessageRow)
                    .where(ConversationMessageRow.conversation_id == row.id)
                    .order_by(ConversationMessageRow.seq.desc())
                    .limit(limit)
                )
            ).all()
        return [_message(m) for m in reversed(messages)]

    async def append(
        self, tenant_id: str, user_id: str, conversation_id: str,
        messages: Sequence[NewMessage],
    ) -> bool:
        async with self._db.transaction() as s:
            row = await _owned(s, tenant_id, user_id, conversation_id, lock=True)
            if row is None:
                return False
            last = await s.scalar(
                select(func.max(ConversationMessageRow.seq)).where(
                    ConversationMessageRow.conversation_id == row.id
                )
            )
            seq = int(last or 0)
            for message in messages:
                seq += 1
                s.add(ConversationMessageRow(
                    conversation_id=row.id, seq=seq, role=message.role,
                    content=message.content, details=json.dumps(dict(message.details)),
                ))
            await s.execute(
                update(ConversationRow)
                .where(ConversationRow.id == row.id)
                .values(message_count=seq, updated_at=utcnow())
            )
        return True

    async def delete(self, tenant_id: str, user_id: str, conversation_id: str) -> bool:
        async with self._db.transaction() as s:
            row = await _owned(s, tenant_id, user_id, conversation_id, lock=True)
            if row is None:
                return False
            await s.execute(
                delete(ConversationMessageRow).where(
                    ConversationMessageRow.conversation_id == row.id
                )
            )
            await s.delete(row)
        return True


async def _owned(
    s: AsyncSession, tenant_id: str, user_id: str, conversation_id: str, *,
    lock: bool = False,
) -> ConversationRow | None:
    """The user's conversation; ``lock``: for a write that numbers or removes messages."""
    query = select(ConversationRow).where(
        ConversationRow.id == conversation_id,
        ConversationRow.tenant_id == tenant_id,
        ConversationRow.user_id == user_id,
    )
    if lock:
        query = query.with_for_update()
    return (await s.scalars(query)).first()


def _title(text: str) -> str:
    title = " ".join(text.split())
    if len(title) > MAX_TITLE_CHARS:
        title = title[: MAX_TITLE_CHARS - 1].rstrip() + "…"
    return title or "Conversation"


def _conversation(
    row: ConversationRow, messages: tuple[ConversationMessage, ...] = ()
) -> Conversation:
    return Conversation(
        id=row.id, tenant_id=row.tenant_id, user_id=row.user_id, title=row.title,
        message_count=row.message_count, created_at=row.created_at, updated_at=row.updated_at,
        messages=messages,
    )


def _message(row: ConversationMessageRow) -> ConversationMessage:
    return ConversationMessage(
        id=row.id, seq=row.seq, role=cast(Turn, row.role), content=row.content,
        details=json.loads(row.details), created_at=row.created_at,
    )
