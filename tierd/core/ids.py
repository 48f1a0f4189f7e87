"""Random row identifiers (``evt_...``, ``msg_...``), made in bulk on hot paths."""

from __future__ import annotations

import os


def random_ids(prefix: str, count: int, nbytes: int = 12) -> list[str]:
    """``count`` ids: ``prefix`` + hex of ``nbytes`` random bytes each.

    One read of the OS random source for all of them: it is a system call
    each time, and the event and delivery paths make one id per row.
    """
    raw = os.urandom(nbytes * count).hex()
    width = 2 * nbytes
    return [prefix + raw[i:i + width] for i in range(0, len(raw), width)]


def random_id(prefix: str, nbytes: int = 12) -> str:
    return prefix + os.urandom(nbytes).hex()
