"""The change-signal contract (:class:`~ragd.ops.files.ChangeSignal`), run against every
backend for each change log's channel: a notification in one process makes ``changed()``
true once in every other process sharing the deployment; notifications between two checks
count once; a signal opened later sees only later notifications; channels are independent;
nothing is ``missed()`` while the transport stays up.

Delivery may be asynchronous (PostgreSQL's NOTIFY reaches the other process a moment after
the commit): ``site.delivered()`` waits until every notification sent so far has arrived
everywhere, so each assertion is about what arrived, not about how fast."""

from __future__ import annotations

import pytest

from ragd.db.sequence import AUTH_EVENTS, INDEX_CHANGES
from ragd.ops.signals import CHANNELS
from tests.contracts.site import Site


@pytest.mark.parametrize("channel", CHANNELS)
async def test_a_notification_reaches_another_process_once(site: Site, channel: str) -> None:
    here, there = site.signal(channel), site.another_process().signal(channel)
    await site.delivered()
    assert not there.changed()
    here.notify()
    await site.delivered()
    assert there.changed()
    assert not there.changed()
    here.notify()
    await site.delivered()
    assert there.changed()
    assert not there.missed()


@pytest.mark.parametrize("channel", CHANNELS)
async def test_notifications_between_two_checks_count_once(site: Site, channel: str) -> None:
    here, there = site.signal(channel), site.another_process().signal(channel)
    await site.delivered()
    for _ in range(3):
        here.notify()  # within one clock tick, too
    await site.delivered()
    assert there.changed()
    assert not there.changed()


@pytest.mark.parametrize("channel", CHANNELS)
async def test_a_signal_opened_later_sees_only_later_notifications(
    site: Site, channel: str
) -> None:
    here = site.signal(channel)
    await site.delivered()
    here.notify()
    await site.delivered()
    later = site.another_process().signal(channel)
    await site.delivered()
    assert not later.changed()
    here.notify()
    await site.delivered()
    assert later.changed()


async def test_each_change_log_has_its_own_channel(site: Site) -> None:
    other = site.another_process()
    auth, index = other.signal(AUTH_EVENTS), other.signal(INDEX_CHANGES)
    await site.delivered()
    site.signal(INDEX_CHANGES).notify()
    await site.delivered()
    assert index.changed() and not auth.changed()
    site.signal(AUTH_EVENTS).notify()
    await site.delivered()
    assert auth.changed() and not index.changed()
