"""Inbox folders: statement files dropped in a folder are imported.

Each configured account may name an ``inbox`` folder. A file is taken once
it has stopped changing (its size and time unchanged for a poll), imported,
then moved to ``processed/``; a file the importer refuses goes to
``failed/`` with ``<name>.error.txt`` beside it saying why. A failure that is
not the file's fault (the database is busy, the daemon stops) leaves the
file where it is, to be tried again at the next poll.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from tierd.core.registry import StatementError

from . import imports, store
from .config import layout, section

log = logging.getLogger("tierd.reconciliation.inbox")

#: Names being written by other programs, skipped until renamed.
PARTIAL_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial")

# path -> (size, mtime) seen at the previous poll: a file is ready when unchanged.
_seen: dict[str, tuple[int, float]] = {}


def ready_files(folder: Path) -> list[Path]:
    """Files in ``folder`` that did not change since the previous poll."""
    ready = []
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not entry.is_file() or entry.name.startswith(".") or entry.name.endswith(PARTIAL_SUFFIXES):
            continue
        stat = entry.stat()
        key, now = str(entry), (stat.st_size, stat.st_mtime)
        if _seen.get(key) == now:
            ready.append(entry)
        else:
            _seen[key] = now
    return ready


def move_to(path: Path, subfolder: str) -> Path:
    """Move ``path`` into ``subfolder`` beside it, never overwriting a file there."""
    target_dir = path.parent / subfolder
    target_dir.mkdir(exist_ok=True)
    target = target_dir / path.name
    n = 1
    while target.exists():
        target = target_dir / f"{path.stem}.{n}{path.suffix}"
        n += 1
    os.replace(path, target)
    _seen.pop(str(path), None)
    return target


async def poll(daemon) -> None:
    """Import every ready file of every account's inbox."""
    cfg = section(daemon.config)
    for acct in cfg["accounts"]:
        if not acct.get("inbox"):
            continue
        folder = Path(acct["inbox"])
        account = await store.get_account(daemon.db, acct["tenant"], acct["id"])
        if account is None:
            continue
        csv_layout = layout(cfg, "csv_formats", account["csv_format"])
        for path in ready_files(folder):
            await import_file(daemon, acct["tenant"], account, path, csv_layout)


async def import_file(daemon, tenant: str, account: dict, path: Path, layout: dict | None) -> None:
    try:
        data = path.read_bytes()
        result = await imports.import_statement(
            daemon, tenant, account, data, fmt=None, filename=path.name, csv_layout=layout, actor="inbox"
        )
    except StatementError as exc:
        target = move_to(path, "failed")
        target.with_name(target.name + ".error.txt").write_text(f"{exc}\n")
        log.warning("inbox %s: %s refused: %s", account["id"], path.name, exc)
        return
    except OSError as exc:
        log.error("inbox %s: cannot read %s: %s", account["id"], path, exc)
        return
    move_to(path, "processed")
    log.info(
        "inbox %s: imported %s (%s new, %s duplicates)", account["id"], path.name, result["new"], result["duplicates"]
    )
