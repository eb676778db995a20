"""The conversations contract (:class:`~ragd.stores.conversations.Conversations`), run against
every backend: a conversation belongs to one user of one tenant, and anyone else's id is
indistinguishable from a missing one; messages keep their order; pages newest first."""

from __future__ import annotations

import uuid

import pytest

from ragd.errors import InvalidInput
from ragd.stores.base import IdentityStore
from ragd.stores.conversations import Conversations, NewMessage

MISSING = str(uuid.uuid4())


async def _user(identity: IdentityStore, tenant: str, email: str) -> str:
    return (await identity.create_user(tenant, email, "hash")).id


async def test_messages_are_appended_in_order_and_read_back(
    identity: IdentityStore, conversations: Conversations, tenant: str
) -> None:
    user = await _user(identity, tenant, "ada@acme.example")
    created = await conversations.create(tenant, user, "Harbour cranes")
    assert (created.tenant_id, created.user_id, created.title, created.message_count) == (
        tenant, user, "Harbour cranes", 0
    )
    assert await conversations.append(tenant, user, created.id, [
        NewMessage("user", "Who unloads the ships?"),
        NewMessage("assistant", "The cranes [1].", {"citations": [1], "model": "x"}),
    ])
    assert await conversations.append(tenant, user, created.id, [NewMessage("user", "When?")])
    found = await conversations.get(tenant, user, created.id)
    assert found is not None and found.message_count == 3
    assert [(m.role, m.content) for m in found.messages] == [
        ("user", "Who unloads the ships?"), ("assistant", "The cranes [1]."), ("user", "When?")
    ]
    assert dict(found.messages[1].details) == {"citations": [1], "model": "x"}
    seqs = [m.seq for m in found.messages]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    recent = await conversations.recent(tenant, user, created.id, 2)
    assert recent is not None and [m.content for m in recent] == ["The cranes [1].", "When?"]
    assert await conversations.recent(tenant, user, created.id, 0) == []
    everything = await conversations.recent(tenant, user, created.id, 10)
    assert everything == list(found.messages)


async def test_a_conversation_of_anyone_else_is_missing_on_every_method(
    identity: IdentityStore, conversations: Conversations, tenant: str, other_tenant: str
) -> None:
    owner = await _user(identity, tenant, "ada@acme.example")
    colleague = await _user(identity, tenant, "bob@acme.example")
    stranger = await _user(identity, other_tenant, "eve@globex.example")
    mine = await conversations.create(tenant, owner, "Mine")
    await conversations.append(tenant, owner, mine.id, [NewMessage("user", "secret")])
    before = await conversations.get(tenant, owner, mine.id)
    # The owner's id under another tenant, the colleague in the same tenant, a stranger.
    others = ((other_tenant, owner), (tenant, colleague), (other_tenant, stranger))
    for tenant_id, user_id in others:
        for conversation_id in (mine.id, MISSING):
            assert await conversations.get(tenant_id, user_id, conversation_id) is None
            assert await conversations.recent(tenant_id, user_id, conversation_id, 5) is None
            assert await conversations.append(
                tenant_id, user_id, conversation_id, [NewMessage("user", "mine now")]
            ) is False
            assert await conversations.delete(tenant_id, user_id, conversation_id) is False
        assert (await conversations.page(tenant_id, user_id)).items == ()
    assert await conversations.get(tenant, owner, mine.id) == before


async def test_conversations_page_newest_first_per_user(
    identity: IdentityStore, conversations: Conversations, tenant: str
) -> None:
    owner = await _user(identity, tenant, "ada@acme.example")
    colleague = await _user(identity, tenant, "bob@acme.example")
    ids = {(await conversations.create(tenant, owner, f"c{n}")).id for n in range(5)}
    await conversations.create(tenant, colleague, "theirs")
    items = []
    cursor = None
    while True:
        page = await conversations.page(tenant, owner, limit=2, cursor=cursor)
        assert len(page.items) <= 2
        items.extend(page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert {c.id for c in items} == ids and len(items) == 5
    keys = [(c.created_at, c.id) for c in items]
    assert keys == sorted(keys, reverse=True)
    assert all(c.messages == () for c in items)  # pages carry no messages
    for bad in ({"limit": 0}, {"limit": 501}, {"cursor": "not-a-cursor"}):
        with pytest.raises(InvalidInput):
            await conversations.page(tenant, owner, **bad)  # type: ignore[arg-type]


async def test_a_deleted_conversation_is_gone(
    identity: IdentityStore, conversations: Conversations, tenant: str
) -> None:
    user = await _user(identity, tenant, "ada@acme.example")
    doomed = await conversations.create(tenant, user, "Doomed")
    await conversations.append(tenant, user, doomed.id, [NewMessage("user", "hello")])
    assert await conversations.delete(tenant, user, doomed.id) is True
    assert await conversations.get(tenant, user, doomed.id) is None
    assert await conversations.recent(tenant, user, doomed.id, 5) is None
    assert await conversations.append(tenant, user, doomed.id, [NewMessage("user", "x")]) is False
    assert await conversations.delete(tenant, user, doomed.id) is False
    assert (await conversations.page(tenant, user)).items == ()
