"""Row identifiers (``evt_...``, ``msg_...``): unique, and sorted by creation time.

An id is the prefix, 6 bytes of milliseconds since the epoch and 8 random
bytes, in hex (the scheme of ULID and KSUID). Time first puts new rows at the
end of every index on an id column, so an insert touches the same few pages
as the one before it instead of a random page of an ever larger index.
"""

from __future__ import annotations

import os
import time

RANDOM_BYTES = 8


def new_ids(prefix: str, count: int) -> list[str]:
    """``count`` ids made now, ascending in list order, from one read of the OS
    random source (a system call each time: the event and delivery paths make
    one id per row). Ascending: rows given them in the order of the list page
    and sort in that order, although they share the millisecond."""
    head = prefix + int(time.time() * 1000).to_bytes(6, "big").hex()
    raw = os.urandom(RANDOM_BYTES * count).hex()
    width = 2 * RANDOM_BYTES
    return sorted(head + raw[i : i + width] for i in range(0, len(raw), width))


def new_id(prefix: str) -> str:
    """One id: ``prefix`` (such as ``"evt_"``) then time and randomness, in hex."""
    return new_ids(prefix, 1)[0]
