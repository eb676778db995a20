"""The append turns that keep a change log's seq order its commit order (``db/sequence.py``).

That a consumer reading "after seq N" never skips a committed entry, with writers of two
processes racing, is part of the change-log contract every backend runs:
``tests/contracts/test_change_log.py``.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ragd.db.sequence import AUTH_EVENTS, INDEX_CHANGES, lock_id


@given(st.text(max_size=40), st.text(max_size=40))
def test_append_turns_are_stable_signed_64_bit_ids(log: str, key: str) -> None:
    value = lock_id(log, key)
    assert value == lock_id(log, key)
    assert -(2**63) <= value < 2**63


def test_logs_and_tenants_take_different_turns() -> None:
    ids = {lock_id(AUTH_EVENTS), lock_id(INDEX_CHANGES, "a"), lock_id(INDEX_CHANGES, "b"),
           lock_id(INDEX_CHANGES)}
    assert len(ids) == 4
