"""Opaque keyset-pagination cursors: ``(created_at, id)`` of the last item of a page."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, and_, or_

from ragd.errors import InvalidInput
from ragd.hygiene import text_problem, utc_datetime


def encode_cursor(created_at: datetime, item_id: str) -> str:
    """The cursor that continues after the item created at ``created_at`` with ``item_id``."""
    raw = f"{created_at.isoformat()}|{item_id}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Inverse of :func:`encode_cursor`; :class:`InvalidInput` for anything else."""
    try:
        created, item_id = (
            base64.urlsafe_b64decode(cursor.encode("ascii")).decode().split("|", 1)
        )
        # A cursor is client input: its time must have a UTC value a column can hold.
        when = utc_datetime(datetime.fromisoformat(created))
    except (ValueError, UnicodeError, binascii.Error):
        raise InvalidInput("invalid cursor", code="invalid_cursor") from None
    if len(item_id) > 64 or text_problem(item_id, single_line=True):
        raise InvalidInput("invalid cursor", code="invalid_cursor")
    return when, item_id


S = TypeVar("S", bound=Select[Any])


def newest_first(query: S, created_at: Any, item_id: Any, cursor: str | None) -> S:
    """Order ``query`` newest first by ``(created_at, id)`` and, with a cursor, keep only the
    rows after the one it names (keyset pagination: stable under inserts)."""
    if cursor is not None:
        created, after_id = decode_cursor(cursor)
        query = query.where(
            or_(created_at < created, and_(created_at == created, item_id < after_id))
        )
    return query.order_by(created_at.desc(), item_id.desc())
