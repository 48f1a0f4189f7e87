"""Choose a statement format for a file when the caller names none."""

from __future__ import annotations

from tierd.core.registry import StatementError, StatementImporter

#: How much of the start of a file the importers' ``detect()`` get to see.
HEAD_BYTES = 4096


def detect_format(
    data: bytes,
    importers: dict[str, StatementImporter],
    filename: str = "",
    fallback: str | None = None,
) -> str:
    """The name of the importer that recognises ``data``.

    Every registered importer (third-party ones included) is asked in name
    order, with CSV last because its test is only a file name. ``fallback``
    (e.g. "csv" for an account with a CSV layout) is used when none answers.
    """
    head = data[:HEAD_BYTES]
    names = sorted(importers, key=lambda n: (n == "csv", n))
    for name in names:
        try:
            if importers[name].detect(head, filename):
                return name
        except Exception:  # a broken third-party detector must not block the others
            continue
    if fallback and fallback in importers:
        return fallback
    raise StatementError("unknown statement format; name one with ?format= (" + ", ".join(sorted(importers)) + ")")
